//! The config-space decoder (header type, PCIe port type, ACS) on any bytes, as a `config` file
//! might return them: never panics, ends on capability loops, and agrees with what the length
//! allows.
#![no_main]
use iommu_enforcer::model::Acs;
use iommu_enforcer::sysfs::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(4096)];
    let header = config::header_type(data);
    assert_eq!(header.is_some(), data.len() > 0x0e);
    assert_eq!(config::multifunction(data).is_some(), header.is_some());
    assert_eq!(config::bridge_header(data).is_some(), header.is_some());
    let port = config::port_type(data);
    let acs = config::acs(data);
    if data.len() < 256 {
        assert_eq!(
            acs,
            Acs::Unknown,
            "no extended space in {} bytes",
            data.len()
        );
        if data.len() < 0x40 {
            assert_eq!(port, None, "capabilities start at 0x40");
        }
    }
});
