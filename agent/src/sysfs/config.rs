//! Decoding a device's PCI configuration space (the `config` file). Pure: takes the bytes the
//! file returned, which are 64 bytes (256 for some devices) when read without root, 256 for
//! conventional PCI and 4096 for PCIe devices read as root.
use crate::model::{Acs, PortType};

/// PCI_HEADER_TYPE.
const HEADER_TYPE: usize = 0x0e;
const HEADER_TYPE_MULTIFUNCTION: u8 = 0x80;
const HEADER_TYPE_BRIDGE: u8 = 0x01;
const HEADER_TYPE_CARDBUS: u8 = 0x02;
/// PCI_STATUS and its "capability list" bit.
const STATUS: usize = 0x06;
const STATUS_CAP_LIST: u16 = 0x10;
const CAPABILITY_LIST: usize = 0x34;
const CB_CAPABILITY_LIST: usize = 0x14;
/// PCI_CAP_ID_EXP.
const CAP_ID_EXP: u8 = 0x10;
/// First extended capability.
const EXT_CAP_START: usize = 0x100;
/// PCI_EXT_CAP_ID_ACS and the ACS control register offset.
const EXT_CAP_ID_ACS: u16 = 0x000d;
const ACS_CTRL: usize = 0x06;
/// The kernel's REQ_ACS_FLAGS: Source Validation, P2P Request Redirect, P2P Completion
/// Redirect, Upstream Forwarding.
pub const REQ_ACS_FLAGS: u16 = 0x0001 | 0x0004 | 0x0008 | 0x0010;

fn u8_at(config: &[u8], at: usize) -> Option<u8> {
    config.get(at).copied()
}

fn u16_at(config: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*config.get(at)?, *config.get(at + 1)?]))
}

fn u32_at(config: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *config.get(at)?,
        *config.get(at + 1)?,
        *config.get(at + 2)?,
        *config.get(at + 3)?,
    ]))
}

/// The header type register, `None` when `config` is too short.
pub fn header_type(config: &[u8]) -> Option<u8> {
    u8_at(config, HEADER_TYPE)
}

/// The multifunction bit, `None` when `config` is too short.
pub fn multifunction(config: &[u8]) -> Option<bool> {
    header_type(config).map(|h| h & HEADER_TYPE_MULTIFUNCTION != 0)
}

/// Whether the header is a PCI-to-PCI bridge header (type 1).
pub fn bridge_header(config: &[u8]) -> Option<bool> {
    header_type(config).map(|h| h & 0x7f == HEADER_TYPE_BRIDGE)
}

/// The device/port type from the PCI Express capability, `None` when the capability is absent
/// or beyond the bytes read.
pub fn port_type(config: &[u8]) -> Option<PortType> {
    let status = u16_at(config, STATUS)?;
    if status & STATUS_CAP_LIST == 0 {
        return None;
    }
    let list = if header_type(config)? & 0x7f == HEADER_TYPE_CARDBUS {
        CB_CAPABILITY_LIST
    } else {
        CAPABILITY_LIST
    };
    let mut at = usize::from(u8_at(config, list)? & 0xfc);
    // 48 capabilities fit in the 192 bytes after the header; more means a loop.
    for _ in 0..48 {
        if at < 0x40 {
            return None;
        }
        let id = u8_at(config, at)?;
        if id == CAP_ID_EXP {
            let flags = u16_at(config, at + 2)?;
            return Some(PortType::from_type(((flags >> 4) & 0xf) as u8));
        }
        at = usize::from(u8_at(config, at + 1)? & 0xfc);
    }
    None
}

