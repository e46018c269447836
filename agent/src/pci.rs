//! The PCI values a policy names, checked once where they are read: a device address, a
//! vendor:device id, a class-code prefix and a driver name. A value of these types is valid by
//! construction, so sysfs, the model, the plan and the kernel map keys take them as they come.
//! Pure, and below every other module: sysfs, model and policy all use it.
use std::fmt;

use iommu_enforcer_common::{ADDR_LEN, DRIVER_KEY_LEN};
use serde::{Serialize, Serializer};

/// A PCI address as the kernel spells it, `0000:01:00.1` (DDDD:BB:DD.F, lowercase, device at
/// most 0x1f, function at most 7). Its 12 ASCII bytes inline: a policy may name 200,000.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress([u8; 12]);

impl PciAddress {
    /// `s` when it is such an address (in any case), lowercased.
    pub fn parse(s: &str) -> Option<PciAddress> {
        let b = s.as_bytes();
        if b.len() != 12 || b[4] != b':' || b[7] != b':' || b[10] != b'.' {
            return None;
        }
        // Digit by digit: a policy may hold 200,000 addresses.
        let digit = |i: usize| char::from(b[i]).to_digit(16);
        for i in [0, 1, 2, 3, 5, 6] {
            digit(i)?;
        }
        let dev = digit(8)? * 16 + digit(9)?;
        let func = digit(11)?;
        if dev > 0x1f || func > 7 {
            return None;
        }
        let mut address = [0; 12];
        address.copy_from_slice(b);
        address.make_ascii_lowercase();
        Some(PciAddress(address))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII by construction")
    }

    /// The address as the LSM hooks compare it (NUL padded; always fits: 12 of 16 bytes).
    pub fn key(&self) -> [u8; ADDR_LEN] {
        padded(self.as_str())
    }
}

/// As it read when the address was a `String`: `PciAddress("0000:01:00.1")`.
impl fmt::Debug for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PciAddress").field(&self.as_str()).finish()
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A vendor and device ID, written `10de:2204` (four hex digits each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PciId {
    pub vendor: u16,
    pub device: u16,
}

impl PciId {
    pub fn parse(s: &str) -> Option<PciId> {
        let (v, d) = s.split_once(':')?;
        let part = |p: &str| {
            (p.len() == 4 && p.bytes().all(|c| c.is_ascii_hexdigit()))
                .then(|| u16::from_str_radix(p, 16).ok())?
        };
        Some(PciId {
            vendor: part(v)?,
            device: part(d)?,
        })
    }

    /// Whether a device with these IDs (as read from sysfs, `None` when unreadable) has this id.
    pub fn matches(self, vendor: Option<u16>, device: Option<u16>) -> bool {
        vendor == Some(self.vendor) && device == Some(self.device)
    }
}

impl fmt::Display for PciId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.device)
    }
}

/// A class-code prefix: the first `digits` hex digits of the 6-digit class code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClassPrefix {
    value: u32,
    /// 2, 4 or 6.
    digits: u8,
}

impl ClassPrefix {
    /// `0x0300`, `03`, `0x030000`: 2, 4 or 6 hex digits, `0x` optional.
    pub fn parse(s: &str) -> Option<ClassPrefix> {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if !matches!(digits.len(), 2 | 4 | 6) || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        Some(ClassPrefix {
            value: u32::from_str_radix(digits, 16).ok()?,
            digits: u8::try_from(digits.len()).ok()?,
        })
    }

    /// How many hex digits: 2, 4 or 6.
    pub fn digits(self) -> u8 {
        self.digits
    }

    /// The prefix's value (`0x0300` is 0x300 of 4 digits).
    pub fn value(self) -> u32 {
        self.value
    }

    /// Whether the 24-bit `class` code starts with this prefix.
    pub fn matches(self, class: u32) -> bool {
        let shift = 4 * (6 - u32::from(self.digits));
        (class & 0x00ff_ffff) >> shift == self.value
    }
}

impl fmt::Display for ClassPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "0x{:0width$x}",
            self.value,
            width = usize::from(self.digits)
        )
    }
}

/// A driver name as `driver_override` and the bind files take it: not empty, no `/`, no
/// whitespace or control characters (a write stops at whitespace; a path is not a name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DriverName(String);

