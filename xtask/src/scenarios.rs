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
    /// Policy for the agent and the final audit: a file name in tests/vm/policies/.
    pub policy: Option<&'static str>,
    pub check: fn(&mut Checker),
}

const ALL: &[(&str, Option<&str>)] = &[
    ("5.10", None),
    ("6.1", None),
    ("6.12", None),
    ("7.3", None),
    (IOMMUFD, None),
];
const SIX: &[(&str, Option<&str>)] = &[
    ("6.1", None),
    ("6.12", None),
    ("7.3", None),
    (IOMMUFD, None),
];
/// Kernels where BPF LSM runs: 5.10 only when booted with it.
const LSM: &[(&str, Option<&str>)] = &[
    ("5.10", Some(LSM_BPF)),
    ("6.1", None),
    ("6.12", None),
    ("7.3", None),
    (IOMMUFD, None),
];
/// Every kernel, 5.10 both with and without BPF LSM.
const EVERY: &[(&str, Option<&str>)] = &[
    ("5.10", None),
    ("5.10", Some(LSM_BPF)),
    ("6.1", None),
    ("6.12", None),
    ("7.3", None),
    (IOMMUFD, None),
];
/// Scenarios whose subject is the agent's own logic (accounting, restarts, policy, rebinds) run
/// on the oldest and the newest kernel only, or on one, to keep CI inside its budget; what the
/// kernel does differently is covered by the scenarios that run everywhere.
const EDGES: &[(&str, Option<&str>)] = &[("5.10", None), ("7.3", None)];
const ONE: &[(&str, Option<&str>)] = &[("6.12", None)];
/// The only kernel with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV (built by kbuild.rs).
const IOMMUFD: &str = crate::kernels::BUILT;
const CDEV: &[(&str, Option<&str>)] = &[(IOMMUFD, None)];
/// The two-function device reserved: .0 for vfio-pci, .1 unbound; a trusted writer.
const RESERVE: Option<&str> = Some("reserve-two-function.toml");
/// Debian 5.10 leaves bpf out of the LSM list unless the command line adds it.
pub const LSM_BPF: &str = "lsm=lockdown,yama,bpf";

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "capabilities",
        boots: EVERY,
        dry_run: false,
        policy: None,
        check: capabilities,
    },
    Scenario {
        name: "claim-user-group",
        boots: ALL,
        dry_run: false,
        policy: None,
        check: claim_user_group,
    },
    Scenario {
        name: "kernel-bind-refused",
        boots: SIX,
        dry_run: true,
        policy: None,
        check: kernel_bind_refused,
    },
    Scenario {
        name: "claim-over-kernel-driver",
        boots: SIX,
        dry_run: true,
        policy: None,
        check: claim_over_kernel_driver,
    },
    Scenario {
        name: "rebind-loop",
        boots: ONE,
        dry_run: false,
        policy: None,
        check: rebind_loop,
    },
    Scenario {
        name: "observe-5.10",
        boots: &[("5.10", None)],
        dry_run: false,
        policy: None,
        check: observe_5_10,
    },
    Scenario {
        name: "reserve-prevents-bind",
        boots: EVERY,
        dry_run: false,
        policy: RESERVE,
        check: reserve_prevents_bind,
    },
    Scenario {
        name: "reserve-prevents-bind",
        boots: &[("6.12", None)],
        dry_run: true,
        policy: RESERVE,
        check: reserve_prevents_bind_dry_run,
    },
    Scenario {
        name: "write-paths",
        boots: LSM,
        dry_run: false,
        policy: RESERVE,
        check: write_paths,
    },
    Scenario {
        name: "vfio-open-not-viable",
        boots: LSM,
        dry_run: false,
        policy: None,
        check: vfio_open_vetoed,
    },
    Scenario {
        name: "vfio-open-not-viable",
        boots: &[("7.3", None)],
        dry_run: true,
        policy: None,
        check: vfio_open_would_veto,
    },
    Scenario {
        name: "reserve-rebind",
        boots: EDGES,
        dry_run: false,
        policy: Some("rebind-two-function.toml"),
        check: reserve_rebind,
    },
    Scenario {
        name: "hostile-topology",
        boots: LSM,
        dry_run: false,
        policy: None,
        check: hostile_topology,
    },
    Scenario {
        name: "hostile-io-uring",
        boots: LSM,
        dry_run: false,
        policy: None,
        check: hostile_io_uring,
    },
    Scenario {
        name: "blocked-removal",
        // Only without BPF LSM is the remove of a held device not refused.
        boots: &[("5.10", None)],
        dry_run: false,
        policy: None,
        check: blocked_removal,
    },
    Scenario {
        name: "hidden-holder",
        boots: EVERY,
        dry_run: false,
        policy: None,
        check: hidden_holder,
    },
    Scenario {
        name: "agent-killed",
        boots: EVERY,
        dry_run: false,
        policy: None,
        check: agent_killed,
    },
    Scenario {
        name: "claim-race",
        boots: LSM,
        dry_run: false,
        policy: None,
        check: claim_race,
    },
    Scenario {
        name: "pin-restored",
        boots: &[("5.10", None), ("6.12", None)],
        dry_run: false,
        policy: RESERVE,
        check: pin_restored,
    },
    Scenario {
        name: "traced-trusted-writer",
        boots: LSM,
        dry_run: false,
        policy: RESERVE,
        check: traced_trusted_writer,
    },
    Scenario {
        name: "daemonset-caps",
        boots: EVERY,
        dry_run: false,
        policy: None,
        check: daemonset_caps,
    },
    Scenario {
        name: "cdev-bind-iommufd",
        boots: CDEV,
        dry_run: false,
        policy: None,
        check: cdev_bind_iommufd,
    },
    Scenario {
        name: "cdev-open-not-viable",
        boots: CDEV,
        dry_run: false,
        policy: None,
        check: cdev_open_vetoed,
    },
    Scenario {
        name: "cdev-open-not-viable",
        boots: CDEV,
        dry_run: true,
        policy: None,
        check: cdev_open_would_veto,
    },
    Scenario {
        name: "burst",
        boots: EDGES,
        dry_run: false,
        policy: None,
        check: burst,
    },
    Scenario {
        name: "kill-mid-burst",
        boots: EDGES,
        dry_run: false,
        policy: None,
        check: kill_mid_burst,
    },
    Scenario {
        name: "malformed-policy",
        boots: &[("6.1", None)],
        dry_run: false,
        policy: None,
        check: malformed_policy,
    },
    Scenario {
        name: "trusted-writer-installed",
        boots: ONE,
        dry_run: false,
        policy: Some("reserve-late-writer.toml"),
        check: trusted_writer_installed,
    },
    Scenario {
        name: "pod-attribution",
        boots: ALL,
        dry_run: false,
        policy: None,
        check: pod_attribution,
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
        release.starts_with(&format!("{}.", crate::kernels::version_of(&c.series))),
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
    let lsm = caps
        .pointer("/enforcement/lsm")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if want_lsm {
        c.expect(
            lsm == "active",
            format!("enforcement.lsm is {lsm:?}, expected active"),
        );
    } else {
        c.expect(
            lsm.starts_with("unavailable"),
            format!("enforcement.lsm is {lsm:?} without BPF LSM: it must say unavailable"),
        );
    }
    let state_of = |name: &str| {
        programs
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, s)| s.as_str())
            .to_string()
    };
    // What stands in for polling: the module_load record, and the cdev's release.
    for name in [
        "module_load",
        "vfio_device_fops_release",
        "vfio_group_fops_open",
    ] {
        let state = state_of(name);
        c.expect(
            state == "attached" || state == "attached (not pinned)",
            format!("program {name} is {state:?}, expected attached"),
        );
    }
    // Debian's 6.12 (and later) lists the cdev-open stub in kallsyms but not in ftrace's table:
    // reported absent for good, with why; older kernels do not have it at all, and a kernel
    // built with VFIO_DEVICE_CDEV has the real function.
    let cdev = state_of("vfio_device_fops_cdev_open");
    let (ok, want) = if c.series.contains("iommufd") {
        (cdev.starts_with("attached"), "attached")
    } else if c.is_5_10() || c.series == "6.1" {
        (cdev == "absent", "absent")
    } else {
        (cdev.starts_with("absent: notrace"), "absent: notrace ...")
    };
    c.expect(
        ok,
        format!(
            "vfio_device_fops_cdev_open is {cdev:?} on {}, expected {want:?}",
            c.series
        ),
    );
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

