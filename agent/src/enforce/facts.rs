//! Facts read from sysfs and /dev that can fail for reasons of the agent's own (EMFILE under a
//! connection flood, ENOMEM, a stalled read): such a read is *unknown*, not *empty*. Only a
//! read that succeeded, or that said the thing does not exist (ENOENT, ENOTDIR), may remove
//! something from the kernel maps; an unknown fact keeps the value last known. Pure: the
//! readers ([`super::sysfs_files`]) return what they saw, [`carry`] merges it with the past.
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
};

use super::kernel_state::NodeFacts;
use crate::pci::DriverName;

/// What a read was for: the `what` label of `read_failures_total` (a fixed, small set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fact {
    /// `bus/pci/slots` and each slot's `address`.
    Slots,
    /// `bus/pci/drivers`.
    Drivers,
    /// `/dev/vfio/<group>` nodes.
    VfioNodes,
    /// A device's `vfio-dev/vfioX` and `/dev/vfio/devices/vfioX`.
    VfioCdevs,
    /// `/proc/devices` (the VFIO major).
    ProcDevices,
    /// A device's `driver_override` or `driver` link.
    DeviceDriver,
    /// The sysfs scan of the group map.
    SysfsScan,
    /// A pin or rebind write.
    PinWrite,
}

impl Fact {
    pub const ALL: [Fact; 8] = [
        Fact::Slots,
        Fact::Drivers,
        Fact::VfioNodes,
        Fact::VfioCdevs,
        Fact::ProcDevices,
        Fact::DeviceDriver,
        Fact::SysfsScan,
        Fact::PinWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fact::Slots => "slots",
            Fact::Drivers => "drivers",
            Fact::VfioNodes => "vfio_nodes",
            Fact::VfioCdevs => "vfio_cdevs",
            Fact::ProcDevices => "proc_devices",
            Fact::DeviceDriver => "device_driver",
            Fact::SysfsScan => "sysfs_scan",
            Fact::PinWrite => "pin_write",
        }
    }
}

/// A read that failed for a reason other than "does not exist": its value was kept.
#[derive(Debug)]
pub struct Unknown {
    pub what: Fact,
    pub error: io::Error,
}

/// A directory of entries as read: `Err` when the listing itself failed, else each entry's
/// value, `Err` for an entry whose own read failed. An entry not listed is gone.
pub type Listing<K, V> = io::Result<BTreeMap<K, io::Result<V>>>;

/// The facts as one pass read them.
#[derive(Debug)]
pub struct FactsRead {
    pub slots: Listing<String, String>,
    pub drivers: io::Result<BTreeSet<DriverName>>,
    pub group_nodes: Listing<u32, u32>,
}

/// Merges one listing with the values last known: an entry whose read failed keeps its last
/// value (or stays absent if it had none); a failed listing keeps them all.
pub fn carry_listing<K: Ord + Clone, V: Clone>(
    previous: &BTreeMap<K, V>,
    read: Listing<K, V>,
    what: Fact,
    unknown: &mut Vec<Unknown>,
) -> BTreeMap<K, V> {
    match read {
        Err(error) => {
            unknown.push(Unknown { what, error });
            previous.clone()
        }
        Ok(entries) => {
            let mut out = BTreeMap::new();
            for (k, v) in entries {
                match v {
                    Ok(v) => {
                        out.insert(k, v);
                    }
                    Err(error) => {
                        if let Some(v) = previous.get(&k) {
                            out.insert(k, v.clone());
                        }
                        unknown.push(Unknown { what, error });
                    }
                }
            }
            out
        }
    }
}

/// The facts to load: what this pass read where it could, what was last known elsewhere.
pub fn carry(previous: &NodeFacts, read: FactsRead, unknown: &mut Vec<Unknown>) -> NodeFacts {
    NodeFacts {
        slots: carry_listing(&previous.slots, read.slots, Fact::Slots, unknown),
        drivers: match read.drivers {
            Ok(d) => d,
            Err(error) => {
                unknown.push(Unknown {
                    what: Fact::Drivers,
                    error,
                });
                previous.drivers.clone()
            }
        },
        group_nodes: carry_listing(
            &previous.group_nodes,
            read.group_nodes,
            Fact::VfioNodes,
            unknown,
        ),
    }
}

/// Where a failed read leaves something unknown, the `io::Result` a reader returns: absence
/// (ENOENT, ENOTDIR) is `Ok(None)`, any other failure is kept as the error.
pub fn absent_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if crate::errno::is_absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(libc::EMFILE)
    }

    fn known() -> NodeFacts {
        NodeFacts {
            slots: BTreeMap::from([
                ("3".into(), "0000:0a:00".into()),
                ("4".into(), "0000:0b:00".into()),
            ]),
            drivers: BTreeSet::from([crate::pci::driver("vfio-pci")]),
            group_nodes: BTreeMap::from([(12, (245 << 20) | 1)]),
        }
    }

    #[test]
    fn a_failed_listing_keeps_everything_and_is_reported() {
        let mut unknown = Vec::new();
        let read = FactsRead {
            slots: Err(emfile()),
            drivers: Err(emfile()),
            group_nodes: Err(emfile()),
        };
        let facts = carry(&known(), read, &mut unknown);
        assert_eq!(facts.slots, known().slots);
        assert_eq!(facts.drivers, known().drivers);
        assert_eq!(facts.group_nodes, known().group_nodes);
        let what: Vec<Fact> = unknown.iter().map(|u| u.what).collect();
        assert_eq!(what, [Fact::Slots, Fact::Drivers, Fact::VfioNodes]);
        assert!(unknown
            .iter()
            .all(|u| u.error.raw_os_error() == Some(libc::EMFILE)));
    }

    #[test]
    fn a_failed_entry_keeps_its_value_and_a_listed_absence_removes() {
        let mut unknown = Vec::new();
        let read = FactsRead {
            // Slot 3's address failed; slot 4 is no longer listed: it is gone.
            slots: Ok(BTreeMap::from([("3".into(), Err(emfile()))])),
            drivers: Ok(BTreeSet::new()),
            // The node's stat failed.
            group_nodes: Ok(BTreeMap::from([(12, Err(emfile())), (13, Ok(7))])),
        };
        let facts = carry(&known(), read, &mut unknown);
        assert_eq!(
            facts.slots,
            BTreeMap::from([("3".to_string(), "0000:0a:00".to_string())])
        );
        assert!(facts.drivers.is_empty(), "a successful empty read is empty");
        assert_eq!(
            facts.group_nodes,
            BTreeMap::from([(12, (245 << 20) | 1), (13, 7)])
        );
        assert_eq!(unknown.len(), 2);
    }

    #[test]
    fn an_unknown_entry_never_seen_stays_absent() {
        let mut unknown = Vec::new();
        let read: Listing<u32, u32> = Ok(BTreeMap::from([(99, Err(emfile()))]));
        let out = carry_listing(&BTreeMap::new(), read, Fact::VfioNodes, &mut unknown);
        assert!(out.is_empty());
        assert_eq!(unknown.len(), 1);
    }

    #[test]
    fn every_fact_is_a_label_the_metrics_export_from_the_start() {
        let names: Vec<&str> = Fact::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names, crate::metrics::READ_FAILURES);
    }

    #[test]
    fn absence_is_known() {
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        assert!(matches!(absent_is_none::<()>(Err(enoent)), Ok(None)));
        assert!(absent_is_none::<()>(Err(emfile())).is_err());
        assert!(matches!(absent_is_none(Ok(1)), Ok(Some(1))));
    }
}
