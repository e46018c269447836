//! `pod-attribution`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, expect_pod, json, Scenario, ALL};
use crate::checks::{Checker, Events};
use iommu_enforcer_schema::{Event, Kind, Outcome};
use serde_json::Value;

pub const RUNS: &[Scenario] = &[Scenario {
    name: "pod-attribution",
    boots: ALL,
    dry_run: false,
    policy: None,
    check: pod_attribution,
}];

/// The events `q` finds of the task `pid` (a fact): none when it is not a number.
fn of_task<'c>(q: Events<'c>, pid: &str) -> Vec<&'c Event> {
    match pid.parse() {
        Ok(tgid) => q.tgid(tgid).list(),
        Err(_) => Vec::new(),
    }
}

fn pod_attribution(c: &Checker) {
    let g = c.fact("group");
    let [uid_a, id_a, uid_b, id_b, uid_c, id_c, pid_a, pid_b] = [
        "uid_a", "id_a", "uid_b", "id_b", "uid_c", "id_c", "pid_a", "pid_b",
    ]
    .map(|k| c.fact(k));
    for (k, v) in [("group", &g), ("pid_a", &pid_a), ("pid_b", &pid_b)] {
        c.expect(!v.is_empty(), format!("script did not report {k}"));
    }
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_fact(c, "a_seen", "yes");
    expect_fact(c, "a_cgroup_removed", "yes");
    // The bind attempts, written from pod C (guaranteed QoS, systemd driver, CRI-O).
    for var in ["VM_DEV_FN0", "VM_DEV_FN1"] {
        let dev = c.dev(var);
        let binds = c.events(Kind::Bind).device(dev).driver("vfio-pci").list();
        expect_pod(
            c,
            &binds,
            &format!("bind of vfio-pci to {dev}"),
            &uid_c,
            &id_c,
        );
    }
    // Holder A (besteffort, systemd driver, containerd) exited and its cgroup was removed
    // before the agent stopped; holder B (burstable, cgroupfs driver) still holds the group.
    for (pid, uid, id, who) in [
        (&pid_a, &uid_a, &id_a, "holder A"),
        (&pid_b, &uid_b, &id_b, "holder B"),
    ] {
        let opens = of_task(c.events(Kind::VfioOpen).group(&g).result(Outcome::Ok), pid);
        expect_pod(
            c,
            &opens,
            &format!("vfio_open of group {g} by {who}"),
            uid,
            id,
        );
    }
    // Holder A's release ran as it exited; its cgroup was removed afterwards: named from the id.
    for e in of_task(c.events(Kind::VfioRelease), &pid_a) {
        let got = (e.pod_uid.as_deref(), e.container_id.as_deref());
        c.expect(
            got == (Some(uid_a.as_str()), Some(id_a.as_str())),
            format!("vfio_release by holder A should name its pod: {}", json(e)),
        );
    }
    // Nothing is attributed to a pod the script did not make.
    let known = [&uid_a, &uid_b, &uid_c];
    let stray: Vec<&str> = c
        .every_event()
        .filter_map(|e| e.pod_uid.as_deref())
        .filter(|u| !known.iter().any(|k| k.as_str() == *u))
        .collect();
    c.expect(
        stray.is_empty(),
        format!("events name pods nobody made: {stray:?}"),
    );
    // The audit: holder B in its pod, holder A gone.
    let holders: Vec<&Value> = c
        .audit
        .as_ref()
        .and_then(|a| a["groups"].as_array())
        .into_iter()
        .flatten()
        .filter(|grp| grp["id"].as_str() == Some(g.as_str()))
        .filter_map(|grp| grp["holders"].as_array())
        .flatten()
        .collect();
    let pid_of = |h: &Value| h["pid"].as_u64().map(|p| p.to_string());
    let b: Vec<&Value> = holders
        .iter()
        .copied()
        .filter(|h| pid_of(h) == Some(pid_b.clone()))
        .collect();
    c.expect(
        !b.is_empty(),
        format!("audit: holder B (pid {pid_b}) not among the holders of group {g}: {holders:?}"),
    );
    for h in b {
        let got = (h["pod_uid"].as_str(), h["container_id"].as_str());
        c.expect(
            got == (Some(uid_b.as_str()), Some(id_b.as_str())),
            format!("audit: holder B should name pod {uid_b} container {id_b}: {h}"),
        );
    }
    c.expect(
        !holders.iter().any(|h| pid_of(h) == Some(pid_a.clone())),
        format!("audit: holder A (pid {pid_a}) exited but is listed"),
    );
}
