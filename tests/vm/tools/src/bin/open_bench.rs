//! `open-bench FILE ITERATIONS [ROUNDS]`: times open()+close() of a regular file in a loop, the
//! path every process takes through the `file_open` LSM hook. Prints one JSON line per round:
//! `{"ns_per_op": F, "iterations": N}`. The VM benchmark runs it with and without the agent's
//! programs attached in the same boot and compares.
use std::{ffi::CString, process::ExitCode, time::Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(Ok(iterations))) = (args.get(1), args.get(2).map(|n| n.parse::<u64>()))
    else {
        eprintln!("usage: open-bench FILE ITERATIONS [ROUNDS]");
        return ExitCode::from(2);
    };
    let rounds: u32 = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(1);
    let Ok(path) = CString::new(file.as_str()) else {
        eprintln!("open-bench: bad path");
        return ExitCode::from(2);
    };
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iterations {
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
            if fd < 0 {
                eprintln!(
                    "open-bench: open {file}: {}",
                    std::io::Error::last_os_error()
                );
                return ExitCode::from(1);
            }
            unsafe { libc::close(fd) };
        }
        let ns = start.elapsed().as_nanos() as f64 / iterations.max(1) as f64;
        println!("{{\"ns_per_op\": {ns:.1}, \"iterations\": {iterations}}}");
    }
    ExitCode::SUCCESS
}