/// Whether BPF LSM runs in this boot (6.x, or 5.10 booted with it).
fn lsm_runs(c: &Checker) -> bool {
    !c.is_5_10() || c.cmdline.as_deref().is_some_and(|l| l.contains("bpf"))
}

/// The hook was attached once it had something to veto (it starts on standby).
fn expect_hook_attached(c: &mut Checker, hook: &str) {
    let attached = c
        .of_type("lsm_hook")
        .iter()
        .any(|v| str_of(v, "hook") == Some(hook) && str_of(v, "state") == Some("attached"));
    c.expect(attached, format!("no lsm_hook line attaching {hook}"));
}

fn expect_fact(c: &mut Checker, key: &str, want: &str) {
    let got = c.fact(key);
    c.expect(
        got == want,
        format!("fact {key} is {got:?}, expected {want:?}"),
    );
}

/// The agent's own reservation writes for the two-function device.
fn expect_pins(c: &mut Checker, action: &str) {
    for (var, value) in [("VM_DEV_FN0", "vfio-pci"), ("VM_DEV_FN1", "none")] {
        let dev = c.dev(var);
        let n = c
            .events(
                "pin",
                &[
                    ("device", dev),
                    ("driver", value),
                    ("action", action),
                    ("result", "ok"),
                ],
            )
            .len();
        c.expect(
            n == 1,
            format!("expected one {action} pin of {dev} to {value}, got {n}"),
        );
    }
}

