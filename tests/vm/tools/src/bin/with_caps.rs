//! `with-caps CAP[,CAP...] -- CMD [ARGS...]`: runs CMD (as uid 0) with exactly the listed
//! capabilities, named as in capabilities(7) without `CAP_`, case-insensitively (e.g.
//! `BPF,PERFMON,SYS_RESOURCE,SYS_PTRACE,DAC_READ_SEARCH`; `none` or an empty list for none).
//! It drops every other capability 0..=40 from the bounding set (PR_CAPBSET_DROP; EINVAL for a
//! capability the running kernel does not know is ignored), clears the ambient set, sets the
//! inheritable set to the listed capabilities still in the bounding set (capset(2), version 3;
//! listed ones the kernel does not know or that were already dropped are reported), and
//! execvp()s CMD: for uid 0 the exec makes the permitted and effective sets equal to the bounding
//! set. Prints to stderr the `Cap*` lines of /proc/self/status just before the exec (each prefixed
//! `with-caps: `). Exits with CMD's exit code; 2 on bad usage (including an unknown capability
//! name), 1 if a step fails (printed as `with-caps: STEP: ERRNO`), 127 if CMD cannot be executed.
use std::{ffi::CString, process::ExitCode};

use vm_tools::{errno_name, last_errno};

/// capabilities(7) names by number, 0..=40.
const CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

// <linux/capability.h>
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("usage: with-caps CAP[,CAP...] -- CMD [ARGS...]");
        ExitCode::from(2)
    };
    let [list, sep, cmd @ ..] = args.as_slice() else {
        return usage();
    };
    if sep != "--" || cmd.is_empty() {
        return usage();
    }
    let wanted = match parse(list) {
        Ok(w) => w,
        Err(name) => {
            eprintln!("with-caps: unknown capability {name:?}");
            return usage();
        }
    };
    let Ok(argv) = cmd
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
    else {
        eprintln!("with-caps: argument with a NUL byte");
        return usage();
    };
    match restrict(wanted) {
        Ok(()) => exec(&argv),
        Err((step, errno)) => {
            eprintln!("with-caps: {step}: {}", errno_name(errno));
            ExitCode::from(1)
        }
    }
}

/// The capability bit mask of a comma-separated list of names; the offending name on error.
fn parse(list: &str) -> Result<u64, String> {
    if list.eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    let mut mask = 0u64;
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let bare = name
            .strip_prefix("CAP_")
            .or_else(|| name.strip_prefix("cap_"))
            .unwrap_or(name);
        let n = CAPS
            .iter()
            .position(|c| c.eq_ignore_ascii_case(bare))
            .ok_or_else(|| name.to_string())?;
        mask |= 1 << n;
    }
    Ok(mask)
}

fn restrict(wanted: u64) -> Result<(), (String, i32)> {
    // Capabilities in the bounding set now: the only ones an exec can grant.
    let mut bounding = 0u64;
    for (cap, name) in CAPS.iter().enumerate() {
        let bit = 1u64 << cap;
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            // EINVAL: a capability this kernel does not know (e.g. BPF/PERFMON before 5.8).
            continue;
        }
        if r == 1 {
            bounding |= bit;
        }
        if wanted & bit == 0
            && r == 1
            // SAFETY: as above. Dropping from the bounding set leaves our own effective set,
            // including CAP_SETPCAP, untouched until the exec.
            && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0
        {
            let errno = last_errno();
            if errno != libc::EINVAL {
                return Err((format!("PR_CAPBSET_DROP CAP_{name}"), errno));
            }
        }
    }
    // SAFETY: as above. EINVAL: a kernel without ambient capabilities (before 4.3) has none.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } < 0
    {
        let errno = last_errno();
        if errno != libc::EINVAL {
            return Err(("PR_CAP_AMBIENT_CLEAR_ALL".into(), errno));
        }
    }

    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 takes a header and two data structs.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } < 0 {
        return Err(("capget".into(), last_errno()));
    }
    // capset(2) refuses inheritable bits outside the bounding set.
    let inheritable = wanted & bounding;
    data[0].inheritable = inheritable as u32;
    data[1].inheritable = (inheritable >> 32) as u32;
    // SAFETY: as above; effective and permitted are written back unchanged.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } < 0 {
        return Err(("capset".into(), last_errno()));
    }
    let missing = wanted & !bounding;
    if missing != 0 {
        let names: Vec<&str> = (0..CAPS.len())
            .filter(|c| missing & (1 << c) != 0)
            .map(|c| CAPS[c])
            .collect();
        eprintln!(
            "with-caps: not in the bounding set (or unknown to this kernel): {}",
            names.join(",")
        );
    }
    eprintln!("with-caps: expected CapEff after exec: {inheritable:016x}");
    Ok(())
}

fn exec(argv: &[CString]) -> ExitCode {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines().filter(|l| l.starts_with("Cap")) {
            eprintln!("with-caps: {line}");
        }
    }
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: `ptrs` is a NULL-terminated argv of live CStrings.
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    eprintln!(
        "with-caps: execvp {:?}: {}",
        argv[0],
        errno_name(last_errno())
    );
    ExitCode::from(127)
}
