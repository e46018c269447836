//! VM scenarios: a guest script in tests/vm/scenarios/<name>.sh, the kernels it applies to, and a
//! host-side check over the agent's JSON events (never over dmesg).
use iommu_enforcer_schema::{
    Action, Allocation, Event, HookState, Kind, Line, Mechanism, MechanismState, Outcome, Owner,
    ProgramState, Rule, Scope, Why,
};
use serde_json::Value;

use crate::checks::{Checker, Events};

pub struct Scenario {
    pub name: &'static str,
    /// (kernel series, extra kernel command line) for each boot of this scenario.
    pub boots: &'static [(&'static str, Option<&'static str>)],
    /// Run the agent with --dry-run, so the kernel's own refusal is what gets observed instead of
    /// the agent's veto of the sysfs write or VFIO open.
    pub dry_run: bool,
    /// Policy for the agent and the final audit: a file name in tests/vm/policies/.
    pub policy: Option<&'static str>,
    pub check: fn(&Checker),
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
/// The arm64 node (qemu-system-aarch64 virt with an SMMUv3, Debian's arm64 kernels): the core
/// scenarios on 6.12, the capability ladder and the reservation on 6.1 too. Under TCG with no
/// KVM an arm64 boot costs more than an x86 one, so only these run there (README, "arm64").
const ARM64: &[(&str, Option<&str>)] = &[("arm64-6.12", None)];
const ARM64_BOTH: &[(&str, Option<&str>)] = &[("arm64-6.1", None), ("arm64-6.12", None)];
/// The two-function device reserved: .0 for vfio-pci, .1 unbound; a trusted writer.
const RESERVE: Option<&str> = Some("reserve-two-function.toml");
/// Debian 5.10 leaves bpf out of the LSM list unless the command line adds it.
pub const LSM_BPF: &str = "lsm=lockdown,yama,bpf";

pub const SCENARIOS: &[Scenario] = &[
    // The arm64 node first: its boots are the longest, so they start first.
    Scenario {
        name: "capabilities",
        boots: ARM64_BOTH,
        dry_run: false,
        policy: None,
        check: capabilities,
    },
    Scenario {
        name: "claim-user-group",
        boots: ARM64,
        dry_run: false,
        policy: None,
        check: claim_user_group,
    },
    Scenario {
        name: "reserve-prevents-bind",
        boots: ARM64_BOTH,
        dry_run: false,
        policy: RESERVE,
        check: reserve_prevents_bind,
    },
    Scenario {
        name: "vfio-open-not-viable",
        boots: ARM64,
        dry_run: false,
        policy: None,
        check: vfio_open_vetoed,
    },
    Scenario {
        name: "agent-killed",
        boots: ARM64,
        dry_run: false,
        policy: None,
        check: agent_killed,
    },
    Scenario {
        name: "write-paths",
        boots: ARM64,
        dry_run: false,
        policy: RESERVE,
        check: write_paths,
    },
    Scenario {
        name: "handback",
        boots: ARM64,
        dry_run: false,
        policy: None,
        check: handback,
    },
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
        name: "write-check",
        // Not 5.10: a detached LSM program cannot be attached again there, so the check stays
        // attached (docs/cost.md).
        boots: &[("6.1", None), ("7.3", None)],
        dry_run: false,
        policy: None,
        check: write_check,
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
        // The agent's own faults: the oldest and the newest kernel with BPF LSM (the vetoes
        // are the subject).
        name: "agent-faults",
        boots: &[("5.10", Some(LSM_BPF)), ("7.3", None)],
        dry_run: false,
        policy: None,
        check: agent_faults,
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
        // Upgrade and rollback across a map layout change: the agent's own logic, one kernel
        // with BPF LSM.
        name: "map-layout",
        boots: ONE,
        dry_run: false,
        policy: None,
        check: map_layout,
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
        // The forbidden write is refused by the BPF LSM: every kernel that runs it.
        name: "policy-live",
        boots: LSM,
        dry_run: false,
        policy: None,
        check: policy_live,
    },
    Scenario {
        name: "pod-attribution",
        boots: ALL,
        dry_run: false,
        policy: None,
        check: pod_attribution,
    },
    Scenario {
        // Hand-back needs the in-kernel count of opens, which only the LSM file hooks keep.
        // The libvirt and the DRA flows share one boot: they run one after the other.
        name: "handback",
        boots: LSM,
        dry_run: false,
        policy: None,
        check: handback,
    },
    Scenario {
        // Attribution from the kubelet's answer is the agent's logic: the VFIO events it annotates
        // are covered on every kernel by the vfio scenarios.
        name: "pod-resources",
        boots: EDGES,
        dry_run: false,
        policy: None,
        check: pod_resources,
    },
    Scenario {
        name: "handback-vfio-manager",
        boots: LSM,
        dry_run: false,
        policy: Some("trusted-vfio-manager.toml"),
        check: handback_vfio_manager,
    },
];

/// Programs on the DMA-ownership functions (iommu_device_use_default_domain,
/// iommu_group_claim_dma_owner, ...): named after them, they all contain `iommu` or `dma_owner`.
fn is_ownership_program(name: &str) -> bool {
    name.contains("iommu") || name.contains("dma_owner")
}

/// A program's state as messages quote it, `"missing"` when it is not listed.
fn state_text(state: Option<&ProgramState>) -> String {
    state.map_or_else(|| "missing".to_string(), ProgramState::to_string)
}

