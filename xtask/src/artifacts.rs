//! Builds what goes into the guest: the eBPF object, and static `enforcer` and `vfio-holder`
//! binaries (the guest has no libc, only busybox).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::arch::Arch;
use crate::util::{clean_cargo_env, run, say, target_dir, workspace_root};

/// `cargo xtask build-ebpf`: builds ebpf/ on nightly for bpfel-unknown-none with BTF and copies the
/// object to `target/ebpf/iommu-enforcer.bpf.o`.
pub fn build_ebpf() -> Result<()> {
    build_ebpf_for(Arch::X86_64)
}

/// `cargo +nightly SUBCOMMAND --release` on ebpf/ for bpfel-unknown-none (build-std=core), with
/// the RUSTFLAGS of `arch`: what `build-ebpf` builds with and `lint` runs clippy with.
pub fn ebpf_cargo(arch: Arch, subcommand: &str, cargo_target: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    clean_cargo_env(&mut cmd)
        .args([
            "+nightly",
            subcommand,
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(cargo_target)
        .current_dir(workspace_root().join("ebpf"))
        // A parent `cargo run` pins the stable toolchain through this; `+nightly` must win.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env(
            "RUSTFLAGS",
            format!(
                r#"--cfg=bpf_target_arch="{}" -Cdebuginfo=2 -Clink-arg=--btf"#,
                arch.bpf_target_arch()
            ),
        );
    cmd
}

/// The eBPF object of `arch` (`--cfg bpf_target_arch`), each in its own cargo target dir so
/// that building one never invalidates the other; copied to [`Arch::ebpf_object`].
pub fn build_ebpf_for(arch: Arch) -> Result<()> {
    let dir = workspace_root().join("ebpf");
    if !dir.join("Cargo.toml").is_file() {
        bail!("{} has no Cargo.toml: nothing to build", dir.display());
    }
    let bpf_arch = arch.bpf_target_arch();
    say(format!(
        "build-ebpf: building the eBPF programs for {bpf_arch} (nightly, bpfel-unknown-none, build-std=core)"
    ));
    // x86_64 keeps the target dir it always had.
    let cargo_target = match arch {
        Arch::X86_64 => dir.join("target"),
        Arch::Arm64 => dir.join("target/aarch64"),
    };
    let mut cmd = ebpf_cargo(arch, "build", &cargo_target);
    run(&mut cmd).context("building the eBPF programs failed")?;
    let built = cargo_target.join("bpfel-unknown-none/release/iommu-enforcer-ebpf");
    let dest = arch.ebpf_object();
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

/// The linker of the arm64 cross build (gcc-aarch64-linux-gnu, installed by `setup`).
pub const AARCH64_LINKER: &str = "aarch64-linux-gnu-gcc";

/// [`build_guest_bins_for`] x86_64.
pub fn build_guest_bins() -> Result<GuestBins> {
    build_guest_bins_for(Arch::X86_64)
}

/// Builds `enforcer` (with the eBPF object embedded), `vfio-holder` and the guest tools statically
/// linked, in their own target dir so that the crt-static flags never invalidate the workspace's
/// normal builds: x86_64 glibc with crt-static into target/vm/static, arm64
/// musl (static) cross-linked into target/vm/static-arm64, with that architecture's eBPF object
/// embedded (agent/build.rs picks it by target).
pub fn build_guest_bins_for(arch: Arch) -> Result<GuestBins> {
    let triple = arch.rust_triple();
    let dir = match arch {
        Arch::X86_64 => target_dir().join("vm/static"),
        Arch::Arm64 => target_dir().join("vm/static-arm64"),
    };
    let with_tools = workspace_root().join("tests/vm/tools/Cargo.toml").is_file();
    say(format!(
        "vm: building static enforcer, vfio-holder and guest tools for the guest ({triple})"
    ));
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
        .args(["--target", triple])
        .arg("--target-dir")
        .arg(&dir)
        .current_dir(workspace_root())
        // With an explicit --target these flags reach only the target binaries, not build scripts.
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    if arch == Arch::Arm64 {
        cmd.env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
            AARCH64_LINKER,
        );
    }
    run(&mut cmd).context("building the guest binaries failed")?;
    let release = dir.join(triple).join("release");
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
