//! The guest initramfs: a per-kernel base archive (busybox, enforcer, vfio-holder, /init, modules)
//! plus a small per-boot archive (script, policy, settings). The kernel unpacks concatenated
//! archives in order, so a boot only pays for its own few files.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::arch::Arch;
use crate::artifacts::GuestBins;
use crate::cpio::Cpio;
use crate::elf;
use crate::kernels::Kernel;
use crate::modules;
use crate::qemu;
use crate::topology;
use crate::util::{run, say, target_dir, workspace_root};

/// Modules the guest needs; their dependencies come along. Missing ones (built in, or merged into
/// another module on this kernel, iommufd outside 6.12-iommufd) are skipped. The fragment of the
/// kernel kbuild.rs builds makes each of these a module.
pub const MODULES: &[&str] = &[
    "vfio",
    "vfio_iommu_type1",
    "vfio_pci",
    "vfio_pci_core",
    "irqbypass",
    "vfio_virqfd",
    "pci_stub",
    "e1000",
    "virtio",
    "virtio_ring",
    "virtio_pci",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_net",
    "iommufd",
    // The GPU-like card's host drivers (topology.rs): bochs-drm until 5.13, then bochs.
    "bochs_drm",
    "bochs",
    "snd_hda_intel",
];

/// The arm64 node's additions: the virtio-mmio transport and console its channel goes through
/// (virt has one UART; virtio_console is a module on 6.1, built in on 6.12).
pub const MODULES_ARM64: &[&str] = &["virtio_mmio", "virtio_console"];

/// What /init loads before anything else, and where the channel to the host is.
fn channel(arch: Arch) -> (&'static str, &'static str) {
    match arch {
        Arch::X86_64 => ("/dev/ttyS1", ""),
        Arch::Arm64 => ("/dev/hvc0", "virtio_mmio virtio_console"),
    }
}

/// Loaded by /init before the agent starts: what a VFIO node has, then the host drivers of the
/// GPU-like card, so that both its functions are bound when the agent starts.
pub fn boot_modules(series: &str) -> String {
    let display = if crate::kernels::version_of(series) == "5.10" {
        "bochs_drm"
    } else {
        "bochs"
    };
    format!("vfio vfio_iommu_type1 vfio_pci {display} snd_hda_intel")
}
pub const GUEST_POLICY: &str = "/etc/iommu-enforcer/policy.toml";

fn read_static(path: &Path, what: &str) -> Result<Vec<u8>> {
    let data = fs::read(path).with_context(|| format!("reading {what} at {}", path.display()))?;
    if elf::is_dynamic(&data).with_context(|| format!("{what} at {}", path.display()))? {
        bail!(
            "{what} at {} is dynamically linked; the guest has no libc (install busybox-static)",
            path.display()
        );
    }
    Ok(data)
}

fn gzip(cpio: Vec<u8>, dest: &Path) -> Result<()> {
    let raw = dest.with_extension("");
    fs::write(&raw, cpio).with_context(|| format!("writing {}", raw.display()))?;
    let _ = fs::remove_file(dest);
    run(Command::new("gzip").args(["-n", "-f", "-6"]).arg(&raw))
}

/// Builds `target/vm/initramfs/<series>/base.cpio.gz`.
pub fn base(kernel: &Kernel, bins: &GuestBins) -> Result<PathBuf> {
    let dir = target_dir().join("vm/initramfs").join(&kernel.series);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let vm = workspace_root().join("tests/vm");
    let mut a = Cpio::new();
    for d in [
        "proc", "sys", "dev", "tmp", "run", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin",
        "mnt", "var",
    ] {
        a.dir(d);
    }
    // The kernel opens /dev/console for /init before devtmpfs is mounted.
    a.char_device("dev/console", 0o600, 5, 1);
    let arch = Arch::of_series(&kernel.series);
    a.file(
        "bin/busybox",
        0o755,
        &read_static(&crate::kernels::busybox(arch), "busybox")?,
    );
    a.file(
        "bin/enforcer",
        0o755,
        &read_static(&bins.enforcer, "enforcer")?,
    );
    a.file(
        "bin/vfio-holder",
        0o755,
        &read_static(&bins.holder, "vfio-holder")?,
    );
    for (name, path) in &bins.tools {
        let data = read_static(path, name)?;
        a.file(&format!("bin/{name}"), 0o755, &data);
        // The enforcement policy (tests/vm/policies) trusts this path: same tool, trusted name.
        if name == "sysfs-write" {
            a.file("usr/local/bin/trusted-sysfs-write", 0o755, &data);
        }
    }
    let init = vm.join("init.sh");
    a.file(
        "init",
        0o755,
        &fs::read(&init).with_context(|| format!("reading {}", init.display()))?,
    );
    // Script helpers: lib.sh for all, burst.sh for the burst scenarios.
    for name in ["lib.sh", "burst.sh"] {
        let lib = vm.join(name);
        a.file(
            &format!("lib/vm/{name}"),
            0o644,
            &fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?,
        );
    }

    let wanted: Vec<&str> = match arch {
        Arch::X86_64 => MODULES.to_vec(),
        Arch::Arm64 => MODULES.iter().chain(MODULES_ARM64).copied().collect(),
    };
    let mods = modules::collect(kernel, &wanted)?;
    let root = format!("lib/modules/{}", kernel.release);
    for m in &mods {
        a.file(&format!("{root}/{}", m.path), 0o644, &m.data);
    }
    a.file(
        &format!("{root}/modules.dep"),
        0o644,
        modules::modules_dep(&mods).as_bytes(),
    );
    let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
    say(format!(
        "initramfs: kernel {} ({}): modules {}",
        kernel.series,
        kernel.release,
        names.join(" ")
    ));

    let dest = dir.join("base.cpio.gz");
    gzip(a.finish(), &dest)?;
    Ok(dest)
}

