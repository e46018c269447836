//! VM scenarios: a guest script in tests/vm/scenarios/<name>.sh, the kernels it applies to, and a
//! host-side check over the agent's JSON events (never over dmesg).
use serde_json::Value;

use crate::checks::{str_of, Checker};

pub struct Scenario {
    pub name: &'static str,
    /// (kernel series, extra kernel command line) for each boot of this scenario.
    pub boots: &'static [(&'static str, Option<&'static str>)],
    /// Run the agent with --dry-run, so the kernel's own refusal is what gets observed instead of
    /// the agent's veto of the sysfs write or VFIO open.
    pub dry_run: bool,
    pub check: fn(&mut Checker),
}

const ALL: &[(&str, Option<&str>)] = &[("5.10", None), ("6.1", None), ("6.12", None)];
const SIX: &[(&str, Option<&str>)] = &[("6.1", None), ("6.12", None)];
/// Debian 5.10 leaves bpf out of the LSM list unless the command line adds it.
pub const LSM_BPF: &str = "lsm=lockdown,yama,bpf";

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "capabilities",
        boots: &[
            ("5.10", None),
            ("5.10", Some(LSM_BPF)),
            ("6.1", None),
            ("6.12", None),
        ],
        dry_run: false,
        check: capabilities,
    },
    Scenario {
        name: "claim-user-group",
        boots: ALL,
        dry_run: false,
        check: claim_user_group,
    },
    Scenario {
        name: "kernel-bind-refused",
        boots: SIX,
        dry_run: true,
        check: kernel_bind_refused,
    },
    Scenario {
        name: "claim-over-kernel-driver",
        boots: SIX,
        dry_run: true,
        check: claim_over_kernel_driver,
    },
    Scenario {
        name: "rebind-loop",
        boots: ALL,
        dry_run: false,
        check: rebind_loop,
    },
    Scenario {
        name: "observe-5.10",
        boots: &[("5.10", None)],
        dry_run: false,
        check: observe_5_10,
    },
];

/// Programs on the DMA-ownership functions (iommu_device_use_default_domain,
/// iommu_group_claim_dma_owner, ...): named after them, they all contain `iommu` or `dma_owner`.
fn is_ownership_program(name: &str) -> bool {
    name.contains("iommu") || name.contains("dma_owner")
}

fn capabilities(c: &mut Checker) {
    let Some(caps) = c.of_type("capabilities").first().map(|v| (*v).clone()) else {
        return;
    };
    let release = str_of(&caps, "kernel").unwrap_or("");
    c.expect(
        release.starts_with(&format!("{}.", c.series)),
        format!(
            "capabilities.kernel {release:?} is not a {} kernel",
            c.series
        ),
    );
    c.expect(
        caps.get("btf") == Some(&Value::Bool(true)),
        "capabilities.btf is not true",
    );
    c.expect(
        caps.get("dry_run") == Some(&Value::Bool(false)),
        "capabilities.dry_run is not false",
    );
    let lsm_on_cmdline = c.cmdline.as_deref().is_some_and(|l| l.contains("bpf"));
    let want_lsm = !c.is_5_10() || lsm_on_cmdline;
    c.expect(
        caps.get("bpf_lsm") == Some(&Value::Bool(want_lsm)),
        format!(
            "capabilities.bpf_lsm is {:?}, expected {want_lsm}",
            caps.get("bpf_lsm")
        ),
    );
    let programs: Vec<(String, String)> = caps
        .get("programs")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    c.expect(
        !programs.is_empty(),
        "capabilities.programs is empty or missing",
    );
    for (name, state) in &programs {
        c.expect(
            !state.starts_with("failed"),
            format!("program {name}: {state}"),
        );
    }
    let ownership: Vec<&(String, String)> = programs
        .iter()
        .filter(|(n, _)| is_ownership_program(n))
        .collect();
    c.expect(
        !ownership.is_empty(),
        "no DMA-ownership program (name with iommu/dma_owner) in capabilities.programs",
    );
    for (name, state) in ownership {
        // 5.10 predates every ownership function (5.19); 6.1 has the group ones but not the
        // per-device iommu_device_{claim,release}_dma_owner (6.2+); 6.12 has all of them.
        let want = match c.series.as_str() {
            "5.10" => "absent",
            "6.1" if name.starts_with("iommu_device_") && name.ends_with("_dma_owner") => "absent",
            _ => "attached",
        };
        c.expect(
            state == want,
            format!(
                "ownership program {name} is {state:?}, expected {want:?} on {}",
                c.series
            ),
        );
    }
    for core in [
        "iommu_device_use_default_domain",
        "iommu_group_claim_dma_owner",
    ] {
        c.expect(
            programs.iter().any(|(n, _)| n == core),
            format!("capabilities.programs has no {core}"),
        );
    }
}

fn claim_user_group(c: &mut Checker) {
    let g = c.fact("group");
    c.expect(
        !g.is_empty(),
        "script did not report the group of the two-function device",
    );
    for dev in [c.dev("VM_DEV_FN0"), c.dev("VM_DEV_FN1")] {
        let n = c
            .events(
                "bind",
                &[("device", dev), ("driver", "vfio-pci"), ("result", "ok")],
            )
            .len();
        c.expect(
            n == 1,
            format!("expected one ok bind of vfio-pci to {dev}, got {n}"),
        );
    }
    if c.is_5_10() {
        let n = c
            .events("vfio_open", &[("group", &g), ("result", "ok")])
            .len();
        c.expect(n >= 1, format!("no ok vfio_open event for group {g}"));
    } else {
        let n = c.events("claim", &[("group", &g), ("result", "ok")]).len();
        c.expect(
            n == 1,
            format!("expected one ok claim of group {g}, got {n}"),
        );
    }
    let user = c
        .verdicts(&g)
        .iter()
        .any(|v| str_of(v, "owner") == Some("user"));
    c.expect(
        user,
        format!("no verdict line with owner user for group {g}"),
    );
}

