//! `cargo xtask vm-bench`: what the agent's LSM hooks cost on open(). tests/vm/bench.sh times
//! open()+close() of a regular file with the programs attached (the agent itself stopped, so its
//! housekeeping does not compete for the guest's CPU) and detached, alternating five rounds in
//! one boot so that emulator drift hits both sides alike; the ratio is the figure of merit.
use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::initramfs::{self, BootFiles};
use crate::kernels::Kernel;
use crate::util::{say, workspace_root};
use crate::vm::{self, ending_problem};

pub struct BenchArgs {
    pub kernel: String,
    pub policy: Option<PathBuf>,
    pub iterations: u32,
    /// Make a VFIO group non-viable first, so the file_open hook is attached while measuring.
    pub non_viable: bool,
}

/// The loops tests/vm/bench.sh times (fact key, what it is).
const LOOPS: &[(&str, &str)] = &[
    ("open_bench_file", "open()+close() of a regular file"),
    ("read_bench_file", "pread(2) of 8 bytes from a regular file"),
    ("write_bench_file", "pwrite(2) of 8 bytes to a regular file"),
    ("read_null", "pread(2) of 8 bytes from /dev/null"),
    ("write_null", "pwrite(2) of 8 bytes to /dev/null"),
];
/// Alternating rounds of each side (tests/vm/bench.sh's BENCH_ROUNDS default).
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn vm_bench(args: &BenchArgs) -> Result<bool> {
    let bins = vm::prepare()?;
    let kernel = Kernel::ready(&args.kernel)?;
    let base = initramfs::base(&kernel, &bins)?;
    let script_path = workspace_root().join("tests/vm/bench.sh");
    let script =
        fs::read(&script_path).with_context(|| format!("reading {}", script_path.display()))?;
    let policy = match &args.policy {
        Some(p) => Some(fs::read(p).with_context(|| format!("reading policy {}", p.display()))?),
        None => None,
    };
    let env = [
        ("BENCH_ITERATIONS", args.iterations.to_string()),
        (
            "BENCH_NON_VIABLE",
            if args.non_viable { "yes" } else { "no" }.to_string(),
        ),
    ];
    let files = BootFiles {
        script: &script,
        policy: policy.as_deref(),
        dry_run: false,
        series: &kernel.series,
        env: &env,
    };
    let out = vm::runs_dir(&format!("bench-{}", kernel.series));
    say(format!(
        "vm-bench: kernel {} ({}), {} calls per measurement, 5 rounds, {}",
        kernel.series,
        kernel.release,
        args.iterations,
        if args.non_viable {
            "with a protected group (a device on vfio-pci), as on a passthrough node"
        } else {
            "with nothing protected"
        }
    ));
    let outcome = vm::boot_once(&kernel, &base, &files, None, &out)?;
    if let Some(p) = ending_problem(&outcome) {
        bail!("{p} (console: {})", outcome.console.display());
    }
    let fact = |key: &str| -> Option<f64> {
        vm::script_fact(&outcome.channel.script, key).and_then(|v| v.parse().ok())
    };
    // Emulator noise only ever adds time, so the fastest round of each side is the steadiest
    // estimate; the medians are printed too.
    let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    for (loop_key, what) in LOOPS {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        println!("{what}");
        println!("round  programs attached (ns/op)  detached (ns/op)");
        for round in 1..=ROUNDS {
            let (w, wo) = (
                fact(&format!("with_{loop_key}_{round}")),
                fact(&format!("without_{loop_key}_{round}")),
            );
            let show = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.0}"));
            println!("{round:>5}  {:>25}  {:>16}", show(w), show(wo));
            with.extend(w);
            without.extend(wo);
        }
        if with.len() != ROUNDS || without.len() != ROUNDS {
            bail!(
                "the benchmark script did not report every round of {what} (see {})",
                out.join("script.out").display()
            );
        }
        let (wf, wof) = (fastest(&with), fastest(&without));
        let (w, wo) = (median(with), median(without));
        println!(
            "{what}: fastest {wf:.0} ns/op attached, {wof:.0} detached: ratio {:.3} (goal <= 1.02); \
             median {w:.0} vs {wo:.0}: ratio {:.3}, {:+.0} ns per call under QEMU TCG",
            wf / wof,
            w / wo,
            w - wo
        );
    }
    say(format!("vm-bench: outputs in {}", out.display()));
    Ok(true)
}