fn reserve_prevents_bind(c: &mut Checker) {
    let fn1 = c.dev("VM_DEV_FN1");
    expect_pins(c, "pinned");
    expect_fact(c, "fn0_override", "vfio-pci");
    expect_fact(c, "fn1_override", "none");
    expect_fact(c, "fn1_after_autoprobe", "none");
    expect_fact(c, "fn1_driver", "none");
    expect_fact(c, "alive", "yes");
    // Pinned, e1000 never even reaches really_probe for .1.
    let binds = c
        .events("bind", &[("device", fn1), ("driver", "e1000")])
        .len();
    c.expect(
        binds == 0,
        format!("{binds} bind attempts of e1000 on {fn1}: the pin did not hold"),
    );
    let vetoes = c
        .events(
            "veto",
            &[
                ("device", fn1),
                ("rule", "protected_bind"),
                ("action", "vetoed"),
            ],
        )
        .len();
    if lsm_runs(c) {
        expect_fact(c, "sysfs_bind", "EPERM");
        c.expect(
            vetoes == 1,
            format!("expected one vetoed protected_bind of {fn1}, got {vetoes}"),
        );
    } else {
        // No BPF LSM: the pin alone refuses the bind, and no veto is claimed.
        expect_fact(c, "sysfs_bind", "ENODEV");
        let any = c.events("veto", &[]).len();
        c.expect(any == 0, format!("{any} veto events without BPF LSM"));
    }
}

fn reserve_prevents_bind_dry_run(c: &mut Checker) {
    let g = c.fact("group");
    let fn1 = c.dev("VM_DEV_FN1");
    expect_pins(c, "would_pin");
    expect_fact(c, "fn1_override", "(null)");
    expect_fact(c, "sysfs_bind", "EBUSY");
    expect_fact(c, "fn1_driver", "none");
    let refusals = c
        .events(
            "refusal",
            &[
                ("group", &g),
                ("device", fn1),
                ("driver", "e1000"),
                ("errno", "EBUSY"),
            ],
        )
        .len();
    c.expect(
        refusals >= 2,
        format!(
            "expected the kernel's refusals (autoprobe and bind) of e1000 on {fn1}, got {refusals}"
        ),
    );
    let would = c
        .events(
            "veto",
            &[
                ("device", fn1),
                ("rule", "protected_bind"),
                ("action", "would_veto"),
            ],
        )
        .len();
    c.expect(
        would == 1,
        format!("expected one would_veto protected_bind of {fn1}, got {would}"),
    );
    let denied = c.events("veto", &[("action", "vetoed")]).len();
    c.expect(denied == 0, format!("{denied} vetoed events in dry-run"));
}

fn write_paths(c: &mut Checker) {
    let (fn0, fn1) = (c.dev("VM_DEV_FN0"), c.dev("VM_DEV_FN1"));
    expect_pins(c, "pinned");
    expect_hook_attached(c, "file_permission");
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_fact(c, "fn1_override", "none");
    let files = [
        ("driver_override", "protected_driver_override", Some(fn1)),
        ("bind", "protected_bind", Some(fn1)),
        ("unbind", "protected_unbind", Some(fn0)),
        ("new_id", "protected_new_id", None),
        ("remove", "protected_remove", Some(fn1)),
    ];
    for mode in ["write", "pwrite", "writev", "io_uring"] {
        for (file, _, _) in files {
            expect_fact(c, &format!("{mode}_{file}"), "error_EPERM");
        }
        // drivers_probe is not vetoed: it can bind only what the pin and the in-kernel bind
        // veto let through, and fn1 stays unbound.
        expect_fact(c, &format!("{mode}_drivers_probe"), "ok");
    }
    let probes = c
        .events("veto", &[("rule", "protected_drivers_probe")])
        .len();
    c.expect(probes == 0, format!("{probes} vetoes of drivers_probe"));
    for (file, rule, device) in files {
        let vetoed = [("rule", rule), ("action", "vetoed"), ("errno", "EPERM")];
        let n = c.events("veto", &vetoed).len();
        // bind/unbind: only write(2) and single-segment writev(2) on this very file are trusted to
        // name their target; pwrite and io_uring fail closed. new_id always fails closed.
        let named = match device {
            Some(d) => {
                let mut with_device = vetoed.to_vec();
                with_device.push(("device", d));
                c.events("veto", &with_device).len()
            }
            None => n,
        };
        let split = usize::from(rule == "protected_bind");
        c.expect(
            n == 4 + split,
            format!(
                "expected {} vetoed writes to {file} (one per write path), got {n}",
                4 + split
            ),
        );
        c.expect(
            named >= 2,
            format!("only {named} vetoes of {file} name their target"),
        );
    }
    expect_fact(c, "split_bind", "error_EPERM");
    let closed = c
        .events(
            "veto",
            &[("rule", "protected_bind"), ("fail_closed", "true")],
        )
        .len();
    c.expect(
        closed >= 1,
        format!("expected a fail-closed veto of the two-segment bind, got {closed}"),
    );
    expect_fact(c, "unprotected_bind", "ok");
    expect_fact(c, "trusted_override", "ok");
    expect_fact(c, "fn0_driver_after", "vfio-pci");
    expect_fact(c, "fn1_driver_after", "none");
}

