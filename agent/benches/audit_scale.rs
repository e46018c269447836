//! The audit's own work on a large node, apart from reading it: the group map of a synthetic
//! node (default 100,000 PCI devices) is scanned once, then `Audit::new` (owners, verdicts,
//! violations, pins, unmatched reservations) and its JSON are timed, with a policy of
//! `AUDIT_SCALE_RESERVATIONS` reservations (default 16,000: a ConfigMap's worth). Issue 20:
//! every group re-scanned every holder, and every device every reservation.
//!
//! `cargo bench -p iommu-enforcer --bench audit_scale`
//!
//! Environment: `AUDIT_SCALE_DEVICES` (default 100000), `AUDIT_SCALE_RUNS` (default 3),
//! `AUDIT_SCALE_NODE` (a node already built by `mkfixture --synthetic N DIR`: its DIR).
use std::path::{Path, PathBuf};
use std::time::Instant;

use iommu_enforcer::policy::Policy;
use iommu_enforcer::report::Audit;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}=`{v}` is not a number"))
    })
}

fn main() {
    let devices = env_number("AUDIT_SCALE_DEVICES", 100_000);
    let reservations = env_number("AUDIT_SCALE_RESERVATIONS", 16_000);
    let runs = env_number("AUDIT_SCALE_RUNS", 3).max(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let root: PathBuf = match std::env::var_os("AUDIT_SCALE_NODE") {
        Some(dir) => dir.into(),
        None => {
            let started = Instant::now();
            iommu_fixtures::build(&iommu_fixtures::synthetic(devices), tmp.path())
                .unwrap_or_else(|e| panic!("building the synthetic node: {e:#}"));
            println!(
                "node: {devices} devices built in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            tmp.path().to_path_buf()
        }
    };
    let (sysfs, proc) = (root.join("sys"), root.join("proc"));
    let started = Instant::now();
    let scan = iommu_enforcer::sysfs::scan(&sysfs).expect("scan");
    let mut map = scan.to_map();
    let holders = iommu_enforcer::sysfs::scan_holders(&proc, &sysfs).holders;
    let held = holders.len();
    map.set_holders(holders);
    println!(
        "read: {} devices, {} groups, {held} holders in {:.2} s (not part of the figure)",
        map.devices().count(),
        map.groups().count(),
        started.elapsed().as_secs_f64()
    );

    // Reservations by id, group, class and address, half of them of devices this node has.
    let mut text = String::with_capacity(reservations * 48);
    let addresses: Vec<String> = map.devices().map(|d| d.address.clone()).collect();
    for i in 0..reservations {
        let line = match i % 2 {
            0 if i / 2 < addresses.len() => format!("device = \"{}\"", addresses[i / 2]),
            _ => format!(
                "device = \"{:04x}:ff:{:02x}.{}\"",
                i >> 8,
                (i >> 3) % 32,
                i % 8
            ),
        };
        text.push_str(&format!("[[reserve]]\n{line}\n\n"));
    }
    let policy = Policy::parse(&text, Path::new("scale.toml")).expect("policy");

    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let audit = Audit::new(&map, Vec::new(), &policy);
        let json = serde_json::to_string(&audit).expect("json");
        times.push(started.elapsed().as_secs_f64());
        bytes = json.len();
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "Audit::new + JSON, {} reservations: median {median:.3} s over {runs} runs ({:.2} us/device, {bytes} bytes)",
        policy.reserve.len(),
        median * 1e6 / addresses.len().max(1) as f64,
    );
}
