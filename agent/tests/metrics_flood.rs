//! The metrics endpoint under abuse, on loopback only, with bounded loops: a flood of idle
//! connections past the cap does not lock the probes out, and a client that never reads its
//! response is dropped by the write deadline.
mod metrics_support;

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::Arc,
    time::{Duration, Instant},
};

use iommu_enforcer::metrics::{Limits, Metrics};
use iommu_enforcer_schema::{Line, Owner};
use metrics_support::{get, serve_with_limits as serve};

fn counter(metrics: &Metrics, series: &str) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn healthz_answers_within_100ms_under_a_flood_of_idle_connections() {
    const CAP: usize = 16;
    const FLOOD: usize = 200;
    let metrics = Arc::new(Metrics::new().expect("registry"));
    let addr = serve(
        Arc::clone(&metrics),
        Limits {
            max_connections: CAP,
            // Longer than the test: only the cap frees their places.
            header_timeout: Duration::from_secs(60),
            ..Limits::default()
        },
    );
    // Idle connections that never send a request, held open for the whole test.
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(TcpStream::connect(addr).expect("connect"));
    }
    // Wait (bounded) until the server has accepted them all: every one beyond the cap has
    // pushed an older idle one out.
    let over = (FLOOD - CAP) as u64;
    let series = r#"iommu_enforcer_http_connections_refused_total{reason="over_cap"}"#;
    for _ in 0..200 {
        if counter(&metrics, series) >= over {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(counter(&metrics, series) >= over, "{}", metrics.render());
    for path in ["/healthz", "/readyz", "/healthz"] {
        let t = Instant::now();
        let r = get(addr, path).expect("answered under the flood");
        let took = t.elapsed();
        assert!(matches!(r.status, 200 | 503), "{r:?}");
        assert!(took < Duration::from_millis(100), "{path} took {took:?}");
    }
    // The connections it pushed out were closed by the server (EOF or reset).
    let mut closed = 0;
    for s in flood.iter_mut().take(8) {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 8, "the oldest idle connections were dropped");
}

#[test]
fn a_client_that_never_reads_metrics_is_dropped_by_the_write_deadline() {
    let metrics = Arc::new(Metrics::new().expect("registry"));
    // A body far larger than the socket buffers below: a few hundred KB.
    for g in 0..2000 {
        metrics.observe(&Line::Verdict {
            group: g.to_string(),
            owner: Owner::Kernel,
            viable: true,
            reasons: Vec::new(),
        });
    }
    assert!(metrics.render().len() > 200_000);
    let addr = serve(
        Arc::clone(&metrics),
        Limits {
            write_timeout: Duration::from_millis(300),
            send_buffer: Some(4096),
            ..Limits::default()
        },
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A receive buffer set before connecting, so the window stays small.
    let mut client = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        socket
            .connect(addr)
            .await
            .expect("connect")
            .into_std()
            .expect("std")
    });
    client.set_nonblocking(false).expect("blocking");
    client
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let series = r#"iommu_enforcer_http_connections_refused_total{reason="write_timeout"}"#;
    // Never read: the deadline (300 ms) drops it.
    for _ in 0..50 {
        if counter(&metrics, series) >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(counter(&metrics, series), 1, "{}", metrics.render());
    // The client sees the connection reset or cut short, not the whole body.
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut got = Vec::new();
    let r = client.read_to_end(&mut got);
    assert!(
        r.is_err() || got.len() < metrics.render().len(),
        "read {} bytes: {r:?}",
        got.len()
    );
    // And the server still answers.
    assert_eq!(get(addr, "/healthz").expect("healthz").status, 200);
}
