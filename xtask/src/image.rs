//! `cargo xtask image`: the agent's container image without a registry, and a smoke test of it in
//! a real container runtime.
//!
//! The image is deploy/Containerfile.runtime (the runtime stage deploy/Containerfile ends with)
//! built FROM scratch by podman (buildah inside) with the static `enforcer` that
//! [`artifacts::build_guest_bins_for`] builds (the eBPF object embedded) as the `rootfs` build
//! context, tagged `localhost/iommu-enforcer:<version>`. The smoke test runs it with runc and the
//! ulimits this kind of machine needs (docs/design.md section 5b): `--version`; `audit --json` of a
//! named fixture tree mounted read-only; the agent with the DaemonSet's args, capabilities and
//! mounts plus `--dry-run`, until `/readyz` answers and `/metrics` serves `build_info`.
//!
//! Multi-arch: the same runtime stage is built twice, `--platform linux/amd64` and
//! `linux/arm64` (FROM scratch and COPY only, so no emulation is needed to build), from the
//! x86_64 and the cross-built aarch64 static binaries (each with its own architecture's eBPF
//! object), tagged `<version>-amd64` and `<version>-arm64`; `<version>` itself is a manifest
//! list of both. The arm64 image's smoke test (`--version`, `audit` of the fixture) runs its
//! binary under QEMU user-mode emulation: `qemu-aarch64-static` (Debian's qemu-user-static) is
//! bind-mounted into the container as its entrypoint, since this machine registers no
//! binfmt_misc handler (and registering one is a host-wide change a build must not make).
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::arch::Arch;
use crate::artifacts;
use crate::setup;
use crate::util::{output, run, say, target_dir, workspace_root};

/// Debian packages: podman (with buildah's library for `podman build`), buildah, and runc, the
/// runtime that works with this machine's hybrid cgroups (crun does not).
const PACKAGES: &[&str] = &["podman", "buildah", "runc", "qemu-user-static"];
/// The user-mode emulator the arm64 smoke test runs the image's binary with.
const QEMU_AARCH64: &str = "/usr/bin/qemu-aarch64-static";
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

/// The manifest list of both architectures.
pub fn tag() -> String {
    format!("{REPO}:{}", version())
}

/// One architecture's image.
pub fn arch_tag(arch: Arch) -> String {
    format!("{REPO}:{}-{}", version(), arch.debian())
}

/// Builds the image for both architectures and smoke-tests each; prints each image's
/// `enforcer --version` line.
pub fn image() -> Result<()> {
    say("image: checking podman, buildah, runc and qemu-user-static (apt-get install -y when missing)");
    setup::ensure_packages(PACKAGES)?;
    let mut lines = Vec::new();
    for arch in [Arch::X86_64, Arch::Arm64] {
        artifacts::build_ebpf_for(arch)?;
        let bins = artifacts::build_guest_bins_for(arch)?;
        let rootfs = target_dir().join(format!("image/rootfs-{}", arch.debian()));
        stage_rootfs(&bins.enforcer, &rootfs)?;
        build(&rootfs, arch)?;
        lines.push(smoke_version(arch)?);
        smoke_audit(arch)?;
    }
    smoke_agent()?;
    manifest()?;
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// `<version>`: a manifest list of the two images, rebuilt from scratch every run; checked to
/// name linux/amd64 and linux/arm64.
fn manifest() -> Result<()> {
    let list = tag();
    // A list of that name from an earlier run is removed; an image holding the name (an
    // earlier single-arch build) only loses the name, never its layers: someone else's run may
    // be using it. Absent is fine.
    let removed = Command::new("podman")
        .args(["manifest", "rm", &list])
        .output()
        .is_ok_and(|o| o.status.success());
    if !removed {
        let _ = Command::new("podman")
            .args(["untag", &list, &list])
            .output();
    }
    run(Command::new("podman").args(["manifest", "create", &list]))?;
    for arch in [Arch::X86_64, Arch::Arm64] {
        run(Command::new("podman").args([
            "manifest",
            "add",
            &list,
            &format!("containers-storage:{}", arch_tag(arch)),
        ]))?;
    }
    let inspect = output(Command::new("podman").args(["manifest", "inspect", &list]))?;
    let json: serde_json::Value =
        serde_json::from_str(&inspect).context("podman manifest inspect is not JSON")?;
    let platforms: Vec<String> = json["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["platform"]["os"].as_str().unwrap_or("?"),
                        e["platform"]["architecture"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        platforms == ["linux/amd64", "linux/arm64"],
        "manifest list {list} names {platforms:?}, not linux/amd64 and linux/arm64"
    );
    say(format!(
        "image: manifest list {list}: {}",
        platforms.join(", ")
    ));
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

fn build(rootfs: &Path, arch: Arch) -> Result<()> {
    let enforcer = fs::read(rootfs.join("usr/bin/enforcer"))?;
    ensure!(
        crate::elf::machine(&enforcer) == Some(arch.elf_machine()),
        "{} holds an enforcer that is not {}",
        rootfs.display(),
        arch.debian()
    );
    let root = workspace_root();
    let revision = output(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&root),
    )
    .map(|s| s.trim().to_owned())
    .unwrap_or_else(|_| "unknown".into());
    let created = output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?;
    let tag = arch_tag(arch);
    say(format!(
        "image: podman build --platform linux/{} -f deploy/Containerfile.runtime -t {tag}",
        arch.debian()
    ));
    run(Command::new("podman")
        .args(["build", "--pull=never"])
        .arg(format!("--platform=linux/{}", arch.debian()))
        .arg("-f")
        .arg(root.join("deploy/Containerfile.runtime"))
        .arg("--build-context")
        .arg(format!("rootfs={}", rootfs.display()))
        .args(["--build-arg", &format!("VERSION={}", version())])
        .args(["--build-arg", &format!("REVISION={revision}")])
        .args(["--build-arg", &format!("CREATED={}", created.trim())])
        .args(["-t", &tag])
        .arg(rootfs))
    .context("podman build of deploy/Containerfile.runtime failed")?;
    let labels = output(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{json .Labels}} {{.Architecture}}",
        &tag,
    ]))?;
    ensure!(
        labels.trim_end().ends_with(&format!(" {}", arch.debian())),
        "image {tag} is not of architecture {}: {labels}",
        arch.debian()
    );
    for key in [
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
    ] {
        ensure!(
            labels.contains(key),
            "image {tag} lacks label {key}: {labels}"
        );
    }
    Ok(())
}

