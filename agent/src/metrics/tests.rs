use std::collections::BTreeMap;

use iommu_enforcer_schema::Event;
use serde_json::json;

use super::*;

fn metrics() -> Metrics {
    Metrics::new().expect("the registry builds")
}

/// Feeds a line written as docs/events.md spells it: read into the schema's `Line` (as the
/// agent's own values would be), then observed.
fn feed(m: &Metrics, json: &str) {
    let line: Line = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    m.observe(&line);
}

/// A `capabilities` line whose `enforcement` map is empty: the metrics go by what the
/// programs imply.
fn capabilities(dry_run: bool, bpf_lsm: bool, programs: &[(&str, &str)]) -> String {
    let programs: BTreeMap<&str, &str> = programs.iter().copied().collect();
    json!({
        "type": "capabilities", "kernel": "6.1.0-28-amd64", "btf": true,
        "bpf_lsm": bpf_lsm, "dry_run": dry_run, "pin_watch": "event", "programs": programs,
        "enforcement": {},
    })
    .to_string()
}

/// A `capabilities` line with the agent's own `enforcement` map.
fn capabilities_saying(dry_run: bool, bpf_lsm: bool, lsm: &str, reservation: &str) -> String {
    json!({
        "type": "capabilities", "kernel": "6.1.0-28-amd64", "btf": true,
        "bpf_lsm": bpf_lsm, "dry_run": dry_run, "pin_watch": "event",
        "programs": {"really_probe": "attached", "file_open": "attached"},
        "enforcement": {"lsm": lsm, "reservation": reservation},
    })
    .to_string()
}

/// An `event` line as docs/events.md spells it, with `fields` replacing the defaults.
fn event(kind: &str, fields: serde_json::Value) -> String {
    let mut line = serde_json::json!({
        "type": "event", "kind": kind, "device": "0000:01:00.1", "driver": "snd_hda_intel",
        "group": "14", "ret": 0, "errno": null, "result": "ok",
        "pid": 4242, "tgid": 4242, "comm": "bash", "cgroup_id": 777,
    });
    if let (Some(line), Some(fields)) = (line.as_object_mut(), fields.as_object()) {
        line.extend(fields.clone());
    }
    line.to_string()
}

fn verdict(group: &str, owner: Owner, viable: bool) -> Line {
    Line::Verdict {
        group: group.into(),
        owner,
        viable,
        reasons: vec![],
    }
}

/// The value of the one sample whose name and labels are exactly `series`.
/// The value of `series` (`name{a="x",b="y"}`) in `text`, matched as Prometheus matches a
/// series: by name and label set, where an empty label value is the same as no label (the
/// `namespace` and `pod` of an event whose pod is unknown).
fn sample(text: &str, series: &str) -> Option<f64> {
    let want = parse_series(series);
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, value) = l.rsplit_once(' ')?;
        (parse_series(s) == want).then(|| value.parse().ok())?
    })
}

/// A series' name and its labels with a value, sorted.
fn parse_series(series: &str) -> (String, Vec<(String, String)>) {
    let Some((name, labels)) = series.split_once('{') else {
        return (series.to_owned(), Vec::new());
    };
    let labels = labels.trim_end_matches('}');
    let mut pairs: Vec<(String, String)> = labels
        .split("\",")
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once("=\"")?;
            Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    pairs.sort();
    (name.to_owned(), pairs)
}

#[test]
fn registry_builds_and_every_name_has_the_prefix() {
    let m = metrics();
    for line in m.render().lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("iommu_enforcer_"), "{line}");
    }
}

