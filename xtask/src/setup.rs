//! `cargo xtask setup`: everything the eBPF build and the VM test node need on a fresh Debian
//! bookworm machine. Each step checks first, so running it again is cheap and changes nothing.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::kernels;
use crate::util::{probe, run, say};

/// Debian packages the VM needs on the host: QEMU, a static busybox for the guest, xz to unpack
/// 6.12's `.ko.xz` modules, gzip for the initramfs, and the keyring the kernel sources are signed with.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    // The arm64 node (qemu-system-aarch64, virt with an SMMUv3, booted by UEFI firmware with
    // ACPI), the static agent's cross linker, user-mode emulation for the arm64 image's smoke test.
    "qemu-system-arm",
    "qemu-efi-aarch64",
    "gcc-aarch64-linux-gnu",
    "qemu-user-static",
    "busybox-static",
    "xz-utils",
    "gzip",
    "debian-archive-keyring",
];
/// bpf-linker must link the LLVM major rustc uses (22): Debian bookworm-security ships it.
const LLVM_PACKAGES: &[&str] = &["llvm-22-dev", "libllvm22"];
/// What the workspace tests and benches call: promtool and a real Prometheus (metrics tests, which
/// require them when CI=true), lspci (the audit benchmark's baseline) and shellcheck (`cargo xtask
/// lint`, the first step of `cargo xtask test`).
const TEST_PACKAGES: &[&str] = &["prometheus", "pciutils", "shellcheck"];
/// What building the 6.12-iommufd kernel from source takes (kbuild.rs): the toolchain, Kconfig's
/// flex and bison, libelf for objtool and resolve_btfids, pahole (dwarves) for BTF, openssl
/// headers for the module signing key, kmod for depmod.
pub const KERNEL_BUILD_PACKAGES: &[&str] = &[
    "build-essential",
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
    "kmod",
    "cpio",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup() -> Result<()> {
    setup_with(true)
}

/// `build`: also build 6.12-iommufd (setup itself); the other commands leave it to `Kernel::ready`.
fn setup_with(build: bool) -> Result<()> {
    let mut apt = Apt::default();
    rust_src()?;
    rust_target()?;
    apt.ensure(VM_PACKAGES)?;
    apt.ensure_with(TEST_PACKAGES, false)?;
    bpf_linker(&mut apt)?;
    kernels::ensure_all(build)?;
    say("setup: done");
    Ok(())
}

/// Quick check used by the other commands: true when `setup` has nothing left to do but build
/// 6.12-iommufd, which `Kernel::ready` builds when a command first boots it (720 s on 2 idle cores, once).
pub fn is_complete() -> bool {
    has_rust_src()
        && has_rust_target()
        && bpf_linker_ok()
        && VM_PACKAGES
            .iter()
            .chain(TEST_PACKAGES)
            .all(|p| installed(p))
        && kernels::busybox(crate::arch::Arch::Arm64).is_file()
        && kernels::SERIES
            .iter()
            .filter(|s| **s != kernels::BUILT)
            .all(|s| kernels::Kernel::cached(s).is_some())
}

/// Runs `setup` when something is missing, so the README's two commands are the whole set-up.
pub fn ensure() -> Result<()> {
    if is_complete() {
        return Ok(());
    }
    say("setup: something is missing, running `cargo xtask setup` first");
    setup_with(false)
}

fn has_rust_src() -> bool {
    probe(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .is_some_and(|out| out.lines().any(|l| l.trim().starts_with("rust-src")))
}

fn rust_src() -> Result<()> {
    if has_rust_src() {
        say("setup: nightly rust-src is installed");
        return Ok(());
    }
    say("setup: adding rust-src to the nightly toolchain (build-std for bpfel-unknown-none needs it)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"])).context(
        "could not add rust-src to the nightly toolchain: check that `rustup toolchain list` shows a \
         nightly toolchain and that static.rust-lang.org is reachable",
    )
}

/// The arm64 agent's Rust target (its standard library; the linker is Debian's).
const ARM64_TARGET: &str = "aarch64-unknown-linux-musl";

fn has_rust_target() -> bool {
    probe(Command::new("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|out| out.lines().any(|l| l.trim() == ARM64_TARGET))
}

fn rust_target() -> Result<()> {
    if has_rust_target() {
        say(format!("setup: rust target {ARM64_TARGET} is installed"));
        return Ok(());
    }
    say(format!(
        "setup: rustup target add {ARM64_TARGET} (the static arm64 agent)"
    ));
    run(Command::new("rustup").args(["target", "add", ARM64_TARGET]))
        .context("could not add the aarch64-unknown-linux-musl target")
}

fn bpf_linker_ok() -> bool {
    probe(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

fn bpf_linker(apt: &mut Apt) -> Result<()> {
    if bpf_linker_ok() {
        say(format!(
            "setup: bpf-linker {BPF_LINKER_VERSION} is installed"
        ));
        return Ok(());
    }
    apt.ensure(LLVM_PACKAGES)?;
    say(format!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against Debian's LLVM 22 (about a minute)"
    ));
    // Its default feature is llvm-23, which does not build against LLVM 22.
    run(Command::new("cargo")
        .args([
            "install",
            "--locked",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
    .context("building bpf-linker failed")?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but `bpf-linker --version` does not say {BPF_LINKER_VERSION}: is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

/// The machine's apt, updated at most once per run and only when something must be installed.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn ensure(&mut self, packages: &[&str]) -> Result<()> {
        self.ensure_with(packages, true)
    }

    /// `recommends: false` keeps e.g. prometheus from pulling in exporters that start services.
    fn ensure_with(&mut self, packages: &[&str], recommends: bool) -> Result<()> {
        let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
        if missing.is_empty() {
            say(format!("setup: installed: {}", packages.join(" ")));
            return Ok(());
        }
        if !is_root() {
            bail!(
                "these Debian packages are missing and installing them needs root: {}",
                missing.join(" ")
            );
        }
        if !self.updated {
            say("setup: apt-get update");
            run(Command::new("apt-get").args(["update", "-q"]))?;
            self.updated = true;
        }
        let mut args: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
        if let Some(pin) = qemu_utils_pin(&missing) {
            args.push(pin);
        }
        say(format!("setup: installing {}", args.join(" ")));
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--allow-downgrades"])
            .args(if recommends {
                &[][..]
            } else {
                &["--no-install-recommends"][..]
            })
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    }
}

/// `qemu-utils=V` when QEMU's system emulators are to be installed and the machine already has a
/// qemu-utils of another version than the emulators apt would install (seen: 10.0 from
/// bookworm-backports preinstalled, with no backports source; its `Breaks: qemu-system-common
/// (<< 8.0)` makes apt refuse the install). QEMU's parts must come from one release: the
/// test node's timings were taken on bookworm's emulators, so qemu-utils follows them.
fn qemu_utils_pin(missing: &[&str]) -> Option<String> {
    if !missing.iter().any(|p| p.starts_with("qemu-system")) || !installed("qemu-utils") {
        return None;
    }
    let have = probe(Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-utils"]))?;
    let policy = probe(Command::new("apt-cache").args(["policy", "qemu-system-common"]))?;
    let want = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| *v != "(none)")?;
    if have.trim() == want {
        return None;
    }
    say(format!(
        "setup: qemu-utils {} does not match QEMU {want} from the machine's sources: installing qemu-utils={want} with it",
        have.trim()
    ));
    Some(format!("qemu-utils={want}"))
}

fn is_root() -> bool {
    probe(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0")
}

/// Installs the Debian `packages` that are missing (apt-get, as root), saying what it does;
/// nothing when all are installed.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    Apt::default().ensure(packages)
}