/// What one boot runs.
pub struct BootFiles<'a> {
    pub script: &'a [u8],
    /// tests/vm/scenarios/<name>/setup.sh when the scenario has one: /init sources it before it
    /// starts the agent (helpers the agent needs at start; it may add to VM_AGENT_ARGS).
    pub setup: Option<&'a [u8]>,
    pub policy: Option<&'a [u8]>,
    pub dry_run: bool,
    pub series: &'a str,
    /// Extra variables exported to the script (e.g. BENCH_ITERATIONS).
    pub env: &'a [(&'a str, String)],
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes `<out>/initramfs.cpio.gz`: the base archive followed by this boot's files.
pub fn for_boot(base: &Path, files: &BootFiles, out: &Path) -> Result<PathBuf> {
    let mut agent_args = Vec::new();
    if files.dry_run {
        agent_args.push("--dry-run".to_string());
    }
    let mut audit_args = Vec::new();
    let mut a = Cpio::new();
    // Always a file and always the flag: without a policy an empty file (the default policy),
    // so that a scenario can rewrite it while the agent runs (it watches the file). A missing
    // file at start is an error for the agent.
    a.file(GUEST_POLICY, 0o644, files.policy.unwrap_or_default());
    for args in [&mut agent_args, &mut audit_args] {
        args.push("--policy".to_string());
        args.push(GUEST_POLICY.to_string());
    }
    let mut env = String::from("# Written by cargo xtask for this boot; sourced by /init.\n");
    env.push_str(&format!("VM_KERNEL_SERIES={}\n", quote(files.series)));
    env.push_str(&format!("VM_AGENT_ARGS={}\n", quote(&agent_args.join(" "))));
    env.push_str(&format!("VM_AUDIT_ARGS={}\n", quote(&audit_args.join(" "))));
    env.push_str(&format!(
        "VM_BOOT_MODULES={}\n",
        quote(&boot_modules(files.series))
    ));
    for (var, value) in files.env {
        env.push_str(&format!("export {var}={}\n", quote(value)));
    }
    // Both limits together stay well inside qemu::BOOT_TIMEOUT, so a stuck agent or script still
    // ends in a clean shutdown that reports what happened.
    env.push_str(&format!(
        "VM_READY_TIMEOUT={}\nVM_SCRIPT_TIMEOUT={}\n",
        qemu::READY_TIMEOUT.as_secs(),
        qemu::SCRIPT_TIMEOUT.as_secs()
    ));
    let arch = Arch::of_series(files.series);
    let (ch, ch_modules) = channel(arch);
    env.push_str(&format!(
        "VM_ARCH={}\nVM_CHANNEL={ch}\nVM_CHANNEL_MODULES={}\n",
        arch.debian(),
        quote(ch_modules)
    ));
    for (var, addr, _) in topology::ADDRESSES {
        env.push_str(&format!("export {var}={addr}\n"));
    }
    a.file("etc/vm.env", 0o644, env.as_bytes());
    a.file("scenario.sh", 0o755, files.script);
    if let Some(setup) = files.setup {
        a.file("scenario-setup.sh", 0o644, setup);
    }

    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let overlay = out.join("boot.cpio.gz");
    gzip(a.finish(), &overlay)?;
    let mut bytes = fs::read(base).with_context(|| format!("reading {}", base.display()))?;
    bytes.extend(fs::read(&overlay)?);
    let dest = out.join("initramfs.cpio.gz");
    fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_drivers_load_at_boot_under_their_names_of_each_series() {
        assert_eq!(
            boot_modules("5.10"),
            "vfio vfio_iommu_type1 vfio_pci bochs_drm snd_hda_intel"
        );
        for series in ["6.1", "6.12", "7.3", "6.12-iommufd"] {
            assert!(
                boot_modules(series).ends_with(" bochs snd_hda_intel"),
                "{series}"
            );
        }
    }
}
