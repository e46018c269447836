//! `cargo xtask vm-idle`: what the agent costs while nothing happens. tests/vm/idle.sh leaves
//! the test node's agent idle, then one on a synthetic sysfs tree of 1,000 devices, each for
//! 60 s, and reports per phase the context switches of its threads (each voluntary one is a
//! wakeup), CPU ticks and RSS. Goals (issue 10): no wakeup of the agent's own in an idle
//! minute, RSS <= 25 MiB with 1,000 devices.
use std::fs;

use anyhow::{bail, Context, Result};

use crate::initramfs::{self, BootFiles};
use crate::kernels::Kernel;
use crate::util::{say, workspace_root};
use crate::vm::{self, ending_problem};

const RSS_GOAL_KIB: u64 = 25 * 1024;

pub fn vm_idle(series: &str, seconds: u32, devices: u32) -> Result<bool> {
    let bins = vm::prepare()?;
    let kernel = Kernel::get(series)?;
    let base = initramfs::base(&kernel, &bins)?;
    let script_path = workspace_root().join("tests/vm/idle.sh");
    let script =
        fs::read(&script_path).with_context(|| format!("reading {}", script_path.display()))?;
    let env = [
        ("IDLE_SECONDS", seconds.to_string()),
        ("BENCH_DEVICES", devices.to_string()),
    ];
    let files = BootFiles {
        script: &script,
        setup: None,
        policy: None,
        dry_run: false,
        series: &kernel.series,
        env: &env,
    };
    let out = vm::runs_dir(&format!("idle-{}", kernel.series));
    say(format!(
        "vm-idle: kernel {} ({}), {seconds} s idle per phase, synthetic tree of {devices} devices",
        kernel.series, kernel.release
    ));
    let outcome = vm::boot_once(&kernel, &base, &files, None, &out)?;
    if let Some(p) = ending_problem(&outcome) {
        bail!("{p} (console: {})", outcome.console.display());
    }
    let fact = |key: &str| -> Option<u64> {
        vm::script_fact(&outcome.channel.script, key).and_then(|v| v.parse().ok())
    };
    let hz = fact("hz").unwrap_or(100);
    let mut met = true;
    for (phase, what) in [
        ("node", "the test node's agent"),
        ("synthetic", "an agent on the synthetic tree"),
    ] {
        let get = |k: &str| fact(&format!("{phase}_{k}"));
        let (Some(vol), Some(invol), Some(ticks), Some(rss), Some(hwm), Some(threads)) = (
            get("voluntary"),
            get("involuntary"),
            get("ticks"),
            get("rss_kib"),
            get("hwm_kib"),
            get("threads"),
        ) else {
            bail!(
                "the idle script did not report {what} (see {})",
                out.join("script.out").display()
            );
        };
        println!(
            "{what}: {seconds} s idle: {vol} voluntary + {invol} involuntary context switches, \
             {ticks} CPU ticks ({} ms), RSS {rss} KiB (peak {hwm} KiB), {threads} threads",
            ticks * 1000 / hz
        );
        met &= vol == 0;
        if phase == "synthetic" {
            let devices = fact("synthetic_devices").unwrap_or(0);
            println!(
                "  {devices} devices in {} groups; RSS goal <= {RSS_GOAL_KIB} KiB: {}",
                fact("synthetic_groups").unwrap_or(0),
                if rss <= RSS_GOAL_KIB {
                    "met"
                } else {
                    "NOT met"
                }
            );
            met &= rss <= RSS_GOAL_KIB;
        }
    }
    println!(
        "goals (0 wakeups per idle minute, RSS <= 25 MiB with {devices} devices): {}",
        if met { "met" } else { "NOT met" }
    );
    say(format!("vm-idle: outputs in {}", out.display()));
    Ok(met)
}
