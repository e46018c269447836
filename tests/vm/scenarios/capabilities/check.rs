//! `capabilities`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{Scenario, ARM64_BOTH, EVERY};
use crate::checks::Checker;
use iommu_enforcer_schema::{Line, Mechanism, MechanismState, ProgramState};

pub const RUNS: &[Scenario] = &[
    Scenario {
        name: "capabilities",
        boots: ARM64_BOTH,
        dry_run: false,
        policy: None,
        check: capabilities,
    },
    Scenario {
        name: "capabilities",
        boots: EVERY,
        dry_run: false,
        policy: None,
        check: capabilities,
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