fn vfio_open_vetoed(c: &mut Checker) {
    let g = c.fact("group");
    expect_hook_attached(c, "file_open");
    expect_fact(c, "fn1_driver", "e1000");
    let hold = c.fact("hold");
    c.expect(
        hold.contains("EPERM"),
        format!("the holder's open was not refused with EPERM: {hold}"),
    );
    let n = c
        .events(
            "veto",
            &[
                ("group", &g),
                ("rule", "vfio_open_not_viable"),
                ("action", "vetoed"),
            ],
        )
        .len();
    c.expect(
        n == 1,
        format!("expected one vetoed open of group {g}, got {n}"),
    );
    let opens = c
        .events("vfio_open", &[("group", &g), ("result", "ok")])
        .len();
    c.expect(
        opens == 0,
        format!("{opens} successful opens of group {g} despite the veto"),
    );
}

fn vfio_open_would_veto(c: &mut Checker) {
    let g = c.fact("group");
    expect_fact(c, "fn1_driver", "e1000");
    let n = c
        .events(
            "veto",
            &[
                ("group", &g),
                ("rule", "vfio_open_not_viable"),
                ("action", "would_veto"),
            ],
        )
        .len();
    c.expect(
        n == 1,
        format!("expected one would_veto open of group {g}, got {n}"),
    );
    let opens = c
        .events("vfio_open", &[("group", &g), ("result", "ok")])
        .len();
    c.expect(
        opens >= 1,
        format!("dry-run: the open of group {g} should have gone through"),
    );
    let claims = c
        .events("claim", &[("group", &g), ("errno", "EPERM")])
        .len();
    c.expect(
        claims >= 1,
        format!("the kernel's own EPERM for the claim of group {g} was not seen"),
    );
}

/// The cdev the script opened, as the agent must name it in `path`.
fn cdev_path(c: &mut Checker) -> String {
    let cdev = c.fact("cdev");
    c.expect(
        cdev.starts_with("/dev/vfio/devices/vfio"),
        format!("the script found no cdev of the device: {cdev:?}"),
    );
    cdev
}

fn cdev_bind_iommufd(c: &mut Checker) {
    let g = c.fact("group");
    let fn0 = c.dev("VM_DEV_FN0");
    let cdev = cdev_path(c);
    expect_fact(c, "open", "ok");
    expect_fact(c, "bind", "ok");
    let opens = c
        .events(
            "vfio_open",
            &[
                ("device", fn0),
                ("group", &g),
                ("path", &cdev),
                ("result", "ok"),
            ],
        )
        .len();
    c.expect(
        opens == 1,
        format!("expected one ok vfio_open of {cdev} naming {fn0} in group {g}, got {opens}"),
    );
    let claims: Vec<Value> = c
        .events(
            "claim",
            &[("device", fn0), ("scope", "device"), ("result", "ok")],
        )
        .into_iter()
        .cloned()
        .collect();
    c.expect(
        claims.len() == 1,
        format!(
            "expected one ok device-scope claim of {fn0}, got {}",
            claims.len()
        ),
    );
    for claim in &claims {
        c.expect(
            claim.get("errno") == Some(&Value::Null),
            format!("an ok claim carries an errno: {claim}"),
        );
    }
    let vetoes = c
        .of_type("event")
        .iter()
        .filter(|e| str_of(e, "kind") == Some("veto"))
        .count();
    c.expect(
        vetoes == 0,
        format!("{vetoes} vetoes of a viable group's cdev bind"),
    );
}

fn cdev_open_vetoed(c: &mut Checker) {
    let g = c.fact("group");
    let fn0 = c.dev("VM_DEV_FN0");
    let cdev = cdev_path(c);
    expect_hook_attached(c, "file_open");
    expect_fact(c, "fn1_driver", "e1000");
    expect_fact(c, "open", "error_EPERM");
    let n = c
        .events(
            "veto",
            &[
                ("device", fn0),
                ("group", &g),
                ("path", &cdev),
                ("rule", "vfio_open_not_viable"),
                ("action", "vetoed"),
            ],
        )
        .len();
    c.expect(
        n == 1,
        format!("expected one vetoed open of {cdev} ({fn0}, group {g}), got {n}"),
    );
    let opens = c
        .events("vfio_open", &[("path", &cdev), ("result", "ok")])
        .len();
    c.expect(
        opens == 0,
        format!("{opens} successful opens of {cdev} despite the veto"),
    );
    let claims = c.events("claim", &[("device", fn0)]).len();
    c.expect(
        claims == 0,
        format!("{claims} claims of {fn0} after a vetoed open"),
    );
}

