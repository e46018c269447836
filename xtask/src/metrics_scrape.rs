//! `cargo xtask vm-metrics`: a real Prometheus on the host scrapes the agent running in the test
//! node (QEMU user networking forwards a loopback port to the agent's :9477) while the guest keeps
//! producing a kernel refusal and a veto; every dashboard panel query is then evaluated through
//! Prometheus's HTTP API by the agent's metrics_prometheus test pointed at that port.
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::initramfs::{self, BootFiles};
use crate::kernels::Kernel;
use crate::util::{say, workspace_root};
use crate::vm::{self, ending_problem};

const AGENT_PORT: u16 = 9477;
/// The guest script waits for a connection here before it stops feeding the panels.
const DONE_PORT: u16 = 9999;
/// Panels this run must fill beyond those any agent fills.
const EXPECT_DATA: &str = "Violations and vetoes by rule,Kernel refusals,Groups by owner,Enforcement active per node,Reserved groups";

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One plain HTTP/1.0 GET on loopback; the body, or None while the guest is not up yet.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

pub fn vm_metrics(series: &str) -> Result<bool> {
    let bins = vm::prepare()?;
    let kernel = Kernel::ready(series)?;
    let base = initramfs::base(&kernel, &bins)?;
    let root = workspace_root();
    let script = fs::read(root.join("tests/vm/metrics-scrape.sh"))?;
    let policy = fs::read(root.join("tests/vm/policies/metrics-scrape.toml"))?;
    let (metrics_port, done_port) = (free_port()?, free_port()?);
    let out = vm::runs_dir(&format!("metrics-{series}"));
    say(format!(
        "vm-metrics: kernel {series}; the agent's /metrics on 127.0.0.1:{metrics_port}"
    ));
    let files = BootFiles {
        script: &script,
        setup: None,
        policy: Some(&policy),
        dry_run: false,
        series: &kernel.series,
        env: &[],
    };
    let forwards = [(metrics_port, AGENT_PORT), (done_port, DONE_PORT)];
    let (outcome, checked) = std::thread::scope(|scope| {
        let boot =
            scope.spawn(|| vm::boot_forwarding(&kernel, &base, &files, None, &out, &forwards));
        let checked = scrape_and_check(metrics_port, &out.join("metrics.txt"));
        // Whatever happened, let the guest finish.
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", done_port)) {
            let _ = s.write_all(b"done\n");
        }
        let outcome = boot
            .join()
            .map_err(|_| anyhow::anyhow!("the boot thread panicked"));
        (outcome, checked)
    });
    let outcome = outcome??;
    let mut ok = true;
    if let Some(p) = ending_problem(&outcome) {
        println!("FAIL vm-metrics@{series}: {p}");
        ok = false;
    }
    match checked {
        Ok(()) => {}
        Err(e) => {
            println!("FAIL vm-metrics@{series}: {e:#}");
            ok = false;
        }
    }
    let script_out = &outcome.channel.script;
    // Some round of the guest's loop saw the kernel's refusal and some saw the veto. The first
    // round may see EAGAIN instead: the bus-wide bind is refused at open until the agent arms
    // the write-time check (docs/cost.md), which it keeps for 10 s after each request.
    for (fact, want) in [
        ("refusal_", "EBUSY"),
        ("veto_", "EPERM"),
        ("host_done", "done"),
    ] {
        let said = |l: &str| {
            l.trim()
                .strip_prefix("@fact ")
                .and_then(|f| f.split_once('='))
                .is_some_and(|(k, v)| {
                    v == want && (k == fact || (fact.ends_with('_') && k.starts_with(fact)))
                })
        };
        if !script_out.lines().any(said) {
            println!("FAIL vm-metrics@{series}: the guest reported no {fact}*={want}");
            ok = false;
        }
    }
    println!(
        "{} vm-metrics@{series} (outputs in {})",
        if ok { "PASS" } else { "FAIL" },
        out.display()
    );
    Ok(ok)
}

/// Waits until the agent's metrics show the refusal and the veto, then runs the Prometheus check.
fn scrape_and_check(port: u16, sample: &std::path::Path) -> Result<()> {
    let start = Instant::now();
    let wanted = [
        "iommu_enforcer_kernel_refusals_total{",
        "iommu_enforcer_violations_total{action=\"vetoed\"",
    ];
    loop {
        if let Some(body) = get(port, "/metrics") {
            if wanted.iter().all(|w| body.contains(w)) {
                // Kept as a sample of a real scrape (target/vm/runs/metrics-<kernel>/metrics.txt).
                let _ = fs::write(sample, &body);
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(200) {
            bail!("the agent's metrics never showed a kernel refusal and a veto");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    say(format!(
        "vm-metrics: refusal and veto counted after {:.0} s; promtool checks the real scrape",
        start.elapsed().as_secs_f64()
    ));
    // The exposition the agent in the guest really served, linted as Prometheus would.
    let lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(fs::File::open(sample).context("the saved scrape")?)
        .output()
        .context("running promtool (cargo xtask setup installs it)")?;
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    if !lint.status.success() || !findings.trim().is_empty() {
        bail!("promtool check metrics on {}: {findings}", sample.display());
    }
    say("vm-metrics: promtool check metrics: clean; Prometheus scrapes the guest now");
    let status = Command::new(env!("CARGO"))
        .args([
            "test",
            "-p",
            "iommu-enforcer",
            "--test",
            "metrics_prometheus",
            "--",
            "--nocapture",
        ])
        .env("IOMMU_ENFORCER_METRICS_TARGET", format!("127.0.0.1:{port}"))
        .env("IOMMU_ENFORCER_EXPECT_DATA", EXPECT_DATA)
        .current_dir(workspace_root())
        .status()
        .context("running the metrics_prometheus test")?;
    if !status.success() {
        bail!("the dashboard queries against the guest's agent failed (see the test output above)");
    }
    Ok(())
}
