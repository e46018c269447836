//! Builds what goes into the guest: the eBPF object, and static `enforcer` and `vfio-holder`
//! binaries (the guest has no libc, only busybox).
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{clean_cargo_env, run, say, target_dir, workspace_root};

/// Where the agent's build.rs looks for the eBPF object.
pub fn ebpf_object() -> PathBuf {
    target_dir().join("ebpf/iommu-enforcer.bpf.o")
}

/// `cargo xtask build-ebpf`: builds ebpf/ on nightly for bpfel-unknown-none with BTF and copies the
/// object to `target/ebpf/iommu-enforcer.bpf.o`.
pub fn build_ebpf() -> Result<()> {
    let dir = workspace_root().join("ebpf");
    if !dir.join("Cargo.toml").is_file() {
        bail!("{} has no Cargo.toml: nothing to build", dir.display());
    }
    say("build-ebpf: building the eBPF programs (nightly, bpfel-unknown-none, build-std=core)");
    let mut cmd = Command::new("cargo");
    clean_cargo_env(&mut cmd)
        .args([
            "+nightly",
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .current_dir(&dir)
        // A parent `cargo run` pins the stable toolchain through this; `+nightly` must win.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env(
            "RUSTFLAGS",
            r#"--cfg=bpf_target_arch="x86_64" -Cdebuginfo=2 -Clink-arg=--btf"#,
        );
    run(&mut cmd).context("building the eBPF programs failed")?;
    let built = dir.join("target/bpfel-unknown-none/release/iommu-enforcer-ebpf");
    let dest = ebpf_object();
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    // Copied only when it changed: a fresh mtime on the same bytes would make cargo rebuild the
    // agent that embeds it (about 30 s for each static build of a `cargo xtask test` run).
    let object = fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    if fs::read(&dest).ok().as_deref() != Some(object.as_slice()) {
        fs::write(&dest, &object).with_context(|| format!("writing {}", dest.display()))?;
    }
    say(format!(
        "build-ebpf: {} ({} bytes)",
        dest.display(),
        fs::metadata(&dest)?.len()
    ));
    Ok(())
}

/// Static binaries for the guest.
pub struct GuestBins {
    pub enforcer: PathBuf,
    pub holder: PathBuf,
    /// Guest tools of tests/vm/tools (`sysfs-write`, `open-bench`), when that crate exists, and
    /// the holder crate's `pod-resources-server`.
    pub tools: Vec<(String, PathBuf)>,
}

/// Binaries of the `vm-tools` crate that go on the guest's PATH.
const TOOLS: &[&str] = &[
    "sysfs-write",
    "open-bench",
    "uring-linked",
    "ptrace-run",
    "with-caps",
    "acct-on",
    "bind-race",
    "cdev-bind",
    "open-flood",
    "conn-flood",
    "lsm-noop",
    "bar-poke",
    "buffer-race",
    // iommu-fixtures: the synthetic sysfs tree of the idle benchmark.
    "mkfixture",
];

/// Builds `enforcer` (with the eBPF object embedded), `vfio-holder` and the guest tools statically
/// linked, in their own target dir so that the crt-static flags never invalidate the workspace's
/// normal builds.
pub fn build_guest_bins() -> Result<GuestBins> {
    const TRIPLE: &str = "x86_64-unknown-linux-gnu";
    let dir = target_dir().join("vm/static");
    let with_tools = workspace_root().join("tests/vm/tools/Cargo.toml").is_file();
    say("vm: building static enforcer, vfio-holder and guest tools for the guest");
    let mut cmd = Command::new("cargo");
    clean_cargo_env(&mut cmd)
        .args([
            "build",
            "--release",
            "-p",
            "iommu-enforcer",
            "-p",
            "vfio-holder",
        ])
        .args(if with_tools {
            &["-p", "vm-tools", "-p", "iommu-fixtures"][..]
        } else {
            &[][..]
        })
        .args(["--target", TRIPLE])
        .arg("--target-dir")
        .arg(&dir)
        .current_dir(workspace_root())
        // With an explicit --target these flags reach only the target binaries, not build scripts.
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    run(&mut cmd).context("building the guest binaries failed")?;
    let release = dir.join(TRIPLE).join("release");
    let mut tools: Vec<(String, PathBuf)> = if with_tools {
        TOOLS
            .iter()
            .map(|t| (t.to_string(), release.join(t)))
            .collect()
    } else {
        Vec::new()
    };
    // The holder crate's fake kubelet (the pod-resources scenario).
    tools.push((
        "pod-resources-server".to_string(),
        release.join("pod-resources-server"),
    ));
    Ok(GuestBins {
        enforcer: release.join("enforcer"),
        holder: release.join("vfio-holder"),
        tools,
    })
}
