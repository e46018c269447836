//! Boots the test node under QEMU TCG (KVM hangs on this machine, docs/design.md section 5) and reads
//! back what the guest sent on its second serial port, kept apart from the kernel console.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::arch::Arch;
use crate::kernels::Kernel;
use crate::topology;

/// The guest's own limits, sized for TCG on 2 busy cores: idle, the 6.1 kernel reaches /init
/// in about 10 s and a whole scenario takes 15-40 s (docs/design.md section 5); a loaded host makes
/// that 3 to 5 times longer. The agent's start until its `ready` line (tests/vm/init.sh):
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The scenario script (`timeout` in tests/vm/init.sh).
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
/// Firmware and kernel until /init, loaded.
const BOOT_ALLOWANCE: Duration = Duration::from_secs(120);
/// After the script: the agent's drain and stop (up to 30 s), the audit, the channel flush.
const TEARDOWN_ALLOWANCE: Duration = Duration::from_secs(60);
/// QEMU is killed after this: later than every guest limit together, so a stuck agent or script
/// still ends in the guest's clean shutdown that reports what happened.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(
    BOOT_ALLOWANCE.as_secs()
        + READY_TIMEOUT.as_secs()
        + SCRIPT_TIMEOUT.as_secs()
        + TEARDOWN_ALLOWANCE.as_secs(),
);

pub struct Boot<'a> {
    pub kernel: &'a Kernel,
    pub initrd: &'a Path,
    /// Appended to the kernel command line.
    pub cmdline: Option<&'a str>,
    /// Where console.log, channel.log and qemu.log go.
    pub out: &'a Path,
    /// Host loopback port -> guest port forwards.
    pub hostfwd: &'a [(u16, u16)],
    /// `-icount shift=0`: the guest's clock advances one nanosecond per executed instruction,
    /// so a time measured in the guest is an exact instruction count, whatever the host does.
    pub icount: bool,
}

/// How the boot ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// /init sent everything and powered off.
    Completed,
    /// The console shows a kernel BUG/Oops/panic; the first such line.
    Crashed(String),
    /// Killed after BOOT_TIMEOUT.
    TimedOut,
    /// QEMU stopped before /init finished, without a crash on the console.
    Incomplete,
}

/// What the guest sent back, split by its `@@vm:` section markers.
#[derive(Debug, Default)]
pub struct Channel {
    pub ready: bool,
    pub events: Vec<String>,
    pub audit: String,
    pub audit_rc: Option<i32>,
    pub agent_stderr: String,
    pub agent_rc: Option<i32>,
    pub script: String,
    pub script_rc: Option<i32>,
    pub ended: bool,
}

pub struct Outcome {
    pub ending: Ending,
    pub elapsed: Duration,
    pub channel: Channel,
    pub console: PathBuf,
}

fn cmdline(extra: Option<&str>) -> String {
    // panic=-1 plus -no-reboot: a panic ends QEMU at once. oops=panic turns a BUG (the 5.10
    // notifier's BUG_ON) into that panic, so a crashed guest stops instead of hanging until the
    // timeout; the BUG's own lines are already on the console by then. no_timer_check skips
    // the early check that the IO-APIC timer ticks: under TCG on a loaded host the guest misses
    // its window and panics with "timer doesn't work through Interrupt-remapped IO-APIC"
    // (3 of 34 boots on a loaded 2-core machine). fbcon=map:9 maps every VT to a framebuffer
    // that does not exist: when bochs registers fb0 for the GPU-like card, fbcon does not take
    // the VTs over (no redraw, no cursor-blink work every 200 ms under TCG); the kernel log
    // stays on ttyS0 alone either way.
    let mut c = String::from(
        "console=ttyS0 intel_iommu=on panic=-1 oops=panic no_timer_check fbcon=map:9 rdinit=/init",
    );
    if let Some(extra) = extra.filter(|e| !e.trim().is_empty()) {
        c.push(' ');
        c.push_str(extra.trim());
    }
    c
}