fn kernel_bind_refused(c: &mut Checker) {
    let g = c.fact("group");
    let fn1 = c.dev("VM_DEV_FN1");
    let refusals = c
        .events(
            "refusal",
            &[
                ("group", &g),
                ("device", fn1),
                ("driver", "e1000"),
                ("ret", "-16"),
                ("errno", "EBUSY"),
            ],
        )
        .len();
    // One for the sysfs bind, one for the autoprobe after modprobe.
    c.expect(refusals >= 2, format!("expected a refusal (ret -16, EBUSY) of e1000 on {fn1} in group {g} for the sysfs bind and for autoprobe, got {refusals}"));
    c.expect(
        c.fact("sysfs_bind") == "EBUSY",
        format!(
            "sysfs bind of e1000 to {fn1} was {:?}, expected EBUSY",
            c.fact("sysfs_bind")
        ),
    );
    c.expect(
        c.fact("fn1_driver") == "none",
        format!("{fn1} ended bound to {}", c.fact("fn1_driver")),
    );
    match c.audit_device(fn1).cloned() {
        None => c.expect(false, format!("final audit JSON has no entry for {fn1}")),
        Some(entry) => {
            let driver = entry.get("driver");
            let unbound = matches!(driver, None | Some(Value::Null))
                || driver.and_then(Value::as_str) == Some("");
            c.expect(
                unbound,
                format!("final audit shows {fn1} bound to {driver:?}"),
            );
        }
    }
}

fn claim_over_kernel_driver(c: &mut Checker) {
    let g = c.fact("group");
    let fn1 = c.dev("VM_DEV_FN1");
    c.expect(
        c.fact("fn1_driver") == "e1000",
        format!(
            "{fn1} was not on e1000 before the claim ({})",
            c.fact("fn1_driver")
        ),
    );
    let n = c
        .events(
            "claim",
            &[("group", &g), ("errno", "EPERM"), ("result", "error")],
        )
        .len();
    c.expect(
        n >= 1,
        format!("no claim event with errno EPERM for group {g}"),
    );
    let last = c.verdicts(&g).last().map(|v| (*v).clone());
    match last {
        None => c.expect(false, format!("no verdict line for group {g}")),
        Some(v) => {
            c.expect(
                v.get("viable") == Some(&Value::Bool(false)),
                format!("last verdict of group {g} is viable: {v}"),
            );
            let names_fn1 = v
                .get("reasons")
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().filter_map(Value::as_str).any(|s| s.contains(fn1)));
            c.expect(
                names_fn1,
                format!("last verdict of group {g} has no reason naming {fn1}: {v}"),
            );
        }
    }
}

fn rebind_loop(c: &mut Checker) {
    let dev = c.dev("VM_DEV_SWITCH");
    let lost = c.of_type("lost").len();
    c.expect(
        lost == 0,
        format!("{lost} `lost` lines: records were dropped"),
    );
    let want_binds: usize = c.fact("binds").parse().unwrap_or(usize::MAX);
    let want_unbinds: usize = c.fact("unbinds").parse().unwrap_or(usize::MAX);
    c.expect(
        want_unbinds == 20,
        format!("script reports {want_unbinds} successful unbinds, expected 20"),
    );
    let binds = c
        .events(
            "bind",
            &[("device", dev), ("driver", "e1000"), ("result", "ok")],
        )
        .len();
    let unbinds = c
        .events("unbind", &[("device", dev), ("driver", "e1000")])
        .len();
    c.expect(
        binds == want_binds,
        format!("{binds} ok bind events of e1000 to {dev}, the script bound it {want_binds} times"),
    );
    c.expect(unbinds == want_unbinds, format!("{unbinds} unbind events of e1000 from {dev}, the script unbound it {want_unbinds} times"));
}

fn observe_5_10(c: &mut Checker) {
    let g = c.fact("group");
    let dev = c.dev("VM_DEV_SWITCH");
    let n = c
        .events(
            "bind",
            &[("device", dev), ("driver", "vfio-pci"), ("result", "ok")],
        )
        .len();
    c.expect(
        n == 1,
        format!("expected one ok bind of vfio-pci to {dev}, got {n}"),
    );
    let path = format!("/dev/vfio/{g}");
    let opens: Vec<Value> = c
        .events("vfio_open", &[("group", &g), ("result", "ok")])
        .into_iter()
        .cloned()
        .collect();
    c.expect(
        !opens.is_empty(),
        format!("no ok vfio_open event for group {g}"),
    );
    let paths_ok = opens
        .iter()
        .all(|v| str_of(v, "path") == Some(path.as_str()));
    c.expect(
        paths_ok,
        format!("vfio_open events of group {g} do not all carry path {path}"),
    );
    let n = c
        .events("unbind", &[("device", dev), ("driver", "vfio-pci")])
        .len();
    c.expect(
        n == 1,
        format!("expected one unbind of vfio-pci from {dev}, got {n}"),
    );
    for d in [dev, c.dev("VM_DEV_FN0"), c.dev("VM_DEV_FN1")] {
        let n = c
            .events(
                "bind",
                &[("device", d), ("driver", "e1000"), ("result", "ok")],
            )
            .len();
        c.expect(
            n == 1,
            format!("expected one ok bind of e1000 to {d} after modprobe, got {n}"),
        );
    }
}