fn cdev_open_would_veto(c: &mut Checker) {
    let g = c.fact("group");
    let fn0 = c.dev("VM_DEV_FN0");
    let cdev = cdev_path(c);
    expect_fact(c, "fn1_driver", "e1000");
    expect_fact(c, "open", "ok");
    // The kernel's own refusal: e1000 holds .1, so the group cannot be claimed for user space.
    expect_fact(c, "bind", "error_EPERM");
    let n = c
        .events(
            "veto",
            &[
                ("device", fn0),
                ("group", &g),
                ("path", &cdev),
                ("rule", "vfio_open_not_viable"),
                ("action", "would_veto"),
            ],
        )
        .len();
    c.expect(
        n == 1,
        format!("expected one would_veto open of {cdev} ({fn0}, group {g}), got {n}"),
    );
    let opens = c
        .events(
            "vfio_open",
            &[("device", fn0), ("path", &cdev), ("result", "ok")],
        )
        .len();
    c.expect(
        opens == 1,
        format!("dry-run: expected one ok vfio_open of {cdev} naming {fn0}, got {opens}"),
    );
    let claims = c
        .events(
            "claim",
            &[
                ("device", fn0),
                ("scope", "device"),
                ("errno", "EPERM"),
                ("result", "error"),
            ],
        )
        .len();
    c.expect(
        claims == 1,
        format!(
            "expected the kernel's EPERM for the device claim of {fn0}, got {claims} such claims"
        ),
    );
}

fn malformed_policy(c: &mut Checker) {
    expect_fact(c, "rc", "2");
    expect_fact(c, "stdout_lines", "0");
    expect_fact(c, "names_location", "yes");
    expect_fact(c, "overrides_unchanged", "yes");
}

fn reserve_rebind(c: &mut Checker) {
    expect_fact(c, "first_agent_gone", "yes");
    for fn_ in ["fn0", "fn1"] {
        expect_fact(c, &format!("{fn_}_before"), "e1000");
        expect_fact(c, &format!("rebound_{fn_}"), "1");
        expect_fact(c, &format!("{fn_}_after"), "vfio-pci");
    }
}

fn expect_alive_and(c: &mut Checker, fn1_driver: &str) {
    expect_fact(c, "alive", "yes");
    expect_fact(c, "fn1_driver", fn1_driver);
}

/// A veto event of `rule` on `device` whose `why` lists `reason`.
fn vetoes_with(c: &Checker, rule: &str, device: &str, reason: &str) -> usize {
    c.events(
        "veto",
        &[("rule", rule), ("device", device), ("action", "vetoed")],
    )
    .into_iter()
    .filter(|v| {
        v.get("why")
            .and_then(Value::as_array)
            .is_some_and(|w| w.iter().any(|x| x.as_str() == Some(reason)))
    })
    .count()
}

fn hostile_topology(c: &mut Checker) {
    let port = c.fact("port");
    c.expect(
        !port.is_empty(),
        "the script found no port above the device",
    );
    expect_fact(c, "port_remove", "error_EPERM");
    expect_fact(c, "slot_power", "error_EPERM");
    expect_fact(c, "fn0_reset", "error_EPERM");
    let sub = c.fact("port_reset_subordinate");
    c.expect(
        sub == "absent" || sub == "error_EPERM",
        format!("reset_subordinate of the port: {sub}"),
    );
    expect_fact(c, "alone_remove", "ok");
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_alive_and(c, "none");
    let above = vetoes_with(c, "protected_remove", &port, "above_protected_group");
    c.expect(
        above == 1,
        format!("expected one veto of {port}/remove as above a protected group, got {above}"),
    );
    let slot = c
        .events(
            "veto",
            &[("rule", "protected_slot_power"), ("action", "vetoed")],
        )
        .len();
    c.expect(
        slot == 1,
        format!("expected one vetoed slot power write, got {slot}"),
    );
}

fn hostile_io_uring(c: &mut Checker) {
    for f in [
        "unbind_linked",
        "unbind_linked_fixed",
        "bind_linked",
        "new_id_linked",
        "new_id_any",
        "new_id_padded",
    ] {
        expect_fact(c, f, "error_EPERM");
    }
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_alive_and(c, "none");
    let closed = c
        .events(
            "veto",
            &[("rule", "protected_unbind"), ("fail_closed", "true")],
        )
        .len();
    c.expect(
        closed >= 2,
        format!("expected the linked unbinds to fail closed, got {closed}"),
    );
}

