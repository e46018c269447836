//! `cargo xtask vm`: one boot of the test node with a script, printing what the agent reported.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::arch::Arch;
use crate::artifacts::{self, GuestBins};
use crate::initramfs::{self, BootFiles};
use crate::kernels::Kernel;
use crate::qemu::{self, Ending, Outcome};
use crate::setup;
use crate::util::{say, target_dir, workspace_root};

/// Everything that is the same for every boot: setup done, eBPF object and static binaries built.
pub fn prepare() -> Result<GuestBins> {
    prepare_for(Arch::X86_64)
}

/// [`prepare`] for the node of `arch`: its eBPF object and static binaries.
pub fn prepare_for(arch: Arch) -> Result<GuestBins> {
    setup::ensure()?;
    artifacts::build_ebpf_for(arch)?;
    artifacts::build_guest_bins_for(arch)
}

pub fn runs_dir(label: &str) -> PathBuf {
    target_dir().join("vm/runs").join(label)
}

/// One boot: initramfs for this script, QEMU, and the outputs saved under `out`.
pub fn boot_once(
    kernel: &Kernel,
    base: &Path,
    files: &BootFiles,
    cmdline: Option<&str>,
    out: &Path,
) -> Result<Outcome> {
    boot_forwarding(kernel, base, files, cmdline, out, &[])
}

/// [`boot_once`] with host loopback ports forwarded into the guest.
pub fn boot_forwarding(
    kernel: &Kernel,
    base: &Path,
    files: &BootFiles,
    cmdline: Option<&str>,
    out: &Path,
    hostfwd: &[(u16, u16)],
) -> Result<Outcome> {
    boot_with(kernel, base, files, cmdline, out, hostfwd, false)
}

/// [`boot_forwarding`], under `-icount shift=0` when `icount` (see `qemu::Boot::icount`).
pub fn boot_with(
    kernel: &Kernel,
    base: &Path,
    files: &BootFiles,
    cmdline: Option<&str>,
    out: &Path,
    hostfwd: &[(u16, u16)],
    icount: bool,
) -> Result<Outcome> {
    let _ = fs::remove_dir_all(out);
    let initrd = initramfs::for_boot(base, files, out)?;
    let outcome = qemu::boot(&qemu::Boot {
        kernel,
        initrd: &initrd,
        cmdline,
        out,
        hostfwd,
        icount,
    })?;
    let ch = &outcome.channel;
    let mut events = ch.events.join("\n");
    if !events.is_empty() {
        events.push('\n');
    }
    fs::write(out.join("events.jsonl"), events)?;
    fs::write(out.join("audit.json"), &ch.audit)?;
    fs::write(out.join("agent.stderr"), &ch.agent_stderr)?;
    fs::write(out.join("script.out"), &ch.script)?;
    Ok(outcome)
}

/// A one-line description of how a boot ended, or None when it completed.
pub fn ending_problem(outcome: &Outcome) -> Option<String> {
    match &outcome.ending {
        Ending::Completed => None,
        Ending::Crashed(line) => Some(format!("guest crashed: {line}")),
        Ending::TimedOut => Some(format!(
            "guest timed out after {} s and was killed",
            qemu::BOOT_TIMEOUT.as_secs()
        )),
        Ending::Incomplete => {
            Some("guest stopped before /init finished (no crash on the console)".to_string())
        }
    }
}

pub struct VmArgs {
    /// The kernel series, `arm64-` prefixed for the arm64 node.
    pub kernel: String,
    pub dry_run: bool,
    pub policy: Option<PathBuf>,
    pub script: Option<PathBuf>,
    pub cmdline: Option<String>,
}

/// Returns whether the guest completed without crashing.
/// The kernel series `cargo xtask vm --arch ARCH --kernel K` boots: 6.1 by default, and on the
/// arm64 node Debian's arm64 6.1 or 6.12 (6.12 by default).
pub fn series_for(arch: &str, kernel: Option<String>) -> Result<String> {
    if arch != "arm64" {
        return Ok(kernel.unwrap_or_else(|| "6.1".into()));
    }
    let k = kernel.unwrap_or_else(|| "6.12".into());
    if !["6.1", "6.12"].contains(&k.as_str()) {
        anyhow::bail!("the arm64 node boots Debian's arm64 6.1 or 6.12, not {k}");
    }
    Ok(format!("arm64-{k}"))
}

pub fn vm(args: &VmArgs) -> Result<bool> {
    let bins = prepare_for(Arch::of_series(&args.kernel))?;
    let kernel = Kernel::ready(&args.kernel)?;
    let base = initramfs::base(&kernel, &bins)?;
    let script_path = args
        .script
        .clone()
        .unwrap_or_else(|| workspace_root().join("tests/vm/demo.sh"));
    let script = fs::read(&script_path)
        .with_context(|| format!("reading script {}", script_path.display()))?;
    let policy = match &args.policy {
        Some(p) => Some(fs::read(p).with_context(|| format!("reading policy {}", p.display()))?),
        None => None,
    };
    let files = BootFiles {
        script: &script,
        setup: None,
        policy: policy.as_deref(),
        dry_run: args.dry_run,
        series: &kernel.series,
        env: &[],
    };
    let out = runs_dir(&format!("vm-{}", kernel.series));
    say(format!(
        "vm: booting kernel {} ({}, {}) under QEMU TCG with {} (timeout {} s)",
        kernel.series,
        Arch::of_series(&kernel.series).debian(),
        kernel.release,
        script_path.display(),
        qemu::BOOT_TIMEOUT.as_secs()
    ));
    let outcome = boot_once(&kernel, &base, &files, args.cmdline.as_deref(), &out)?;
    let ch = &outcome.channel;
    for line in ch.script.lines() {
        eprintln!("guest| {line}");
    }
    // stdout: the agent's lines exactly as written, then the audit JSON.
    for line in &ch.events {
        println!("{line}");
    }
    let audit = ch.audit.trim();
    if !audit.is_empty() {
        println!("{audit}");
    }
    if ch.ended {
        say(format!(
            "vm: {:.1} s; agent ready: {}; script exit code {}; audit exit code {}",
            outcome.elapsed.as_secs_f64(),
            if ch.ready { "yes" } else { "NO" },
            ch.script_rc.map_or("?".to_string(), |r| r.to_string()),
            ch.audit_rc.map_or("?".to_string(), |r| r.to_string()),
        ));
    } else {
        say(format!(
            "vm: {:.1} s; the guest sent nothing back",
            outcome.elapsed.as_secs_f64()
        ));
    }
    say(format!("vm: console log {}", outcome.console.display()));
    say(format!(
        "vm: agent stderr {}",
        out.join("agent.stderr").display()
    ));
    say(format!(
        "vm: script output {}, events {}",
        out.join("script.out").display(),
        out.join("events.jsonl").display()
    ));
    match ending_problem(&outcome) {
        Some(p) => {
            say(format!("vm: {p}"));
            Ok(false)
        }
        None => Ok(true),
    }
}

/// The value of the first `@fact KEY=VALUE` line a guest script printed for `key`, trimmed.
pub fn script_fact<'a>(script: &'a str, key: &str) -> Option<&'a str> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix("@fact "))
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}
