//! A real Prometheus server (Debian's `prometheus`) on 127.0.0.1 scrapes an agent's /metrics,
//! loads dashboards/alerts.yaml, and answers every query of dashboards/iommu-enforcer.json:
//! each must be valid PromQL over the exported names (status success), the `node` variable must
//! list the target, the panels that the recorded lines feed must return data, every alert rule
//! must evaluate without error, and the veto and refusal alerts must fire.
//!
//! Scrape target: by default a metrics server in this test, fed with tests/deploy/agent-lines.jsonl.
//! With `IOMMU_ENFORCER_METRICS_TARGET=HOST:PORT` it scrapes that agent instead (e.g. the agent in
//! the QEMU test node through a hostfwd port) and requires data only where any running agent has
//! it (enforcement, owners, programs, build info); `IOMMU_ENFORCER_EXPECT_DATA` (comma-separated
//! panel titles) adds panels the scenario feeds. Skipped when prometheus is missing, except in CI.
mod metrics_support;

use std::{
    collections::BTreeSet,
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use iommu_enforcer_schema::Line;
use metrics_support::{encode, fed_metrics, get, root, serve_on_loopback, tool};
use serde_json::Value;

/// Panels every running agent feeds.
const ALWAYS_DATA: &[&str] = &[
    "Enforcement active per node",
    "Mode per node",
    "eBPF programs attached",
    "Agent version and kernel",
    "Groups by owner",
    "Groups: owner and viability",
    "Lost events and resyncs",
];
/// Panels the recorded lines also feed.
const RECORDED_DATA: &[&str] = &[
    "Violations and vetoes by rule",
    "Kernel refusals",
    "VFIO opens",
    "Binds and unbinds",
    "DMA ownership claims",
    "Groups not viable per node",
    "Reserved groups",
    "Reserved groups that are not viable",
    "Reservation pins",
];
/// Alerts the recorded lines must fire (rules without `for`).
const RECORDED_ALERTS: &[&str] = &[
    "IommuEnforcerVeto",
    "IommuKernelRefusals",
    "IommuEnforcerEventsLost",
];

/// A Prometheus child process, killed and reaped on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(binary: &Path, dir: &Path, target: &str) -> Prometheus {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let config = dir.join("prometheus.yml");
        let rules = root().join("dashboards/alerts.yaml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: iommu-enforcer\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules.display()
            ),
        )
        .expect("config written");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let prometheus = Prometheus { child, addr };
        prometheus.wait_for("the server to be ready", |p| {
            get(p.addr, "/-/ready").is_ok_and(|r| r.status == 200)
        });
        prometheus
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut(&Prometheus) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if done(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("timed out waiting for {what}");
    }

    /// GET an API path; the JSON answer (`status` must be `success`).
    fn api(&self, target: &str) -> Value {
        let r = get(self.addr, target).unwrap_or_else(|e| panic!("GET {target}: {e}"));
        let json: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("GET {target}: {e}: {}", r.body));
        assert_eq!(json["status"], "success", "GET {target}: {json}");
        json
    }

    /// An instant query at `time` (unix seconds); its result vector.
    fn query_at(&self, expr: &str, time: f64) -> Vec<Value> {
        let json = self.api(&format!("/api/v1/query?query={}&time={time}", encode(expr)));
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A range query from `start` to `end` every `step` seconds; its result matrix.
    fn query_range(&self, expr: &str, start: f64, end: f64, step: u32) -> Vec<Value> {
        let json = self.api(&format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step={step}",
            encode(expr)
        ));
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// An instant query; its result vector.
    fn query(&self, expr: &str) -> Vec<Value> {
        let json = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The number in one sample of a query result (`{"value": [time, "1"]}`).
fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a sample with a value: {sample}"))
}

/// Every panel query in the dashboard, with its panel title.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = root().join("dashboards/iommu-enforcer.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let title = panel["title"].as_str().expect("every panel has a title");
            out.push((title.to_owned(), expr.to_owned()));
        }
    }
    assert!(out.len() >= 15, "{} queries", out.len());
    out
}

