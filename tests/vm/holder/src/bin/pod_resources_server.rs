//! `pod-resources-server SOCKET PCI_ADDRESS`: a fake kubelet for the guest. Serves the
//! PodResourcesLister v1 `List` gRPC call over HTTP/2 on the unix socket SOCKET, answering with
//! one pod: namespace `vms`, pod `virt-launcher-vm-a`, container `compute`, resource
//! `devices.kubevirt.io/e1000`, device ids PCI_ADDRESS and a GPU UUID (an id of another kind,
//! which the agent ignores). Prints `serving SOCKET` once it listens, one line per call, and
//! runs until killed. The encoding is that of agent/tests/pod_resources.rs.
use std::process::ExitCode;

use bytes::Bytes;
use tokio::net::UnixListener;

/// A protobuf length-delimited field.
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

/// ListPodResourcesResponse with the one pod, gRPC-framed (uncompressed).
fn reply(device: &str) -> Bytes {
    let mut devices = Vec::new();
    field(&mut devices, 1, b"devices.kubevirt.io/e1000");
    field(&mut devices, 2, device.as_bytes());
    field(&mut devices, 2, b"GPU-8d2f7c1e-0b4a-4c3e-9f51-2a7d6e0c9b13");
    let mut container = Vec::new();
    field(&mut container, 1, b"compute");
    field(&mut container, 2, &devices);
    let mut pod = Vec::new();
    field(&mut pod, 1, b"virt-launcher-vm-a");
    field(&mut pod, 2, b"vms");
    field(&mut pod, 3, &container);
    let mut list = Vec::new();
    field(&mut list, 1, &pod);
    let mut body = vec![0];
    body.extend_from_slice(&(list.len() as u32).to_be_bytes());
    body.extend_from_slice(&list);
    body.into()
}

async fn connection(stream: tokio::net::UnixStream, answer: Bytes) {
    let mut conn = match h2::server::handshake(stream).await {
        Ok(c) => c,
        Err(e) => return println!("handshake failed: {e}"),
    };
    while let Some(Ok((request, mut respond))) = conn.accept().await {
        let path = request.uri().path().to_string();
        let mut body = request.into_body();
        while let Some(Ok(_)) = body.data().await {}
        let head = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc");
        if path != "/v1.PodResourcesLister/List" {
            println!("call {path}: unimplemented");
            let head = head.header("grpc-status", "12").body(()).unwrap();
            let _ = respond.send_response(head, true);
            continue;
        }
        println!("call {path}");
        let Ok(mut send) = respond.send_response(head.body(()).unwrap(), false) else {
            continue;
        };
        let _ = send.send_data(answer.clone(), false);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let _ = send.send_trailers(trailers);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, device] = &args[..] else {
        eprintln!("usage: pod-resources-server SOCKET PCI_ADDRESS");
        return ExitCode::from(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let _ = std::fs::remove_file(socket);
        let listener = match UnixListener::bind(socket) {
            Ok(l) => l,
            Err(e) => {
                println!("bind {socket} failed: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("serving {socket}");
        let answer = reply(device);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, answer.clone()));
                }
                Err(e) => println!("accept failed: {e}"),
            }
        }
    })
}
