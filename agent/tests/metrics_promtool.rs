//! promtool on the real exposition: a registry fed with a recorded agent stdout
//! (tests/deploy/agent-lines.jsonl) must pass `promtool check metrics` (names, types, help,
//! counters ending in _total, no lint problems), and the alert rules must pass
//! `promtool check rules` and their unit tests. Skipped when promtool is missing, except in CI.
mod metrics_support;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use metrics_support::{fed_metrics, root, tool};

#[test]
fn rendered_metrics_pass_promtool_check_metrics() {
    let Some(promtool) = tool("promtool", "PROMTOOL") else {
        return;
    };
    let text = fed_metrics().render();
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("promtool reads the exposition");
    let out = child.wait_with_output().expect("promtool finishes");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n---\n{text}"
    );

    // What the recorded lines must have produced, by name.
    for series in [
        r#"iommu_enforcer_kernel_refusals_total{device="0000:02:00.1",driver="snd_hda_intel",errno="EBUSY",group="14"} 1"#,
        r#"iommu_enforcer_violations_total{action="vetoed",rule="protected_bind"} 1"#,
        r#"iommu_enforcer_group_owner{group="16",owner="conflict"} 1"#,
        r#"iommu_enforcer_reserved_group_viable{group="15"} 0"#,
        r#"iommu_enforcer_enforcement_active{mechanism="lsm"} 1"#,
        r#"iommu_enforcer_enforcement_active{mechanism="reservation"} 1"#,
        "iommu_enforcer_programs_attached 12",
        "iommu_enforcer_events_lost_total 3",
        "iommu_enforcer_resyncs_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "missing {series} in\n{text}"
        );
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = tool("promtool", "PROMTOOL") else {
        return;
    };
    let root = root();
    for args in [
        vec!["check", "rules", "dashboards/alerts.yaml"],
        vec!["test", "rules", "tests/deploy/alerts_test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&root)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `iommu_enforcer_*` names in `text`.
fn names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("iommu_enforcer_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_metric_name_in_the_dashboard_and_alerts_is_exported() {
    let exported: std::collections::BTreeSet<String> = fed_metrics()
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    for file in ["dashboards/iommu-enforcer.json", "dashboards/alerts.yaml"] {
        let text = std::fs::read_to_string(root().join(file)).expect(file);
        let used = names_in(&text);
        assert!(!used.is_empty(), "{file} uses no metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses names the agent does not export: {unknown:?}"
        );
    }
}