fn hidden_holder(c: &mut Checker) {
    expect_fact(c, "visible_vfio_fds", "0");
    expect_fact(c, "fn1_override", "vfio-pci");
    expect_fact(c, "fn1_after_autoprobe", "none");
    let want = if lsm_runs(c) { "EPERM" } else { "ENODEV" };
    expect_fact(c, "sysfs_bind", want);
    expect_alive_and(c, "none");
    let fn1 = c.dev("VM_DEV_FN1");
    let bound = c
        .events(
            "bind",
            &[("device", fn1), ("driver", "e1000"), ("result", "ok")],
        )
        .len();
    c.expect(bound == 0, format!("e1000 bound {fn1} {bound} times"));
    // The autoprobe the pin stopped is reported, with the driver it stopped.
    let refused = c
        .events("pin_refused", &[("device", fn1), ("driver", "e1000")])
        .len();
    c.expect(
        refused >= 1,
        format!("no pin_refused event for e1000 on {fn1}"),
    );
}

fn blocked_removal(c: &mut Checker) {
    expect_fact(c, "remove_blocked", "yes");
    let state = c.fact("agent_main_state");
    c.expect(
        state != "D",
        "the agent's event loop was asleep in the kernel (D) while the removal blocked",
    );
    expect_fact(c, "healthz_during_stall", "200");
    let stalled = c.of_type("stalled").len();
    c.expect(stalled >= 1, "no `stalled` line while sysfs was blocked");
    expect_fact(c, "removed_after_release", "yes");
    expect_fact(c, "healthz_after", "200");
    expect_alive_and(c, "none");
}

fn agent_killed(c: &mut Checker) {
    expect_fact(c, "agent_killed", "yes");
    let links: usize = c.fact("pinned_links").parse().unwrap_or(0);
    c.expect(links >= 10, format!("only {links} links pinned"));
    expect_fact(c, "fn1_without_agent", "none");
    if lsm_runs(c) {
        expect_fact(c, "override_without_agent", "error_EPERM");
        expect_fact(c, "bind_without_agent", "error_EPERM");
        expect_fact(c, "unbind_without_agent", "error_EPERM");
        expect_fact(c, "override_second_agent", "error_EPERM");
        let n: usize = c.fact("second_vetoes").parse().unwrap_or(0);
        c.expect(n >= 1, "the second agent reported no veto");
    } else {
        // Without BPF LSM nothing vetoes; the pin (ENODEV) is what holds.
        expect_fact(c, "bind_without_agent", "error_ENODEV");
    }
    expect_fact(c, "second_ready", "yes");
    expect_fact(c, "second_adopted", "1");
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_alive_and(c, "none");
}

/// A fact that must be a number; a missing or garbled one is a problem, counted as 0.
fn count_fact(c: &mut Checker, key: &str) -> u64 {
    let v = c.fact(key);
    match v.parse() {
        Ok(n) => n,
        Err(_) => {
            c.expect(false, format!("fact {key} is {v:?}, not a count"));
            0
        }
    }
}

/// What the boot's agent printed of the burst: ok binds and unbinds of pci-stub on the burst
/// device, and opens (ok, failed) and releases of the flood's group file.
fn burst_seen(c: &Checker, dev: &str, node: &str) -> (u64, u64) {
    let n = |v: Vec<&Value>| v.len() as u64;
    let cycles = n(c.events(
        "bind",
        &[("device", dev), ("driver", "pci-stub"), ("result", "ok")],
    )) + n(c.events("unbind", &[("device", dev), ("driver", "pci-stub")]));
    let opens = n(c.events("vfio_open", &[("path", node)]))
        + n(c.events("vfio_release", &[("path", node)]));
    (cycles, opens)
}

/// Records counted lost by the boot's agent: `lost` counts and `restart` missed.
fn counted_lost(c: &Checker) -> u64 {
    let sum = |t: &str, f: &str| -> u64 {
        c.of_type(t)
            .iter()
            .filter_map(|v| v.get(f).and_then(Value::as_u64))
            .sum()
    };
    sum("lost", "count") + sum("restart", "missed")
}

/// The agent's last verdict of every group equals the audit's read of sysfs after it stopped.
fn final_map_matches_sysfs(c: &mut Checker) {
    let Some(groups) = c
        .audit
        .as_ref()
        .and_then(|a| a.get("groups"))
        .and_then(Value::as_array)
        .cloned()
    else {
        c.expect(false, "no groups in the final audit JSON");
        return;
    };
    for g in groups {
        let id = str_of(&g, "id").unwrap_or("?").to_string();
        let last = c.verdicts(&id).last().map(|v| (*v).clone());
        let want = (g.get("owner").cloned(), g.get("viable").cloned());
        let got = last.map(|v| (v.get("owner").cloned(), v.get("viable").cloned()));
        c.expect(
            got.as_ref() == Some(&want),
            format!("group {id}: the agent's last verdict {got:?} is not the audit's {want:?}"),
        );
    }
}

