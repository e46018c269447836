//! Shared by the metrics integration tests: external tools, a metrics registry fed with what an
//! agent on a GPU node prints, and a plain HTTP/1.0 client for loopback.
#![allow(dead_code)] // each test file uses a different part

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use iommu_enforcer::metrics::{Limits, Metrics, MetricsServer};
use iommu_enforcer_schema::Line;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ is inside the workspace")
        .to_path_buf()
}

/// An external tool (`promtool`, `prometheus`) by `$ENV` or on PATH. Missing: the test is
/// skipped with a message, except in CI (`CI=true`), where a missing tool fails it.
pub fn tool(name: &str, env: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        let msg = format!("{name} not found (set {env} or `apt-get install prometheus`)");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}: required in CI");
        }
        eprintln!("SKIP: {msg}");
    }
    found
}

/// The lines in tests/deploy/agent-lines.jsonl: an agent on a 6.1 GPU node with BPF LSM active,
/// one passthrough GPU held by QEMU (group 14), a reserved group that is not viable (15), a
/// kernel refusal, a veto, lost records.
pub fn recorded_lines() -> Vec<String> {
    let path = root().join("tests/deploy/agent-lines.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// [`recorded_lines`] read into the schema's lines, as the agent's own values would be: a line
/// the schema does not take fails the test (the recording must stay what an agent prints).
pub fn recorded() -> Vec<Line> {
    recorded_lines()
        .iter()
        .enumerate()
        .map(|(i, text)| {
            serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("agent-lines.jsonl line {}: {e}: {text}", i + 1))
        })
        .collect()
}

/// A registry fed with [`recorded`], groups 14 and 15 reserved.
pub fn fed_metrics() -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new().expect("the registry builds"));
    for line in recorded() {
        metrics.observe(&line);
    }
    metrics.set_reserved(["14", "15"]);
    metrics
}

/// Serves `metrics` on 127.0.0.1 (a free port) from a runtime on its own thread; returns the
/// bound address. The server lives until the test process exits.
pub fn serve_on_loopback(metrics: Arc<Metrics>) -> SocketAddr {
    serve_with_limits(metrics, Limits::default())
}

/// [`serve_on_loopback`] with the server's connection cap and deadlines set.
pub fn serve_with_limits(metrics: Arc<Metrics>, limits: Limits) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            let server = MetricsServer::bind("127.0.0.1:0", metrics)
                .await
                .expect("binds on loopback")
                .with_limits(limits);
            tx.send(server.local_addr()).expect("the test waits");
            let _ = server.run().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the server reports its address")
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `METHOD target` over HTTP/1.0 (no chunked encoding, the server closes when done).
pub fn request(addr: SocketAddr, method: &str, target: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {target} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: iommu-enforcer-test\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

pub fn get(addr: SocketAddr, target: &str) -> std::io::Result<Response> {
    request(addr, "GET", target)
}

/// Percent-encodes a query parameter value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
