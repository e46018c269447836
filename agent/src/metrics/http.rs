//! The metrics endpoint: a minimal HTTP/1.1 server on tokio (one request per connection, which
//! is what Prometheus and kubelet probes send). No web framework: four fixed routes.
//!
//! - `GET /metrics`: the text exposition (format 0.0.4);
//! - `GET /healthz`: 200 while the process runs (liveness);
//! - `GET /readyz`: 503 until the agent is ready ([`Metrics::set_ready`]), then 200;
//! - anything else: 404 (405 for a method other than GET/HEAD on a known path).
use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use log::{debug, warn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{Metrics, MetricsError, CONTENT_TYPE};

/// A request head larger than this is refused: the routes take no body and few headers.
const MAX_HEAD: usize = 8 * 1024;
/// A client that sends nothing for this long is dropped (a stuck peer must not pin a task).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// An address in use is tried again this often, for this long: right after `kill -9` the old
/// agent still holds the port while the kernel tears it down (its pinned programs, its maps).
/// Past the bound the port is someone else's, and that is an error.
const BIND_RETRY: Duration = Duration::from_millis(250);
const BIND_PATIENCE: Duration = Duration::from_secs(30);

/// Parses `--metrics-addr`: an IP address and a port. Checked at start so a typo is an error
/// on the command line, not a silent lack of metrics.
pub fn parse_addr(addr: &str) -> Result<SocketAddr, MetricsError> {
    addr.parse()
        .map_err(|e: std::net::AddrParseError| MetricsError::Addr {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
}

/// A listening metrics endpoint. Bind first (errors surface at start, the bound address is
/// known, port 0 works for tests), then [`MetricsServer::run`].
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
}

impl MetricsServer {
    pub async fn bind(addr: &str, metrics: Arc<Metrics>) -> Result<Self, MetricsError> {
        Self::bind_within(addr, metrics, BIND_PATIENCE).await
    }

    /// [`Self::bind`], waiting at most `patience` for an address in use to free up.
    pub async fn bind_within(
        addr: &str,
        metrics: Arc<Metrics>,
        patience: Duration,
    ) -> Result<Self, MetricsError> {
        let parsed = parse_addr(addr)?;
        let bind_err = |error| MetricsError::Bind {
            addr: addr.to_owned(),
            error,
        };
        let listener = bind_patiently(parsed, BIND_RETRY, patience)
            .await
            .map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(MetricsServer {
            listener,
            local_addr,
            metrics,
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the task is dropped. Each connection gets its own task.
    pub async fn run(self) -> io::Result<()> {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let metrics = Arc::clone(&self.metrics);
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &metrics).await {
                            debug!("metrics: connection from {peer}: {e}");
                        }
                    });
                }
                // Out of file descriptors and the like: back off, keep serving.
                Err(e) => {
                    warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Binds, trying again while the address is in use, for at most `patience`.
async fn bind_patiently(
    addr: SocketAddr,
    every: Duration,
    patience: Duration,
) -> io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut said = false;
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if tokio::time::Instant::now() + every > deadline {
                    return Err(e);
                }
                if !said {
                    warn!("metrics: {addr} is in use (a previous agent exiting?); retrying for up to {}s", patience.as_secs());
                    said = true;
                }
                tokio::time::sleep(every).await;
            }
            other => return other,
        }
    }
}

/// Binds `addr` and serves `metrics` on it until the task is dropped.
pub async fn serve(addr: &str, metrics: Arc<Metrics>) -> io::Result<()> {
    let server = MetricsServer::bind(addr, metrics).await.map_err(|e| {
        let kind = match &e {
            MetricsError::Bind { error, .. } => error.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    })?;
    server.run().await
}

/// One response: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
        }
    }
}

/// The route table.
pub(super) fn route(method: &str, target: &str, metrics: &Metrics) -> Response {
    let path = target.split('?').next().unwrap_or(target);
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return Response::text(404, "not found\n");
    }
    if method != "GET" && method != "HEAD" {
        return Response::text(405, "method not allowed\n");
    }
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: CONTENT_TYPE,
            body: metrics.render(),
        },
        "/readyz" if metrics.is_ready() => Response::text(200, "ready\n"),
        "/readyz" => Response::text(503, "not ready\n"),
        _ => Response::text(200, "ok\n"),
    }
}

async fn handle(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no request")),
    };
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let response = match (parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version)) if version.starts_with("HTTP/1.") => {
            let r = route(method, target, metrics);
            (r, method == "HEAD")
        }
        _ => (Response::text(400, "bad request\n"), false),
    };
    write_response(&mut stream, &response.0, response.1).await
}

/// Reads up to the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

async fn write_response(stream: &mut TcpStream, r: &Response, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if r.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&r.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    }
}