fn burst(c: &mut Checker) {
    let dev = c.fact("burst_device");
    let node = format!("/dev/vfio/{}", c.fact("flood_group"));
    let cycles = count_fact(c, "cycles");
    let binds = count_fact(c, "binds");
    let unbinds = count_fact(c, "unbinds");
    let ok = count_fact(c, "opens_ok");
    let failed = count_fact(c, "opens_failed");
    c.expect(
        cycles >= 1000 && binds == cycles && unbinds == cycles,
        format!("{cycles} cycles with {binds} binds and {unbinds} unbinds: expected 1000 of each"),
    );
    // Each successful open makes an open and a release record, a failed one an open.
    let made = binds + unbinds + 2 * ok + failed;
    let (seen_cycles, seen_opens) = burst_seen(c, &dev, &node);
    let lost = counted_lost(c);
    c.expect(
        lost > 0,
        "the flood did not overflow the ring (no record counted lost)",
    );
    c.expect(
        seen_cycles + seen_opens + lost == made,
        format!(
            "made {made} (binds {binds}, unbinds {unbinds}, opens {ok} ok and {failed} failed) != seen {} + {seen_opens} + lost {lost}",
            seen_cycles
        ),
    );
    c.expect(
        !c.of_type("resync").is_empty(),
        "no resync after the losses",
    );
    expect_fact(c, "alive", "yes");
    final_map_matches_sysfs(c);
}

fn kill_mid_burst(c: &mut Checker) {
    expect_fact(c, "agent_killed", "yes");
    expect_fact(c, "second_ready", "yes");
    expect_fact(c, "second_rc", "0");
    expect_fact(c, "second_restart_lines", "1");
    let dev = c.fact("burst_device");
    let binds = count_fact(c, "binds");
    let unbinds = count_fact(c, "unbinds");
    let cycles = count_fact(c, "cycles");
    let at_kill = count_fact(c, "cycles_at_kill");
    let without = count_fact(c, "cycles_without_agent");
    c.expect(
        at_kill > 0 && at_kill < cycles && without > 0,
        format!("the kill was not mid-burst: {at_kill} cycles before it, {without} without an agent, {cycles} in all"),
    );
    let made = binds + unbinds;
    let (first, _) = burst_seen(c, &dev, "none");
    let second = count_fact(c, "second_binds") + count_fact(c, "second_unbinds");
    let lost = counted_lost(c) + count_fact(c, "second_lost") + count_fact(c, "second_missed");
    c.expect(
        first + second + lost == made,
        format!(
            "made {made} (binds {binds}, unbinds {unbinds}) != seen {first} (first agent) + {second} (second) + lost {lost}"
        ),
    );
}

fn claim_race(c: &mut Checker) {
    let errno = c.fact("first_bind_errno");
    c.expect(
        errno == "EPERM" || errno == "ENODEV",
        format!("the first bind in the race gave {errno:?}, expected EPERM or ENODEV"),
    );
    c.expect(
        !c.fact("first_bind_us").is_empty(),
        "no race timing reported",
    );
    expect_alive_and(c, "none");
}

fn pin_restored(c: &mut Checker) {
    expect_fact(c, "fn1_override", "none");
    expect_fact(c, "alive", "yes");
    let fn1 = c.dev("VM_DEV_FN1");
    let watch = c
        .of_type("capabilities")
        .first()
        .and_then(|v| str_of(v, "pin_watch"))
        .unwrap_or("")
        .to_owned();
    c.expect(
        watch.starts_with("event"),
        format!("capabilities.pin_watch is {watch:?}: the pins are polled, not watched by event"),
    );
    for mode in ["write", "io_uring"] {
        expect_fact(c, &format!("{mode}_clear"), "ok");
        expect_fact(c, &format!("{mode}_restored"), "none");
    }
    // Each clearing store is recorded (the value written: none, so `driver` null), and each
    // restore follows its record.
    let kinds: Vec<&str> = c
        .of_type("event")
        .into_iter()
        .filter(|v| str_of(v, "device") == Some(fn1))
        .filter_map(|v| match str_of(v, "kind") {
            Some("driver_override_write")
                if v.get("driver") == Some(&Value::Null) && str_of(v, "result") == Some("ok") =>
            {
                Some("cleared")
            }
            Some("pin_restored")
                if str_of(v, "driver") == Some("none") && str_of(v, "result") == Some("ok") =>
            {
                Some("restored")
            }
            _ => None,
        })
        .collect();
    c.expect(
        kinds == ["cleared", "restored", "cleared", "restored"],
        format!(
            "expected for {fn1}: driver_override_write (cleared) then pin_restored, twice; got {kinds:?}"
        ),
    );
}

