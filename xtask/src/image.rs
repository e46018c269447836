//! `cargo xtask image`: the agent's container image without a registry, and a smoke test of it in
//! a real container runtime.
//!
//! The image is deploy/Containerfile.runtime (the runtime stage deploy/Containerfile ends with)
//! built FROM scratch by podman (buildah inside) with the static `enforcer` that
//! [`artifacts::build_guest_bins`] builds (the eBPF object embedded) as the `rootfs` build
//! context, tagged `localhost/iommu-enforcer:<version>`. The smoke test runs it with runc and the
//! ulimits this kind of machine needs (docs/design.md section 5b): `--version`; `audit --json` of a
//! named fixture tree mounted read-only; the agent with the DaemonSet's args, capabilities and
//! mounts plus `--dry-run`, until `/readyz` answers and `/metrics` serves `build_info`.
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::artifacts;
use crate::setup;
use crate::util::{output, run, say, target_dir, workspace_root};

/// Debian packages: podman (with buildah's library for `podman build`), buildah, and runc, the
/// runtime that works with this machine's hybrid cgroups (crun does not).
const PACKAGES: &[&str] = &["podman", "buildah", "runc"];
const REPO: &str = "localhost/iommu-enforcer";
/// What every `podman run` needs here: no CAP_SYS_RESOURCE to raise limits past the host's, and
/// hybrid cgroups that only runc handles.
const RUN_FLAGS: &[&str] = &[
    "--rm",
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];
/// The fixture tree the audit smoke test mounts (tests/fixtures, crate iommu-fixtures).
const FIXTURE: &str = "consumer-gpu-audio-split";
/// The container's args in deploy/base/daemonset.yaml (a unit test checks they are there).
const DAEMONSET_ARGS: &[&str] = &[
    "--policy",
    "/etc/iommu-enforcer/policy.toml",
    "--metrics-addr",
    "0.0.0.0:9477",
    "--proc-root",
    "/host/proc",
];
/// Its capabilities (all others dropped).
const DAEMONSET_CAPS: &[&str] = &[
    "BPF",
    "PERFMON",
    "SYS_RESOURCE",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
];

pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

pub fn tag() -> String {
    format!("{REPO}:{}", version())
}

/// Builds the image and smoke-tests it; prints the image's `enforcer --version` line.
pub fn image() -> Result<()> {
    say("image: checking podman, buildah and runc (apt-get install -y podman buildah runc when missing)");
    setup::ensure_packages(PACKAGES)?;
    artifacts::build_ebpf()?;
    let bins = artifacts::build_guest_bins()?;
    let rootfs = target_dir().join("image/rootfs");
    stage_rootfs(&bins.enforcer, &rootfs)?;
    build(&rootfs)?;
    let version = smoke_version()?;
    smoke_audit()?;
    smoke_agent()?;
    println!("{version}");
    Ok(())
}

/// The root filesystem of the image: the binary and the base policy, nothing else.
fn stage_rootfs(enforcer: &Path, rootfs: &Path) -> Result<()> {
    if rootfs.exists() {
        fs::remove_dir_all(rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    }
    let bin = rootfs.join("usr/bin");
    let etc = rootfs.join("etc/iommu-enforcer");
    for dir in [&bin, &etc] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(enforcer, bin.join("enforcer"))
        .with_context(|| format!("copying {}", enforcer.display()))?;
    let policy = workspace_root().join("deploy/base/policy.toml");
    fs::copy(&policy, etc.join("policy.toml"))
        .with_context(|| format!("copying {}", policy.display()))?;
    Ok(())
}

fn build(rootfs: &Path) -> Result<()> {
    let root = workspace_root();
    let revision = output(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&root),
    )
    .map(|s| s.trim().to_owned())
    .unwrap_or_else(|_| "unknown".into());
    let created = output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?;
    say(format!(
        "image: podman build -f deploy/Containerfile.runtime -t {}",
        tag()
    ));
    run(Command::new("podman")
        .args(["build", "--pull=never", "-f"])
        .arg(root.join("deploy/Containerfile.runtime"))
        .arg("--build-context")
        .arg(format!("rootfs={}", rootfs.display()))
        .args(["--build-arg", &format!("VERSION={}", version())])
        .args(["--build-arg", &format!("REVISION={revision}")])
        .args(["--build-arg", &format!("CREATED={}", created.trim())])
        .args(["-t", &tag()])
        .arg(rootfs))
    .context("podman build of deploy/Containerfile.runtime failed")?;
    let labels = output(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{json .Labels}}",
        &tag(),
    ]))?;
    for key in [
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
    ] {
        ensure!(
            labels.contains(key),
            "image {} lacks label {key}: {labels}",
            tag()
        );
    }
    Ok(())
}

fn podman_run(args: &[&str]) -> Result<String> {
    output(Command::new("podman").arg("run").args(RUN_FLAGS).args(args))
}

fn smoke_version() -> Result<String> {
    let out = podman_run(&[&tag(), "--version"])?;
    let line = out.trim().to_owned();
    ensure!(
        line.contains(version()),
        "`enforcer --version` in the image printed {line:?}, not version {}",
        version()
    );
    say(format!("image: --version: {line}"));
    Ok(line)
}