/// UEFI firmware for the virt machine (Debian's qemu-efi-aarch64): the kernel boots with ACPI,
/// as Grace servers do, with QEMU's IORT describing the SMMUv3.
pub const ARM64_FIRMWARE: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";

/// The arm64 node's command line: the PL011 is the console; the channel is a virtio console
/// (hvc0: virt has one UART). The SMMUv3 driver is built into Debian's arm64 kernels (6.1 and
/// 6.12); QEMU's IORT table describes it.
fn cmdline_arm64(extra: Option<&str>) -> String {
    let mut c = String::from("console=ttyAMA0 panic=-1 oops=panic fbcon=map:9 rdinit=/init");
    if let Some(extra) = extra.filter(|e| !e.trim().is_empty()) {
        c.push(' ');
        c.push_str(extra.trim());
    }
    c
}

/// qemu-system-aarch64 on the virt machine with an emulated SMMUv3, under TCG. `cortex-a72`:
/// `-cpu max` would emulate pointer authentication (QARMA) on every call, several times slower.
fn arm64_command(b: &Boot, console: &Path, channel: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-aarch64");
    cmd.args([
        "-accel",
        "tcg",
        "-machine",
        "virt,iommu=smmuv3,gic-version=3",
        "-cpu",
        "cortex-a72",
        "-m",
        "1024",
        "-smp",
        "1",
    ])
    .args(["-nodefaults", "-display", "none", "-no-reboot"])
    .args(["-bios", ARM64_FIRMWARE])
    .arg("-kernel")
    .arg(&b.kernel.vmlinuz)
    .arg("-initrd")
    .arg(b.initrd)
    .args(["-append", &cmdline_arm64(b.cmdline)])
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .args(["-device", "virtio-serial-device"])
    .arg("-chardev")
    .arg(format!("file,id=channel,path={}", channel.display()))
    .args(["-device", "virtconsole,chardev=channel"])
    .args(topology::qemu_args_for(Arch::Arm64, b.hostfwd));
    cmd
}

pub fn boot(b: &Boot) -> Result<Outcome> {
    fs::create_dir_all(b.out).with_context(|| format!("creating {}", b.out.display()))?;
    let console = b.out.join("console.log");
    let channel = b.out.join("channel.log");
    let qemu_log = b.out.join("qemu.log");
    for f in [&console, &channel] {
        let _ = fs::remove_file(f);
    }
    let log =
        fs::File::create(&qemu_log).with_context(|| format!("creating {}", qemu_log.display()))?;
    let arch = Arch::of_series(&b.kernel.series);
    let mut cmd = if arch == Arch::Arm64 {
        arm64_command(b, &console, &channel)
    } else {
        x86_command(b, &console, &channel)
    };
    if b.icount {
        cmd.args(["-icount", "shift=0"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    fs::write(b.out.join("qemu.cmdline"), format!("{cmd:?}\n"))?;
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot start {} (run `cargo xtask setup`)",
            cmd.get_program().to_string_lossy()
        )
    })?;
    let timed_out = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = start.elapsed();
    let console_text =
        String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    let channel = parse_channel(&String::from_utf8_lossy(
        &fs::read(&channel).unwrap_or_default(),
    ));
    let ending = if let Some(line) = crash_line(&console_text) {
        Ending::Crashed(line)
    } else if timed_out {
        Ending::TimedOut
    } else if channel.ended {
        Ending::Completed
    } else {
        Ending::Incomplete
    };
    Ok(Outcome {
        ending,
        elapsed,
        channel,
        console,
    })
}