fn capabilities(c: &Checker) {
    let Some(Line::Capabilities {
        kernel,
        btf,
        bpf_lsm,
        dry_run,
        programs,
        enforcement,
        ..
    }) = c
        .of_type(|l| matches!(l, Line::Capabilities { .. }))
        .first()
        .copied()
    else {
        return;
    };
    c.expect(
        kernel.starts_with(&format!("{}.", crate::kernels::version_of(&c.series))),
        format!(
            "capabilities.kernel {kernel:?} is not a {} kernel",
            c.series
        ),
    );
    c.expect(*btf, "capabilities.btf is not true");
    c.expect(!*dry_run, "capabilities.dry_run is not false");
    let lsm_on_cmdline = c.cmdline.as_deref().is_some_and(|l| l.contains("bpf"));
    let want_lsm = !c.is_5_10() || lsm_on_cmdline;
    c.expect(
        *bpf_lsm == want_lsm,
        format!("capabilities.bpf_lsm is {bpf_lsm}, expected {want_lsm}"),
    );
    c.expect(!programs.is_empty(), "capabilities.programs is empty");
    for (name, state) in programs {
        c.expect(
            !matches!(state, ProgramState::Failed(_)),
            format!("program {name}: {state}"),
        );
    }
    let ownership: Vec<(&String, &ProgramState)> = programs
        .iter()
        .filter(|(n, _)| is_ownership_program(n))
        .collect();
    c.expect(
        !ownership.is_empty(),
        "no DMA-ownership program (name with iommu/dma_owner) in capabilities.programs",
    );
    for (name, state) in ownership {
        if !c.has_trampolines() {
            // fentry/fexit cannot attach at all: said so, not failed.
            let absent = matches!(state, ProgramState::Absent(Some(why)) if why.starts_with("no BPF trampoline"))
                || (name.starts_with("iommu_device_")
                    && name.ends_with("_dma_owner")
                    && *state == ProgramState::Absent(None));
            c.expect(
                absent,
                format!(
                    "ownership program {name} is {:?} on {}, expected absent: no BPF trampoline",
                    state.to_string(),
                    c.series
                ),
            );
            continue;
        }
        // 5.10 predates every ownership function (5.19); 6.1 has the group ones but not the
        // per-device iommu_device_{claim,release}_dma_owner (6.2+); 6.12 has all of them.
        let want = match c.version() {
            "5.10" => ProgramState::Absent(None),
            "6.1" if name.starts_with("iommu_device_") && name.ends_with("_dma_owner") => {
                ProgramState::Absent(None)
            }
            _ => ProgramState::Attached,
        };
        c.expect(
            *state == want,
            format!(
                "ownership program {name} is {:?}, expected {:?} on {}",
                state.to_string(),
                want.to_string(),
                c.series
            ),
        );
    }
    let lsm = enforcement.get(&Mechanism::Lsm);
    let lsm_text = lsm.map_or_else(|| "missing".to_string(), MechanismState::to_string);
    if want_lsm && c.has_trampolines() {
        c.expect(
            lsm == Some(&MechanismState::Active),
            format!("enforcement.lsm is {lsm_text:?}, expected active"),
        );
    } else {
        c.expect(
            matches!(lsm, Some(MechanismState::Unavailable(_))),
            format!("enforcement.lsm is {lsm_text:?} without BPF LSM: it must say unavailable"),
        );
    }
    // What stands in for polling: the module_load record, and the cdev's release.
    for name in [
        "module_load",
        "vfio_device_fops_release",
        "vfio_group_fops_open",
    ] {
        let state = programs.get(name);
        c.expect(
            state.is_some_and(ProgramState::is_attached),
            format!(
                "program {name} is {:?}, expected attached",
                state_text(state)
            ),
        );
    }
    // Debian's 6.12 (and later) lists the cdev-open stub in kallsyms but not in ftrace's table:
    // reported absent for good, with why; older kernels do not have it at all, and a kernel
    // built with VFIO_DEVICE_CDEV has the real function.
    let cdev = programs.get("vfio_device_fops_cdev_open");
    let (ok, want) = if c.series.contains("iommufd") {
        (cdev.is_some_and(ProgramState::is_attached), "attached")
    } else if c.is_5_10() || c.version() == "6.1" {
        (cdev == Some(&ProgramState::Absent(None)), "absent")
    } else {
        (
            matches!(cdev, Some(ProgramState::Absent(Some(why))) if why.starts_with("notrace")),
            "absent: notrace ...",
        )
    };
    c.expect(
        ok,
        format!(
            "vfio_device_fops_cdev_open is {:?} on {}, expected {want:?}",
            state_text(cdev),
            c.series
        ),
    );
    for core in [
        "iommu_device_use_default_domain",
        "iommu_group_claim_dma_owner",
    ] {
        c.expect(
            programs.contains_key(core),
            format!("capabilities.programs has no {core}"),
        );
    }
}

fn claim_user_group(c: &Checker) {
    let g = c.fact("group");
    c.expect(
        !g.is_empty(),
        "script did not report the group of the two-function device",
    );
    for dev in [c.dev("VM_DEV_FN0"), c.dev("VM_DEV_FN1")] {
        c.events(Kind::Bind)
            .device(dev)
            .driver("vfio-pci")
            .result(Outcome::Ok)
            .expect(1);
    }
    if c.is_5_10() {
        c.events(Kind::VfioOpen)
            .group(&g)
            .result(Outcome::Ok)
            .expect_at_least(1);
    } else {
        c.events(Kind::Claim)
            .group(&g)
            .result(Outcome::Ok)
            .expect(1);
    }
    c.verdicts(&g).owner(Owner::User).expect_at_least(1);
}

