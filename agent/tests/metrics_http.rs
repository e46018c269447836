//! The metrics endpoint on loopback, over real TCP: routes, status codes, content type, readiness,
//! and a bad `--metrics-addr`.
mod metrics_support;

use std::{sync::Arc, time::Duration};

use iommu_enforcer::metrics::{Metrics, MetricsServer, CONTENT_TYPE};
use iommu_enforcer_schema::Line;
use metrics_support::{get, request, serve_on_loopback};

#[test]
fn metrics_healthz_readyz_and_404_over_tcp() {
    let metrics = Arc::new(Metrics::new().expect("registry"));
    let addr = serve_on_loopback(Arc::clone(&metrics));
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let r = get(addr, "/healthz").expect("GET /healthz");
    assert_eq!(r.status, 200, "{r:?}");

    let r = get(addr, "/readyz").expect("GET /readyz");
    assert_eq!(r.status, 503, "not ready before the first scan: {r:?}");
    metrics.observe(&Line::Ready { groups: 2 });
    assert_eq!(get(addr, "/readyz").expect("GET /readyz").status, 200);

    metrics.observe(&Line::Lost { count: 5 });
    let r = get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4");
    assert_eq!(
        r.header("content-length")
            .and_then(|l| l.parse::<usize>().ok()),
        Some(r.body.len())
    );
    assert!(
        r.body
            .lines()
            .any(|l| l == "iommu_enforcer_events_lost_total 5"),
        "{}",
        r.body
    );

    let r = request(addr, "HEAD", "/metrics").expect("HEAD /metrics");
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(get(addr, "/").expect("GET /").status, 404);
    assert_eq!(get(addr, "/metrics/x").expect("GET").status, 404);
    assert_eq!(request(addr, "POST", "/metrics").expect("POST").status, 405);

    metrics.observe(&Line::Shutdown {
        signal: "SIGTERM".into(),
    });
    assert_eq!(get(addr, "/readyz").expect("GET /readyz").status, 503);
    assert_eq!(get(addr, "/healthz").expect("GET /healthz").status, 200);
}

#[test]
fn garbage_requests_get_400_and_the_server_keeps_serving() {
    use std::io::{Read, Write};
    let addr = serve_on_loopback(Arc::new(Metrics::new().expect("registry")));
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(b"\x16\x03\x01 hello\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(get(addr, "/healthz").expect("GET").status, 200);
}

#[tokio::test(flavor = "current_thread")]
async fn bad_or_busy_addresses_fail_at_bind_with_a_clear_error() {
    let metrics = Arc::new(Metrics::new().expect("registry"));
    for bad in ["9477", "localhost:9477", "0.0.0.0:99999"] {
        let e = MetricsServer::bind(bad, Arc::clone(&metrics))
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(e.to_string().contains("--metrics-addr"), "{e}");
    }
    let held = MetricsServer::bind("127.0.0.1:0", Arc::clone(&metrics))
        .await
        .expect("binds");
    let busy = held.local_addr().to_string();
    let e = MetricsServer::bind_within(&busy, Arc::clone(&metrics), Duration::from_millis(600))
        .await
        .err()
        .expect("the port is taken");
    assert!(e.to_string().contains(&busy), "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_port_freed_while_waiting_is_taken() {
    // The old agent after kill -9: its port frees up a moment later.
    let metrics = Arc::new(Metrics::new().expect("registry"));
    let held = MetricsServer::bind("127.0.0.1:0", Arc::clone(&metrics))
        .await
        .expect("binds");
    let busy = held.local_addr().to_string();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(held);
    });
    let server = MetricsServer::bind_within(&busy, metrics, Duration::from_secs(10))
        .await
        .expect("bound once the old one let go");
    assert_eq!(server.local_addr().to_string(), busy);
    release.await.expect("join");
}
