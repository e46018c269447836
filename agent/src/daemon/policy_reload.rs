//! The policy in force, said (`policy_applied`), and a changed policy file put in force in one
//! pass, or refused (`policy_rejected`) with the old one left standing (policy::watch).
use std::path::Path;

use iommu_enforcer_schema::{Body, Event, Line, Outcome};
use log::{info, warn};

use super::live::Live;
use crate::{
    enforce::Enforcer,
    node::{FollowUp, NodeState},
    policy::{host_path, watch::Change, writer_watch::WriterWatch, PolicyError},
};

/// An agent-made policy event: no device, the agent's own process.
fn event(body: Body, result: Outcome) -> Line {
    let mut e = Event::of(body, result);
    let pid = std::process::id();
    (e.pid, e.tgid, e.comm) = (pid, pid, "enforcer".into());
    Line::Event(Box::new(e))
}

/// `policy_applied`: the file at `path` (`None`: the default policy) is in force.
pub(super) fn applied(path: Option<&Path>, digest: &str) -> Line {
    let body = Body::PolicyApplied {
        path: path.map(|p| p.display().to_string()),
        digest: digest.to_owned(),
    };
    event(body, Outcome::Ok)
}

/// `policy_rejected`: where the file is at fault, when it could be read.
pub(super) fn rejected(error: &PolicyError) -> Line {
    let (path, line, column) = match error {
        PolicyError::Read { path, .. } => (path, None, None),
        PolicyError::Invalid {
            path, line, column, ..
        } => (path, u32::try_from(*line).ok(), u32::try_from(*column).ok()),
    };
    let body = Body::PolicyRejected {
        path: Some(path.display().to_string()),
        line,
        column,
        error: error.to_string(),
    };
    event(body, Outcome::Error)
}

/// Acts on a changed policy file. A valid one moves the node state, the trusted writers, the
/// pins and the kernel maps to it in one pass (the maps take every new entry before they drop
/// an old one: enforce::kernel_maps); returns the watch on its trusted writers' paths, which
/// replaces the old one. An invalid one changes nothing and returns `None`.
pub(super) fn apply(
    live: &mut Live,
    host_root: &Path,
    change: Change,
) -> Option<Option<WriterWatch>> {
    let (lines, writers) = put_in_force(&mut live.node, &mut live.enforcer, host_root, change);
    live.sink.emit(&lines);
    if writers.is_some() {
        // Pins for what is protected now, and the maps: in the same pass.
        live.follow_up(FollowUp::default());
    }
    writers
}