fn kernel_bind_refused(c: &Checker) {
    let g = c.fact("group");
    let fn1 = c.dev("VM_DEV_FN1");
    c.events(Kind::Refusal)
        .group(&g)
        .device(fn1)
        .driver("e1000")
        .ret(-16)
        .errno("EBUSY")
        .note("one for the sysfs bind, one for the autoprobe after modprobe")
        .expect_at_least(2);
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
    match c.audit_device(fn1) {
        None => c.problem(format!("final audit JSON has no entry for {fn1}")),
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

fn claim_over_kernel_driver(c: &Checker) {
    let g = c.fact("group");
    let fn1 = c.dev("VM_DEV_FN1");
    c.expect(
        c.fact("fn1_driver") == "e1000",
        format!(
            "{fn1} was not on e1000 before the claim ({})",
            c.fact("fn1_driver")
        ),
    );
    c.events(Kind::Claim)
        .group(&g)
        .errno("EPERM")
        .result(Outcome::Error)
        .expect_at_least(1);
    match c.verdicts(&g).last() {
        None => c.problem(format!("no verdict line for group {g}")),
        Some(v) => {
            c.expect(
                !v.viable,
                format!("last verdict of group {g} is viable: {v:?}"),
            );
            c.expect(
                v.reasons.iter().any(|s| s.contains(fn1)),
                format!("last verdict of group {g} has no reason naming {fn1}: {v:?}"),
            );
        }
    }
}

fn rebind_loop(c: &Checker) {
    let dev = c.dev("VM_DEV_SWITCH");
    let lost = c.of_type(|l| matches!(l, Line::Lost { .. })).len();
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
    c.events(Kind::Bind)
        .device(dev)
        .driver("e1000")
        .result(Outcome::Ok)
        .note(format!("the script bound it {want_binds} times"))
        .expect(want_binds);
    c.events(Kind::Unbind)
        .device(dev)
        .driver("e1000")
        .note(format!("the script unbound it {want_unbinds} times"))
        .expect(want_unbinds);
}

fn observe_5_10(c: &Checker) {
    let g = c.fact("group");
    let dev = c.dev("VM_DEV_SWITCH");
    c.events(Kind::Bind)
        .device(dev)
        .driver("vfio-pci")
        .result(Outcome::Ok)
        .expect(1);
    let path = format!("/dev/vfio/{g}");
    let opens = c.events(Kind::VfioOpen).group(&g).result(Outcome::Ok);
    opens.expect_at_least(1);
    let paths_ok = opens
        .list()
        .iter()
        .all(|e| e.path.as_deref() == Some(path.as_str()));
    c.expect(
        paths_ok,
        format!("vfio_open events of group {g} do not all carry path {path}"),
    );
    c.events(Kind::Unbind)
        .device(dev)
        .driver("vfio-pci")
        .expect(1);
    for d in [dev, c.dev("VM_DEV_FN0"), c.dev("VM_DEV_FN1")] {
        c.events(Kind::Bind)
            .device(d)
            .driver("e1000")
            .result(Outcome::Ok)
            .note("after modprobe")
            .expect(1);
    }
}

/// Whether BPF LSM runs in this boot (6.x, or 5.10 booted with it).
fn lsm_runs(c: &Checker) -> bool {
    c.has_trampolines() && (!c.is_5_10() || c.cmdline.as_deref().is_some_and(|l| l.contains("bpf")))
}

/// The hook was attached once it had something to veto (it starts on standby).
fn expect_hook_attached(c: &Checker, hook: &str) {
    let attached = c
        .lines
        .iter()
        .any(|l| matches!(l, Line::LsmHook { hook: h, state: HookState::Attached } if h == hook));
    c.expect(attached, format!("no lsm_hook line attaching {hook}"));
}

/// The hostile actor of the hand-back flows tried while the group was in use and never won.
fn expect_hostile_refused(c: &Checker, group: &str) {
    let tries: u32 = c.fact("hostile_tries").parse().unwrap_or(0);
    c.expect(tries > 0, "the hostile actor made no attempt");
    expect_fact(c, "hostile_wins", "0");
    c.events(Kind::Veto)
        .group(group)
        .action(Action::Vetoed)
        .note("the hostile actor's writes, refused in the kernel")
        .expect_at_least(4);
    expect_fact(c, "alive", "yes");
}

/// The hand-back steps of `device`, each a `handback` event after the record it comes from.
fn expect_handback(c: &Checker, device: &str, host: &str, times: usize) {
    c.events(Kind::Handback)
        .device(device)
        .driver("vfio-pci")
        .note("vfio-pci let go of it")
        .expect_at_least(times);
    c.events(Kind::Handback)
        .device(device)
        .driver(host)
        .note("the host driver bound it")
        .expect_at_least(times);
}

fn handback(c: &Checker) {
    let g = c.fact("group");
    c.expect(!g.is_empty(), "script did not report the GPU card's group");
    let (vga, audio) = (c.dev("VM_GPU_VGA"), c.dev("VM_GPU_AUDIO"));
    let (vga_host, audio_host) = (c.fact("vga_host"), c.fact("audio_host"));
    c.expect(
        vga_host != "none" && audio_host != "none",
        format!(
            "the card's functions started on {vga_host:?} and {audio_host:?}, not on host drivers"
        ),
    );
    expect_hostile_refused(c, &g);
    // libvirt: detach, use, reattach.
    for f in [
        "vga_detached",
        "audio_detached",
        "vga_in_use",
        "audio_in_use",
    ] {
        expect_fact(c, f, "vfio-pci");
    }
    expect_fact(c, "status_in_use", "in_use");
    expect_fact(c, "detach_in_use_rc", "1");
    expect_fact(c, "status_released", "idle");
    for n in 0..2 {
        for step in ["unbind", "override", "probe"] {
            expect_fact(c, &format!("reattach_{step}_{n}"), "ok");
        }
    }
    expect_fact(c, "vga_final", &vga_host);
    expect_fact(c, "audio_final", &audio_host);
    // DRA: 20 claims prepared, used and handed back.
    expect_fact(c, "dra_claims", "20");
    expect_fact(c, "dra_prepared", "20");
    expect_fact(c, "dra_handed_back", "20");
    expect_fact(c, "dra_vga_final", &vga_host);
    expect_fact(c, "dra_audio_final", &audio_host);
    // Each hand-back step is an event: one libvirt reattach and 20 unprepares per function.
    expect_handback(c, vga, &vga_host, 21);
    expect_handback(c, audio, &audio_host, 21);
    if !c.is_5_10() {
        c.events(Kind::Claim)
            .group(&g)
            .result(Outcome::Ok)
            .note("one per VM start on 5.19+")
            .expect_at_least(21);
    }
}

/// The GPU Operator's vfio-manager in a container the policy trusts by name: its writes to the
/// reserved, idle group pass the hooks (the reservation's pins are then restored by the agent);
/// another container's are vetoed and name its pod; nobody's pass while the group is held.
fn handback_vfio_manager(c: &Checker) {
    let g = c.fact("group");
    c.expect(!g.is_empty(), "script did not report the device's group");
    let devices = [c.dev("VM_GPU_VGA"), c.dev("VM_GPU_AUDIO")];
    expect_fact(c, "resolved", "yes");
    expect_fact(c, "alive", "yes");
    let (uid_t, id_t) = (c.fact("trusted_uid"), c.fact("trusted_id"));
    let (uid_u, id_u) = (c.fact("untrusted_uid"), c.fact("untrusted_id"));
    // The card starts on its host drivers; bind --all moves it to vfio-pci, where it stays
    // through the other container's writes and the hold; unbind --all gives it back.
    for n in 0..2 {
        let host = c.fact(&format!("host_{n}"));
        c.expect(
            !host.is_empty() && host != "none" && host != "vfio-pci",
            format!("function {n} of the card started on {host:?}, not on a host driver"),
        );
        expect_fact(c, &format!("start_driver_{n}"), &host);
        for phase in ["bound", "untrusted", "held"] {
            expect_fact(c, &format!("{phase}_driver_{n}"), "vfio-pci");
            expect_fact(c, &format!("{phase}_pin_{n}"), "vfio-pci");
        }
        // The reservation gave way to the trusted container: host driver back, pin cleared
        // and not restored.
        expect_fact(c, &format!("unbound_driver_{n}"), &host);
        expect_fact(c, &format!("unbound_pin_{n}"), "(null)");
    }
    // The group's vetoes by one container, in order.
    let vetoes = |id: &str| -> Vec<&Event> {
        c.events(Kind::Veto)
            .group(&g)
            .action(Action::Vetoed)
            .list()
            .into_iter()
            .filter(|e| e.container_id.as_deref() == Some(id))
            .collect()
    };
    for n in 0..2 {
        // The trusted container: every write of bind --all and unbind --all passed the hooks.
        for step in ["override", "unbind", "probe"] {
            expect_fact(c, &format!("bind_{step}_{n}"), "ok");
            expect_fact(c, &format!("unbind_{step}_{n}"), "ok");
        }
        // The other container, and the trusted one while the group is held: refused.
        for phase in ["untrusted", "held"] {
            expect_fact(c, &format!("{phase}_unbind_{n}"), "EPERM");
            expect_fact(c, &format!("{phase}_override_{n}"), "EPERM");
        }
    }
    // The hostile host process, while the group was held: nothing through.
    expect_hostile_refused(c, &g);
    // The trusted container's unbind happened (the observer names its pod).
    for device in devices {
        let unbinds: Vec<&Event> = c
            .events(Kind::Unbind)
            .device(device)
            .driver("vfio-pci")
            .list()
            .into_iter()
            .filter(|e| e.container_id.as_deref() == Some(id_t.as_str()))
            .collect();
        expect_pod(
            c,
            &unbinds,
            &format!("unbind of {device} by vfio-manager"),
            &uid_t,
            &id_t,
        );
    }
    // Vetoes: exactly the other container's unbind and override of each function, and the
    // trusted container's only while the group was held; each names its pod.
    for (id, uid, who) in [
        (&id_u, &uid_u, "the untrusted container"),
        (&id_t, &uid_t, "vfio-manager while the group was held"),
    ] {
        let theirs = vetoes(id);
        let rules: Vec<(Option<&str>, Option<Rule>)> = theirs
            .iter()
            .map(|e| (e.device.as_deref(), e.rule))
            .collect();
        let want: Vec<(Option<&str>, Option<Rule>)> = devices
            .iter()
            .flat_map(|d| {
                [
                    (Some(*d), Some(Rule::ProtectedUnbind)),
                    (Some(*d), Some(Rule::ProtectedDriverOverride)),
                ]
            })
            .collect();
        c.expect(
            rules == want,
            format!("vetoes of {who}: expected {want:?}, got {rules:?}"),
        );
        expect_pod(c, &theirs, &format!("veto of {who}"), uid, id);
    }
    // The trusted container's vetoes all come after the hold began (events in their order).
    let order: Vec<&Event> = c.every_event().collect();
    let at = |e: &Event| order.iter().position(|o| std::ptr::eq(*o, e));
    let held_at = c
        .events(Kind::VfioOpen)
        .group(&g)
        .result(Outcome::Ok)
        .list()
        .first()
        .and_then(|e| at(e));
    for e in vetoes(&id_t) {
        c.expect(
            held_at.is_some_and(|h| at(e).is_some_and(|i| i > h)),
            format!("vfio-manager vetoed while the group was idle: {}", json(e)),
        );
    }
}

fn expect_fact(c: &Checker, key: &str, want: &str) {
    let got = c.fact(key);
    c.expect(
        got == want,
        format!("fact {key} is {got:?}, expected {want:?}"),
    );
}

/// The agent's own reservation writes for the two-function device.
fn expect_pins(c: &Checker, action: Action) {
    for (var, value) in [("VM_DEV_FN0", "vfio-pci"), ("VM_DEV_FN1", "none")] {
        c.events(Kind::Pin)
            .device(c.dev(var))
            .driver(value)
            .action(action)
            .result(Outcome::Ok)
            .expect(1);
    }
}

fn reserve_prevents_bind(c: &Checker) {
    let fn1 = c.dev("VM_DEV_FN1");
    expect_pins(c, Action::Pinned);
    expect_fact(c, "fn0_override", "vfio-pci");
    expect_fact(c, "fn1_override", "none");
    expect_fact(c, "fn1_after_autoprobe", "none");
    expect_fact(c, "fn1_driver", "none");
    expect_fact(c, "alive", "yes");
    // Pinned, e1000 never even reaches really_probe for .1.
    c.events(Kind::Bind)
        .device(fn1)
        .driver("e1000")
        .note("the pin did not hold")
        .expect_none();
    if lsm_runs(c) {
        expect_fact(c, "sysfs_bind", "EPERM");
        c.events(Kind::Veto)
            .device(fn1)
            .rule(Rule::ProtectedBind)
            .action(Action::Vetoed)
            .expect(1);
    } else {
        // No BPF LSM: the pin alone refuses the bind, and no veto is claimed.
        expect_fact(c, "sysfs_bind", "ENODEV");
        c.events(Kind::Veto).note("without BPF LSM").expect_none();
    }
}

fn reserve_prevents_bind_dry_run(c: &Checker) {
    let g = c.fact("group");
    let fn1 = c.dev("VM_DEV_FN1");
    expect_pins(c, Action::WouldPin);
    expect_fact(c, "fn1_override", "(null)");
    expect_fact(c, "sysfs_bind", "EBUSY");
    expect_fact(c, "fn1_driver", "none");
    c.events(Kind::Refusal)
        .group(&g)
        .device(fn1)
        .driver("e1000")
        .errno("EBUSY")
        .note("the kernel's refusals of the autoprobe and the bind")
        .expect_at_least(2);
    c.events(Kind::Veto)
        .device(fn1)
        .rule(Rule::ProtectedBind)
        .action(Action::WouldVeto)
        .expect(1);
    c.events(Kind::Veto)
        .action(Action::Vetoed)
        .note("in dry-run")
        .expect_none();
}

/// The write-time check is attached only while needed, and what it alone could judge waits
/// for it (issue 20).
fn write_check(c: &Checker) {
    let g = c.fact("group");
    let vga = c.dev("VM_GPU_VGA");
    expect_fact(c, "steady_in_use", "detached");
    expect_fact(c, "unbind_open_unarmed", "EAGAIN");
    expect_fact(c, "armed_after_refusal", "attached");
    expect_fact(c, "unbind_in_use", "error_EPERM");
    expect_fact(c, "vga_driver", "vfio-pci");
    expect_fact(c, "idle_settled", "detached");
    expect_fact(c, "held_open", "ok");
    expect_fact(c, "vfio_open_unarmed", "EAGAIN");
    expect_fact(c, "armed_for_descriptor", "attached");
    expect_fact(c, "vfio_open_armed", "ok");
    expect_fact(c, "held_write", "EPERM");
    expect_fact(c, "final", "detached");
    expect_fact(c, "vga_final", "vfio-pci");
    c.events(Kind::Veto)
        .rule(Rule::ProtectedUnbind)
        .why(Why::WriteCheckNotArmed)
        .errno("EAGAIN")
        .note("the unbind opened before the check was armed")
        .expect(1);
    c.events(Kind::Veto)
        .group(&g)
        .device(vga)
        .rule(Rule::ProtectedUnbind)
        .action(Action::Vetoed)
        .errno("EPERM")
        .note("the unbind written once armed")
        .expect(1);
    c.events(Kind::Veto)
        .rule(Rule::VfioOpenUnarmed)
        .why(Why::WriteCheckNotArmed)
        .errno("EAGAIN")
        .note("the VFIO open while an unjudged descriptor was open")
        .expect(1);
    c.events(Kind::Veto)
        .group(&g)
        .device(vga)
        .rule(Rule::ProtectedDriverOverride)
        .errno("EPERM")
        .note("the write of the descriptor opened while the group was idle")
        .expect(1);
    let hook = |state: HookState| {
        c.lines.iter().any(|l| {
            matches!(l, Line::LsmHook { hook, state: s } if hook == "file_permission" && *s == state)
        })
    };
    c.expect(
        hook(HookState::Attached) && hook(HookState::Standby),
        "file_permission was not both attached and put back on standby",
    );
}

fn write_paths(c: &Checker) {
    let (fn0, fn1) = (c.dev("VM_DEV_FN0"), c.dev("VM_DEV_FN1"));
    expect_pins(c, Action::Pinned);
    expect_hook_attached(c, "file_permission");
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_fact(c, "fn1_override", "none");
    let files = [
        ("driver_override", Rule::ProtectedDriverOverride, Some(fn1)),
        ("bind", Rule::ProtectedBind, Some(fn1)),
        ("unbind", Rule::ProtectedUnbind, Some(fn0)),
        ("new_id", Rule::ProtectedNewId, None),
        ("remove", Rule::ProtectedRemove, Some(fn1)),
    ];
    for mode in ["write", "pwrite", "writev", "io_uring"] {
        for (file, _, _) in files {
            expect_fact(c, &format!("{mode}_{file}"), "error_EPERM");
        }
        // drivers_probe is not vetoed: it can bind only what the pin and the in-kernel bind
        // veto let through, and fn1 stays unbound.
        expect_fact(c, &format!("{mode}_drivers_probe"), "ok");
    }
    c.events(Kind::Veto)
        .rule(Rule::ProtectedDriversProbe)
        .expect_none();
    for (file, rule, device) in files {
        let vetoed = || {
            c.events(Kind::Veto)
                .rule(rule)
                .action(Action::Vetoed)
                .errno("EPERM")
        };
        // The bind also has the two-segment writev; driver_override the trusted writer's
        // while the group is in use.
        let extra = usize::from(rule == Rule::ProtectedBind)
            + usize::from(rule == Rule::ProtectedDriverOverride);
        vetoed()
            .note(format!("one per write path to {file}"))
            .expect(4 + extra);
        // bind/unbind: only write(2) and single-segment writev(2) on this very file are trusted to
        // name their target; pwrite and io_uring fail closed. new_id always fails closed.
        let named = match device {
            Some(d) => vetoed().device(d),
            None => vetoed(),
        };
        named
            .note(format!("the vetoes of {file} that name their target"))
            .expect_at_least(2);
    }
    expect_fact(c, "split_bind", "error_EPERM");
    c.events(Kind::Veto)
        .rule(Rule::ProtectedBind)
        .fail_closed()
        .note("the two-segment bind fails closed")
        .expect_at_least(1);
    expect_fact(c, "unprotected_bind", "ok");
    expect_fact(c, "trusted_override_in_use", "error_EPERM");
    expect_fact(c, "trusted_override", "ok");
    expect_fact(c, "fn0_driver_after", "vfio-pci");
    expect_fact(c, "fn1_driver_after", "none");
}

fn vfio_open_vetoed(c: &Checker) {
    let g = c.fact("group");
    expect_hook_attached(c, "file_open");
    expect_fact(c, "fn1_driver", "e1000");
    let hold = c.fact("hold");
    c.expect(
        hold.contains("EPERM"),
        format!("the holder's open was not refused with EPERM: {hold}"),
    );
    c.events(Kind::Veto)
        .group(&g)
        .rule(Rule::VfioOpenNotViable)
        .action(Action::Vetoed)
        .expect(1);
    c.events(Kind::VfioOpen)
        .group(&g)
        .result(Outcome::Ok)
        .note("despite the veto")
        .expect_none();
}

fn vfio_open_would_veto(c: &Checker) {
    let g = c.fact("group");
    expect_fact(c, "fn1_driver", "e1000");
    c.events(Kind::Veto)
        .group(&g)
        .rule(Rule::VfioOpenNotViable)
        .action(Action::WouldVeto)
        .expect(1);
    c.events(Kind::VfioOpen)
        .group(&g)
        .result(Outcome::Ok)
        .note("dry-run: the open should have gone through")
        .expect_at_least(1);
    c.events(Kind::Claim)
        .group(&g)
        .errno("EPERM")
        .note("the kernel's own EPERM for the claim")
        .expect_at_least(1);
}

/// The cdev the script opened, as the agent must name it in `path`.
fn cdev_path(c: &Checker) -> String {
    let cdev = c.fact("cdev");
    c.expect(
        cdev.starts_with("/dev/vfio/devices/vfio"),
        format!("the script found no cdev of the device: {cdev:?}"),
    );
    cdev
}

/// An event as the agent printed it, for messages.
fn json(e: &Event) -> String {
    serde_json::to_string(e).unwrap_or_else(|_| format!("{e:?}"))
}

fn cdev_bind_iommufd(c: &Checker) {
    let g = c.fact("group");
    let fn0 = c.dev("VM_DEV_FN0");
    let cdev = cdev_path(c);
    expect_fact(c, "open", "ok");
    expect_fact(c, "bind", "ok");
    c.events(Kind::VfioOpen)
        .device(fn0)
        .group(&g)
        .path(&cdev)
        .result(Outcome::Ok)
        .expect(1);
    let claims = c
        .events(Kind::Claim)
        .device(fn0)
        .scope(Scope::Device)
        .result(Outcome::Ok);
    claims.expect(1);
    for claim in claims.list() {
        c.expect(
            claim.errno.is_none(),
            format!("an ok claim carries an errno: {}", json(claim)),
        );
    }
    c.events(Kind::Veto)
        .note("a viable group's cdev bind")
        .expect_none();
}

fn cdev_open_vetoed(c: &Checker) {
    let g = c.fact("group");
    let fn0 = c.dev("VM_DEV_FN0");
    let cdev = cdev_path(c);
    expect_hook_attached(c, "file_open");
    expect_fact(c, "fn1_driver", "e1000");
    expect_fact(c, "open", "error_EPERM");
    c.events(Kind::Veto)
        .device(fn0)
        .group(&g)
        .path(&cdev)
        .rule(Rule::VfioOpenNotViable)
        .action(Action::Vetoed)
        .expect(1);
    c.events(Kind::VfioOpen)
        .path(&cdev)
        .result(Outcome::Ok)
        .note("despite the veto")
        .expect_none();
    c.events(Kind::Claim)
        .device(fn0)
        .note("after a vetoed open")
        .expect_none();
}

fn cdev_open_would_veto(c: &Checker) {
    let g = c.fact("group");
    let fn0 = c.dev("VM_DEV_FN0");
    let cdev = cdev_path(c);
    expect_fact(c, "fn1_driver", "e1000");
    expect_fact(c, "open", "ok");
    // The kernel's own refusal: e1000 holds .1, so the group cannot be claimed for user space.
    expect_fact(c, "bind", "error_EPERM");
    c.events(Kind::Veto)
        .device(fn0)
        .group(&g)
        .path(&cdev)
        .rule(Rule::VfioOpenNotViable)
        .action(Action::WouldVeto)
        .expect(1);
    c.events(Kind::VfioOpen)
        .device(fn0)
        .path(&cdev)
        .result(Outcome::Ok)
        .note("dry-run: the open goes through")
        .expect(1);
    c.events(Kind::Claim)
        .device(fn0)
        .scope(Scope::Device)
        .errno("EPERM")
        .result(Outcome::Error)
        .note("the kernel's EPERM for the device claim")
        .expect(1);
}

fn map_layout(c: &Checker) {
    let layout = format!("maps-v{}", iommu_enforcer_common::pins::MAP_LAYOUT);
    expect_fact(c, "boot_layouts", &layout);
    let links: usize = c.fact("links").parse().unwrap_or(0);
    c.expect(links >= 10, format!("only {links} links pinned"));
    // Same layout: adopted.
    expect_fact(c, "same_ready", "yes");
    expect_fact(c, "same_adopted", "1");
    // Another layout: refused, nothing replaced, the old programs still veto.
    expect_fact(c, "upgrade_rc", "2");
    expect_fact(c, "upgrade_names_layout", "yes");
    expect_fact(c, "upgrade_stdout_lines", "0");
    expect_fact(c, "links_after_refusal", &links.to_string());
    expect_fact(c, "layouts_after_refusal", &layout);
    if lsm_runs(c) {
        // Refused either way: at the write (EPERM) while the write-time check is attached, or
        // at the open (EAGAIN) once it went back to standby (docs/cost.md).
        let bind = c.fact("bind_after_refusal");
        c.expect(
            bind == "error_EPERM" || bind == "error_EAGAIN",
            format!("the bind after the refused upgrade was not refused: {bind}"),
        );
    }
    expect_fact(c, "upgrade_detach_rc", "1");
    expect_fact(c, "upgrade_detach_force_rc", "0");
    expect_fact(c, "layouts_after_detach", "");
    expect_fact(c, "upgraded_ready", "yes");
    expect_fact(c, "upgraded_layouts", "maps-v3");
    // The rollback, the same way back.
    expect_fact(c, "rollback_rc", "2");
    expect_fact(c, "rollback_names_layout", "yes");
    expect_fact(c, "rollback_detach_rc", "1");
    expect_fact(c, "rollback_detach_force_rc", "0");
    expect_fact(c, "rolled_back_ready", "yes");
    expect_fact(c, "rolled_back_layouts", &layout);
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_fact(c, "alive", "yes");
}

fn malformed_policy(c: &Checker) {
    expect_fact(c, "rc", "2");
    expect_fact(c, "stdout_lines", "0");
    expect_fact(c, "names_location", "yes");
    expect_fact(c, "overrides_unchanged", "yes");
}

fn reserve_rebind(c: &Checker) {
    expect_fact(c, "first_agent_gone", "yes");
    for fn_ in ["fn0", "fn1"] {
        expect_fact(c, &format!("{fn_}_before"), "e1000");
        expect_fact(c, &format!("rebound_{fn_}"), "1");
        expect_fact(c, &format!("{fn_}_after"), "vfio-pci");
    }
}

fn expect_alive_and(c: &Checker, fn1_driver: &str) {
    expect_fact(c, "alive", "yes");
    expect_fact(c, "fn1_driver", fn1_driver);
}

fn hostile_topology(c: &Checker) {
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
    // Config space and BARs of the held device and of the port above: refused at the open, or
    // (descriptors opened while idle) at the write and the writable mapping; reads still work.
    let refused = "open=error_EPERM write=skipped mmap=skipped";
    expect_fact(c, "port_sbr", refused);
    expect_fact(c, "port_bus_numbers", refused);
    expect_fact(c, "fn0_bar", refused);
    expect_fact(
        c,
        "preopened_bar",
        "open=ok write=error_EPERM mmap=error_EPERM",
    );
    let config = c.fact("preopened_config");
    c.expect(
        config.starts_with("open=ok write=error_EPERM "),
        format!("the pre-opened config write of the port above: {config}"),
    );
    expect_fact(c, "port_config_read", "64");
    let before = c.fact("secondary_before");
    c.expect(!before.is_empty(), "no secondary bus number read");
    expect_fact(c, "secondary_after", &before);
    for rule in [Rule::ProtectedConfig, Rule::ProtectedResource] {
        c.events(Kind::Veto)
            .rule(rule)
            .action(Action::Vetoed)
            .expect_at_least(2);
    }
    expect_alive_and(c, "none");
    c.events(Kind::Veto)
        .rule(Rule::ProtectedRemove)
        .device(&port)
        .action(Action::Vetoed)
        .why(Why::AboveProtectedGroup)
        .note(format!("{port}/remove, as above a protected group"))
        .expect(1);
    c.events(Kind::Veto)
        .rule(Rule::ProtectedSlotPower)
        .action(Action::Vetoed)
        .expect(1);
}

fn hostile_io_uring(c: &Checker) {
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
    c.events(Kind::Veto)
        .rule(Rule::ProtectedUnbind)
        .fail_closed()
        .note("the linked unbinds fail closed")
        .expect_at_least(2);
    // The buffer race: 300 writes each, every one refused whatever the buffer held.
    expect_fact(c, "race_override_ok", "0");
    expect_fact(c, "race_new_id_ok", "0");
    expect_fact(c, "fn1_override_after_race", "vfio-pci");
}

fn hidden_holder(c: &Checker) {
    expect_fact(c, "visible_vfio_fds", "0");
    expect_fact(c, "fn1_override", "vfio-pci");
    expect_fact(c, "fn1_after_autoprobe", "none");
    let want = if lsm_runs(c) { "EPERM" } else { "ENODEV" };
    expect_fact(c, "sysfs_bind", want);
    expect_alive_and(c, "none");
    let fn1 = c.dev("VM_DEV_FN1");
    c.events(Kind::Bind)
        .device(fn1)
        .driver("e1000")
        .result(Outcome::Ok)
        .expect_none();
    // The autoprobe the pin stopped is reported, with the driver it stopped.
    c.events(Kind::PinRefused)
        .device(fn1)
        .driver("e1000")
        .expect_at_least(1);
}

fn blocked_removal(c: &Checker) {
    expect_fact(c, "remove_blocked", "yes");
    let state = c.fact("agent_main_state");
    c.expect(
        state != "D",
        "the agent's event loop was asleep in the kernel (D) while the removal blocked",
    );
    expect_fact(c, "healthz_during_stall", "200");
    let stalled = c.of_type(|l| matches!(l, Line::Stalled { .. })).len();
    c.expect(stalled >= 1, "no `stalled` line while sysfs was blocked");
    expect_fact(c, "removed_after_release", "yes");
    expect_fact(c, "healthz_after", "200");
    expect_alive_and(c, "none");
}

fn agent_faults(c: &Checker) {
    expect_fact(c, "ready", "yes");
    expect_fact(c, "nofile_raised", "1");
    let base: u32 = c.fact("fds_base").parse().unwrap_or(u32::MAX);
    for phase in ["open", "held"] {
        expect_fact(c, &format!("probes_failed_{phase}"), "0");
        let ok: u32 = c.fact(&format!("probes_ok_{phase}")).parse().unwrap_or(0);
        c.expect(
            ok >= 10,
            format!("{phase} flood: only {ok} probes answered"),
        );
        let max: u64 = c
            .fact(&format!("probe_max_ms_{phase}"))
            .parse()
            .unwrap_or(u64::MAX);
        // 100 ms on a host; TCG and a 2-core CI runner get a margin.
        c.expect(max < 500, format!("{phase} flood: a probe took {max} ms"));
        // The programs, maps and links are most of the base; the flood adds at most the cap
        // of 64 connections and the few a pass opens.
        let fds: u32 = c.fact(&format!("fds_{phase}")).parse().unwrap_or(u32::MAX);
        c.expect(
            fds <= base.saturating_add(80),
            format!("{phase} flood: the agent holds {fds} descriptors, {base} before (cap 64 connections)"),
        );
    }
    for when in ["during", "after"] {
        expect_fact(c, &format!("vfio_open_{when}"), "refused");
        let slot = c.fact(&format!("slot_power_{when}"));
        c.expect(
            slot == "error_EPERM",
            format!("slot power {when} the flood: {slot}"),
        );
        expect_fact(c, &format!("port_remove_{when}"), "error_EPERM");
        expect_fact(c, &format!("override_{when}"), "error_EPERM");
    }
    expect_fact(c, "fn1_host", "e1000");
    expect_fact(c, "shutdown_printed", "1");
    expect_fact(c, "fn0_driver", "vfio-pci");
    expect_fact(c, "alive", "yes");
}

fn agent_killed(c: &Checker) {
    expect_fact(c, "agent_killed", "yes");
    let links: usize = c.fact("pinned_links").parse().unwrap_or(0);
    c.expect(links >= 10, format!("only {links} links pinned"));
    expect_fact(c, "fn1_without_agent", "none");
    if lsm_runs(c) {
        expect_fact(c, "override_without_agent", "error_EPERM");
        // A bus-wide bind or unbind names its target only in the data written: with no agent
        // to arm the write-time check, the open is refused (EAGAIN) while anything is
        // protected, and stays refused until an agent arms it. On 5.10 the check stays
        // attached (it cannot be attached again there): the write is refused (EPERM).
        let bus = if c.is_5_10() {
            "error_EPERM"
        } else {
            "error_EAGAIN"
        };
        expect_fact(c, "bind_without_agent", bus);
        expect_fact(c, "unbind_without_agent", bus);
        expect_fact(c, "override_second_agent", "error_EPERM");
        // The pins guard themselves while the group is in use, with no agent running.
        for f in ["pin_rm", "pin_mv", "map_rm", "bpffs_umount"] {
            expect_fact(c, f, "EPERM");
        }
        expect_fact(c, "detach_in_use", "1");
        expect_fact(c, "links_after_cleanup", &links.to_string());
        expect_fact(c, "bind_after_cleanup", bus);
        // rm, mv, rm of a map, umount: made while no agent ran, printed by the next one.
        let pins = count_fact(c, "second_pin_vetoes");
        c.expect(
            pins >= 4,
            format!("the second agent printed {pins} protected_pins vetoes, expected 4"),
        );
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
fn count_fact(c: &Checker, key: &str) -> u64 {
    let v = c.fact(key);
    match v.parse() {
        Ok(n) => n,
        Err(_) => {
            c.problem(format!("fact {key} is {v:?}, not a count"));
            0
        }
    }
}

/// What the boot's agent printed of the burst: ok binds and unbinds of pci-stub on the burst
/// device, and opens (ok, failed) and releases of the flood's group file.
fn burst_seen(c: &Checker, dev: &str, node: &str) -> (u64, u64) {
    let cycles = c
        .events(Kind::Bind)
        .device(dev)
        .driver("pci-stub")
        .result(Outcome::Ok)
        .count()
        + c.events(Kind::Unbind)
            .device(dev)
            .driver("pci-stub")
            .count();
    let opens = c.events(Kind::VfioOpen).path(node).count()
        + c.events(Kind::VfioRelease).path(node).count();
    (cycles as u64, opens as u64)
}

/// Records counted lost by the boot's agent: `lost` counts and `restart` missed.
fn counted_lost(c: &Checker) -> u64 {
    c.lines
        .iter()
        .map(|l| match l {
            Line::Lost { count } => *count,
            Line::Restart { missed, .. } => *missed,
            _ => 0,
        })
        .sum()
}

/// The agent's last verdict of every group equals the audit's read of sysfs after it stopped.
fn final_map_matches_sysfs(c: &Checker) {
    let Some(groups) = c
        .audit
        .as_ref()
        .and_then(|a| a.get("groups"))
        .and_then(Value::as_array)
    else {
        c.problem("no groups in the final audit JSON");
        return;
    };
    for g in groups {
        let id = g["id"].as_str().unwrap_or("?");
        let want = (g["owner"].as_str(), g["viable"].as_bool());
        let got = c
            .verdicts(id)
            .last()
            .map(|v| (Some(v.owner.as_str()), Some(v.viable)));
        c.expect(
            got == Some(want),
            format!(
                "group {id}: the agent's last verdict (owner, viable) {got:?} is not the audit's {want:?}"
            ),
        );
    }
}

fn burst(c: &Checker) {
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
        !c.of_type(|l| matches!(l, Line::Resync { .. })).is_empty(),
        "no resync after the losses",
    );
    expect_fact(c, "alive", "yes");
    final_map_matches_sysfs(c);
}

fn kill_mid_burst(c: &Checker) {
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
    // Nothing lost silently: every record made is seen or counted lost. Delivery across kill -9
    // is at least once: a record the first agent printed but had not yet consumed from the ring
    // when it died (its lines go through the output thread first), or a loss it reported but
    // had not yet written to the pinned ledger, is said again by the second. A few, not a
    // batch: the drain consumes each record once its lines are written.
    let said = first + second + lost;
    c.expect(
        said >= made && said <= made + DUPLICATES_AT_KILL,
        format!(
            "made {made} (binds {binds}, unbinds {unbinds}), seen {first} (first agent) + {second} (second) + lost {lost} = {said}: expected {made} to {}",
            made + DUPLICATES_AT_KILL
        ),
    );
}

/// Records a kill -9 may leave to be said twice (printed, not yet consumed): see kill_mid_burst.
const DUPLICATES_AT_KILL: u64 = 8;

fn claim_race(c: &Checker) {
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

fn pin_restored(c: &Checker) {
    expect_fact(c, "fn1_override", "none");
    expect_fact(c, "alive", "yes");
    let fn1 = c.dev("VM_DEV_FN1");
    let watch = c
        .lines
        .iter()
        .find_map(|l| match l {
            Line::Capabilities { pin_watch, .. } => Some(pin_watch.as_str()),
            _ => None,
        })
        .unwrap_or("");
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
        .every_event()
        .filter(|e| e.device.as_deref() == Some(fn1) && e.result == Outcome::Ok)
        .filter_map(|e| match e.kind {
            Kind::DriverOverrideWrite if e.driver.is_none() => Some("cleared"),
            Kind::PinRestored if e.driver.as_deref() == Some("none") => Some("restored"),
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

fn traced_trusted_writer(c: &Checker) {
    expect_fact(c, "traced", "error_EPERM");
    expect_fact(c, "fn1_override", "none");
    expect_fact(c, "untraced", "ok");
    c.events(Kind::Veto)
        .rule(Rule::ProtectedDriverOverride)
        .device(c.dev("VM_DEV_FN1"))
        .action(Action::Vetoed)
        .why(Why::TrustedWriterTraced)
        .expect(1);
}

fn trusted_writer_installed(c: &Checker) {
    expect_fact(c, "before", "error_EPERM");
    expect_fact(c, "reresolved", "yes");
    expect_fact(c, "after", "ok");
    expect_fact(c, "fn1_override", "none");
    let fn1 = c.dev("VM_DEV_FN1");
    let vetoes = c
        .events(Kind::Veto)
        .rule(Rule::ProtectedDriverOverride)
        .device(fn1)
        .list();
    let comms: Vec<&str> = vetoes.iter().map(|e| e.comm.as_str()).collect();
    // Refused once, before it was installed; the installed one was let through.
    c.expect(
        comms == ["late-writer"],
        format!("expected one veto of late-writer's write, got {comms:?}"),
    );
}

/// Where the agent printed `event` lines of `kind` (indices into `c.lines`).
fn positions(c: &Checker, kind: Kind) -> Vec<usize> {
    c.lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.as_event().is_some_and(|e| e.kind == kind))
        .map(|(i, _)| i)
        .collect()
}

/// policy-live.sh: three ConfigMap updates (reserve, broken, drop) on a running agent.
fn policy_live(c: &Checker) {
    let (fn0, fn1) = (c.dev("VM_GPU_VGA"), c.dev("VM_GPU_AUDIO"));
    let path = "/etc/iommu-enforcer/policy.toml";
    expect_fact(c, "layout", "..data/policy.toml");
    expect_fact(c, "applied_at_start", "1");
    expect_fact(c, "fn1_override_before", "(null)");
    expect_fact(c, "pinned_within_2s", "yes");
    expect_fact(c, "applied_after_reserve", "2");
    expect_fact(c, "vga_reserved", "vfio-pci");
    expect_fact(c, "audio_reserved", "vfio-pci");
    expect_fact(c, "reserved_write", "EPERM");
    expect_fact(c, "rejected", "1");
    expect_fact(c, "broken_write", "EPERM");
    expect_fact(c, "fn1_override_broken", "vfio-pci");
    expect_fact(c, "applied_after_drop", "3");
    expect_fact(c, "dropped_clear", "ok");
    expect_fact(c, "fn1_override_after", "(null)");
    for n in 0..2 {
        for step in ["unbind", "override", "probe"] {
            expect_fact(c, &format!("reattach_{step}_{n}"), "ok");
        }
    }
    let audio_host = c.fact("audio_host");
    c.expect(
        audio_host != "none" && !audio_host.is_empty(),
        format!("the audio function started on {audio_host:?}"),
    );
    expect_fact(c, "audio_final", &audio_host);
    let vga_final = c.fact("vga_final");
    c.expect(
        vga_final.starts_with("bochs"),
        format!("the VGA function ended on {vga_final:?}, not its host driver"),
    );

    // Applied three times: the empty file at start, the reservation, the drop; each a new
    // digest, the first that of no bytes.
    let applied = c.events(Kind::PolicyApplied).list();
    let digests: Vec<&str> = applied.iter().filter_map(|e| e.digest.as_deref()).collect();
    c.expect(
        applied.len() == 3 && digests.len() == 3,
        format!(
            "expected 3 policy_applied events with a digest, got {}",
            applied.len()
        ),
    );
    if let [start, reserve, drop] = digests[..] {
        c.expect(
            start == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            format!("the start's digest {start} is not that of an empty file"),
        );
        c.expect(
            start != reserve && reserve != drop && start != drop,
            format!("digests are not all different: {digests:?}"),
        );
    }
    for e in &applied {
        c.expect(
            e.path.as_deref() == Some(path) && e.result == Outcome::Ok,
            format!("policy_applied should name {path}, result ok: {}", json(e)),
        );
    }
    // Rejected once, where the bracket is missing, as typed fields.
    let rejected = c.events(Kind::PolicyRejected).list();
    c.expect(
        rejected.len() == 1,
        format!("expected 1 policy_rejected event, got {}", rejected.len()),
    );
    for e in &rejected {
        c.expect(
            e.line == Some(4)
                && e.column.is_some_and(|col| col > 0)
                && e.path.as_deref() == Some(path)
                && e.error.as_deref().is_some_and(|m| m.contains(":4:"))
                && e.result == Outcome::Error,
            format!(
                "policy_rejected should say {path} line 4 with a column: {}",
                json(e)
            ),
        );
    }

    // In order: applied (reserve), both pins, the refused write; rejected, refused again;
    // applied (drop), and from there no pin kept on either function.
    let (applied_at, rejected_at) = (
        positions(c, Kind::PolicyApplied),
        positions(c, Kind::PolicyRejected),
    );
    let (Some(&reserved), Some(&dropped), Some(&broken)) =
        (applied_at.get(1), applied_at.get(2), rejected_at.first())
    else {
        return;
    };
    let between = |from: usize, to: usize, want: &dyn Fn(&Event) -> bool| {
        c.lines[from..to]
            .iter()
            .filter_map(Line::as_event)
            .filter(|e| want(e))
            .count()
    };
    for dev in [fn0, fn1] {
        let pins = between(reserved, broken, &|e| {
            e.kind == Kind::Rebind
                && e.device.as_deref() == Some(dev)
                && e.driver.as_deref() == Some("vfio-pci")
                && e.action == Some(Action::Rebound)
                && e.result == Outcome::Ok
        });
        c.expect(
            pins == 1,
            format!(
                "expected {dev} moved to vfio-pci once after the reservation was applied, got {pins}"
            ),
        );
    }
    let vetoed = |e: &Event| {
        e.kind == Kind::Veto
            && e.rule == Some(Rule::ProtectedDriverOverride)
            && e.device.as_deref() == Some(fn1)
            && e.action == Some(Action::Vetoed)
    };
    let (reserved_vetoes, broken_vetoes) = (
        between(reserved, broken, &vetoed),
        between(broken, dropped, &vetoed),
    );
    c.expect(
        reserved_vetoes == 1 && broken_vetoes == 1,
        format!(
            "expected the write to {fn1}'s driver_override vetoed once under the reservation and once after the rejected file, got {reserved_vetoes} and {broken_vetoes}"
        ),
    );
    let after_drop = between(dropped, c.lines.len(), &|e| {
        matches!(
            e.kind,
            Kind::Pin | Kind::PinRestored | Kind::Rebind | Kind::Veto
        ) && [Some(fn0), Some(fn1)].contains(&e.device.as_deref())
    });
    c.expect(
        after_drop == 0,
        format!("{after_drop} pins or vetoes on {fn0}/{fn1} after the reservation was dropped"),
    );
}

fn daemonset_caps(c: &Checker) {
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
fn expect_pod(c: &Checker, events: &[&Event], what: &str, uid: &str, id: &str) {
    c.expect(!events.is_empty(), format!("no {what} event"));
    for e in events {
        let got = (e.pod_uid.as_deref(), e.container_id.as_deref());
        c.expect(
            got == (Some(uid), Some(id)),
            format!(
                "{what}: expected pod_uid {uid} and container_id {id}, got {}",
                json(e)
            ),
        );
    }
}

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

/// The fake kubelet (pod-resources.setup.sh) allocated VM_DEV_FN0 to this container; the events
/// of its group name it, those of a device it did not allocate (VM_DEV_SWITCH) do not; a list
/// after the fake kubelet is killed fails and keeps the table.
fn pod_resources(c: &Checker) {
    let want = Allocation {
        namespace: "vms".into(),
        pod: "virt-launcher-vm-a".into(),
        container: "compute".into(),
        resource: "devices.kubevirt.io/e1000".into(),
    };
    let (fn0, fn1, switch) = (
        c.dev("VM_DEV_FN0"),
        c.dev("VM_DEV_FN1"),
        c.dev("VM_DEV_SWITCH"),
    );
    let (g, sg) = (c.fact("group"), c.fact("switch_group"));
    for (k, v) in [("group", &g), ("switch_group", &sg)] {
        c.expect(!v.is_empty(), format!("script did not report {k}"));
    }
    expect_fact(c, "server_up", "yes");
    expect_fact(c, "server_alive", "yes");
    expect_fact(c, "fn0_driver", "vfio-pci");
    // The start's list found the one PCI address (the GPU UUID is not one) and none failed.
    expect_fact(c, "listed_one", "1");
    expect_fact(c, "list_failures", "0");
    // Killed, the fake kubelet fails the list the switch group's open causes; the table stands.
    expect_fact(c, "failures_after_kill", "1");
    expect_fact(c, "table_kept", "1");
    c.events(Kind::VfioOpen)
        .group(&sg)
        .result(Outcome::Ok)
        .allocated_to(None)
        .note("the switch's group has no allocated member")
        .expect_at_least(1);
    let lists: u32 = c.fact("lists").parse().unwrap_or(0);
    c.expect(
        lists >= 1,
        format!("the fake kubelet answered {lists} List calls"),
    );
    // The VM's open of FN0's group (device null): named from its member FN0.
    let note = "the fake kubelet allocated a member of this group";
    c.events(Kind::VfioOpen)
        .group(&g)
        .result(Outcome::Ok)
        .allocated_to(Some(&want))
        .note(note)
        .expect_at_least(1);
    let opens = c.events(Kind::VfioOpen).group(&g).list();
    c.expect(!opens.is_empty(), format!("no vfio_open of group {g}"));
    for e in opens {
        c.expect(
            e.allocated_to.as_ref() == Some(&want),
            format!(
                "vfio_open of group {g} should be allocated_to {want:?}: {}",
                json(e)
            ),
        );
    }
    // FN1 is not in the table, but its group's member FN0 is.
    c.events(Kind::Bind)
        .device(fn1)
        .driver("vfio-pci")
        .allocated_to(Some(&want))
        .expect_at_least(1);
    c.events(Kind::Bind)
        .device(fn0)
        .driver("vfio-pci")
        .allocated_to(Some(&want))
        .expect_at_least(1);
    // The switch's e1000: bound to vfio-pci, no pod allocated it or a member of its group.
    c.events(Kind::Bind)
        .device(switch)
        .allocated_to(None)
        .note("no pod was allocated this device")
        .expect_at_least(1);
    let stray: Vec<String> = c
        .every_event()
        .filter(|e| e.allocated_to.is_some())
        .filter(|e| {
            e.group.as_deref().is_some_and(|eg| eg != g) || e.device.as_deref() == Some(switch)
        })
        .map(json)
        .collect();
    c.expect(
        stray.is_empty(),
        format!("events outside group {g} are allocated_to a pod: {stray:?}"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Channel;
    use crate::topology;

    fn event(kind: Kind, device: &str, driver: Option<&str>, result: Outcome) -> Event {
        let mut e = Event::new(kind, result);
        e.device = Some(device.into());
        e.driver = driver.map(str::to_string);
        e
    }

    /// A boot of reserve-prevents-bind on 6.12 as the agent and the script report it.
    fn boot(with_veto: bool) -> Checker {
        let (fn0, fn1) = (
            topology::address("VM_DEV_FN0"),
            topology::address("VM_DEV_FN1"),
        );
        let mut lines = Vec::new();
        for (dev, driver) in [(fn0, "vfio-pci"), (fn1, "none")] {
            let mut pin = event(Kind::Pin, dev, Some(driver), Outcome::Ok);
            pin.rule = Some(Rule::Reservation);
            pin.action = Some(Action::Pinned);
            lines.push(Line::Event(Box::new(pin)));
        }
        if with_veto {
            let mut veto = event(Kind::Veto, fn1, None, Outcome::Error);
            veto.rule = Some(Rule::ProtectedBind);
            veto.action = Some(Action::Vetoed);
            veto.errno = Some("EPERM".into());
            lines.push(Line::Event(Box::new(veto)));
        }
        let script = [
            "fn0_override=vfio-pci",
            "fn1_override=none",
            "fn1_after_autoprobe=none",
            "fn1_driver=none",
            "alive=yes",
            "sysfs_bind=EPERM",
        ]
        .map(|f| format!("@fact {f}\n"))
        .concat();
        let ch = Channel {
            events: lines
                .iter()
                .map(|l| serde_json::to_string(l).unwrap())
                .collect(),
            script,
            ..Channel::default()
        };
        Checker::new("6.12", None, &ch)
    }

    #[test]
    fn a_rewritten_check_passes_a_good_boot_and_names_what_a_bad_one_misses() {
        let good = boot(true);
        reserve_prevents_bind(&good);
        assert_eq!(good.into_problems(), Vec::<String>::new());

        let bad = boot(false);
        reserve_prevents_bind(&bad);
        assert_eq!(
            bad.into_problems(),
            [
                "expected 1 `veto` event with device=0000:05:00.1, rule=protected_bind, \
              action=vetoed, got 0 (no `veto` event at all)"
            ]
        );
    }
}
