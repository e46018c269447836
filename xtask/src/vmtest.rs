//! `cargo xtask vm-test`: every scenario on every kernel it applies to, two boots at a time (the
//! machine has two cores and each TCG guest keeps one busy).
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::arch::Arch;
use crate::checks::Checker;
use crate::initramfs::{self, BootFiles};
use crate::kernels::{self, Kernel};
use crate::scenarios::{self, Scenario, LSM_BPF};
use crate::util::{say, workspace_root};
use crate::vm::{self, ending_problem};

struct Job {
    scenario: &'static Scenario,
    series: &'static str,
    cmdline: Option<&'static str>,
}

impl Job {
    /// `<scenario>@<kernel>[+lsm-bpf|+<cmdline>][+dry-run]`: also the boot's directory name, so a
    /// scenario may appear twice (enforcing and dry-run) without the two overwriting each other.
    fn label(&self) -> String {
        let mut label = format!("{}@{}", self.scenario.name, self.series);
        match self.cmdline {
            Some(LSM_BPF) => label.push_str("+lsm-bpf"),
            Some(other) => {
                label.push('+');
                label.push_str(&other.replace([' ', '=', ','], "_"));
            }
            None => {}
        }
        if self.scenario.dry_run {
            label.push_str("+dry-run");
        }
        label
    }
}

struct Outcome {
    label: String,
    series: &'static str,
    problems: Vec<String>,
    elapsed: Duration,
}

pub struct Filter {
    pub kernel: Option<String>,
    pub scenario: Option<String>,
    pub jobs: usize,
}

/// Runs the boots; returns how many passed and failed (the caller prints the closing line).
pub fn vm_test(filter: &Filter) -> Result<(usize, usize)> {
    let started = Instant::now();
    let jobs: Vec<Job> = scenarios::all()
        .into_iter()
        .flat_map(|s| {
            s.boots.iter().map(move |(series, cmdline)| Job {
                scenario: s,
                series,
                cmdline: *cmdline,
            })
        })
        // Every series, 6.12-iommufd included: `Kernel::ready` below builds it on a machine's
        // first run (README: how long that takes).
        .filter(|j| {
            filter
                .kernel
                .as_deref()
                .is_none_or(|k| k.split(',').any(|k| k == j.series))
        })
        .filter(|j| {
            filter
                .scenario
                .as_deref()
                .is_none_or(|n| n.split(',').any(|n| n == j.scenario.name))
        })
        .collect();
    if jobs.is_empty() {
        anyhow::bail!("no scenario matches --kernel/--scenario");
    }
    let mut bins = HashMap::new();
    let mut bases: HashMap<&str, (Kernel, PathBuf)> = HashMap::new();
    for series in kernels::SERIES {
        if jobs.iter().any(|j| j.series == *series) {
            let arch = Arch::of_series(series);
            if let std::collections::hash_map::Entry::Vacant(e) = bins.entry(arch) {
                e.insert(vm::prepare_for(arch)?);
            }
            let kernel = Kernel::ready(series)?;
            let base = initramfs::base(&kernel, &bins[&arch])?;
            bases.insert(series, (kernel, base));
        }
    }
    say(format!(
        "vm-test: {} boots, {} at a time",
        jobs.len(),
        filter.jobs.max(1)
    ));

    let queue = Mutex::new(
        jobs.iter()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>(),
    );
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..filter.jobs.max(1) {
            // The guard is consumed inside and_then, so the queue is unlocked while a boot runs.
            scope.spawn(|| {
                while let Some(job) = queue.lock().ok().and_then(|mut q| q.pop()) {
                    let outcome = run_one(job, &bases);
                    let status = if outcome.problems.is_empty() {
                        "PASS"
                    } else {
                        "FAIL"
                    };
                    println!(
                        "{status} {} ({:.1} s)",
                        outcome.label,
                        outcome.elapsed.as_secs_f64()
                    );
                    for p in &outcome.problems {
                        println!("    {p}");
                    }
                    if let Ok(mut r) = results.lock() {
                        r.push(outcome);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();

    let mut per_kernel: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in &results {
        let e = per_kernel.entry(r.series).or_default();
        if r.problems.is_empty() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let failed: Vec<&Outcome> = results.iter().filter(|r| !r.problems.is_empty()).collect();
    if !failed.is_empty() {
        println!("failed boots (outputs under target/vm/runs/<name>/):");
        for r in &failed {
            println!(
                "  {}: {}",
                r.label,
                r.problems.first().map(String::as_str).unwrap_or("")
            );
        }
    }
    println!(
        "vm-test wall time: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for series in kernels::SERIES {
        if let Some((p, f)) = per_kernel.get(series) {
            println!("kernel {series}: {p} passed, {f} failed");
        }
    }
    let passed = results.len() - failed.len();
    Ok((passed, failed.len()))
}

fn run_one(job: &Job, bases: &HashMap<&str, (Kernel, PathBuf)>) -> Outcome {
    let label = job.label();
    let started = Instant::now();
    let problems = match boot_and_check(job, &label, bases) {
        Ok(p) => p,
        Err(e) => vec![format!("{e:#}")],
    };
    Outcome {
        label,
        series: job.series,
        problems,
        elapsed: started.elapsed(),
    }
}

fn boot_and_check(
    job: &Job,
    label: &str,
    bases: &HashMap<&str, (Kernel, PathBuf)>,
) -> Result<Vec<String>> {
    let (kernel, base) = bases.get(job.series).context("kernel not prepared")?;
    let dir = scenarios::folder(job.scenario.name);
    let script_path = dir.join("guest.sh");
    let script =
        fs::read(&script_path).with_context(|| format!("reading {}", script_path.display()))?;
    let setup_path = dir.join("setup.sh");
    let setup = if setup_path.is_file() {
        Some(fs::read(&setup_path).with_context(|| format!("reading {}", setup_path.display()))?)
    } else {
        None
    };
    let policy = match job.scenario.policy {
        Some(name) => {
            let path = workspace_root().join("tests/vm/policies").join(name);
            Some(fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let files = BootFiles {
        script: &script,
        setup: setup.as_deref(),
        policy: policy.as_deref(),
        dry_run: job.scenario.dry_run,
        series: job.series,
        env: &[],
    };
    let out = vm::runs_dir(label);
    let outcome = vm::boot_once(kernel, base, &files, job.cmdline, &out)?;
    // A crash or timeout makes every other finding noise: report it alone.
    if let Some(p) = ending_problem(&outcome) {
        return Ok(vec![format!(
            "{p} (console: {})",
            outcome.console.display()
        )]);
    }
    let c = Checker::new(job.series, job.cmdline, &outcome.channel);
    if !outcome.channel.ready {
        c.problem(format!(
            "agent never printed its ready line (stderr: {})",
            out.join("agent.stderr").display()
        ));
    }
    c.common();
    (job.scenario.check)(&c);
    Ok(c.into_problems())
}
