//! `ptrace-run CMD [ARGS...]`: runs CMD as a ptrace(2)d child, so the VM scenarios can show that a
//! "trusted writer" executable run under a tracer is not trusted. The child does
//! PTRACE_TRACEME, stops itself with SIGSTOP and execvp()s CMD; the parent PTRACE_CONTs it through
//! every stop (suppressing the initial SIGSTOP and the SIGTRAP of the exec, passing any other
//! signal on) until it exits. CMD's stdin/stdout/stderr are inherited unchanged and nothing is
//! printed on success. Exits with CMD's exit code (128+N if killed by signal N, 127 if it could
//! not be executed), 2 on bad usage, 1 if the tracing itself failed, and 124 (after SIGKILLing
//! CMD) if it runs longer than PTRACE_RUN_TIMEOUT seconds (default 60).
use std::{
    ffi::CString,
    process::ExitCode,
    time::{Duration, Instant},
};

use vm_tools::{errno_name, last_errno};

/// ptrace(2) is variadic in glibc: its addr/data arguments must be passed pointer-sized.
const NULL: *mut libc::c_void = std::ptr::null_mut();

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: ptrace-run CMD [ARGS...]");
        return ExitCode::from(2);
    }
    let Ok(argv) = args
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
    else {
        eprintln!("ptrace-run: argument with a NUL byte");
        return ExitCode::from(2);
    };
    let timeout = std::env::var("PTRACE_RUN_TIMEOUT")
        .ok()
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60));
    ExitCode::from(run(&argv, timeout))
}

fn run(argv: &[CString], timeout: Duration) -> u8 {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: single-threaded here; the child only makes async-signal-safe calls before exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("ptrace-run: fork: {}", errno_name(last_errno()));
        return 1;
    }
    if pid == 0 {
        // SAFETY: the child; `ptrs` is a NULL-terminated argv of live CStrings.
        unsafe {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, NULL, NULL) < 0 {
                libc::_exit(126);
            }
            libc::raise(libc::SIGSTOP);
            libc::execvp(ptrs[0], ptrs.as_ptr());
            let msg = b"ptrace-run: execvp failed\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    }

    let deadline = Instant::now() + timeout;
    let mut seen_stop = false;
    let mut seen_exec_trap = false;
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child; WNOHANG keeps the loop bounded by the deadline.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if r < 0 {
            let errno = last_errno();
            if errno == libc::EINTR {
                continue;
            }
            eprintln!("ptrace-run: waitpid: {}", errno_name(errno));
            return 1;
        }
        if r == 0 {
            if Instant::now() >= deadline {
                eprintln!("ptrace-run: {timeout:?} passed, killing pid {pid}");
                // SAFETY: our own child; SIGKILL ends a tracee in any state.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, libc::__WALL);
                }
                return 124;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if libc::WIFEXITED(status) {
            return libc::WEXITSTATUS(status) as u8;
        }
        if libc::WIFSIGNALED(status) {
            return 128u8.wrapping_add(libc::WTERMSIG(status) as u8);
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let sig = libc::WSTOPSIG(status);
        let pass = if sig == libc::SIGSTOP && !seen_stop {
            seen_stop = true;
            // If this tracer dies, the tracee must not outlive it untraced-but-stopped.
            // SAFETY: the child is in a ptrace-stop; the option takes no pointer.
            unsafe {
                libc::ptrace(
                    libc::PTRACE_SETOPTIONS,
                    pid,
                    NULL,
                    libc::PTRACE_O_EXITKILL as usize,
                )
            };
            0
        } else if sig == libc::SIGTRAP && !seen_exec_trap {
            seen_exec_trap = true;
            0
        } else {
            sig
        };
        // SAFETY: the child is in a ptrace-stop; the data argument is the signal to deliver.
        if unsafe { libc::ptrace(libc::PTRACE_CONT, pid, NULL, pass as usize) } < 0 {
            let errno = last_errno();
            // ESRCH: the tracee was killed meanwhile; the next waitpid reports it.
            if errno != libc::ESRCH {
                eprintln!("ptrace-run: PTRACE_CONT: {}", errno_name(errno));
            }
        }
    }
}
