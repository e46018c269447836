//! The `[[reserve]]` entries with an index by what they select, so that finding the
//! reservations of a device costs a few hash lookups, not a pass over every entry: with the
//! 16,000 reservations of a ConfigMap-sized policy and 100,000 devices, a pass per device is
//! 1.6 billion selector checks.
use std::collections::HashMap;
use std::ops::Deref;

use super::{Reserve, Selector};
use crate::model::Device;

/// The reservations of a policy, in file order, read-only once made.
#[derive(Clone, Debug, Default)]
pub struct Reservations {
    list: Vec<Reserve>,
    /// Boxed: a `Policy` moves by value (watch::Change), the maps need not.
    index: Box<Index>,
}

/// Positions in `list` by selected key, each list in increasing order.
#[derive(Clone, Debug, Default)]
struct Index {
    group: HashMap<u32, Vec<usize>>,
    device: HashMap<String, Vec<usize>>,
    id: HashMap<(u16, u16), Vec<usize>>,
    /// By (digits, value) of the class prefix: 2, 4 or 6 digits.
    class: HashMap<(u8, u32), Vec<usize>>,
    /// The digit counts present in `class`, so a device looks only those up.
    class_digits: Vec<u8>,
    slot: HashMap<String, Vec<usize>>,
}

impl Reservations {
    pub fn new(list: Vec<Reserve>) -> Reservations {
        let mut index = Index::default();
        for (i, r) in list.iter().enumerate() {
            match &r.selector {
                Selector::Group(g) => index.group.entry(*g).or_default().push(i),
                Selector::Device(a) => index
                    .device
                    .entry(a.as_str().to_string())
                    .or_default()
                    .push(i),
                Selector::Id(id) => index.id.entry((id.vendor, id.device)).or_default().push(i),
                Selector::Class(p) => {
                    let key = (p.digits(), p.value());
                    if !index.class_digits.contains(&key.0) {
                        index.class_digits.push(key.0);
                    }
                    index.class.entry(key).or_default().push(i);
                }
                Selector::Slot(name) => index.slot.entry(name.clone()).or_default().push(i),
            }
        }
        Reservations {
            list,
            index: Box::new(index),
        }
    }

    /// Positions of every reservation that selects `device` itself, unordered (each once).
    pub fn positions_of<'a>(&'a self, device: &'a Device) -> impl Iterator<Item = usize> + 'a {
        let ix = &self.index;
        let group = ix.group.get(&device.group);
        let address = ix.device.get(device.address.as_str());
        let id = match (device.vendor, device.device) {
            (Some(v), Some(d)) => ix.id.get(&(v, d)),
            _ => None,
        };
        let class = ix.class_digits.iter().filter_map(move |&digits| {
            let c = device.class? & 0x00ff_ffff;
            ix.class.get(&(digits, c >> (4 * (6 - u32::from(digits)))))
        });
        let slot = device.physical_slot.as_deref().and_then(|s| ix.slot.get(s));
        [group, address, id, slot]
            .into_iter()
            .flatten()
            .chain(class)
            .flatten()
            .copied()
    }

    /// The first reservation (in file order) that selects `device` itself.
    pub fn first_of(&self, device: &Device) -> Option<&Reserve> {
        self.positions_of(device).min().map(|i| &self.list[i])
    }
}

impl Deref for Reservations {
    type Target = [Reserve];

    fn deref(&self) -> &[Reserve] {
        &self.list
    }
}

impl From<Vec<Reserve>> for Reservations {
    fn from(list: Vec<Reserve>) -> Reservations {
        Reservations::new(list)
    }
}

impl PartialEq for Reservations {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl Eq for Reservations {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ClassPrefix, Intended, PciAddress, PciId};

    fn reserve(selector: Selector) -> Reserve {
        Reserve {
            selector,
            driver: Intended::Unbound,
            rebind: false,
            line: 1,
            nodes: Vec::new(),
        }
    }

    #[test]
    fn the_index_finds_what_a_pass_over_every_entry_finds() {
        let list: Vec<Reserve> = [
            Selector::Class(ClassPrefix::parse("0x03").expect("class")),
            Selector::Id(PciId::parse("10de:2204").expect("id")),
            Selector::Group(12),
            Selector::Device(PciAddress::parse("0000:01:00.1").expect("address")),
            Selector::Class(ClassPrefix::parse("040300").expect("class")),
            Selector::Class(ClassPrefix::parse("0x0403").expect("class")),
            Selector::Slot("3".to_string()),
        ]
        .into_iter()
        .map(reserve)
        .collect();
        let r = Reservations::new(list.clone());
        let mut devices = Vec::new();
        for (address, group, vendor, device, class) in [
            (
                "0000:01:00.0",
                12,
                Some(0x10de),
                Some(0x2204),
                Some(0x030000),
            ),
            (
                "0000:01:00.1",
                12,
                Some(0x10de),
                Some(0x1aef),
                Some(0x040300),
            ),
            ("0000:02:00.0", 13, Some(0x10de), Some(0x2204), None),
            ("0000:03:00.0", 14, None, None, Some(0x040100)),
            (
                "0000:04:00.0",
                15,
                Some(0x8086),
                Some(0x1),
                Some(0x1_040300),
            ),
        ] {
            let mut d = Device::new(address, group);
            (d.vendor, d.device, d.class) = (vendor, device, class);
            d.physical_slot = (group == 13).then(|| "3".to_string());
            devices.push(d);
        }
        for d in &devices {
            let mut want: Vec<usize> = (0..list.len())
                .filter(|&i| list[i].selector.matches(d))
                .collect();
            let mut got: Vec<usize> = r.positions_of(d).collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "{}", d.address);
            assert_eq!(
                r.first_of(d),
                list.iter().find(|x| x.selector.matches(d)),
                "{}",
                d.address
            );
        }
    }
}
