//! Reservations of the policy in force that select nothing on this node: a warning, not an
//! alert on a group (one policy may serve a pool of nodes, and a typo or an absent card looks
//! the same). Each is said once as a `reservation_unmatched` event while it stays unmatched,
//! and counted in `iommu_enforcer_unmatched_reservations`. Pure: fed the group map and policy.
use std::collections::BTreeSet;

use iommu_enforcer_schema::{Body, Event, Line, Outcome};

use crate::model::GroupMap;
use crate::policy::{self, Policy};

/// The unmatched reservations already said, by (policy line, selector).
#[derive(Debug, Default)]
pub struct Unmatched {
    said: BTreeSet<(usize, String)>,
}

impl Unmatched {
    /// The events for reservations newly unmatched, and how many are unmatched now.
    pub fn update(&mut self, map: &GroupMap, policy: &Policy) -> (Vec<Line>, usize) {
        let now: BTreeSet<(usize, String)> = policy::unmatched(map, policy)
            .into_iter()
            .map(|r| (r.line, r.selector.to_string()))
            .collect();
        let path = policy.source.as_ref().map(|p| p.display().to_string());
        let lines = now
            .difference(&self.said)
            .map(|(line, selector)| {
                let body = Body::ReservationUnmatched {
                    path: path.clone(),
                    line: u32::try_from(*line).ok(),
                    error: format!(
                        "reservation of {selector} (policy line {line}) matches nothing on this node"
                    ),
                };
                let mut e = Event::of(body, Outcome::Ok);
                let pid = std::process::id();
                (e.pid, e.tgid, e.comm) = (pid, pid, "enforcer".into());
                Line::Event(Box::new(e))
            })
            .collect();
        let n = now.len();
        self.said = now;
        (lines, n)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::Device;
    use iommu_enforcer_schema::Kind;

    #[test]
    fn said_once_while_unmatched_and_again_after_it_matched() {
        let policy = Policy::parse(
            "[[reserve]]\ngroup = 14\n\n[[reserve]]\ndevice = \"0000:01:00.0\"\n",
            Path::new("p.toml"),
        )
        .expect("policy");
        let mut map = GroupMap::new();
        map.add_device(Device::new("0000:01:00.0", 3));
        let mut u = Unmatched::default();
        let (lines, n) = u.update(&map, &policy);
        assert_eq!(n, 1);
        let [Line::Event(e)] = lines.as_slice() else {
            panic!("one event: {lines:?}")
        };
        assert_eq!(e.kind, Kind::ReservationUnmatched);
        assert_eq!((e.path.as_deref(), e.line), (Some("p.toml"), Some(1)));
        assert!(e.error.as_deref().is_some_and(|m| m.contains("group 14")));
        assert_eq!(u.update(&map, &policy), (Vec::new(), 1), "said once");
        map.add_device(Device::new("0000:02:00.0", 14));
        assert_eq!(u.update(&map, &policy), (Vec::new(), 0));
        map.remove_device("0000:02:00.0");
        assert_eq!(u.update(&map, &policy).0.len(), 1, "unmatched again");
    }
}
