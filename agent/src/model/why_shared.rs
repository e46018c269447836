//! Why a group has more than one member, as far as sysfs shows it.
//!
//! The kernel (`pci_device_group`) walks up from a device and joins the group of every upstream
//! bridge whose ACS path to the root is not enabled (`pci_acs_path_enabled` with REQ_ACS_FLAGS);
//! root and downstream ports need ACS, upstream ports only when multifunction, and conventional
//! or PCIe-to-PCI bridges never isolate. Functions of one slot share a group when the function
//! lacks ACS (`get_pci_function_alias_group`). DMA aliases and per-device quirks are not visible
//! in sysfs; groups shared only for those reasons get no line.
use super::{Acs, Device, GroupMap, PortType};

impl GroupMap {
    /// The why-shared line of `group`, e.g. `behind 0000:02:00.0 (downstream port) without ACS`
    /// or `functions of one multifunction device without ACS (0000:01:00)`; several causes are
    /// joined by `; `. `None` for single-member groups and when sysfs does not show a cause.
    pub fn why_shared(&self, group: u32) -> Option<String> {
        let g = self.group(group)?;
        if g.len() < 2 {
            return None;
        }
        let mut lines: Vec<String> = Vec::new();
        let mut push = |line: String| {
            if !lines.contains(&line) {
                lines.push(line);
            }
        };

        // Upstream bridges in this group that do not isolate what is below them: for each
        // member, the root-most such bridge on its path, as the kernel's walk ends there.
        for d in g.devices.values() {
            let culprit = d
                .parents
                .iter()
                .filter_map(|p| g.devices.get(p))
                .find(|p| !bridge_isolates(p));
            if let Some(p) = culprit {
                push(bridge_line(p));
            }
        }

        // Functions of one slot together in this group.
        let mut slots: Vec<&str> = g.devices.values().map(Device::slot).collect();
        slots.dedup();
        for slot in slots {
            let functions: Vec<&Device> = g.devices.values().filter(|d| d.slot() == slot).collect();
            if functions.len() < 2 {
                continue;
            }
            if functions
                .iter()
                .any(|f| matches!(f.acs, Acs::None | Acs::Disabled))
            {
                push(format!(
                    "functions of one multifunction device without ACS ({slot})"
                ));
            } else if functions.iter().any(|f| f.acs == Acs::Unknown) {
                push(format!(
                    "functions of one multifunction device ({slot}), ACS unknown (config not readable)"
                ));
            }
        }

        (!lines.is_empty()).then(|| lines.join("; "))
    }
}

/// Whether the kernel would stop its upstream walk at this bridge (ACS path enabled here).
fn bridge_isolates(bridge: &Device) -> bool {
    match bridge.port_type {
        Some(PortType::UpstreamPort) if !bridge.multifunction => true,
        Some(PortType::PcieToPciBridge | PortType::PciToPcieBridge) => false,
        _ => bridge.acs.isolates(),
    }
}

fn bridge_line(bridge: &Device) -> String {
    let kind = bridge.port_type.map_or("bridge", PortType::describe);
    let acs = match (bridge.port_type, bridge.acs) {
        (Some(PortType::PcieToPciBridge | PortType::PciToPcieBridge), _) => {
            ", which cannot isolate the devices behind it"
        }
        (_, Acs::Disabled) => " with ACS disabled",
        (_, Acs::Unknown) => ", ACS unknown (config not readable)",
        _ => " without ACS",
    };
    format!("behind {} ({kind}){acs}", bridge.address)
}
