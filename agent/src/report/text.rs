//! Text rendering: one table per group, then violations, planned pins and scan problems.
use std::fmt::Write;

use super::{Audit, DeviceReport, GroupReport, Groups};
use crate::sysfs::ScanProblem;

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths.get(c).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<pad$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_string()
}

fn id(d: &DeviceReport) -> String {
    let strip = |s: Option<&String>| {
        s.map(|s| s.trim_start_matches("0x").to_string())
            .unwrap_or_else(|| "????".to_string())
    };
    format!("{}:{}", strip(d.vendor.as_ref()), strip(d.device.as_ref()))
}

fn kind(d: &DeviceReport) -> String {
    match (d.port_type, d.bridge) {
        (Some(p), _) => p.describe().to_string(),
        (None, true) => "bridge".to_string(),
        (None, false) => "device".to_string(),
    }
}

fn group_table(out: &mut String, g: &GroupReport, with_reasons: bool) {
    let viable = if g.viable { "viable" } else { "not viable" };
    let mut head = format!("IOMMU group {}  owner {}  {viable}", g.id, g.owner);
    if g.reserved {
        head.push_str("  reserved");
    }
    if g.claimed {
        head.push_str("  claimed");
    }
    for h in &g.holders {
        let _ = write!(head, "  held by {} (pid {}, {})", h.comm, h.pid, h.path);
    }
    out.push_str(&head);
    out.push('\n');
    if let Some(w) = &g.why_shared {
        let _ = writeln!(out, "  why shared: {w}");
    }
    let mut rows = vec![[
        "DEVICE", "ID", "CLASS", "TYPE", "ACS", "DRIVER", "OVERRIDE", "INTENDED",
    ]
    .map(str::to_string)
    .to_vec()];
    for d in &g.devices {
        rows.push(vec![
            d.address.clone(),
            id(d),
            or_dash(d.class.as_deref()),
            kind(d),
            d.acs.as_str().to_string(),
            or_dash(d.driver.as_deref()),
            or_dash(d.driver_override.as_deref()),
            or_dash(d.intended.as_deref()),
        ]);
    }
    for m in &g.others {
        rows.push(vec![
            m.name.clone(),
            "-".to_string(),
            "-".to_string(),
            "not PCI".to_string(),
            "-".to_string(),
            or_dash(m.driver.as_deref()),
            "-".to_string(),
            "-".to_string(),
        ]);
    }
    if rows.len() > 1 {
        table(out, "  ", &rows);
    } else {
        out.push_str("  (no members)\n");
    }
    if with_reasons {
        for r in &g.reasons {
            let _ = writeln!(out, "  not viable: {r}");
        }
    }
}

fn problems(out: &mut String, problems: &[ScanProblem]) {
    if problems.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nScan problems ({}):", problems.len());
    for p in problems {
        let group = p.group.map(|g| format!("group {g}: ")).unwrap_or_default();
        let _ = writeln!(out, "  {group}{}", p.message);
    }
}

pub(super) fn audit(a: &Audit) -> String {
    let mut out = String::new();
    for (i, g) in a.groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        group_table(&mut out, g, true);
    }
    if a.groups.is_empty() {
        out.push_str("No IOMMU groups (is the IOMMU enabled?)\n");
    }
    if !a.violations.is_empty() {
        let _ = writeln!(out, "\nViolations ({}):", a.violations.len());
        let mut rows = vec![["GROUP", "DEVICE", "DRIVER", "RULE", "ACTION", "WHY"]
            .map(str::to_string)
            .to_vec()];
        for v in &a.violations {
            rows.push(vec![
                v.group.to_string(),
                or_dash(v.device.as_deref()),
                or_dash(v.driver.as_deref()),
                v.rule.as_str().to_string(),
                v.action.as_str().to_string(),
                v.message.clone(),
            ]);
        }
        table(&mut out, "  ", &rows);
    }
    if !a.pins.is_empty() {
        let _ = writeln!(out, "\nThe agent would pin driver_override:");
        for p in &a.pins {
            let _ = writeln!(
                out,
                "  group {}  {} -> {}",
                p.group, p.device, p.driver_override
            );
        }
    }
    if !a.unmatched_reservations.is_empty() {
        let _ = writeln!(
            out,
            "\nWarning: reservations matching nothing on this node (exit 1):"
        );
        for r in &a.unmatched_reservations {
            let _ = writeln!(out, "  {r}");
        }
    }
    if !a.unknown_drivers.is_empty() {
        let _ = writeln!(
            out,
            "\nWarning: driver names no driver or module of this kernel offers (exit 1):"
        );
        for d in &a.unknown_drivers {
            let _ = writeln!(out, "  {}", d.message);
        }
    }
    problems(&mut out, &a.scan_problems);
    if let Some(vetoes) = &a.enforcement.vetoes {
        let _ = writeln!(out, "\nVetoes (BPF LSM): {vetoes}");
    }
    let not_viable = a.groups.iter().filter(|g| !g.viable).count();
    let _ = writeln!(
        out,
        "\n{} groups, {not_viable} not viable, {} violations, {} scan problems",
        a.groups.len(),
        a.violations.len(),
        a.scan_problems.len()
    );
    out
}

pub(super) fn groups(g: &Groups) -> String {
    let mut out = String::new();
    for (i, group) in g.groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        group_table(&mut out, group, false);
    }
    if g.groups.is_empty() {
        out.push_str("No IOMMU groups (is the IOMMU enabled?)\n");
    }
    problems(&mut out, &g.scan_problems);
    out
}
