//! The one call the agent makes to the kubelet's pod-resources socket: the unary
//! `/v1.PodResourcesLister/List`, gRPC over HTTP/2 (h2) over a unix socket, under one deadline.
use std::{path::Path, pin::pin, thread, time::Duration};

use bytes::Bytes;
use tokio::net::UnixStream;

use super::{
    grpc::{self, FrameError, Status},
    proto::{self, DecodeError, PodResources},
};

/// The kubelet's socket (mounted read-only into the agent's pod at the same path).
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// The whole call: connect, handshake, request, reply, trailers.
pub const DEADLINE: Duration = Duration::from_secs(2);
const PATH: &str = "/v1.PodResourcesLister/List";

/// Why a `List` gave no pods. [`ListError::reason`] is the metric's label.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("no socket at the path: {0}")]
    NoSocket(std::io::Error),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no reply within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("HTTP/2: {0}")]
    Protocol(String),
    #[error("{0}")]
    Grpc(Status),
    #[error("gRPC framing: {0}")]
    Frame(FrameError),
    #[error("protobuf: {0}")]
    Decode(DecodeError),
}

impl ListError {
    /// Every reason, exported at 0 from the start.
    pub const REASONS: [&'static str; 6] = [
        "no_socket",
        "connect",
        "timeout",
        "protocol",
        "grpc_status",
        "decode",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            ListError::NoSocket(_) => "no_socket",
            ListError::Connect(_) => "connect",
            ListError::Timeout(_) => "timeout",
            ListError::Protocol(_) => "protocol",
            ListError::Grpc(_) => "grpc_status",
            ListError::Frame(_) | ListError::Decode(_) => "decode",
        }
    }
}

impl From<h2::Error> for ListError {
    fn from(e: h2::Error) -> Self {
        ListError::Protocol(e.to_string())
    }
}

/// `List` on `socket`, all of it within `deadline`.
pub async fn list(socket: &Path, deadline: Duration) -> Result<Vec<PodResources>, ListError> {
    tokio::time::timeout(deadline, call(socket))
        .await
        .map_err(|_| ListError::Timeout(deadline))?
}

/// `List` from a thread of its own (with a runtime of its own), waited for at most `deadline`
/// (plus a margin for the thread's start): for callers that are not async, or that are the
/// agent's event loop and must not wait on a task of their own runtime. Nothing runs between
/// calls: no thread, no timer.
pub fn list_blocking(socket: &Path, deadline: Duration) -> Result<Vec<PodResources>, ListError> {
    let (reply, result) = std::sync::mpsc::sync_channel(1);
    let socket = socket.to_path_buf();
    let spawned = thread::Builder::new()
        .name("pod-resources".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build();
            let value = match runtime {
                Ok(rt) => rt.block_on(list(&socket, deadline)),
                Err(e) => Err(ListError::Protocol(format!("no runtime: {e}"))),
            };
            let _ = reply.send(value);
        });
    if let Err(e) = spawned {
        return Err(ListError::Protocol(format!("no thread: {e}")));
    }
    result
        .recv_timeout(deadline + Duration::from_millis(500))
        .unwrap_or(Err(ListError::Timeout(deadline)))
}

async fn call(socket: &Path) -> Result<Vec<PodResources>, ListError> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ListError::NoSocket(e)
        } else {
            ListError::Connect(e)
        }
    })?;
    let (client, connection) = h2::client::handshake(stream).await?;
    let mut connection = pin!(connection);
    let mut exchange = pin!(exchange(client));
    tokio::select! {
        biased;
        result = &mut exchange => result,
        // The connection ended (the server closed it, or broke it): what it delivered is still
        // read, and a stream it cut short fails on its own.
        _ = &mut connection => exchange.await,
    }
}

/// The request and its reply on one stream.
async fn exchange(client: h2::client::SendRequest<Bytes>) -> Result<Vec<PodResources>, ListError> {
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://localhost{PATH}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(())
        .map_err(|e| ListError::Protocol(e.to_string()))?;
    let mut client = client.ready().await?;
    let (response, mut send) = client.send_request(request, false)?;
    send.send_data(Bytes::from_static(&grpc::EMPTY_REQUEST), true)?;
    let (head, mut body) = response.await?.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(ListError::Protocol(format!("HTTP status {}", head.status)));
    }
    // Trailers-Only: an error reply is the headers alone.
    if let Some(status) = head.headers.get("grpc-status") {
        grpc::check_status(
            Some(status.as_bytes()),
            head.headers.get("grpc-message").map(|m| m.as_bytes()),
        )
        .map_err(ListError::Grpc)?;
    }
    let mut message = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        if message.len() + chunk.len() > grpc::MAX_BODY {
            return Err(ListError::Frame(FrameError::TooLarge {
                len: (message.len() + chunk.len()) as u64,
            }));
        }
        message.extend_from_slice(&chunk);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    let status = trailers
        .get("grpc-status")
        .or_else(|| head.headers.get("grpc-status"));
    grpc::check_status(
        status.map(|s| s.as_bytes()),
        trailers.get("grpc-message").map(|m| m.as_bytes()),
    )
    .map_err(ListError::Grpc)?;
    if message.is_empty() && head.headers.contains_key("grpc-status") {
        return Ok(Vec::new());
    }
    let message = grpc::unframe(&message).map_err(ListError::Frame)?;
    proto::decode_list(message).map_err(ListError::Decode)
}
