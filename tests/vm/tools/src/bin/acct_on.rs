//! `acct-on FILE`: switches BSD process accounting to FILE with acct(2). If that succeeds it
//! forks a child that exits at once, so the kernel writes one accounting record to FILE, waits for
//! it (at most 5 s) and switches accounting off again with acct(NULL).
//! Prints the result of acct(FILE) as `ok` or `error ERRNO` (e.g. `error EPERM`) and exits 0 or
//! 1; 2 on bad usage. The child and acct(NULL) are described on stderr.
use std::{
    ffi::CString,
    process::ExitCode,
    time::{Duration, Instant},
};

use vm_tools::{errno_name, last_errno, verdict};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, file] = args.as_slice() else {
        eprintln!("usage: acct-on FILE");
        return ExitCode::from(2);
    };
    let Ok(path) = CString::new(file.as_str()) else {
        eprintln!("acct-on: bad path");
        return ExitCode::from(2);
    };
    // SAFETY: `path` is NUL-terminated and lives across the call.
    let errno = if unsafe { libc::acct(path.as_ptr()) } < 0 {
        last_errno()
    } else {
        0
    };
    println!("{}", verdict(errno));
    if errno != 0 {
        eprintln!("acct-on: acct({file}) failed: {}", errno_name(errno));
        return ExitCode::from(1);
    }
    record_one();
    // SAFETY: acct(NULL) switches accounting off.
    if unsafe { libc::acct(std::ptr::null()) } < 0 {
        eprintln!("acct-on: acct(NULL) failed: {}", errno_name(last_errno()));
    } else {
        eprintln!("acct-on: accounting switched off");
    }
    ExitCode::SUCCESS
}

/// Forks a child that exits at once (its exit writes the record) and reaps it, bounded.
fn record_one() {
    // SAFETY: single-threaded; the child only calls _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("acct-on: fork failed: {}", errno_name(last_errno()));
        return;
    }
    if pid == 0 {
        // SAFETY: the child ends here without running any of the parent's cleanup.
        unsafe { libc::_exit(0) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            eprintln!("acct-on: child {pid} exited with status {status:#x}");
            return;
        }
        if r < 0 && last_errno() != libc::EINTR {
            eprintln!("acct-on: waitpid failed: {}", errno_name(last_errno()));
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("acct-on: child {pid} not reaped within 5 s");
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
