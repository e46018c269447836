//! `bar-poke FILE OFFSET HEXBYTE [WAIT_PATH]`: opens FILE (a device's `config`, `resourceN` or
//! `rom` in sysfs) read-write, then, once WAIT_PATH exists when one is given (so the descriptor
//! can be opened before a group comes into use), writes the byte at OFFSET with pwrite(2) and
//! maps the file's first page writable. Prints `open=R write=R mmap=R` with each R `ok`,
//! `error_ERRNO` or `skipped`; exits 0.
use std::{ffi::CString, io, path::Path, thread, time::Duration};

fn outcome(r: io::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("error_{}", errno_name(&e)),
    }
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => iommu_enforcer_common::errno::name(n)
            .map_or_else(|| format!("errno{n}"), str::to_string),
        None => "unknown".into(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (file, offset, byte, wait) = match args.as_slice() {
        [_, f, o, b] => (f, o, b, None),
        [_, f, o, b, w] => (f, o, b, Some(w)),
        _ => {
            eprintln!("usage: bar-poke FILE OFFSET HEXBYTE [WAIT_PATH]");
            std::process::exit(2);
        }
    };
    let (Ok(offset), Ok(byte)) = (offset.parse::<i64>(), u8::from_str_radix(byte, 16)) else {
        eprintln!("bar-poke: OFFSET is decimal, HEXBYTE two hex digits");
        std::process::exit(2);
    };
    let Ok(path) = CString::new(file.as_str()) else {
        std::process::exit(2);
    };
    // SAFETY: a NUL-terminated path; the descriptor is closed at exit.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        println!("open=error_{} write=skipped mmap=skipped", errno_name(&e));
        return;
    }
    if let Some(w) = wait {
        println!("opened");
        while !Path::new(w).exists() {
            thread::sleep(Duration::from_millis(20));
        }
    }
    // SAFETY: one byte from a live local, to a descriptor this process owns.
    let n = unsafe { libc::pwrite(fd, (&byte as *const u8).cast(), 1, offset) };
    let write = outcome(if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    });
    // SAFETY: a fresh shared mapping of one page, unmapped at once; nothing reads through it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    let mmap = outcome(if map == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the mapping just made, of that length.
        unsafe { libc::munmap(map, 4096) };
        Ok(())
    });
    println!("open=ok write={write} mmap={mmap}");
}
