//! `sysfs-write MODE FILE DATA`: one write of DATA to FILE by the given path through the kernel,
//! so the VM scenarios can check that a veto holds for each: `write` (write(2)), `pwrite`
//! (pwrite(2) at offset 0), `writev` (writev(2), one segment), `writev-split` (writev(2), DATA
//! split in two segments), `io_uring` (an IORING_OP_WRITE).
//! Prints `ok` or `error ERRNO` (e.g. `error EPERM`) and exits 0 or 1; 2 on bad usage.
use std::{ffi::CString, io, os::fd::RawFd, process::ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, file, data] = args.as_slice() else {
        eprintln!("usage: sysfs-write write|pwrite|writev|writev-split|io_uring FILE DATA");
        return ExitCode::from(2);
    };
    let result = open(file).and_then(|fd| {
        let r = match mode.as_str() {
            "write" => check(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) }),
            "pwrite" => check(unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), 0) }),
            "writev" => writev(fd, &[data.as_bytes()]),
            "writev-split" => {
                let (a, b) = data.as_bytes().split_at(data.len() / 2);
                writev(fd, &[a, b])
            }
            "io_uring" => uring_write(fd, data.as_bytes()),
            other => Err(io::Error::other(format!("unknown mode {other}"))),
        };
        unsafe { libc::close(fd) };
        r
    });
    match result {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error {}", errno_name(&e));
            eprintln!("sysfs-write {mode} {file}: {e}");
            ExitCode::from(1)
        }
    }
}

fn open(file: &str) -> io::Result<RawFd> {
    let path = CString::new(file).map_err(io::Error::other)?;
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn check(ret: isize) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn writev(fd: RawFd, parts: &[&[u8]]) -> io::Result<()> {
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    check(unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as i32) })
}

fn uring_write(fd: RawFd, data: &[u8]) -> io::Result<()> {
    let mut ring = io_uring::IoUring::new(2)?;
    let op =
        io_uring::opcode::Write::new(io_uring::types::Fd(fd), data.as_ptr(), data.len() as u32)
            .offset(0)
            .build()
            .user_data(1);
    // SAFETY: `data` outlives the submission, which is waited for below.
    unsafe { ring.submission().push(&op) }.map_err(io::Error::other)?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("no completion"))?;
    if cqe.result() < 0 {
        return Err(io::Error::from_raw_os_error(-cqe.result()));
    }
    Ok(())
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(libc::ENODEV) => "ENODEV".into(),
        Some(libc::EBUSY) => "EBUSY".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::EEXIST) => "EEXIST".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(n) => format!("E{n}"),
        None => "EOTHER".into(),
    }
}
