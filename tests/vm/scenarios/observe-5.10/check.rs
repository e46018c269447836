//! `observe-5.10`: its runs (kernels, dry run, policy) and the host-side check of what guest.sh did.
use super::Scenario;
use crate::checks::Checker;
use iommu_enforcer_schema::{Kind, Outcome};

pub const RUNS: &[Scenario] = &[Scenario {
    name: "observe-5.10",
    boots: &[("5.10", None)],
    dry_run: false,
    policy: None,
    check: observe_5_10,
}];

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
