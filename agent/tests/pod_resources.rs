//! The pod-resources client against a real HTTP/2 gRPC server (h2's server side) on a unix
//! socket in a temp dir, answering `/v1.PodResourcesLister/List` as the kubelet does, and as a
//! kubelet that fails, hangs or hangs up does.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bytes::Bytes;
use iommu_enforcer::pods::resources::{self, ListError, Table};
use tokio::net::UnixListener;

/// A tiny protobuf encoder for the reply.
fn field(out: &mut Vec<u8>, number: u64, value: &[u8]) {
    let varint = |mut v: u64, out: &mut Vec<u8>| {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    varint(number << 3 | 2, out);
    varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// One pod `vms/virt-launcher-vm-a` whose container `compute` holds two GPUs by PCI address and
/// one device by another kind of id.
fn reply() -> Vec<u8> {
    let mut devices = Vec::new();
    field(&mut devices, 1, b"nvidia.com/GH100_H100");
    field(&mut devices, 2, b"0000:41:00.0");
    field(&mut devices, 2, b"c1:00.0");
    field(&mut devices, 2, b"GPU-8d2f7c1e");
    let mut container = Vec::new();
    field(&mut container, 1, b"compute");
    field(&mut container, 2, &devices);
    let mut pod = Vec::new();
    field(&mut pod, 1, b"virt-launcher-vm-a");
    field(&mut pod, 2, b"vms");
    field(&mut pod, 3, &container);
    let mut list = Vec::new();
    field(&mut list, 1, &pod);
    list
}

fn framed(message: &[u8]) -> Bytes {
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    body.into()
}

#[derive(Clone, Copy)]
enum Server {
    /// Answers with [`reply`] and `grpc-status: 0` in the trailers.
    Answers,
    /// A Trailers-Only error reply: `grpc-status: 12` in the headers.
    Unimplemented,
    /// Answers a body, then `grpc-status: 14` in the trailers.
    FailsAfterBody,
    /// Answers a compressed message.
    Compressed,
    /// Accepts, then says nothing.
    Silent,
    /// Accepts and closes at once.
    HangsUp,
}

fn header(name: &'static str, value: &'static str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(name, http::HeaderValue::from_static(value));
    h
}

async fn serve(listener: UnixListener, server: Server) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            match server {
                Server::HangsUp => return drop(stream),
                Server::Silent => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return drop(stream);
                }
                _ => {}
            }
            let Ok(mut conn) = h2::server::handshake(stream).await else {
                return;
            };
            while let Some(Ok((request, mut respond))) = conn.accept().await {
                assert_eq!(request.uri().path(), "/v1.PodResourcesLister/List");
                assert_eq!(request.method(), http::Method::POST);
                assert_eq!(request.headers()["content-type"], "application/grpc");
                let mut body = request.into_body();
                let mut got = Vec::new();
                while let Some(Ok(chunk)) = body.data().await {
                    got.extend_from_slice(&chunk);
                }
                assert_eq!(got, [0, 0, 0, 0, 0], "an empty ListPodResourcesRequest");
                let mut head = http::Response::builder()
                    .status(200)
                    .header("content-type", "application/grpc");
                if let Server::Unimplemented = server {
                    head = head
                        .header("grpc-status", "12")
                        .header("grpc-message", "unknown%20service");
                    let _ = respond.send_response(head.body(()).unwrap(), true);
                    continue;
                }
                let mut send = respond
                    .send_response(head.body(()).unwrap(), false)
                    .unwrap();
                let body = match server {
                    Server::Compressed => {
                        let mut b = framed(&reply()).to_vec();
                        b[0] = 1;
                        b.into()
                    }
                    _ => framed(&reply()),
                };
                send.send_data(body, false).unwrap();
                let status = match server {
                    Server::FailsAfterBody => "14",
                    _ => "0",
                };
                let mut trailers = header("grpc-status", status);
                if status != "0" {
                    trailers.insert("grpc-message", "kubelet is shutting down".parse().unwrap());
                }
                send.send_trailers(trailers).unwrap();
            }
        });
    }
}