/// [`apply`] up to the enforcer's pass: the lines to print (`policy_applied` or
/// `policy_rejected`, then the verdicts the new policy changed) and, for a valid policy, the
/// new watch on its trusted writers.
fn put_in_force(
    node: &mut NodeState,
    enforcer: &mut Enforcer,
    host_root: &Path,
    change: Change,
) -> (Vec<Line>, Option<Option<WriterWatch>>) {
    let (policy, digest) = match change {
        Change::Reject(e) => {
            warn!("policy rejected, the policy in force stays: {e}");
            return (vec![rejected(&e)], None);
        }
        Change::Apply { policy, digest } => (policy, digest),
    };
    info!(
        "policy {}: applying {digest} ({} reservations, {} trusted writers)",
        policy
            .source
            .as_deref()
            .map_or_else(|| "(default)".into(), |p| p.display().to_string()),
        policy.reserve.len(),
        policy.trusted_writers.len()
    );
    let writers = WriterWatch::new(host_root, &policy.trusted_writers)
        .map_err(|e| {
            warn!("trusted writers: cannot watch their paths ({e}); they are resolved once, now")
        })
        .ok()
        .flatten();
    let policy = host_path::for_host(host_root, policy);
    enforcer.set_trusted_writers(&policy.trusted_writers);
    let mut lines = vec![applied(policy.source.as_deref(), &digest)];
    // Pins on devices the new policy no longer protects are forgotten by the enforcer's next
    // pass (it keeps only what its plan protects), not cleared.
    lines.extend(node.set_policy(policy));
    (lines, Some(writers))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        node::ProbeConvention,
        policy::{watch, Policy},
    };
    use iommu_enforcer_schema::Kind;

    #[test]
    fn a_rejection_carries_line_and_column_as_fields() {
        let err = crate::policy::Policy::parse("x = [\n", Path::new("/etc/p/policy.toml"))
            .expect_err("invalid");
        let Line::Event(e) = rejected(&err) else {
            panic!("an event")
        };
        assert_eq!(e.kind, Kind::PolicyRejected);
        assert_eq!(e.result, Outcome::Error);
        assert_eq!(e.path.as_deref(), Some("/etc/p/policy.toml"));
        let PolicyError::Invalid { line, column, .. } = &err else {
            panic!("a parse error")
        };
        assert_eq!(
            (e.line, e.column),
            (Some(*line as u32), Some(*column as u32))
        );
        assert!(e
            .error
            .as_deref()
            .is_some_and(|m| m.starts_with(&format!("/etc/p/policy.toml:{line}:{column}: "))));
        let json = serde_json::to_value(Line::Event(e)).unwrap();
        assert_eq!(json["kind"], "policy_rejected");
        assert!(json["line"].is_u64() && json["column"].is_u64());
        assert!(json.get("digest").is_none());
    }

    /// The consumer GPU fixture (its NVMe drive, group 11, alone on nvme) under the default
    /// policy, its first pass done.
    fn node() -> (tempfile::TempDir, iommu_fixtures::Node, NodeState, Enforcer) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = iommu_fixtures::fixture("consumer-gpu-audio-split").expect("fixture");
        let built = iommu_fixtures::build(spec, dir.path()).expect("builds");
        let map = crate::sysfs::scan(&built.sysfs).expect("scans").to_map();
        let policy = Policy::default();
        let mut node = NodeState::new(map, policy.clone(), ProbeConvention::ZeroIsBound);
        let mut enforcer = Enforcer::new(&built.sysfs, dir.path(), false, None, &policy);
        enforcer.apply(&mut node, &|_| None);
        (dir, built, node, enforcer)
    }

    const NVME: &str = "0000:01:00.0";
    const RESERVE_NVME: &str = "[[reserve]]\ndevice = \"0000:01:00.0\"\ndriver = \"nvme\"\n";

    fn change(text: &str) -> Change {
        let path = Path::new("/etc/iommu-enforcer/policy.toml");
        Change::Apply {
            policy: Policy::parse(text, path).expect("valid"),
            digest: watch::digest(text.as_bytes()),
        }
    }

    fn pins(lines: &[Line]) -> Vec<(String, String)> {
        lines
            .iter()
            .filter_map(Line::as_event)
            .filter(|e| e.kind == Kind::Pin)
            .filter_map(|e| Some((e.device.clone()?, e.driver.clone()?)))
            .collect()
    }

    #[test]
    fn a_valid_change_is_said_with_its_digest_and_moves_the_reservations() {
        let (dir, built, mut node, mut enforcer) = node();
        assert!(!enforcer.reserved().contains(&11));
        let (lines, writers) =
            put_in_force(&mut node, &mut enforcer, dir.path(), change(RESERVE_NVME));
        assert!(writers.is_some());
        let first = lines[0].as_event().expect("an event");
        assert_eq!(first.kind, Kind::PolicyApplied);
        assert_eq!(
            first.digest.as_deref(),
            Some(watch::digest(RESERVE_NVME.as_bytes()).as_str())
        );
        assert_eq!(
            first.path.as_deref(),
            Some("/etc/iommu-enforcer/policy.toml")
        );
        let pass = enforcer.apply(&mut node, &|_| None);
        assert_eq!(pins(&pass), [(NVME.to_string(), "nvme".to_string())]);
        assert!(enforcer.reserved().contains(&11), "reserved at once");

        // Dropped: no longer reserved, and its pin is no longer kept (nor cleared).
        let (lines, _) = put_in_force(&mut node, &mut enforcer, dir.path(), change(""));
        assert_eq!(
            lines[0].as_event().map(|e| e.kind),
            Some(Kind::PolicyApplied)
        );
        let pass = enforcer.apply(&mut node, &|_| None);
        assert!(pins(&pass).is_empty(), "{pass:?}");
        assert!(!enforcer.reserved().contains(&11));
        let file = built
            .sysfs
            .join("bus/pci/devices")
            .join(NVME)
            .join("driver_override");
        // (A fixture file is not truncated by a write: the pin reads at its start.)
        assert!(
            std::fs::read_to_string(&file)
                .expect("read")
                .starts_with("nvme"),
            "left as it is"
        );
        std::fs::write(&file, "(null)\n").expect("cleared by the operator");
        assert!(
            !enforcer.pins_drifted(),
            "a pin it no longer keeps is not watched"
        );
        assert!(
            pins(&enforcer.apply(&mut node, &|_| None)).is_empty(),
            "nor restored"
        );
    }

    #[test]
    fn an_invalid_file_is_rejected_with_line_and_column_and_the_old_policy_stays() {
        let (dir, built, mut node, mut enforcer) = node();
        put_in_force(&mut node, &mut enforcer, dir.path(), change(RESERVE_NVME));
        enforcer.apply(&mut node, &|_| None);
        let before = node.policy().clone();

        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("policy.toml");
        std::fs::write(&path, RESERVE_NVME).expect("write");
        let mut w =
            watch::PolicyWatch::new(&path, &watch::digest(RESERVE_NVME.as_bytes())).expect("watch");
        std::fs::write(&path, "[[reserve]]\ndevice = \"0000:01:00\"\n").expect("write");
        let change = w.changed().expect("a change");
        let (lines, writers) = put_in_force(&mut node, &mut enforcer, dir.path(), change);
        assert!(writers.is_none());
        assert_eq!(lines.len(), 1);
        let e = lines[0].as_event().expect("an event");
        assert_eq!(e.kind, Kind::PolicyRejected);
        assert_eq!((e.line, e.column), (Some(2), Some(10)));
        assert_eq!(e.path.as_deref(), Some(path.to_str().unwrap()));
        assert_eq!(node.policy(), &before, "the old policy stays");
        enforcer.apply(&mut node, &|_| None);
        assert!(enforcer.reserved().contains(&11));
        // Its pin is still kept: a cleared one is seen.
        let file = built
            .sysfs
            .join("bus/pci/devices")
            .join(NVME)
            .join("driver_override");
        std::fs::write(&file, "(null)\n").expect("cleared behind its back");
        assert!(enforcer.pins_drifted());
    }

    #[test]
    fn applied_names_the_file_and_digest() {
        let p = PathBuf::from("/etc/p/policy.toml");
        let json = serde_json::to_value(applied(Some(&p), "ab12")).unwrap();
        assert_eq!(json["type"], "event");
        assert_eq!(json["kind"], "policy_applied");
        assert_eq!(json["digest"], "ab12");
        assert_eq!(json["path"], "/etc/p/policy.toml");
        assert_eq!(json["result"], "ok");
        assert!(json.get("line").is_none());
    }
}
