//! `enforcer audit --json` against the classic bash + lspci loop people paste to
//! list IOMMU groups, on one synthetic node (default 10,000 PCI devices).
//!
//! `cargo bench -p iommu-enforcer --bench audit_vs_lspci`
//!
//! Environment: `AUDIT_BENCH_DEVICES` (node size, default 10000), `AUDIT_BENCH_RUNS`
//! (timed audit runs, default 5), `AUDIT_BENCH_LSPCI_GROUPS` (time the lspci loop
//! on the first N groups only; default: all of them, once).
//!
//! The loop passes `sysfs.path=$SYS/bus/pci`: pciutils' sysfs backend lists
//! `<sysfs.path>/devices`, so pointing it at the sysfs mount itself fails with
//! "sysfs_scan: Couldn't parse entry name pci0000:00".
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LSPCI_LOOP: &str = r#"for g in $(find $SYS/kernel/iommu_groups/* -maxdepth 0 -type d | sort -V | head -n $LIMIT); do
  echo "IOMMU Group ${g##*/}:"
  for d in $g/devices/*; do echo -e "\t$(lspci -nns ${d##*/} -O sysfs.path=$SYS/bus/pci)"; done
done"#;

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}=`{v}` is not a number")),
        Err(_) => default,
    }
}

fn main() {
    let devices = env_number("AUDIT_BENCH_DEVICES", 10_000);
    let runs = env_number("AUDIT_BENCH_RUNS", 5).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let node = iommu_fixtures::build(&iommu_fixtures::synthetic(devices), dir.path())
        .unwrap_or_else(|e| panic!("building the synthetic node: {e:#}"));
    let groups = std::fs::read_dir(node.sysfs.join("kernel/iommu_groups"))
        .expect("iommu_groups")
        .count();
    println!(
        "node: {devices} PCI devices in {groups} groups, built in {:.1} s at {}",
        started.elapsed().as_secs_f64(),
        node.root.display()
    );

    let audit = time_audit(&node, runs);
    let lspci_groups = env_number("AUDIT_BENCH_LSPCI_GROUPS", groups).min(groups);
    let (lspci, listed) = time_lspci_loop(&node, lspci_groups);

    let scope = if lspci_groups == groups {
        "full node".to_string()
    } else {
        format!("first {lspci_groups} of {groups} groups")
    };
    println!(
        "enforcer audit --json: median {:.3} s, min {:.3} s over {runs} runs",
        secs(audit.0),
        secs(audit.1)
    );
    println!(
        "bash + lspci loop:     {:.3} s, one run, {scope} ({listed} devices listed)",
        secs(lspci)
    );
    println!(
        "ratio: the lspci loop takes {:.0}x as long as the audit (per device: {:.1} us vs {:.1} ms)",
        secs(lspci) / secs(audit.0) * devices as f64 / listed.max(1) as f64,
        secs(audit.0) * 1e6 / devices as f64,
        secs(lspci) * 1e3 / listed.max(1) as f64,
    );
    if lspci_groups != groups {
        println!(
            "(ratio extrapolates the loop linearly from the measured subset to the full node)"
        );
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Median and minimum wall time of `enforcer audit --json`, after one warm-up.
fn time_audit(node: &iommu_fixtures::Node, runs: usize) -> (Duration, Duration) {
    let run = || {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_enforcer"))
            .arg("audit")
            .arg("--json")
            .arg("--sysfs-root")
            .arg(&node.sysfs)
            .arg("--proc-root")
            .arg(&node.proc)
            .stderr(Stdio::inherit())
            .output()
            .expect("running enforcer");
        let elapsed = started.elapsed();
        // Exit 1 means violations were found: expected on this node.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "enforcer audit failed: {}",
            out.status
        );
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("audit --json output");
        assert!(
            report["groups"].as_array().is_some_and(|g| !g.is_empty()),
            "no groups in the report"
        );
        elapsed
    };
    run();
    let mut times: Vec<Duration> = (0..runs).map(|_| run()).collect();
    times.sort();
    (times[times.len() / 2], times[0])
}

/// Wall time of the bash loop over the first `groups` groups, and how many
/// device lines it printed.
fn time_lspci_loop(node: &iommu_fixtures::Node, groups: usize) -> (Duration, usize) {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(LSPCI_LOOP)
        .env("SYS", &node.sysfs)
        .env("LIMIT", groups.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("running bash (and lspci: apt-get install -y pciutils)");
    let elapsed = started.elapsed();
    assert!(out.status.success(), "lspci loop failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let listed = text
        .lines()
        .filter(|l| l.starts_with('\t') && l.contains("]:"))
        .count();
    let headers = text
        .lines()
        .filter(|l| l.starts_with("IOMMU Group"))
        .count();
    assert_eq!(headers, groups, "the loop printed every group");
    (elapsed, listed)
}
