//! `handback`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, expect_hostile_refused, Scenario, ARM64, LSM};
use crate::checks::Checker;
use iommu_enforcer_schema::{Kind, Outcome};

pub const RUNS: &[Scenario] = &[
    Scenario {
        name: "handback",
        boots: ARM64,
        dry_run: false,
        policy: None,
        check: handback,
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
];

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
