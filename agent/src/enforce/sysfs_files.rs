//! The sysfs facts enforcement loads into the kernel maps and the agent's own writes (pins,
//! rebinds). I/O, kept small. Whatever takes the device lock (`driver_override`, `bind`,
//! `unbind`, `drivers_probe`) runs with a deadline ([`crate::io_deadline`]): the kernel may hold
//! that lock for as long as a VFIO user keeps its group.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::Path,
};

use log::warn;

use crate::io_deadline;
use crate::pci::DriverName;

/// The kernel's dev_t encoding (major << 20 | minor) of a userspace device number.
pub fn kernel_dev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xf_ffff)
}

/// Kernel dev_t of a character device node, `None` when it is not there.
pub fn node_rdev(path: &Path) -> Option<u32> {
    let meta = fs::metadata(path).ok()?;
    (meta.rdev() != 0).then(|| kernel_dev(meta.rdev()))
}

/// (kernel dev_t of its filesystem, inode) of an executable, for TRUSTED_EXE.
pub fn exe_key(path: &Path) -> io::Result<(u64, u64)> {
    let meta = fs::metadata(path)?;
    Ok((u64::from(kernel_dev(meta.dev())), meta.ino()))
}

/// Runs `job` with the attribute deadline; a stall is logged and becomes ETIMEDOUT.
fn with_deadline<T: Send + 'static>(
    what: String,
    job: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    io_deadline::run(&what, io_deadline::ATTRIBUTE, job).unwrap_or_else(|stalled| {
        warn!("{what}: {stalled}");
        Err(io::Error::from_raw_os_error(libc::ETIMEDOUT))
    })
}

/// One write of `value` to a sysfs attribute, as an operator would do with `echo`.
pub fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    let (path, value) = (path.to_path_buf(), value.to_string());
    with_deadline(format!("write {}", path.display()), move || {
        let mut f = fs::OpenOptions::new().write(true).open(&path)?;
        f.write_all(value.as_bytes())
    })
}

/// `driver_override` of a device.
pub fn pin(sysfs: &Path, device: &str, value: &str) -> io::Result<()> {
    write_attr(
        &sysfs
            .join("bus/pci/devices")
            .join(device)
            .join("driver_override"),
        value,
    )
}

/// Whether any of `pins` (device, value) no longer reads as written: every read in one job, so
/// a watch pass is one handoff to the worker, not one per device.
pub fn pins_differ(sysfs: &Path, pins: Vec<(String, String)>) -> io::Result<bool> {
    let devices = sysfs.join("bus/pci/devices");
    with_deadline(
        format!("read {} pinned driver_override", pins.len()),
        move || {
            Ok(pins.iter().any(|(device, value)| {
                let file = devices.join(device).join("driver_override");
                let live = read_small(&file)
                    .as_deref()
                    .and_then(crate::sysfs::parse_driver_override);
                live.as_deref() != Some(value.as_str())
            }))
        },
    )
}

/// Asks the bus to probe a device (it takes the driver its override names).
pub fn probe(sysfs: &Path, device: &str) -> io::Result<()> {
    write_attr(&sysfs.join("bus/pci/drivers_probe"), device)
}

/// The driver a device is bound to right now, from its `driver` link.
pub fn bound_driver(sysfs: &Path, device: &str) -> Option<String> {
    crate::sysfs::read_driver(&sysfs.join("bus/pci/devices").join(device))
        .ok()
        .flatten()
}

/// A device's `driver_override` right now: `Ok(None)` when unset or gone, an error when the
/// read did not finish in time (the value is then unknown, not unset).
pub fn current_override(sysfs: &Path, device: &str) -> io::Result<Option<String>> {
    let path = sysfs
        .join("bus/pci/devices")
        .join(device)
        .join("driver_override");
    with_deadline(format!("read {}", path.display()), move || {
        Ok(read_small(&path)
            .as_deref()
            .and_then(crate::sysfs::parse_driver_override))
    })
}

/// Unbinds a device from its driver and probes it again.
pub fn rebind(sysfs: &Path, device: &str) -> io::Result<()> {
    let dev = sysfs.join("bus/pci/devices").join(device);
    write_attr(&dev.join("driver/unbind"), device)?;
    probe(sysfs, device)
}

/// Hotplug slots: name -> address (`DDDD:BB:DD`), from `bus/pci/slots/*/address`.
pub fn slots(sysfs: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(sysfs.join("bus/pci/slots"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(address) = read_small(&entry.path().join("address")) {
            out.insert(name, address);
        }
    }
    out
}

/// PCI drivers registered now. A directory whose name is no driver name is left out: it gets
/// no entry in the driver map, so it counts as neither a user driver nor allowed.
pub fn drivers(sysfs: &Path) -> BTreeSet<DriverName> {
    fs::read_dir(sysfs.join("bus/pci/drivers"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| DriverName::parse(e.file_name().to_str()?).ok())
        .collect()
}

/// A sysfs attribute of at most a page, trimmed; `None` when unreadable or not a regular file.
fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding() {
        assert_eq!(kernel_dev(libc::makedev(245, 3)), (245 << 20) | 3);
        assert_eq!(kernel_dev(libc::makedev(10, 196)), (10 << 20) | 196);
    }

    #[test]
    fn facts_and_pins_on_a_fixture_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = iommu_fixtures::fixture("consumer-gpu-audio-split").expect("fixture");
        let node = iommu_fixtures::build(spec, dir.path()).expect("builds");
        assert!(drivers(&node.sysfs).contains(&crate::pci::driver("vfio-pci")));
        pin(&node.sysfs, "0000:0a:00.1", "vfio-pci").expect("writes");
        assert_eq!(
            current_override(&node.sysfs, "0000:0a:00.1")
                .expect("read")
                .as_deref(),
            Some("vfio-pci")
        );
        let slot = node.sysfs.join("bus/pci/slots/3");
        fs::create_dir_all(&slot).expect("mkdir");
        fs::write(slot.join("address"), "0000:0a:00\n").expect("slot");
        assert_eq!(
            slots(&node.sysfs).get("3").map(String::as_str),
            Some("0000:0a:00")
        );
    }
}