/// ACS state from the extended capabilities:
/// - `Unknown` when the extended space was not read: `config` shorter than 256 bytes (64, or
///   128 for CardBus, is what a reader without CAP_SYS_ADMIN gets), or 256 bytes of a PCI
///   Express device;
/// - `None` without an ACS capability, and for conventional PCI devices (256 bytes, no PCI
///   Express capability: they have no extended space, so no ACS);
/// - `Enabled` when the control register has all of [`REQ_ACS_FLAGS`], else `Disabled`.
pub fn acs(config: &[u8]) -> Acs {
    if config.len() < EXT_CAP_START {
        return Acs::Unknown;
    }
    if config.len() == EXT_CAP_START {
        return if port_type(config).is_some() {
            Acs::Unknown
        } else {
            Acs::None
        };
    }
    let mut at = EXT_CAP_START;
    // (4096 - 256) / 4 headers at most; more means a loop.
    for _ in 0..960 {
        let Some(header) = u32_at(config, at) else {
            return Acs::Unknown;
        };
        if header == 0 || header == 0xffff_ffff {
            return Acs::None;
        }
        if (header & 0xffff) as u16 == EXT_CAP_ID_ACS {
            return match u16_at(config, at + ACS_CTRL) {
                Some(ctrl) if ctrl & REQ_ACS_FLAGS == REQ_ACS_FLAGS => Acs::Enabled,
                Some(_) => Acs::Disabled,
                None => Acs::Unknown,
            };
        }
        at = ((header >> 20) & 0xffc) as usize;
        if at < EXT_CAP_START {
            return Acs::None;
        }
    }
    Acs::None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 4096-byte config space: header type `header`, a PCIe capability of `port` type at
    /// 0x40 (when given), and an ACS capability after another extended capability (when given)
    /// with control register `acs_ctrl`.
    pub(crate) fn config(header: u8, port: Option<u8>, acs_ctrl: Option<u16>) -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        c[0..2].copy_from_slice(&0x8086u16.to_le_bytes());
        c[HEADER_TYPE] = header;
        if let Some(t) = port {
            c[STATUS] = 0x10;
            c[CAPABILITY_LIST] = 0x48;
            // a power-management capability first, then PCIe.
            c[0x48] = 0x01;
            c[0x49] = 0x60;
            c[0x60] = CAP_ID_EXP;
            c[0x61] = 0x00;
            c[0x62..0x64].copy_from_slice(&(u16::from(t) << 4 | 0x2).to_le_bytes());
        }
        // AER at 0x100 pointing to ACS at 0x148 (or to nothing).
        let next = if acs_ctrl.is_some() { 0x148u32 } else { 0 };
        c[0x100..0x104].copy_from_slice(&(0x0001 | 1 << 16 | next << 20).to_le_bytes());
        if let Some(ctrl) = acs_ctrl {
            c[0x148..0x14c].copy_from_slice(&(0x000du32 | 1 << 16).to_le_bytes());
            c[0x14c..0x14e].copy_from_slice(&0x005fu16.to_le_bytes());
            c[0x14e..0x150].copy_from_slice(&ctrl.to_le_bytes());
        }
        c
    }

    #[test]
    fn header_bits() {
        let c = config(0x81, None, None);
        assert_eq!(multifunction(&c), Some(true));
        assert_eq!(bridge_header(&c), Some(true));
        let c = config(0x00, None, None);
        assert_eq!(multifunction(&c), Some(false));
        assert_eq!(bridge_header(&c), Some(false));
        assert_eq!(multifunction(&[0u8; 8]), None);
    }

    #[test]
    fn pcie_port_types() {
        assert_eq!(
            port_type(&config(1, Some(4), None)),
            Some(PortType::RootPort)
        );
        assert_eq!(
            port_type(&config(1, Some(6), None)),
            Some(PortType::DownstreamPort)
        );
        assert_eq!(
            port_type(&config(0, Some(0), None)),
            Some(PortType::Endpoint)
        );
        assert_eq!(port_type(&config(0, None, None)), None);
        // non-root read: the capability list points past the 64 bytes returned.
        assert_eq!(port_type(&config(0, Some(0), None)[..64]), None);
    }

    #[test]
    fn acs_states() {
        assert_eq!(acs(&config(1, Some(4), Some(0x001d))), Acs::Enabled);
        assert_eq!(acs(&config(1, Some(4), Some(0x005f))), Acs::Enabled);
        assert_eq!(acs(&config(1, Some(4), Some(0x0011))), Acs::Disabled);
        assert_eq!(acs(&config(1, Some(4), Some(0))), Acs::Disabled);
        assert_eq!(acs(&config(1, Some(4), None)), Acs::None);
        assert_eq!(acs(&config(1, Some(4), Some(0x1d))[..64]), Acs::Unknown);
        assert_eq!(acs(&config(1, Some(4), Some(0x1d))[..128]), Acs::Unknown);
        // 256 bytes: a PCIe device read partially, or a conventional device (no ACS).
        assert_eq!(acs(&config(1, Some(4), Some(0x1d))[..256]), Acs::Unknown);
        assert_eq!(acs(&config(0, None, None)[..256]), Acs::None);
        assert_eq!(acs(&[]), Acs::Unknown);
        // no extended capabilities at all
        let mut c = vec![0u8; 4096];
        c[0] = 0x86;
        assert_eq!(acs(&c), Acs::None);
    }

    #[test]
    fn capability_loops_end() {
        let mut c = config(0, Some(0), None);
        c[0x48] = 0x01;
        c[0x49] = 0x48; // points at itself
        assert_eq!(port_type(&c), None);
        let mut c = vec![0u8; 4096];
        c[0x100..0x104].copy_from_slice(&(0x0001u32 | 0x100 << 20).to_le_bytes());
        assert_eq!(acs(&c), Acs::None);
    }
}