/// `enforcer audit --json` on a named fixture tree, mounted read-only: the split group is found.
fn smoke_audit() -> Result<()> {
    let dir = target_dir().join("image/fixture");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    run(Command::new("cargo")
        .args([
            "run",
            "-q",
            "-p",
            "iommu-fixtures",
            "--bin",
            "mkfixture",
            "--",
            FIXTURE,
        ])
        .arg(&dir)
        .current_dir(workspace_root()))
    .context("mkfixture failed")?;
    let mount = format!("{}:/fixture:ro", dir.display());
    // Exit 1: violations exist (the fixture is a split group); output() wants 0, so run it raw.
    let out = Command::new("podman")
        .arg("run")
        .args(RUN_FLAGS)
        .args([
            "-v",
            &mount,
            &tag(),
            "audit",
            "--json",
            "--sysfs-root",
            "/fixture/sys",
        ])
        .args(["--proc-root", "/fixture/proc"])
        .output()
        .context("podman run (audit)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(1) && stdout.contains(r#""rule": "split_group""#),
        "audit of {FIXTURE} in the image: exit {:?}, stdout {stdout}, stderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    say(format!(
        "image: audit of {FIXTURE} (read-only mount): exit 1, split_group reported"
    ));
    Ok(())
}

/// The agent as the DaemonSet runs it (args, capabilities, mounts, seccomp and AppArmor
/// unconfined, read-only root, host PID namespace) plus `--dry-run`, on the host network on a free
/// loopback port. /sys is mounted read-only here (the DaemonSet mounts it read-write for pins,
/// which --dry-run never writes): the smoke test must not change the machine it runs on.
fn smoke_agent() -> Result<()> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let name = format!("iommu-enforcer-smoke-{port}");
    let mut args: Vec<String> = vec![
        "-d".into(),
        "--name".into(),
        name.clone(),
        "--network".into(),
        "host".into(),
        "--pid".into(),
        "host".into(),
        "--user".into(),
        "0:0".into(),
        "--read-only".into(),
        "--cap-drop".into(),
        "ALL".into(),
        "--security-opt".into(),
        "no-new-privileges".into(),
        "--security-opt".into(),
        "seccomp=unconfined".into(),
        "--security-opt".into(),
        "apparmor=unconfined".into(),
    ];
    for cap in DAEMONSET_CAPS {
        args.extend(["--cap-add".into(), (*cap).into()]);
    }
    for (host, container, mode) in [
        ("/sys", "/sys", "ro"),
        ("/sys/kernel/security", "/sys/kernel/security", "ro"),
        ("/sys/fs/bpf", "/sys/fs/bpf", "rw"),
        ("/sys/kernel/btf", "/sys/kernel/btf", "ro"),
        ("/proc", "/host/proc", "ro"),
    ] {
        if Path::new(host).exists() {
            args.extend(["-v".into(), format!("{host}:{container}:{mode}")]);
        }
    }
    args.push(tag());
    let addr = format!("127.0.0.1:{port}");
    for a in DAEMONSET_ARGS {
        args.push(if *a == "0.0.0.0:9477" {
            addr.clone()
        } else {
            (*a).into()
        });
    }
    args.push("--dry-run".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    podman_run(&refs).context("podman run (agent)")?;
    let result = wait_ready(&name, port);
    let logs = Command::new("podman")
        .args(["logs", &name])
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    let _ = Command::new("podman")
        .args(["rm", "-f", "-t", "5", &name])
        .output();
    match result {
        Ok(metrics) => {
            let enforcement = metrics
                .lines()
                .filter(|l| l.starts_with("iommu_enforcer_enforcement_active{"))
                .collect::<Vec<_>>()
                .join(", ");
            say(format!(
                "image: agent (DaemonSet flags, --dry-run): /readyz 200, build_info served; {enforcement}"
            ));
            Ok(())
        }
        Err(e) => bail!("{e:#}\n--- container log ---\n{logs}"),
    }
}

/// Polls /readyz until 200 (or the container exits); then /metrics must carry build_info.
fn wait_ready(name: &str, port: u16) -> Result<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = get(addr, "/readyz") {
            break;
        }
        let running = output(Command::new("podman").args([
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.ExitCode}}",
            name,
        ]))
        .unwrap_or_default();
        if running.starts_with("false") {
            bail!(
                "the agent exited before /readyz answered (running, exit code: {})",
                running.trim()
            );
        }
        if Instant::now() > deadline {
            bail!("/readyz did not answer 200 within 60 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, body) = get(addr, "/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    ensure!(
        body.lines()
            .any(|l| l.starts_with("iommu_enforcer_build_info{")),
        "/metrics has no iommu_enforcer_build_info:\n{body}"
    );
    Ok(body)
}

/// A minimal HTTP/1.0 GET: status code and body.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &str) -> String {
        fs::read_to_string(workspace_root().join(path)).expect(path)
    }

    /// The runtime stage of deploy/Containerfile (registry builds) is the one xtask builds.
    #[test]
    fn both_containerfiles_end_with_the_same_runtime_stage() {
        let marker = "# --- runtime stage ---\n";
        let stage = |path: &str| {
            let text = read(path);
            let at = text
                .find(marker)
                .unwrap_or_else(|| panic!("{path} has no {marker:?}"));
            text[at..].to_owned()
        };
        assert_eq!(
            stage("deploy/Containerfile"),
            stage("deploy/Containerfile.runtime")
        );
        let registry = read("deploy/Containerfile");
        assert!(
            registry.contains("FROM scratch AS rootfs\n"),
            "the rootfs stage"
        );
    }

    #[test]
    fn the_smoke_test_runs_the_daemonsets_args_and_capabilities() {
        let ds = read("deploy/base/daemonset.yaml");
        for arg in DAEMONSET_ARGS {
            assert!(
                ds.contains(&format!("- {arg}\n")),
                "daemonset.yaml lacks arg {arg}"
            );
        }
        for cap in DAEMONSET_CAPS {
            assert!(
                ds.contains(&format!("- {cap}\n")),
                "daemonset.yaml lacks capability {cap}"
            );
        }
    }
}