fn traced_trusted_writer(c: &mut Checker) {
    expect_fact(c, "traced", "error_EPERM");
    expect_fact(c, "fn1_override", "none");
    expect_fact(c, "untraced", "ok");
    let fn1 = c.dev("VM_DEV_FN1");
    let n = vetoes_with(c, "protected_driver_override", fn1, "trusted_writer_traced");
    c.expect(
        n == 1,
        format!("expected one veto naming the traced trusted writer, got {n}"),
    );
}

fn trusted_writer_installed(c: &mut Checker) {
    expect_fact(c, "before", "error_EPERM");
    expect_fact(c, "reresolved", "yes");
    expect_fact(c, "after", "ok");
    expect_fact(c, "fn1_override", "none");
    let fn1 = c.dev("VM_DEV_FN1");
    let vetoes: Vec<String> = c
        .events(
            "veto",
            &[("rule", "protected_driver_override"), ("device", fn1)],
        )
        .iter()
        .filter_map(|e| str_of(e, "comm").map(str::to_string))
        .collect();
    // Refused once, before it was installed; the installed one was let through.
    c.expect(
        vetoes == ["late-writer"],
        format!("expected one veto of late-writer's write, got {vetoes:?}"),
    );
}

fn daemonset_caps(c: &mut Checker) {
    // Measured on every Debian kernel here: 3, which makes the prerequisite necessary.
    expect_fact(c, "default_paranoid", "3");
    expect_fact(c, "caps_ready", "yes");
    // BPF (39), PERFMON (38), SYS_RESOURCE (24), SYS_PTRACE (19), DAC_READ_SEARCH (2); 5.10
    // knows BPF and PERFMON too (5.8+).
    expect_fact(c, "cap_eff", "000000c001080004");
    expect_fact(c, "readyz", "200");
    expect_fact(c, "failed_programs", "0");
    if lsm_runs(c) {
        expect_fact(c, "veto", "error_EPERM");
        expect_fact(c, "lsm_active", "1");
    }
    expect_fact(c, "alive", "yes");
}

/// Every event of `events` names pod `uid` and container `id`; `what` says whose they are.
fn expect_pod(c: &mut Checker, events: &[Value], what: &str, uid: &str, id: &str) {
    c.expect(!events.is_empty(), format!("no {what} event"));
    for e in events {
        let got = (str_of(e, "pod_uid"), str_of(e, "container_id"));
        c.expect(
            got == (Some(uid), Some(id)),
            format!("{what}: expected pod_uid {uid} and container_id {id}, got {e}"),
        );
    }
}

fn pod_attribution(c: &mut Checker) {
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
        let binds: Vec<Value> = c
            .events("bind", &[("device", dev), ("driver", "vfio-pci")])
            .into_iter()
            .cloned()
            .collect();
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
        let opens: Vec<Value> = c
            .events(
                "vfio_open",
                &[("group", &g), ("tgid", pid), ("result", "ok")],
            )
            .into_iter()
            .cloned()
            .collect();
        expect_pod(
            c,
            &opens,
            &format!("vfio_open of group {g} by {who}"),
            uid,
            id,
        );
    }
    // Holder A's release ran as it exited; its cgroup was removed afterwards: named from the id.
    let releases: Vec<Value> = c
        .events("vfio_release", &[("tgid", &pid_a)])
        .into_iter()
        .cloned()
        .collect();
    for e in &releases {
        let got = (str_of(e, "pod_uid"), str_of(e, "container_id"));
        c.expect(
            got == (Some(uid_a.as_str()), Some(id_a.as_str())),
            format!("vfio_release by holder A should name its pod: {e}"),
        );
    }
    // Nothing is attributed to a pod the script did not make.
    let known = [&uid_a, &uid_b, &uid_c];
    let stray: Vec<String> = c
        .of_type("event")
        .into_iter()
        .filter_map(|e| str_of(e, "pod_uid"))
        .filter(|u| !known.iter().any(|k| k.as_str() == *u))
        .map(str::to_string)
        .collect();
    c.expect(
        stray.is_empty(),
        format!("events name pods nobody made: {stray:?}"),
    );
    // The audit: holder B in its pod, holder A gone.
    let holders: Vec<Value> = c
        .audit
        .as_ref()
        .and_then(|a| a.get("groups")?.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|grp| str_of(grp, "id") == Some(g.as_str()))
        .filter_map(|grp| grp.get("holders")?.as_array().cloned())
        .flatten()
        .collect();
    let pid_of = |h: &Value| h.get("pid").and_then(Value::as_u64).map(|p| p.to_string());
    let b: Vec<&Value> = holders
        .iter()
        .filter(|h| pid_of(h) == Some(pid_b.clone()))
        .collect();
    c.expect(
        !b.is_empty(),
        format!("audit: holder B (pid {pid_b}) not among the holders of group {g}: {holders:?}"),
    );
    for h in b {
        let got = (str_of(h, "pod_uid"), str_of(h, "container_id"));
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