fn x86_command(b: &Boot, console: &Path, channel: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-machine",
        "q35,kernel-irqchip=split",
        "-m",
        "1024",
        "-smp",
        "1",
    ])
    .args([
        "-nodefaults",
        "-display",
        "none",
        "-vga",
        "none",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(&b.kernel.vmlinuz)
    .arg("-initrd")
    .arg(b.initrd)
    .args(["-append", &cmdline(b.cmdline)])
    // ttyS0: kernel console; ttyS1: the guest's clean channel back to us.
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-serial")
    .arg(format!("file:{}", channel.display()))
    .args(topology::qemu_args(b.hostfwd));
    cmd
}

/// The first console line that shows the kernel crashed.
pub fn crash_line(console: &str) -> Option<String> {
    const MARKS: &[&str] = &[
        "kernel BUG at",
        "BUG: ",
        "Oops:",
        "invalid opcode:",
        "general protection fault",
        "Kernel panic",
    ];
    console
        .lines()
        .find(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim().to_string())
}

fn rc(header: &str) -> Option<i32> {
    header
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rc="))
        .and_then(|v| v.parse().ok())
}

/// Splits the channel at its `@@vm:<section> [k=v..]` lines (written by tests/vm/init.sh).
pub fn parse_channel(text: &str) -> Channel {
    let mut ch = Channel::default();
    let mut section = String::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(header) = line.strip_prefix("@@vm:") {
            section = header.split_whitespace().next().unwrap_or("").to_string();
            match section.as_str() {
                "status" => ch.ready = header.contains("ready=yes"),
                "audit" => ch.audit_rc = rc(header),
                "agent-stderr" => ch.agent_rc = rc(header),
                "script" => ch.script_rc = rc(header),
                "end" => ch.ended = true,
                _ => {}
            }
            continue;
        }
        let push = |s: &mut String| {
            s.push_str(line);
            s.push('\n');
        };
        match section.as_str() {
            "events" if !line.trim().is_empty() => ch.events.push(line.to_string()),
            "audit" => push(&mut ch.audit),
            "agent-stderr" => push(&mut ch.agent_stderr),
            "script" => push(&mut ch.script),
            _ => {}
        }
    }
    ch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_sections_are_split_and_carriage_returns_dropped() {
        let text = "noise\n\n@@vm:events\n{\"type\":\"ready\"}\r\n\n@@vm:status ready=yes\n\n@@vm:audit rc=1\n{}\n\n@@vm:agent-stderr rc=0\nlog\n\n@@vm:script rc=3\n@fact group=8\n\n@@vm:end\n";
        let ch = parse_channel(text);
        assert!(ch.ready && ch.ended);
        assert_eq!(ch.events, vec!["{\"type\":\"ready\"}"]);
        assert_eq!(
            (ch.audit_rc, ch.agent_rc, ch.script_rc),
            (Some(1), Some(0), Some(3))
        );
        assert_eq!(ch.audit.trim(), "{}");
        assert!(ch.script.contains("@fact group=8"));
    }

    #[test]
    fn a_bug_on_the_console_is_a_crash() {
        let console = "[ 1.0] ok\n[ 9.1] kernel BUG at drivers/vfio/vfio.c:698!\n[ 9.2] invalid opcode: 0000 [#1] SMP\n";
        assert_eq!(
            crash_line(console).as_deref(),
            Some("[ 9.1] kernel BUG at drivers/vfio/vfio.c:698!")
        );
        assert_eq!(crash_line("[ 1.0] DMAR: IOMMU enabled\n"), None);
    }

    #[test]
    fn cmdline_skips_the_timer_check_and_keeps_extra_arguments_last() {
        let c = cmdline(Some(" lsm=bpf "));
        assert!(c.contains(" no_timer_check "), "{c}");
        assert!(c.contains(" fbcon=map:9 "), "{c}");
        assert!(c.ends_with("rdinit=/init lsm=bpf"), "{c}");
    }

    #[test]
    fn qemu_outlasts_every_guest_limit() {
        assert!(BOOT_TIMEOUT >= READY_TIMEOUT + SCRIPT_TIMEOUT + Duration::from_secs(150));
    }
}