fn podman_run(args: &[&str]) -> Result<String> {
    output(Command::new("podman").arg("run").args(RUN_FLAGS).args(args))
}

/// The `podman run` arguments that run the image of `arch` with `args`: natively on amd64; on
/// arm64 its own /usr/bin/enforcer under qemu-aarch64-static (user-mode emulation, mounted in).
fn run_args(arch: Arch, mounts: &[String], args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in mounts {
        out.extend(["-v".to_string(), m.clone()]);
    }
    if arch == Arch::Arm64 {
        out.extend([
            "--platform=linux/arm64".to_string(),
            "-v".to_string(),
            format!("{QEMU_AARCH64}:/qemu-aarch64:ro"),
            "--entrypoint".to_string(),
            "/qemu-aarch64".to_string(),
            arch_tag(arch),
            "/usr/bin/enforcer".to_string(),
        ]);
    } else {
        out.push(arch_tag(arch));
    }
    out.extend(args.iter().map(|a| a.to_string()));
    out
}

fn smoke_version(arch: Arch) -> Result<String> {
    let args = run_args(arch, &[], &["--version"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = podman_run(&refs)?;
    let line = out.trim().to_owned();
    ensure!(
        line.contains(version()),
        "`enforcer --version` in the {} image printed {line:?}, not version {}",
        arch.debian(),
        version()
    );
    say(format!("image: {} --version: {line}", arch.debian()));
    Ok(format!("{}: {line}", arch.debian()))
}

/// `enforcer audit --json` on a named fixture tree, mounted read-only: the split group is found.
fn smoke_audit(arch: Arch) -> Result<()> {
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
    let args = run_args(
        arch,
        &[mount],
        &[
            "audit",
            "--json",
            "--sysfs-root",
            "/fixture/sys",
            "--proc-root",
            "/fixture/proc",
        ],
    );
    // Exit 1: violations exist (the fixture is a split group); output() wants 0, so run it raw.
    let out = Command::new("podman")
        .arg("run")
        .args(RUN_FLAGS)
        .args(&args)
        .output()
        .context("podman run (audit)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(1) && stdout.contains(r#""rule": "split_group""#),
        "audit of {FIXTURE} in the {} image: exit {:?}, stdout {stdout}, stderr {}",
        arch.debian(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    say(format!(
        "image: {} audit of {FIXTURE} (read-only mount): exit 1, split_group reported",
        arch.debian()
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
    // The native image: the agent itself (eBPF, the host's kernel) is not emulated.
    args.push(arch_tag(Arch::X86_64));
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
