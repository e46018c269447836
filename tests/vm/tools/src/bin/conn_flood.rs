//! `conn-flood ADDR COUNT SECONDS`: opens up to COUNT idle TCP connections to ADDR (they never
//! send a byte) and holds them for SECONDS; meanwhile, every 250 ms, asks `/healthz` and
//! `/readyz` on fresh connections and measures how long each answer took. Prints
//! `{"connected": N, "probes_ok": A, "probes_failed": B, "probe_max_ms": M}`.
//! `conn-flood --ready ADDR SECONDS`: waits until `/readyz` answers 200 (exit 0) or SECONDS
//! pass (exit 1): the agent's stdout may be a pipe nobody reads, so readiness is asked over HTTP.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    time::{Duration, Instant},
};

/// GET `path` on a new connection; the status code, or `None` when no answer came in 2 s.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let t = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, t).ok()?;
    s.set_read_timeout(Some(t)).ok()?;
    s.set_write_timeout(Some(t)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

fn raise_nofile(want: u64) {
    let lim = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: setrlimit reads the struct passed by reference.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        eprintln!(
            "conn-flood: RLIMIT_NOFILE {want}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--ready") {
        let (Some(Ok(addr)), Some(Ok(secs))) = (
            args.get(2).map(|a| a.parse::<SocketAddr>()),
            args.get(3).map(|s| s.parse::<u64>()),
        ) else {
            eprintln!("usage: conn-flood --ready ADDR SECONDS");
            return ExitCode::from(2);
        };
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if get(addr, "/readyz") == Some(200) {
                return ExitCode::SUCCESS;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        return ExitCode::from(1);
    }
    let (Some(Ok(addr)), Some(Ok(count)), Some(Ok(secs))) = (
        args.get(1).map(|a| a.parse::<SocketAddr>()),
        args.get(2).map(|n| n.parse::<usize>()),
        args.get(3).map(|s| s.parse::<u64>()),
    ) else {
        eprintln!("usage: conn-flood ADDR COUNT SECONDS");
        return ExitCode::from(2);
    };
    raise_nofile(count as u64 + 256);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut held = Vec::with_capacity(count);
    let (mut ok, mut failed, mut max) = (0u32, 0u32, Duration::ZERO);
    let mut next_probe = start;
    let probe = |ok: &mut u32, failed: &mut u32, max: &mut Duration| {
        for path in ["/healthz", "/readyz"] {
            let t = Instant::now();
            match get(addr, path) {
                Some(200) => *ok += 1,
                _ => *failed += 1,
            }
            *max = (*max).max(t.elapsed());
        }
    };
    for _ in 0..count {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            held.push(s);
        }
        if Instant::now() >= next_probe {
            probe(&mut ok, &mut failed, &mut max);
            next_probe = Instant::now() + Duration::from_millis(250);
        }
        if Instant::now() >= end {
            break;
        }
    }
    let connected = held.len();
    while Instant::now() < end {
        probe(&mut ok, &mut failed, &mut max);
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(held);
    println!(
        "{{\"connected\": {connected}, \"probes_ok\": {ok}, \"probes_failed\": {failed}, \"probe_max_ms\": {}}}",
        max.as_millis()
    );
    ExitCode::SUCCESS
}
