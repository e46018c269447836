//! `lsm-noop HOOK...`: attaches an empty BPF LSM program (`r0 = 0; exit`) at each hook (e.g.
//! `file_open file_permission`), prints `attached`, and holds them until it is killed (its link
//! descriptors close with it, which detaches them). The VM benchmark measures with it to tell
//! what attaching anything at a hook costs (the trampoline, under the emulator) from what the
//! agent's programs add on top. Raw bpf(2): the hook's BTF id comes from /sys/kernel/btf/vmlinux.
use std::process::ExitCode;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_LSM: u32 = 29;
const BPF_LSM_MAC: u32 = 27;
const BTF_KIND_FUNC: u32 = 12;

/// The id of the BTF type `name` of kind FUNC in a raw BTF blob (vmlinux's).
fn btf_func_id(btf: &[u8], name: &str) -> Option<u32> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(btf.get(at..at + 4)?.try_into().ok()?))
    };
    if btf.get(0..2)? != [0x9f, 0xeb] {
        return None;
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let str_off = u32_at(16)? as usize;
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let mut at = types;
    let mut id = 1;
    while at + 12 <= types + type_len {
        let (name_off, info) = (u32_at(at)? as usize, u32_at(at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if kind == BTF_KIND_FUNC {
            let start = strings + name_off;
            let end = start + btf.get(start..)?.iter().position(|&b| b == 0)?;
            if &btf[start..end] == name.as_bytes() {
                return Some(id);
            }
        }
        // What follows each kind's common 12 bytes (include/uapi/linux/btf.h).
        let extra = match kind {
            1 | 14 | 17 => 4,     // INT, VAR, DECL_TAG
            3 => 12,              // ARRAY
            4 | 5 => vlen * 12,   // STRUCT, UNION
            6 | 13 => vlen * 8,   // ENUM, FUNC_PROTO
            15 | 19 => vlen * 12, // DATASEC, ENUM64
            _ => 0,
        };
        at += 12 + extra;
        id += 1;
    }
    None
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i32> {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size given.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as i32)
    }
}

/// Loads the empty program for `bpf_lsm_<hook>` and attaches it: the link's descriptor.
fn attach(btf: &[u8], hook: &str) -> Result<i32, String> {
    let id = btf_func_id(btf, &format!("bpf_lsm_{hook}"))
        .ok_or_else(|| format!("no BTF function bpf_lsm_{hook}"))?;
    // r0 = 0; exit
    let insns: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let license = b"GPL\0";
    let mut log = vec![0u8; 4096];
    let mut attr = [0u8; 128];
    let put = |attr: &mut [u8; 128], at: usize, bytes: &[u8]| {
        attr[at..at + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut attr, 0, &BPF_PROG_TYPE_LSM.to_le_bytes());
    put(&mut attr, 4, &2u32.to_le_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_le_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_le_bytes());
    put(&mut attr, 24, &1u32.to_le_bytes());
    put(&mut attr, 28, &(log.len() as u32).to_le_bytes());
    put(&mut attr, 32, &(log.as_mut_ptr() as u64).to_le_bytes());
    put(&mut attr, 48, b"noop\0");
    put(&mut attr, 68, &BPF_LSM_MAC.to_le_bytes());
    put(&mut attr, 108, &id.to_le_bytes());
    let prog = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        format!(
            "loading for {hook}: {e}: {}",
            String::from_utf8_lossy(&log[..end])
        )
    })?;
    let mut attr = [0u8; 128];
    put(&mut attr, 8, &(prog as u32).to_le_bytes());
    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr).map_err(|e| format!("attaching at {hook}: {e}"))
}

fn main() -> ExitCode {
    let hooks: Vec<String> = std::env::args().skip(1).collect();
    if hooks.is_empty() {
        eprintln!("usage: lsm-noop HOOK...");
        return ExitCode::from(2);
    }
    let btf = match std::fs::read("/sys/kernel/btf/vmlinux") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("lsm-noop: /sys/kernel/btf/vmlinux: {e}");
            return ExitCode::from(1);
        }
    };
    for hook in &hooks {
        if let Err(e) = attach(&btf, hook) {
            eprintln!("lsm-noop: {e}");
            return ExitCode::from(1);
        }
    }
    println!("attached");
    loop {
        // SAFETY: waits for a signal; the default SIGTERM ends the process.
        unsafe { libc::pause() };
    }
}
