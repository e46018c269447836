//! `open-bench FILE ITERATIONS [ROUNDS] [MODE]`: times a syscall loop on FILE, the paths every
//! process takes through the LSM hooks: MODE `open` (open()+close(), `file_open`; the default),
//! `read` (pread(2) of 8 bytes at offset 0, `file_permission` with MAY_READ) or `write` (pwrite(2)
//! of 8 bytes at offset 0, `file_permission` with MAY_WRITE) or `read4k` (pread(2) of 4 KiB at
//! offset 0: a page, the copy dominating). Prints one JSON line per round:
//! `{"ns_per_op": F, "iterations": N}`. The VM benchmark runs it with and without the agent's
//! programs attached in the same boot and compares.
use std::{ffi::CString, process::ExitCode, time::Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(Ok(iterations))) = (args.get(1), args.get(2).map(|n| n.parse::<u64>()))
    else {
        eprintln!("usage: open-bench FILE ITERATIONS [ROUNDS] [open|read|read4k|write]");
        return ExitCode::from(2);
    };
    let rounds: u32 = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(1);
    let mode = args.get(4).map_or("open", String::as_str);
    let Ok(path) = CString::new(file.as_str()) else {
        eprintln!("open-bench: bad path");
        return ExitCode::from(2);
    };
    let flags = match mode {
        "open" | "read" | "read4k" => libc::O_RDONLY,
        "write" => libc::O_WRONLY,
        other => {
            eprintln!("open-bench: unknown mode {other}");
            return ExitCode::from(2);
        }
    };
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        eprintln!(
            "open-bench: open {file}: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(1);
    }
    let mut buf = *b"benchmrk";
    let mut page = vec![0u8; 4096];
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iterations {
            let ok = match mode {
                "open" => {
                    let f = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
                    if f >= 0 {
                        unsafe { libc::close(f) };
                    }
                    f >= 0
                }
                "read" => (unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) }) >= 0,
                "read4k" => {
                    (unsafe { libc::pread(fd, page.as_mut_ptr().cast(), page.len(), 0) }) >= 0
                }
                _ => (unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), 0) }) >= 0,
            };
            if !ok {
                eprintln!(
                    "open-bench: {mode} {file}: {}",
                    std::io::Error::last_os_error()
                );
                return ExitCode::from(1);
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / iterations.max(1) as f64;
        println!("{{\"ns_per_op\": {ns:.1}, \"iterations\": {iterations}}}");
    }
    unsafe { libc::close(fd) };
    ExitCode::SUCCESS
}
