//! `pod-resources`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::{expect_fact, json, Scenario, EDGES};
use crate::checks::Checker;
use iommu_enforcer_schema::{Allocation, Kind, Outcome};

pub const RUNS: &[Scenario] = &[Scenario {
    // Attribution from the kubelet's answer is the agent's logic: the VFIO events it annotates
    // are covered on every kernel by the vfio scenarios.
    name: "pod-resources",
    boots: EDGES,
    dry_run: false,
    policy: None,
    check: pod_resources,
}];

/// The fake kubelet (setup.sh) allocated VM_DEV_FN0 to this container; the events
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
