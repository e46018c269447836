//! The sysfs files enforcement watches and writes. I/O, kept small: inode numbers for the LSM
//! maps, and the agent's own writes (pins, rebinds).
use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use iommu_enforcer_common::watched;

/// A watched file: its inode number and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedInode {
    pub ino: u64,
    pub kind: u32,
}

/// The per-device files of a protected member (`driver_override`, `remove`).
pub fn device_files(sysfs: &Path, device: &str) -> Vec<(PathBuf, u32)> {
    let dir = sysfs.join("bus/pci/devices").join(device);
    vec![
        (dir.join("driver_override"), watched::DRIVER_OVERRIDE),
        (dir.join("remove"), watched::REMOVE),
    ]
}

/// The bus-wide files whose written data names the target: every PCI driver's `bind`,
/// `unbind` and `new_id`, and the bus's `drivers_probe`.
pub fn bus_files(sysfs: &Path) -> Vec<(PathBuf, u32)> {
    let pci = sysfs.join("bus/pci");
    let mut files = vec![(pci.join("drivers_probe"), watched::DRIVERS_PROBE)];
    if let Ok(drivers) = fs::read_dir(pci.join("drivers")) {
        for d in drivers.flatten() {
            let dir = d.path();
            files.push((dir.join("bind"), watched::BIND));
            files.push((dir.join("unbind"), watched::UNBIND));
            files.push((dir.join("new_id"), watched::NEW_ID));
        }
    }
    files
}

/// Inode numbers of files, cached by path (sysfs inodes live as long as their device or
/// driver; the cache is dropped on any membership change).
#[derive(Default)]
pub struct InodeCache {
    by_path: BTreeMap<PathBuf, u64>,
}

impl InodeCache {
    pub fn clear(&mut self) {
        self.by_path.clear();
    }

    /// The inode of `path`; `None` when it does not exist (yet: a driver's files appear when its
    /// module loads, so a miss is not remembered).
    pub fn ino(&mut self, path: &Path) -> Option<u64> {
        if let Some(ino) = self.by_path.get(path) {
            return Some(*ino);
        }
        let ino = fs::metadata(path).ok()?.ino();
        self.by_path.insert(path.to_path_buf(), ino);
        Some(ino)
    }
}

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

/// One write of `value` to a sysfs attribute, as an operator would do with `echo`.
pub fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
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

/// A device's `driver_override` right now; `None` when unset or unreadable.
pub fn current_override(sysfs: &Path, device: &str) -> Option<String> {
    let path = sysfs
        .join("bus/pci/devices")
        .join(device)
        .join("driver_override");
    crate::sysfs::parse_driver_override(&fs::read_to_string(path).ok()?)
}

/// Unbinds a device from its driver and probes it again.
pub fn rebind(sysfs: &Path, device: &str) -> io::Result<()> {
    let dev = sysfs.join("bus/pci/devices").join(device);
    write_attr(&dev.join("driver/unbind"), device)?;
    probe(sysfs, device)
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
    fn watched_files_of_a_fixture_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = iommu_fixtures::fixture("consumer-gpu-audio-split").expect("fixture");
        let node = iommu_fixtures::build(spec, dir.path()).expect("builds");
        let bus = bus_files(&node.sysfs);
        assert!(bus
            .iter()
            .any(|(p, k)| p.ends_with("drivers/vfio-pci/bind") && *k == watched::BIND));
        assert!(bus
            .iter()
            .any(|(p, k)| p.ends_with("drivers_probe") && *k == watched::DRIVERS_PROBE));
        let mut cache = InodeCache::default();
        let files = device_files(&node.sysfs, "0000:0a:00.1");
        let override_ino = cache.ino(&files[0].0).expect("driver_override exists");
        assert_eq!(cache.ino(&files[0].0), Some(override_ino), "cached");
        let later = node.sysfs.join("bus/pci/drivers/e1000e");
        assert_eq!(cache.ino(&later.join("bind")), None);
        fs::create_dir_all(&later).expect("mkdir");
        fs::write(later.join("bind"), "").expect("a driver appears");
        assert!(
            cache.ino(&later.join("bind")).is_some(),
            "a miss is not remembered"
        );
        pin(&node.sysfs, "0000:0a:00.1", "vfio-pci").expect("writes");
        let written = fs::read_to_string(&files[0].0).expect("reads");
        assert_eq!(written, "vfio-pci");
    }
}