/// Grafana's variables, as Grafana would substitute them for one node.
fn substitute(expr: &str, instance: &str) -> String {
    expr.replace("$node", &regex_escape(instance))
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1s")
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = ".+*?()|[]{}^$\\".contains(c);
            // PromQL strings need the backslash itself escaped.
            let prefix: &[char] = if special { &['\\', '\\'] } else { &[] };
            prefix
                .iter()
                .copied()
                .chain(std::iter::once(c))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_dashboard_query_and_alert_rule_works_against_a_real_prometheus() {
    let Some(binary) = tool("prometheus", "PROMETHEUS") else {
        return;
    };
    let external = std::env::var("IOMMU_ENFORCER_METRICS_TARGET").ok();
    let metrics = external.is_none().then(fed_metrics);
    let target = match (&external, &metrics) {
        (Some(t), _) => t.clone(),
        (None, Some(m)) => serve_on_loopback(m.clone()).to_string(),
        (None, None) => unreachable!(),
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let prom = Prometheus::start(&binary, dir.path(), &target);

    prom.wait_for("the first scrape of the agent", |p| {
        p.query(r#"up{job="iommu-enforcer"} == 1"#).len() == 1
    });
    if let Some(m) = &metrics {
        // A second batch after the first scrape, so increase() sees counters grow.
        for line in metrics_support::recorded() {
            if matches!(line, Line::Event(_) | Line::Lost { .. }) {
                m.observe(&line);
            }
        }
    }
    prom.wait_for("three scrapes", |p| {
        p.query("count_over_time(iommu_enforcer_build_info[1m]) >= 3")
            .len()
            == 1
    });

    // The node variable: label_values(iommu_enforcer_build_info, instance).
    let values = prom.api(&format!(
        "/api/v1/label/instance/values?match[]={}",
        encode("iommu_enforcer_build_info")
    ));
    let instances: Vec<&str> = values["data"]
        .as_array()
        .expect("label values")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(instances, [target.as_str()], "node variable values");

    let mut expect: BTreeSet<String> = ALWAYS_DATA.iter().map(|s| s.to_string()).collect();
    if external.is_none() {
        expect.extend(RECORDED_DATA.iter().map(|s| s.to_string()));
    }
    if let Ok(extra) = std::env::var("IOMMU_ENFORCER_EXPECT_DATA") {
        expect.extend(
            extra
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        );
    }
    let mut with_data = BTreeSet::new();
    for (title, expr) in dashboard_queries() {
        let q = substitute(&expr, &target);
        let result = prom.query(&q); // asserts status success: the query parses and evaluates
        eprintln!("{:>3} series  {title}: {q}", result.len());
        if !result.is_empty() {
            with_data.insert(title);
        }
    }
    let missing: Vec<_> = expect.difference(&with_data).collect();
    assert!(missing.is_empty(), "panels without data: {missing:?}");

    // Every rule evaluated at least once, without error.
    prom.wait_for("every alert rule to be evaluated", |p| {
        let rules = p.api("/api/v1/rules");
        let all: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        !all.is_empty()
            && all.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001-"))
            })
    });
    let rules = prom.api("/api/v1/rules");
    let mut names = Vec::new();
    for group in rules["data"]["groups"].as_array().expect("rule groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["name"].as_str().unwrap_or("?");
            assert_eq!(rule["health"], "ok", "rule {name}: {}", rule["lastError"]);
            names.push(name.to_owned());
        }
    }
    assert_eq!(names.len(), 14, "{names:?}");

    // Bar panels count events exactly: over a range that starts before the first scrape, with
    // the step Grafana gives `$__interval`, the bars of every counting panel add up to the
    // counter's value at the last bar (`end`), whatever the step.
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
        .floor();
    for (title, expr) in dashboard_queries() {
        if !expr.contains("offset $__interval") {
            continue;
        }
        let counter = expr
            .split(" - ")
            .next()
            .and_then(|s| s.rsplit('(').next())
            .expect("a counter selector");
        let total: f64 = prom
            .query_at(&format!("sum({})", substitute(counter, &target)), end)
            .iter()
            .map(sample_value)
            .sum();
        for step in [1, 2, 7] {
            let q = substitute(&expr, &target).replace("offset 1s", &format!("offset {step}s"));
            let bars: f64 = prom
                .query_range(&q, end - f64::from(step * (300 / step)), end, step)
                .iter()
                .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
                .map(|v| sample_value(&serde_json::json!({ "value": v })))
                .sum();
            assert_eq!(bars, total, "{title}, step {step}s: {q}");
        }
    }

    if external.is_none() {
        prom.wait_for("the recorded lines' alerts to fire", |p| {
            let alerts = p.api("/api/v1/alerts");
            let firing: BTreeSet<&str> = alerts["data"]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["state"] == "firing")
                .filter_map(|a| a["labels"]["alertname"].as_str())
                .collect();
            RECORDED_ALERTS.iter().all(|a| firing.contains(a))
        });
        // Not in dry run and both mechanisms active: no "not enforcing" alert, pending or firing.
        let alerts = prom.api("/api/v1/alerts");
        let names: Vec<&str> = alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["labels"]["alertname"].as_str())
            .collect();
        assert!(!names.contains(&"IommuEnforcerNotEnforcing"), "{names:?}");
        assert!(!names.contains(&"IommuEnforcerDown"), "{names:?}");
    }
}
