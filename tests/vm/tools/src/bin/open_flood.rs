//! `open-flood FILE COUNT`: open(2)s and closes FILE COUNT times as fast as it can, counting
//! the opens that succeeded and failed, and prints `{"opens_ok": A, "opens_failed": B}`. The
//! burst scenarios use it on `/dev/vfio/N` to make a known number of `vfio_open` and
//! `vfio_release` records (2 per successful open, 1 per failed one) faster than a paused agent
//! can read them.
use std::{ffi::CString, process::ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(Ok(count))) = (args.get(1), args.get(2).map(|n| n.parse::<u64>())) else {
        eprintln!("usage: open-flood FILE COUNT");
        return ExitCode::from(2);
    };
    let Ok(path) = CString::new(file.as_str()) else {
        eprintln!("open-flood: bad path");
        return ExitCode::from(2);
    };
    let (mut ok, mut failed) = (0u64, 0u64);
    for _ in 0..count {
        // SAFETY: a NUL-terminated path; the fd is closed at once.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
            ok += 1;
        } else {
            failed += 1;
        }
    }
    println!("{{\"opens_ok\": {ok}, \"opens_failed\": {failed}}}");
    ExitCode::SUCCESS
}
