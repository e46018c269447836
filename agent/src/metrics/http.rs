//! The metrics endpoint: a minimal HTTP/1.1 server on tokio (one request per connection, which
//! is what Prometheus and kubelet probes send). No web framework: four fixed routes.
//!
//! - `GET /metrics`: the text exposition (format 0.0.4);
//! - `GET /healthz`: 200 while the process runs (liveness);
//! - `GET /readyz`: 503 until the agent is ready ([`Metrics::set_ready`]), then 200;
//! - anything else: 404 (405 for a method other than GET/HEAD on a known path).
//!
//! Serving never costs enforcement its descriptors or the probes their answer: at most
//! [`Limits::max_connections`] connections are open (far below RLIMIT_NOFILE, which the daemon
//! raises to its hard limit); past it, a new connection takes the place of the oldest one
//! still sending its request head (a flood of idle connections cannot lock the probes out),
//! and is closed when every open one is already being answered. The whole request head must
//! arrive within [`Limits::header_timeout`] and the response be taken within
//! [`Limits::write_timeout`]; a peer too slow for either is dropped (reset, so its unread
//! response does not linger in the kernel). The daemon runs this server on a thread of its own.
use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use log::{debug, warn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{Metrics, MetricsError, CONTENT_TYPE};

/// A request head larger than this is refused: the routes take no body and few headers.
const MAX_HEAD: usize = 8 * 1024;
/// How much a connection may take of the agent, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (accepted, not yet closed).
    pub max_connections: usize,
    /// The whole request head must arrive within this (slowloris, idle connections).
    pub header_timeout: Duration,
    /// The whole response must be taken within this (a client that does not read).
    pub write_timeout: Duration,
    /// SO_SNDBUF of accepted connections, when set: bounds the kernel memory a slow reader
    /// holds.
    pub send_buffer: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            send_buffer: None,
        }
    }
}
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
    limits: Limits,
}

/// Where a connection is: still sending its head (may be evicted for a new one), or being
/// answered (bounded by the write deadline, kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Head,
    Answer,
}

/// The open connections, oldest first (ids grow).
#[derive(Default)]
struct Open {
    next: u64,
    conns: BTreeMap<u64, (Phase, tokio::task::AbortHandle)>,
}

type Table = Arc<Mutex<Open>>;

fn lock(t: &Table) -> std::sync::MutexGuard<'_, Open> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes its connection from the table when the task ends or is aborted.
struct Slot {
    table: Table,
    id: u64,
}

impl Slot {
    fn answering(&self) {
        if let Some(c) = lock(&self.table).conns.get_mut(&self.id) {
            c.0 = Phase::Answer;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).conns.remove(&self.id);
    }
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
            limits: Limits::default(),
        })
    }

    /// Serves with `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the task is dropped. Each connection gets its own task.
    pub async fn run(self) -> io::Result<()> {
        let table: Table = Arc::default();
        let limits = self.limits;
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    admit(&table, stream, peer, &self.metrics, limits);
                    // Lets the new connection read its head before the next accept.
                    tokio::task::yield_now().await;
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

/// Binds `addr` and serves `metrics` from a thread of its own with its own runtime, so that
/// nothing the agent's event loop does (a sysfs read held by the kernel, a burst of records)
/// delays `/healthz` and `/readyz`. Returns the bound address once listening; the thread serves
/// until the process exits.
pub async fn serve_on_thread(
    addr: &str,
    metrics: Arc<Metrics>,
    limits: Limits,
) -> Result<SocketAddr, MetricsError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let addr_text = addr.to_owned();
    let addr = addr.to_owned();
    let thread = std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(error) => {
                    let _ = tx.send(Err(MetricsError::Bind { addr, error }));
                    return;
                }
            };
            runtime.block_on(async move {
                match MetricsServer::bind(&addr, metrics).await {
                    Ok(server) => {
                        let _ = tx.send(Ok(server.local_addr()));
                        let _ = server.with_limits(limits).run().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        });
    let gone = |addr: &str| MetricsError::Bind {
        addr: addr.to_owned(),
        error: io::Error::other("the metrics thread ended before listening"),
    };
    match thread {
        Ok(_) => rx.await.unwrap_or_else(|_| Err(gone(&addr_text))),
        Err(error) => Err(MetricsError::Bind {
            addr: addr_text,
            error,
        }),
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

/// Takes an accepted connection into the table (making room as the cap requires) and spawns
/// its task; not async, so that the table's lock is never held across an await.
fn admit(
    table: &Table,
    stream: TcpStream,
    peer: SocketAddr,
    metrics: &Arc<Metrics>,
    limits: Limits,
) {
    let mut open = lock(table);
    let mut evicted = None;
    if open.conns.len() >= limits.max_connections {
        // The oldest connection still sending its head gives way; when all are being
        // answered, the new one is closed.
        let idle = open
            .conns
            .iter()
            .find(|(_, (phase, _))| *phase == Phase::Head)
            .map(|(id, _)| *id);
        metrics.http_connection_refused("over_cap");
        match idle.and_then(|id| open.conns.remove(&id)) {
            Some((_, task)) => evicted = Some(task),
            None => {
                reset(&stream);
                return;
            }
        }
    }
    if let Some(bytes) = limits.send_buffer {
        set_send_buffer(&stream, bytes);
    }
    let id = open.next;
    open.next += 1;
    let metrics = Arc::clone(metrics);
    let slot = Slot {
        table: Arc::clone(table),
        id,
    };
    // Spawned and entered while the table is locked: the task cannot end (and remove its
    // entry) before the entry is there.
    let task = tokio::spawn(async move {
        if let Err(e) = handle(stream, &metrics, limits, &slot).await {
            debug!("metrics: connection from {peer}: {e}");
        }
        drop(slot);
    });
    open.conns.insert(id, (Phase::Head, task.abort_handle()));
    drop(open);
    // Outside the lock: the aborted task's slot takes it to remove itself.
    if let Some(task) = evicted {
        task.abort();
    }
}

/// Sets SO_LINGER to 0: the close that follows resets the connection, dropping whatever the
/// peer left unread instead of keeping it in the kernel.
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_option(stream, libc::SO_LINGER, &linger);
}

fn set_send_buffer(stream: &TcpStream, bytes: u32) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_option(stream, libc::SO_SNDBUF, &v);
}

fn set_option<T>(stream: &TcpStream, name: libc::c_int, value: &T) {
    // SAFETY: the descriptor is the stream's own and open; `value` is a live T of the size
    // passed.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        debug!(
            "metrics: setsockopt({name}): {}",
            io::Error::last_os_error()
        );
    }
}

async fn handle(
    mut stream: TcpStream,
    metrics: &Metrics,
    limits: Limits,
    slot: &Slot,
) -> io::Result<()> {
    let head = match tokio::time::timeout(limits.header_timeout, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => {
            metrics.http_connection_refused("header_timeout");
            reset(&stream);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request head in time",
            ));
        }
    };
    slot.answering();
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let response = match (parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version)) if version.starts_with("HTTP/1.") => {
            let r = route(method, target, metrics);
            (r, method == "HEAD")
        }
        _ => (Response::text(400, "bad request\n"), false),
    };
    let write = write_response(&mut stream, &response.0, response.1);
    match tokio::time::timeout(limits.write_timeout, write).await {
        Ok(r) => r,
        Err(_) => {
            metrics.http_connection_refused("write_timeout");
            reset(&stream);
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response not taken in time",
            ))
        }
    }
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
