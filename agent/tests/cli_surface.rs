//! The command line itself: version, per-subcommand flags, errors that say what is wrong, the
//! log formats and the shell completions.
use std::process::{Command, Output};

const ENFORCER: &str = env!("CARGO_BIN_EXE_enforcer");

fn run(args: &[&str]) -> Output {
    Command::new(ENFORCER)
        .args(args)
        .output()
        .expect("enforcer runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let line = stdout(&out);
    // enforcer 0.1.0 (commit 0123456789ab, built 2026-12-07)
    assert!(
        line.starts_with(&format!("enforcer {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    let built = line
        .split(", built ")
        .nth(1)
        .and_then(|r| r.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("no build date: {line}"));
    let parts: Vec<&str> = built.split('-').collect();
    assert_eq!(parts.len(), 3, "{built}");
    assert!(
        parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())),
        "{built}"
    );
}

/// `enforcer SUB --help` lists the long options it takes.
fn flags(sub: &[&str]) -> Vec<String> {
    let mut args = sub.to_vec();
    args.push("--help");
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(',').to_owned())
        .collect()
}

#[test]
fn each_subcommand_lists_only_the_flags_that_mean_something_to_it() {
    let agent_only = [
        "--dry-run",
        "--metrics-addr",
        "--ebpf-object",
        "--host-root",
        "--cgroup-root",
        "--cri-state-dir",
        "--map-layout",
    ];
    for sub in ["audit", "groups", "status", "detach", "completions"] {
        let listed = flags(&[sub]);
        for f in agent_only {
            assert!(!listed.iter().any(|l| l == f), "`{sub} --help` lists {f}");
        }
        for f in ["--log-level", "--log-format"] {
            assert!(listed.iter().any(|l| l == f), "`{sub} --help` lacks {f}");
        }
    }
    for sub in ["audit", "groups"] {
        let listed = flags(&[sub]);
        assert!(!listed.iter().any(|l| l == "--pin-root"), "{sub}");
        for f in ["--json", "--policy", "--sysfs-root", "--proc-root"] {
            assert!(listed.iter().any(|l| l == f), "`{sub} --help` lacks {f}");
        }
    }
    for sub in ["status", "detach"] {
        let listed = flags(&[sub]);
        assert!(!listed.iter().any(|l| l == "--policy"), "{sub}");
        assert!(listed.iter().any(|l| l == "--pin-root"), "{sub}");
    }
    let detach = flags(&["detach"]);
    assert!(!detach.iter().any(|l| l == "--json"));
    for f in ["--force", "--if-present", "--nfd-features-dir"] {
        assert!(detach.iter().any(|l| l == f), "detach lacks {f}");
    }
    // The agent's own help has its options and the hidden test-only one stays hidden.
    let agent = flags(&[]);
    for f in ["--dry-run", "--metrics-addr", "--pin-root", "--log-format"] {
        assert!(agent.iter().any(|l| l == f), "agent lacks {f}");
    }
    assert!(!agent.iter().any(|l| l == "--map-layout"));
}

#[test]
fn an_agent_option_with_a_subcommand_is_an_error() {
    for args in [
        &["--dry-run", "audit"][..],
        &["--metrics-addr", "127.0.0.1:1", "groups"],
        &["--pin-root", "/sys/fs/bpf/x", "status"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(args[0]), "{args:?}: {err}");
        assert!(err.contains("means nothing to"), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    // The log options go anywhere.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8");
    let out = run(&[
        "--log-level",
        "warn",
        "detach",
        "--if-present",
        "--pin-root",
        &format!("{root}/none"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn detach_of_a_mistyped_pin_root_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("iommu-enforcr");
    let typo = typo.to_str().expect("utf-8");
    let out = run(&["detach", "--pin-root", typo]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains(typo) && err.contains("--pin-root"), "{err}");
    assert!(!stdout(&out).contains("removed 0 pins"));
    // A directory that exists but is not on bpffs is no pin root either: nothing is removed.
    let out = run(&["detach", "--pin-root", dir.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bpffs"), "{}", stderr(&out));
    assert!(dir.path().exists());
    // An uninstall on a node where the agent never ran: --if-present.
    let out = run(&["detach", "--if-present", "--pin-root", typo]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("nothing pinned"), "{}", stdout(&out));
}

#[test]
fn detach_clears_the_node_label_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let labels = dir.path().join("iommu-enforcer");
    std::fs::write(&labels, "iommu-enforcer.io/enforcement=active\n").expect("write");
    let out = run(&[
        "detach",
        "--if-present",
        "--pin-root",
        dir.path().join("pins").to_str().expect("utf-8"),
        "--nfd-features-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!labels.exists(), "the label file is gone");
}

#[test]
fn json_logs_are_one_object_per_line_on_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = iommu_fixtures::fixture("viable-passthrough").expect("fixture");
    let node = iommu_fixtures::build(spec, dir.path()).expect("fixture builds");
    let out = Command::new(ENFORCER)
        .args([
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "groups",
            "--json",
        ])
        .arg("--sysfs-root")
        .arg(&node.sysfs)
        .arg("--proc-root")
        .arg(&node.proc)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "debug logs nothing");
    for l in &lines {
        for key in ["time", "level", "target", "message"] {
            assert!(l[key].is_string(), "{key} in {l}");
        }
    }
    assert!(lines.iter().any(|l| l["level"] == "debug"));
    // stdout stays the report alone.
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("the report is JSON");
    // At info nothing is said by a report.
    let out = Command::new(ENFORCER)
        .args(["groups", "--log-level", "info", "--sysfs-root"])
        .arg(&node.sysfs)
        .arg("--proc-root")
        .arg(&node.proc)
        .output()
        .expect("runs");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let out = run(&["--log-format", "yaml", "status"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["audit", "detach", "pin-root", "log-format"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Without CAP_BPF the agent names the capability once, instead of one failed map creation
/// per map. Needs root (to drop to nobody) and setpriv; skipped otherwise.
#[test]
fn without_privileges_the_agent_names_the_missing_capability() {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false);
    if !root || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(ENFORCER)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .output()
        .expect("setpriv runs");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("CAP_BPF"), "{err}");
    assert!(!err.contains("failed to create map"), "{err}");
    assert!(out.stdout.is_empty());
}
