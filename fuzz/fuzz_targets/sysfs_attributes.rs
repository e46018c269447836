//! The parsers of sysfs attributes and names: hex IDs, group directory names, driver_override.
//! Never panic; accept only the kernel's spellings; round-trip what they accept.
#![no_main]
use iommu_enforcer::sysfs::{parse_driver_override, parse_group_number, parse_hex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(v) = parse_hex(&text) {
        let digits = text.trim();
        let digits = digits.strip_prefix("0x").unwrap_or(digits);
        assert!(digits.bytes().all(|b| b.is_ascii_hexdigit()), "{text:?}");
        assert_eq!(u32::from_str_radix(digits, 16).ok(), Some(v));
    }
    if let Some(g) = parse_group_number(&text) {
        assert_eq!(g.to_string(), text, "only the kernel's spelling of {g}");
    }
    if let Some(d) = parse_driver_override(&text) {
        assert!(!d.is_empty() && d != "(null)");
        assert_eq!(d.trim(), d);
    }
});