impl DriverName {
    /// `s` as a driver name, or why it is not one (`is empty`, `is not a driver name`).
    pub fn parse(s: &str) -> Result<DriverName, &'static str> {
        if s.is_empty() {
            Err("is empty")
        } else if s
            .bytes()
            .any(|b| b == b'/' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            Err("is not a driver name")
        } else {
            Ok(DriverName(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as the LSM hooks compare it: its bytes, NUL padded, cut to the key's length as
    /// the programs cut the names they read.
    pub fn key(&self) -> [u8; DRIVER_KEY_LEN] {
        padded(&self.0)
    }
}

impl fmt::Display for DriverName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for DriverName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A name as the hooks compare it: its bytes, NUL padded (and cut to fit).
pub fn padded<const N: usize>(name: &str) -> [u8; N] {
    let mut k = [0u8; N];
    let n = name.len().min(N);
    k[..n].copy_from_slice(&name.as_bytes()[..n]);
    k
}

/// A driver name known to be valid, for tests.
#[cfg(test)]
pub fn driver(name: &str) -> DriverName {
    DriverName::parse(name).expect("a valid driver name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            PciAddress::parse("0000:01:00.1").map(|a| a.to_string()),
            Some("0000:01:00.1".to_string())
        );
        assert_eq!(
            PciAddress::parse("0000:AF:1f.7").map(|a| a.to_string()),
            Some("0000:af:1f.7".to_string())
        );
        for bad in [
            "01:00.0",
            "0000:01:00",
            "0000:01:20.0",
            "0000:01:00.8",
            "0000:0g:00.0",
            "0000-01:00.0",
            "0000:01:00.0 ",
            "+000:01:00.0",
            "",
        ] {
            assert_eq!(PciAddress::parse(bad), None, "{bad}");
        }
        assert_eq!(
            format!("{:?}", PciAddress::parse("0000:01:00.1").expect("valid")),
            "PciAddress(\"0000:01:00.1\")"
        );
        let key = PciAddress::parse("0000:01:00.1").expect("valid").key();
        assert_eq!(&key[..12], b"0000:01:00.1");
        assert_eq!(key[12..], [0; 4]);
        assert_eq!(
            serde_json::to_value(PciAddress::parse("0000:01:00.1")).expect("json"),
            "0000:01:00.1"
        );
    }

    #[test]
    fn ids_and_classes() {
        let id = PciId::parse("10de:2204").expect("valid");
        assert_eq!((id.vendor, id.device), (0x10de, 0x2204));
        assert_eq!(id.to_string(), "10de:2204");
        assert!(id.matches(Some(0x10de), Some(0x2204)) && !id.matches(None, Some(0x2204)));
        assert_eq!(PciId::parse("10de:220"), None);
        assert_eq!(PciId::parse("0x10de:2204"), None);
        assert_eq!(PciId::parse("+0de:2204"), None);
        let p = ClassPrefix::parse("0x0300").expect("valid");
        assert!(p.matches(0x030000) && p.matches(0x030001) && !p.matches(0x030200));
        assert_eq!(p.to_string(), "0x0300");
        assert_eq!(ClassPrefix::parse("0300"), Some(p));
        assert!(ClassPrefix::parse("0x03").expect("valid").matches(0x038000));
        assert!(ClassPrefix::parse("0x040300")
            .expect("valid")
            .matches(0x040300));
        assert_eq!(ClassPrefix::parse("0x3"), None);
        assert_eq!(ClassPrefix::parse("display"), None);
    }

    #[test]
    fn driver_names() {
        assert_eq!(
            DriverName::parse("vfio-pci").map(|d| d.to_string()),
            Ok("vfio-pci".to_string())
        );
        assert_eq!(DriverName::parse(""), Err("is empty"));
        for bad in ["a b", "../vfio-pci", "vfio-pci\n", "\u{7f}x"] {
            assert_eq!(
                DriverName::parse(bad),
                Err("is not a driver name"),
                "{bad:?}"
            );
        }
        let long = "x".repeat(40);
        let key = DriverName::parse(&long).expect("valid").key();
        assert_eq!(
            key, [b'x'; DRIVER_KEY_LEN],
            "cut to the key, as the programs cut"
        );
    }
}
