//! `cargo xtask test`: every test the project has, in the order that fails fastest: the lints
//! (seconds), the workspace's tests, then the checks that boot or build something, then every
//! VM scenario. One closing line counts them all.
use std::process::Command;

use anyhow::Result;

use crate::util::{say, workspace_root};
use crate::{bench, fuzz, idle, image, lint, metrics_scrape, setup, vmtest};

pub fn test() -> Result<bool> {
    setup::ensure()?;
    if !lint::lint()? {
        say("test: lint failed (cargo xtask lint); skipping the rest");
        return Ok(false);
    }
    // The eBPF object first, so the agent's tests build with it embedded.
    crate::artifacts::build_ebpf()?;
    say("test: cargo test --workspace");
    // Inherited stdout: its closing lines belong in the test log.
    let status = Command::new("cargo")
        .args(["test", "--workspace"])
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        say("test: cargo test --workspace failed; skipping the VM scenarios");
        return Ok(false);
    }
    let extra = node_checks();
    let (mut passed, mut failed) = vmtest::vm_test(&vmtest::Filter {
        kernel: None,
        scenario: None,
        jobs: 2,
    })?;
    for (name, ok) in extra {
        println!("{name}: {}", if ok { "passed" } else { "FAILED" });
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// The checks beyond the VM scenarios, each named with its result; an error is a failure,
/// printed, never the end of the run.
fn node_checks() -> Vec<(String, bool)> {
    let mut done = Vec::new();
    let mut check = |name: &str, what: &str, run: &dyn Fn() -> Result<bool>| {
        say(format!("test: {name} ({what})"));
        let ok = run().unwrap_or_else(|e| {
            println!("FAIL {name}: {e:#}");
            false
        });
        done.push((name.to_string(), ok));
    };
    check(
        "deploy validation",
        "tests/deploy/validate.sh: manifests, alert rules",
        &|| {
            Ok(Command::new("bash")
                .arg(workspace_root().join("tests/deploy/validate.sh"))
                .current_dir(workspace_root())
                .status()
                .is_ok_and(|s| s.success()))
        },
    );
    check("fuzz", "each target 30 s, cargo xtask fuzz", &|| {
        fuzz::fuzz(30)
    });
    check("image", "built FROM scratch, smoke test in podman", &|| {
        image::image().map(|()| true)
    });
    check(
        "vm-metrics",
        "Prometheus scrapes the agent in the test node",
        &|| metrics_scrape::vm_metrics("6.1"),
    );
    // The cost figures, in every run, with their goals checked: the idle agent's wakeups and
    // RSS (0 wakeups of its own per idle minute, <= 25 MiB with 1,000 devices), and the hooks'
    // cost in exact instruction counts with a group in use (read/write <= 1.02x detached,
    // open+close <= 1.03x).
    check(
        "vm-idle",
        "the idle agent's wakeups, CPU and RSS, 60 s per phase",
        &|| idle::vm_idle("6.12", 60, 1000),
    );
    for series in ["6.1", "6.12"] {
        check(
            &format!("vm-bench {series}"),
            "vm-bench --icount: instructions per call",
            &|| {
                bench::vm_bench(&bench::BenchArgs {
                    kernel: series.into(),
                    policy: None,
                    iterations: 20_000,
                    non_viable: false,
                    icount: true,
                })
            },
        );
    }
    done
}
