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

use super::facts::{absent_is_none, Listing};
use crate::io_deadline;
use crate::pci::DriverName;

/// The kernel's dev_t encoding (major << 20 | minor) of a userspace device number.
pub fn kernel_dev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xf_ffff)
}

/// Kernel dev_t of a character device node: `Ok(None)` when it is not there (or not a
/// device), an error when the stat failed otherwise (EMFILE...: unknown, not absent).
pub fn node_rdev(path: &Path) -> io::Result<Option<u32>> {
    let Some(meta) = absent_is_none(fs::metadata(path))? else {
        return Ok(None);
    };
    Ok((meta.rdev() != 0).then(|| kernel_dev(meta.rdev())))
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
/// a watch pass is one handoff to the worker, not one per device. A read that fails (other
/// than ENOENT) is not a change; when no read succeeded the first error is returned.
pub fn pins_differ(sysfs: &Path, pins: Vec<(String, String)>) -> io::Result<bool> {
    let devices = sysfs.join("bus/pci/devices");
    with_deadline(
        format!("read {} pinned driver_override", pins.len()),
        move || {
            let mut failed = None;
            for (device, value) in &pins {
                let file = devices.join(device).join("driver_override");
                match read_small(&file) {
                    Ok(text) => {
                        let live = text
                            .as_deref()
                            .and_then(crate::sysfs::parse_driver_override);
                        if live.as_deref() != Some(value.as_str()) {
                            return Ok(true);
                        }
                    }
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            failed.map_or(Ok(false), Err)
        },
    )
}

/// Asks the bus to probe a device (it takes the driver its override names).
pub fn probe(sysfs: &Path, device: &str) -> io::Result<()> {
    write_attr(&sysfs.join("bus/pci/drivers_probe"), device)
}

/// The driver a device is bound to right now, from its `driver` link: `Ok(None)` when unbound
/// or gone, an error when the link could not be read (unknown, not unbound).
pub fn bound_driver(sysfs: &Path, device: &str) -> io::Result<Option<String>> {
    match crate::sysfs::read_driver(&sysfs.join("bus/pci/devices").join(device)) {
        Ok(d) => Ok(d),
        Err(crate::sysfs::SysfsError::Read { source, .. }) => {
            absent_is_none(Err(source)).map(Option::flatten)
        }
        Err(_) => Ok(None),
    }
}

/// A device's `driver_override` right now: `Ok(None)` when unset or gone, an error when the
/// read did not finish in time (the value is then unknown, not unset).
pub fn current_override(sysfs: &Path, device: &str) -> io::Result<Option<String>> {
    let path = sysfs
        .join("bus/pci/devices")
        .join(device)
        .join("driver_override");
    with_deadline(format!("read {}", path.display()), move || {
        Ok(read_small(&path)?
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

/// Hotplug slots: name -> address (`DDDD:BB:DD`), from `bus/pci/slots/*/address`. A slot
/// without an `address` is no slot; one whose `address` could not be read is listed with
/// the error, and a listing that failed is the error: unknown, never "no slots".
pub fn slots(sysfs: &Path) -> Listing<String, String> {
    let mut out = BTreeMap::new();
    let Some(dir) = absent_is_none(fs::read_dir(sysfs.join("bus/pci/slots")))? else {
        return Ok(out);
    };
    for entry in dir {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match read_small(&entry.path().join("address")) {
            Ok(Some(address)) => {
                out.insert(name, Ok(address));
            }
            Ok(None) => {}
            Err(e) => {
                out.insert(name, Err(e));
            }
        }
    }
    Ok(out)
}

/// PCI drivers registered now. A directory whose name is no driver name is left out: it gets
/// no entry in the driver map, so it counts as neither a user driver nor allowed. A listing
/// that failed is the error (unknown, not "no drivers").
pub fn drivers(sysfs: &Path) -> io::Result<BTreeSet<DriverName>> {
    let Some(dir) = absent_is_none(fs::read_dir(sysfs.join("bus/pci/drivers")))? else {
        return Ok(BTreeSet::new());
    };
    let mut out = BTreeSet::new();
    for entry in dir {
        if let Some(name) = entry?.file_name().to_str() {
            if let Ok(d) = DriverName::parse(name) {
                out.insert(d);
            }
        }
    }
    Ok(out)
}

/// A sysfs attribute of at most a page, trimmed: `Ok(None)` when it does not exist or is not
/// a regular file, an error when it exists but could not be read (EMFILE...).
fn read_small(path: &Path) -> io::Result<Option<String>> {
    use std::io::Read;
    let Some(meta) = absent_is_none(fs::metadata(path))? else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let Some(file) = absent_is_none(fs::File::open(path))? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    file.take(4096).read_to_end(&mut buf)?;
    Ok(Some(String::from_utf8_lossy(&buf).trim().to_string()))
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
        assert!(drivers(&node.sysfs)
            .expect("listed")
            .contains(&crate::pci::driver("vfio-pci")));
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
        let listed = slots(&node.sysfs).expect("listed");
        assert_eq!(
            listed.get("3").and_then(|a| a.as_deref().ok()),
            Some("0000:0a:00")
        );
        // No slots directory at all: known, and empty.
        fs::remove_dir_all(node.sysfs.join("bus/pci/slots")).expect("rm");
        assert!(slots(&node.sysfs).expect("absent is known").is_empty());
        assert_eq!(
            node_rdev(&node.sysfs.join("no/such/node")).expect("absent is known"),
            None
        );
    }
}