/// A server of kind `server` on a socket in `dir`.
fn start(dir: &Path, server: Server) -> PathBuf {
    let socket = dir.join("kubelet.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(serve(listener, server));
    socket
}

#[tokio::test]
async fn a_kubelet_reply_becomes_the_table_of_allocated_pci_devices() {
    let dir = tempfile::tempdir().unwrap();
    let socket = start(dir.path(), Server::Answers);
    let pods = resources::list(&socket, resources::DEADLINE).await.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(
        (&*pods[0].namespace, &*pods[0].name),
        ("vms", "virt-launcher-vm-a")
    );
    let table = Table::from_pods(&pods);
    assert_eq!(table.ignored_ids, 1);
    assert_eq!(
        table.devices.keys().collect::<Vec<_>>(),
        ["0000:41:00.0", "0000:c1:00.0"]
    );
    let a = table.get("0000:c1:00.0").unwrap();
    assert_eq!(
        (&*a.namespace, &*a.pod, &*a.container, &*a.resource),
        (
            "vms",
            "virt-launcher-vm-a",
            "compute",
            "nvidia.com/GH100_H100"
        )
    );
    // Twice on one server: each call is a connection of its own.
    assert_eq!(
        resources::list(&socket, resources::DEADLINE).await.unwrap(),
        pods
    );
}

#[tokio::test]
async fn a_non_zero_grpc_status_is_an_error_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let socket = start(dir.path(), Server::Unimplemented);
    match resources::list(&socket, resources::DEADLINE).await {
        Err(ListError::Grpc(resources::grpc::Status::Failed { code, message })) => {
            assert_eq!((code, &*message), (12, "unknown service"))
        }
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = start(dir.path(), Server::FailsAfterBody);
    let e = resources::list(&socket, resources::DEADLINE)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "grpc_status");
    assert!(
        e.to_string().contains("14: kubelet is shutting down"),
        "{e}"
    );
}

#[tokio::test]
async fn a_compressed_reply_is_a_decode_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = start(dir.path(), Server::Compressed);
    let e = resources::list(&socket, resources::DEADLINE)
        .await
        .unwrap_err();
    assert!(matches!(e, ListError::Frame(_)), "{e:?}");
    assert_eq!(e.reason(), "decode");
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let socket = start(dir.path(), Server::Silent);
    let started = Instant::now();
    let e = resources::list(&socket, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, ListError::Timeout(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_server_that_hangs_up_is_a_protocol_error_and_no_socket_is_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let socket = start(dir.path(), Server::HangsUp);
    let e = resources::list(&socket, resources::DEADLINE)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "protocol", "{e:?}");
    let e = resources::list(&dir.path().join("absent.sock"), resources::DEADLINE)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "no_socket", "{e:?}");
    // A file that is no socket.
    std::fs::write(dir.path().join("plain"), "").unwrap();
    let e = resources::list(&dir.path().join("plain"), resources::DEADLINE)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "connect", "{e:?}");
}

/// The blocking form, as the agent's event loop and `enforcer audit` call it: from a runtime of
/// its own on a thread of its own, so the caller's runtime (here, this test's server) goes on.
#[test]
fn the_blocking_call_runs_beside_the_callers_runtime_and_keeps_its_deadline() {
    // The servers run on a thread and runtime of their own, as the kubelet would.
    let serve_on = |dir: &Path, server: Server| {
        let socket = dir.join("kubelet.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(
                async move { serve(UnixListener::from_std(listener).unwrap(), server).await },
            );
        });
        socket
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = serve_on(dir.path(), Server::Answers);
    let pods = resources::list_blocking(&socket, resources::DEADLINE).unwrap();
    assert_eq!(Table::from_pods(&pods).devices.len(), 2);
    let silent_dir = tempfile::tempdir().unwrap();
    let silent = serve_on(silent_dir.path(), Server::Silent);
    let started = Instant::now();
    let e = resources::list_blocking(&silent, Duration::from_millis(300)).unwrap_err();
    assert_eq!(e.reason(), "timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Called from inside a runtime (the agent's event loop is one): it does not need it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pods_again = rt.block_on(async { resources::list_blocking(&socket, resources::DEADLINE) });
    assert_eq!(pods_again.unwrap(), pods);
}