#[test]
fn refusal_counts_with_group_device_driver_errno_and_no_process_labels() {
    let m = metrics();
    let ev = event(
        "refusal",
        json!({"ret": -16, "errno": "EBUSY", "result": "error"}),
    );
    feed(&m, &ev);
    feed(&m, &ev);
    let text = m.render();
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_kernel_refusals_total{device="0000:01:00.1",driver="snd_hda_intel",errno="EBUSY",group="14"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert!(!text.contains("pid"), "{text}");
    assert!(!text.contains("comm"), "{text}");
    // No process label (the pod-attribution failure reasons may name cgroup2 itself).
    assert!(!text.contains("cgroup_id"), "{text}");
}

#[test]
fn binds_unbinds_claims_and_vfio_opens() {
    let m = metrics();
    feed(&m, &event("bind", json!({})));
    feed(
        &m,
        &event(
            "bind",
            json!({"ret": -16, "errno": "EBUSY", "result": "error"}),
        ),
    );
    feed(&m, &event("unbind", json!({})));
    feed(
        &m,
        &event(
            "claim",
            json!({"scope": "group", "ret": -1, "errno": "EPERM", "result": "error"}),
        ),
    );
    feed(&m, &event("vfio_open", json!({"path": "/dev/vfio/14"})));
    feed(&m, &event("vfio_open", json!({"group": null})));
    // Releases and membership changes have no counter of their own.
    feed(&m, &event("release", json!({"scope": "group"})));
    feed(&m, &event("device_added", json!({})));

    let text = m.render();
    for (series, value) in [
        (
            r#"iommu_enforcer_bind_events_total{driver="snd_hda_intel",kind="bind",result="ok"}"#,
            1.0,
        ),
        (
            r#"iommu_enforcer_bind_events_total{driver="snd_hda_intel",kind="bind",result="error"}"#,
            1.0,
        ),
        (
            r#"iommu_enforcer_bind_events_total{driver="snd_hda_intel",kind="unbind",result="ok"}"#,
            1.0,
        ),
        (
            r#"iommu_enforcer_claims_total{result="error",scope="group"}"#,
            1.0,
        ),
        (
            r#"iommu_enforcer_vfio_opens_total{group="14",result="ok"}"#,
            1.0,
        ),
        (
            r#"iommu_enforcer_vfio_opens_total{group="unknown",result="ok"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
}

#[test]
fn lsm_hook_lines_move_the_program_status() {
    let m = metrics();
    let caps = Line::Capabilities {
        kernel: "6.1.0-56-amd64".into(),
        btf: true,
        bpf_lsm: true,
        dry_run: false,
        pin_watch: "event".into(),
        programs: [("file_open", "attached"), ("really_probe", "attached")]
            .into_iter()
            .map(|(p, s)| (p.to_string(), s.parse().expect("a program state")))
            .collect(),
        enforcement: Default::default(),
    };
    m.observe(&caps);
    m.observe(&Line::LsmHook {
        hook: "file_open".into(),
        state: HookState::Standby,
    });
    let series = r#"iommu_enforcer_program_status{program="file_open",status="attached"}"#;
    assert_eq!(sample(&m.render(), series), Some(0.0));
    assert_eq!(
        sample(&m.render(), "iommu_enforcer_programs_attached"),
        Some(1.0)
    );
    m.observe(&Line::LsmHook {
        hook: "file_open".into(),
        state: HookState::Attached,
    });
    let text = m.render();
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
    assert_eq!(sample(&text, "iommu_enforcer_programs_attached"), Some(2.0));
}

#[test]
fn a_removed_group_takes_its_series_along() {
    let m = metrics();
    m.observe(&verdict("14", Owner::User, true));
    m.observe(&verdict("15", Owner::Kernel, true));
    m.observe(&Line::GroupRemoved { group: "14".into() });
    let text = m.render();
    assert_eq!(
        sample(&text, r#"iommu_enforcer_group_viable{group="14"}"#),
        None,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_group_owner{group="14",owner="user"}"#
        ),
        None,
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"iommu_enforcer_group_viable{group="15"}"#),
        Some(1.0)
    );
}

#[test]
fn verdicts_set_one_owner_series_to_one_and_the_others_to_zero() {
    let m = metrics();
    m.observe(&verdict("14", Owner::Kernel, false));
    m.observe(&verdict("14", Owner::User, true));
    let text = m.render();
    for (owner, value) in [
        ("kernel", 0.0),
        ("user", 1.0),
        ("none", 0.0),
        ("conflict", 0.0),
    ] {
        let series = format!(r#"iommu_enforcer_group_owner{{group="14",owner="{owner}"}}"#);
        assert_eq!(sample(&text, &series), Some(value), "{series}\n{text}");
    }
    assert_eq!(
        sample(&text, r#"iommu_enforcer_group_viable{group="14"}"#),
        Some(1.0)
    );
}

#[test]
fn reserved_groups_follow_verdicts_and_default_to_not_viable() {
    let m = metrics();
    let text = m.render();
    assert_eq!(sample(&text, "iommu_enforcer_reserved_groups"), Some(0.0));

    m.observe(&verdict("14", Owner::None, true));
    m.set_reserved(["14", "15"]);
    let text = m.render();
    assert_eq!(sample(&text, "iommu_enforcer_reserved_groups"), Some(2.0));
    assert_eq!(
        sample(&text, r#"iommu_enforcer_reserved_group_viable{group="14"}"#),
        Some(1.0)
    );
    // Group 15 had no verdict: not seen on this node, so not viable.
    assert_eq!(
        sample(&text, r#"iommu_enforcer_reserved_group_viable{group="15"}"#),
        Some(0.0)
    );

    m.observe(&verdict("14", Owner::Conflict, false));
    m.observe(&verdict("3", Owner::Kernel, false));
    let text = m.render();
    assert_eq!(
        sample(&text, r#"iommu_enforcer_reserved_group_viable{group="14"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"iommu_enforcer_reserved_group_viable{group="3"}"#),
        None,
        "only reserved groups have the series"
    );

    m.set_reserved(["14"]);
    let text = m.render();
    assert_eq!(sample(&text, "iommu_enforcer_reserved_groups"), Some(1.0));
    assert_eq!(
        sample(&text, r#"iommu_enforcer_reserved_group_viable{group="15"}"#),
        None,
        "a group no longer reserved loses its series"
    );
}

#[test]
fn capabilities_give_build_info_programs_and_dry_run() {
    let m = metrics();
    feed(
        &m,
        &capabilities(
            true,
            false,
            &[
                ("really_probe", "attached"),
                ("iommu_device_use_default_domain", "attached"),
                ("vfio_group_fops_open", "absent"),
                (
                    "vfio_device_fops_cdev_open",
                    "failed: Invalid argument (os error 22)",
                ),
            ],
        ),
    );
    let text = m.render();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(
            &text,
            &format!(r#"iommu_enforcer_build_info{{kernel="6.1.0-28-amd64",version="{version}"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "iommu_enforcer_dry_run"), Some(1.0));
    assert_eq!(sample(&text, "iommu_enforcer_programs_attached"), Some(2.0));
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_program_status{program="vfio_device_fops_cdev_open",status="failed"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_program_status{program="vfio_group_fops_open",status="attached"}"#
        ),
        Some(0.0)
    );
    assert!(
        !text.contains("os error"),
        "failure reasons stay out of labels"
    );

    // A later capabilities line (a module loaded, its probes attached) replaces the report.
    feed(
        &m,
        &capabilities(
            true,
            false,
            &[
                ("really_probe", "attached"),
                ("iommu_device_use_default_domain", "attached"),
                ("vfio_group_fops_open", "attached"),
            ],
        ),
    );
    let text = m.render();
    assert_eq!(sample(&text, "iommu_enforcer_programs_attached"), Some(3.0));
    assert!(!text.contains("vfio_device_fops_cdev_open"), "{text}");
}

/// A kprobe before 5.15 is a perf event, not a BPF link: attached, not pinned, and attached all
/// the same (5.10's vfio kprobes once counted as failed here).
#[test]
fn a_program_attached_without_a_pinned_link_counts_as_attached() {
    let m = metrics();
    let programs = [
        ("really_probe", "attached"),
        ("vfio_group_fops_open", "attached (not pinned)"),
    ];
    feed(&m, &capabilities(false, false, &programs));
    let text = m.render();
    assert_eq!(sample(&text, "iommu_enforcer_programs_attached"), Some(2.0));
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_program_status{program="vfio_group_fops_open",status="attached"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn lsm_enforcement_needs_bpf_lsm_an_attached_lsm_program_and_no_dry_run() {
    let lsm = r#"iommu_enforcer_enforcement_active{mechanism="lsm"}"#;
    let cases = [
        // Today's agent: no LSM program at all.
        (false, true, vec![("really_probe", "attached")], 0.0),
        // The program attaches but bpf is not an active LSM: it would never run.
        (false, false, vec![("lsm/file_open", "attached")], 0.0),
        // Dry run decides but denies nothing.
        (true, true, vec![("lsm/file_open", "attached")], 0.0),
        (false, true, vec![("lsm/file_open", "failed: EPERM")], 0.0),
        (false, true, vec![("lsm/file_open", "attached")], 1.0),
        (false, true, vec![("file_permission", "attached")], 1.0),
    ];
    for (dry_run, bpf_lsm, programs, want) in cases {
        let m = metrics();
        assert_eq!(sample(&m.render(), lsm), Some(0.0));
        feed(&m, &capabilities(dry_run, bpf_lsm, &programs));
        assert_eq!(
            sample(&m.render(), lsm),
            Some(want),
            "dry_run {dry_run}, bpf_lsm {bpf_lsm}, {programs:?}"
        );
    }
}

#[test]
fn reservation_enforcement_needs_reserved_groups_no_dry_run_and_no_failed_pin() {
    let series = r#"iommu_enforcer_enforcement_active{mechanism="reservation"}"#;
    let m = metrics();
    feed(
        &m,
        &capabilities_saying(false, false, "unavailable: no bpf", "active"),
    );
    assert_eq!(sample(&m.render(), series), Some(0.0), "nothing reserved");
    m.set_reserved(["14"]);
    assert_eq!(sample(&m.render(), series), Some(1.0));

    // A pin that failed: the group is not held by its pin until a later pin succeeds.
    let pin = |result: &str| {
        event(
            "pin",
            json!({"device": "0000:01:00.1", "driver": "vfio-pci", "rule": "reservation",
                   "action": "pinned", "result": result}),
        )
    };
    feed(&m, &pin("error"));
    assert_eq!(sample(&m.render(), series), Some(0.0), "a pin failed");
    feed(&m, &pin("ok"));
    assert_eq!(sample(&m.render(), series), Some(1.0));
    feed(
        &m,
        &event(
            "reservation_blocked",
            json!({"device": "0000:01:00.2", "driver": "vfio-pci", "rule": "reservation",
               "action": "report", "bound_to": "xhci_hcd"}),
        ),
    );
    let text = m.render();
    assert_eq!(
        sample(&text, series),
        Some(1.0),
        "a blocked member shows as not viable, not as a failed pin"
    );
    for (labels, n) in [
        (r#"action="pinned",kind="pin",result="error""#, 1.0),
        (r#"action="pinned",kind="pin",result="ok""#, 1.0),
        (
            r#"action="report",kind="reservation_blocked",result="ok""#,
            1.0,
        ),
    ] {
        let s = format!("iommu_enforcer_reservation_actions_total{{{labels}}}");
        assert_eq!(sample(&text, &s), Some(n), "{s}\n{text}");
    }

    // Dry run pins nothing; the agent's own word says so too.
    feed(
        &m,
        &capabilities_saying(true, false, "unavailable: no bpf", "dry_run"),
    );
    feed(
        &m,
        &event(
            "pin",
            json!({"device": "0000:01:00.1", "driver": "vfio-pci", "rule": "reservation",
               "action": "would_pin"}),
        ),
    );
    assert_eq!(sample(&m.render(), series), Some(0.0), "dry run");
    m.set_reserved(Vec::<String>::new());
    feed(
        &m,
        &capabilities_saying(false, false, "unavailable: no bpf", "active"),
    );
    assert_eq!(
        sample(&m.render(), series),
        Some(0.0),
        "nothing reserved any more"
    );
}

#[test]
fn lsm_enforcement_follows_the_agents_own_word_but_never_beyond_the_line() {
    let series = r#"iommu_enforcer_enforcement_active{mechanism="lsm"}"#;
    for (dry_run, bpf_lsm, said, want) in [
        (false, true, "active", 1.0),
        (true, true, "dry_run", 0.0),
        (
            false,
            false,
            "unavailable: bpf is not among the active LSMs",
            0.0,
        ),
        (
            false,
            true,
            "unavailable: the LSM hooks did not attach",
            0.0,
        ),
        // Contradictions resolve to "not active".
        (false, false, "active", 0.0),
        (true, true, "active", 0.0),
    ] {
        let m = metrics();
        feed(&m, &capabilities_saying(dry_run, bpf_lsm, said, "active"));
        assert_eq!(
            sample(&m.render(), series),
            Some(want),
            "dry_run {dry_run}, bpf_lsm {bpf_lsm}, {said}"
        );
    }
}

#[test]
fn veto_events_count_as_violations_by_rule_and_action() {
    let m = metrics();
    feed(&m, &capabilities(true, true, &[]));
    feed(
        &m,
        &event(
            "veto",
            json!({"rule": "protected_bind", "action": "would_veto", "errno": "EPERM"}),
        ),
    );
    feed(&m, &event("veto", json!({"rule": "vfio_open_not_viable"})));
    feed(
        &m,
        &event("veto", json!({"rule": "reservation", "action": "pinned"})),
    );
    let text = m.render();
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_violations_total{action="would_veto",rule="protected_bind"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_violations_total{action="would_veto",rule="vfio_open_not_viable"}"#
        ),
        Some(1.0),
        "no action in dry run: would_veto"
    );
    assert!(
        !text.contains(r#"violations_total{action="pinned""#),
        "a veto counts only with a veto's action\n{text}"
    );
}

#[test]
fn lost_and_resync_lines_count() {
    let m = metrics();
    assert_eq!(
        sample(&m.render(), "iommu_enforcer_events_lost_total"),
        Some(0.0)
    );
    m.observe(&Line::Lost { count: 17 });
    m.observe(&Line::Resync { groups: 9 });
    m.observe(&Line::Lost { count: 3 });
    m.observe(&Line::Resync { groups: 9 });
    let text = m.render();
    assert_eq!(
        sample(&text, "iommu_enforcer_events_lost_total"),
        Some(20.0)
    );
    assert_eq!(sample(&text, "iommu_enforcer_resyncs_total"), Some(2.0));
}

#[test]
fn ready_and_shutdown_lines_drive_readiness() {
    let m = metrics();
    assert!(!m.is_ready());
    m.observe(&Line::Ready { groups: 3 });
    assert!(m.is_ready());
    m.observe(&Line::Shutdown {
        signal: "SIGTERM".into(),
    });
    assert!(!m.is_ready());
    m.set_ready(true);
    assert!(m.is_ready());
}

#[test]
fn a_reservation_event_with_another_kinds_action_is_not_counted() {
    let m = metrics();
    let before = m.render();
    let mut pin = Event::new(Kind::Pin, Outcome::Ok);
    pin.action = Some(Action::Rebound);
    m.observe(&Line::Event(Box::new(pin)));
    assert_eq!(m.render(), before);
}

#[test]
fn policy_events_keep_one_info_series_and_count_rejections() {
    let m = metrics();
    let agent = json!({"device": null, "driver": null, "group": null, "comm": "enforcer",
        "cgroup_id": 0});
    let applied = |digest: &str| {
        let mut fields = agent.clone();
        fields["path"] = json!("/etc/iommu-enforcer/policy.toml");
        fields["digest"] = json!(digest);
        event("policy_applied", fields)
    };
    assert_eq!(
        sample(&m.render(), "iommu_enforcer_policy_reload_failures_total"),
        Some(0.0)
    );
    feed(&m, &applied("aa"));
    feed(&m, &applied("bb"));
    let mut rejected = agent.clone();
    rejected["result"] = json!("error");
    rejected["line"] = json!(3);
    rejected["column"] = json!(9);
    rejected["error"] = json!("policy.toml:3:9: expected a value");
    feed(&m, &event("policy_rejected", rejected));
    let text = m.render();
    let info: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("iommu_enforcer_policy_info{"))
        .collect();
    assert_eq!(info, [r#"iommu_enforcer_policy_info{digest="bb"} 1"#]);
    assert_eq!(
        sample(&text, "iommu_enforcer_policy_reload_failures_total"),
        Some(1.0)
    );
    // The same policy applied again (a restart's first line) keeps its one series.
    feed(&m, &applied("bb"));
    assert_eq!(
        sample(&m.render(), r#"iommu_enforcer_policy_info{digest="bb"}"#),
        Some(1.0)
    );
}

#[test]
fn routes() {
    let m = metrics();
    let r = http::route("GET", "/metrics", &m);
    assert_eq!((r.status, r.content_type), (200, CONTENT_TYPE));
    assert!(r.body.contains("iommu_enforcer_events_lost_total"));
    assert_eq!(http::route("GET", "/healthz", &m).status, 200);
    assert_eq!(http::route("GET", "/readyz", &m).status, 503);
    m.set_ready(true);
    assert_eq!(http::route("GET", "/readyz?verbose", &m).status, 200);
    assert_eq!(http::route("GET", "/", &m).status, 404);
    assert_eq!(http::route("GET", "/metricsx", &m).status, 404);
    assert_eq!(http::route("POST", "/metrics", &m).status, 405);
}

#[test]
fn bad_addresses_are_clear_errors() {
    for bad in ["9477", "localhost:9477", "0.0.0.0", "0.0.0.0:http", ""] {
        let e = parse_addr(bad).expect_err(bad).to_string();
        assert!(e.contains("--metrics-addr"), "{e}");
        assert!(e.contains("0.0.0.0:9477"), "{e}");
    }
    assert!(parse_addr("0.0.0.0:9477").is_ok());
    assert!(parse_addr("[::]:9477").is_ok());
    assert!(parse_addr("127.0.0.1:0").is_ok());
}

#[test]
fn counters_with_known_labels_are_exported_at_zero_before_any_event() {
    let text = metrics().render();
    let zero = |series: String| {
        assert_eq!(sample(&text, &series), Some(0.0), "{series}\n{text}");
    };
    for rule in Rule::VETOES {
        for action in Action::VETO {
            zero(format!(
                r#"iommu_enforcer_violations_total{{action="{action}",rule="{rule}"}}"#
            ));
        }
    }
    for (kind, action) in Kind::RESERVATION
        .into_iter()
        .flat_map(|k| Action::of_reservation(k).iter().map(move |a| (k, a)))
    {
        for result in Outcome::ALL {
            zero(format!(
                r#"iommu_enforcer_reservation_actions_total{{action="{action}",kind="{kind}",result="{result}"}}"#
            ));
        }
    }
    for scope in Scope::ALL {
        for result in Outcome::ALL {
            zero(format!(
                r#"iommu_enforcer_claims_total{{result="{result}",scope="{scope}"}}"#
            ));
        }
    }
    zero("iommu_enforcer_events_lost_total".into());
    zero("iommu_enforcer_resyncs_total".into());
    // Labels that depend on the node's hardware are not invented.
    for family in [
        "iommu_enforcer_kernel_refusals_total{",
        "iommu_enforcer_bind_events_total{",
        "iommu_enforcer_vfio_opens_total{",
    ] {
        assert!(!text.contains(family), "{family}\n{text}");
    }
    // Only the pairs an event can carry: no pin that "rebound".
    assert!(!text.contains(r#"action="rebound",kind="pin""#), "{text}");
}

#[test]
fn the_first_veto_is_an_increase_from_zero() {
    let m = metrics();
    let series = r#"iommu_enforcer_violations_total{action="vetoed",rule="protected_bind"}"#;
    assert_eq!(sample(&m.render(), series), Some(0.0));
    feed(&m, &capabilities(false, true, &[]));
    feed(
        &m,
        &event(
            "veto",
            json!({"rule": "protected_bind", "action": "vetoed", "result": "error", "errno": "EPERM"}),
        ),
    );
    assert_eq!(sample(&m.render(), series), Some(1.0));
}

/// Every rule docs/events.md lists for veto events is exported from the start, and no other.
#[test]
fn veto_rules_are_the_ones_docs_events_md_lists() {
    let doc = include_str!("../../../docs/events.md");
    let veto = doc
        .split("- `veto`:")
        .nth(1)
        .and_then(|s| s.split("\n- ").next())
        .expect("docs/events.md describes veto events");
    let documented: Vec<&str> = veto
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.starts_with("protected_") || w.starts_with("vfio_open_"))
        .collect();
    let exported: Vec<&str> = Rule::VETOES.iter().map(|r| r.as_str()).collect();
    assert_eq!(documented, exported);
}

#[test]
fn events_and_vetoes_name_the_pod_up_to_the_cap_then_other() {
    let m = metrics();
    feed(&m, &capabilities(false, true, &[]));
    let alloc = |i: usize| json!({"namespace": "vms", "pod": format!("vm-{i}"), "container": "compute", "resource": "nvidia.com/GH100_H100"});
    feed(
        &m,
        &event(
            "veto",
            json!({"rule": "protected_bind", "action": "vetoed", "result": "error", "errno": "EPERM", "allocated_to": alloc(0)}),
        ),
    );
    feed(
        &m,
        &event(
            "vfio_open",
            json!({"group": "14", "allocated_to": alloc(0)}),
        ),
    );
    let text = m.render();
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_violations_total{action="vetoed",namespace="vms",pod="vm-0",rule="protected_bind"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_vfio_opens_total{group="14",namespace="vms",pod="vm-0",result="ok"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // The unattributed series stays at 0.
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_violations_total{action="vetoed",rule="protected_bind"}"#
        ),
        Some(0.0)
    );
    // Past the cap, every new pod counts under other.
    for i in 1..super::POD_SERIES + 10 {
        feed(
            &m,
            &event(
                "vfio_open",
                json!({"group": "14", "allocated_to": alloc(i)}),
            ),
        );
    }
    let text = m.render();
    let opens: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("iommu_enforcer_vfio_opens_total{"))
        .collect();
    assert_eq!(opens.len(), super::POD_SERIES + 1, "{opens:#?}");
    assert_eq!(
        sample(
            &text,
            r#"iommu_enforcer_vfio_opens_total{group="14",namespace="other",pod="other",result="ok"}"#
        ),
        Some(10.0),
        "{text}"
    );
    // A pod seen before the cap keeps its own series.
    feed(
        &m,
        &event(
            "vfio_open",
            json!({"group": "14", "allocated_to": alloc(0)}),
        ),
    );
    assert_eq!(
        sample(
            &m.render(),
            r#"iommu_enforcer_vfio_opens_total{group="14",namespace="vms",pod="vm-0",result="ok"}"#
        ),
        Some(2.0)
    );
}
