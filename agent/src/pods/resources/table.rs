//! Which pod a device plugin allocated each PCI device to: the pod-resources `List` reply
//! joined to the agent's events by device address. Pure.
use std::collections::BTreeMap;

use iommu_enforcer_schema::Allocation;

use super::proto::PodResources;

/// A device id as a PCI address in the kernel's spelling (`0000:01:00.0`): the full
/// `DDDD:BB:DD.F` (a domain of 4 to 8 hex digits) or the short `BB:DD.F` (domain 0000), any
/// case. `None` for the ids of plugins that do not name devices by address (GPU UUIDs, ...).
pub fn pci_address(id: &str) -> Option<String> {
    let hex = |s: &str, min: usize, max: usize| {
        (s.len() >= min && s.len() <= max && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
    };
    let (head, function) = id.rsplit_once('.')?;
    let parts: Vec<&str> = head.split(':').collect();
    let (domain, bus, device) = match parts.as_slice() {
        [bus, device] => (0, *bus, *device),
        [domain, bus, device] => (hex(domain, 4, 8)?, *bus, *device),
        _ => return None,
    };
    let bus = hex(bus, 2, 2)?;
    let device = hex(device, 2, 2)?;
    let function = hex(function, 1, 1)?;
    (device <= 0x1f && function <= 7)
        .then(|| format!("{domain:04x}:{bus:02x}:{device:02x}.{function}"))
}

/// PCI address -> allocation, and how many device ids were not addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub devices: BTreeMap<String, Allocation>,
    /// Ids of the last reply that are no PCI address: not joined to anything.
    pub ignored_ids: usize,
}

impl Table {
    pub fn from_pods(pods: &[PodResources]) -> Self {
        let mut table = Table::default();
        for pod in pods {
            for container in &pod.containers {
                for entry in &container.devices {
                    for id in &entry.device_ids {
                        let Some(address) = pci_address(id) else {
                            table.ignored_ids += 1;
                            continue;
                        };
                        table.devices.insert(
                            address,
                            Allocation {
                                namespace: pod.namespace.clone(),
                                pod: pod.name.clone(),
                                container: container.name.clone(),
                                resource: entry.resource_name.clone(),
                            },
                        );
                    }
                }
            }
        }
        table
    }

    pub fn get(&self, address: &str) -> Option<&Allocation> {
        self.devices.get(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::resources::proto::{ContainerDevices, ContainerResources};

    #[test]
    fn device_ids_that_are_pci_addresses_are_spelled_as_the_kernel_does() {
        for (id, want) in [
            ("0000:01:00.0", Some("0000:01:00.0")),
            ("0000:3B:00.1", Some("0000:3b:00.1")),
            ("3b:00.1", Some("0000:3b:00.1")),
            ("10000:e1:1f.7", Some("10000:e1:1f.7")),
            ("0001:c0:00.0", Some("0001:c0:00.0")),
            ("GPU-8d2f7c1e-3b4a-4c5d-9e6f-0a1b2c3d4e5f", None),
            ("nvidia0", None),
            ("0000:01:20.0", None),
            ("0000:01:00.8", None),
            ("000:01:00.0", None),
            ("0000:1:00.0", None),
            ("0000:01:00.0 ", None),
            ("0000:01:00", None),
            ("+000:01:00.0", None),
            ("", None),
        ] {
            assert_eq!(pci_address(id).as_deref(), want, "{id:?}");
        }
    }

    #[test]
    fn each_address_names_its_pod_container_and_resource() {
        let pods = vec![PodResources {
            name: "virt-launcher-vm-a".into(),
            namespace: "vms".into(),
            containers: vec![ContainerResources {
                name: "compute".into(),
                devices: vec![ContainerDevices {
                    resource_name: "nvidia.com/GH100_H100".into(),
                    device_ids: vec!["0000:01:00.0".into(), "GPU-1234".into(), "02:00.0".into()],
                }],
            }],
        }];
        let table = Table::from_pods(&pods);
        assert_eq!(table.ignored_ids, 1);
        assert_eq!(table.devices.len(), 2);
        let a = table.get("0000:02:00.0").unwrap();
        assert_eq!(
            (&*a.namespace, &*a.pod, &*a.container, &*a.resource),
            (
                "vms",
                "virt-launcher-vm-a",
                "compute",
                "nvidia.com/GH100_H100"
            )
        );
    }
}
