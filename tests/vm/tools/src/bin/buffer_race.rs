//! `buffer-race FILE GOOD BAD ROUNDS`: the review's time-of-check race. A second thread keeps
//! rewriting one buffer between GOOD and BAD (same length, NUL-padded) while this one writes it
//! to FILE ROUNDS times with write(2), so a hook that reads the buffer may see GOOD while the
//! kernel copies BAD. Prints `tries=N ok=K` and the errno names seen; exits 0.
use std::{
    collections::BTreeMap,
    ffi::CString,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc,
    },
    thread,
};

use vm_tools::{errno_name, last_errno};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, good, bad, rounds] = args.as_slice() else {
        eprintln!("usage: buffer-race FILE GOOD BAD ROUNDS");
        std::process::exit(2);
    };
    let Ok(rounds) = rounds.parse::<u32>() else {
        eprintln!("buffer-race: ROUNDS is a count");
        std::process::exit(2);
    };
    let len = good.len().max(bad.len());
    let pad = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        v.resize(len, b'\n');
        v
    };
    let (good, bad) = (pad(good), pad(bad));
    // The shared buffer, as atomics: the flipper and the kernel's copy race on it by design.
    let buf: Arc<Vec<AtomicU8>> = Arc::new(good.iter().map(|b| AtomicU8::new(*b)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (buf, stop) = (Arc::clone(&buf), Arc::clone(&stop));
        thread::spawn(move || {
            let mut toggle = false;
            while !stop.load(Ordering::Relaxed) {
                let src = if toggle { &good } else { &bad };
                for (cell, b) in buf.iter().zip(src) {
                    cell.store(*b, Ordering::Relaxed);
                }
                toggle = !toggle;
            }
        })
    };
    let Ok(path) = CString::new(file.as_str()) else {
        std::process::exit(2);
    };
    let (mut ok, mut errors) = (0u32, BTreeMap::<String, u32>::new());
    for _ in 0..rounds {
        // SAFETY: a NUL-terminated path; the descriptor is closed below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY) };
        if fd < 0 {
            *errors.entry(errno_name(last_errno())).or_default() += 1;
            continue;
        }
        // SAFETY: `buf` lives for the whole loop; AtomicU8 has the layout of u8.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), len) };
        if n < 0 {
            *errors.entry(errno_name(last_errno())).or_default() += 1;
        } else {
            ok += 1;
        }
        // SAFETY: the descriptor opened above.
        unsafe { libc::close(fd) };
    }
    stop.store(true, Ordering::Relaxed);
    let _ = flipper.join();
    let seen: Vec<String> = errors.iter().map(|(e, n)| format!("{e}:{n}")).collect();
    println!("tries={rounds} ok={ok} errors={}", seen.join(","));
}
