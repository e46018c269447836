//! Which IOMMU group a VFIO character device stands for: the eBPF programs see the inode's
//! device number, user space names the node `/dev/vfio/N` after group N.
use std::{collections::BTreeMap, fs, os::unix::fs::MetadataExt, path::Path};

/// (major, minor) -> path of every node under `<dev_root>/vfio` (group nodes) and
/// `<dev_root>/vfio/devices` (iommufd cdevs).
pub fn vfio_nodes(dev_root: &Path) -> BTreeMap<(u32, u32), String> {
    let mut nodes = BTreeMap::new();
    for dir in ["vfio", "vfio/devices"] {
        let Ok(entries) = fs::read_dir(dev_root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            // Follows links: some setups symlink device nodes into place.
            let Ok(meta) = fs::metadata(entry.path()) else {
                continue;
            };
            if meta.rdev() == 0 {
                continue;
            }
            let rdev = meta.rdev();
            let key = (libc::major(rdev), libc::minor(rdev));
            nodes.insert(
                key,
                format!("/dev/{dir}/{}", entry.file_name().to_string_lossy()),
            );
        }
    }
    nodes
}

/// The PCI device behind a cdev path (`/dev/vfio/devices/vfio0`), from the link
/// `<sysfs>/class/vfio-dev/vfio0/device`.
pub fn cdev_device(sysfs_root: &Path, path: &str) -> Option<String> {
    let name = path.strip_prefix("/dev/vfio/devices/")?;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let link = fs::read_link(sysfs_root.join("class/vfio-dev").join(name).join("device")).ok()?;
    Some(link.file_name()?.to_str()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdev_devices_from_sysfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let class = dir.path().join("class/vfio-dev/vfio0");
        fs::create_dir_all(&class).expect("mkdir");
        std::os::unix::fs::symlink(
            "../../../devices/pci0000:00/0000:00:05.0",
            class.join("device"),
        )
        .expect("symlink");
        assert_eq!(
            cdev_device(dir.path(), "/dev/vfio/devices/vfio0").as_deref(),
            Some("0000:00:05.0")
        );
        assert_eq!(cdev_device(dir.path(), "/dev/vfio/devices/vfio1"), None);
        assert_eq!(cdev_device(dir.path(), "/dev/vfio/devices/../x"), None);
        assert_eq!(cdev_device(dir.path(), "/dev/vfio/9"), None);
    }

    #[test]
    fn finds_character_devices() {
        // /dev/null is a character device on every Linux machine: stand it in for a vfio node.
        let dir = tempfile::tempdir().expect("tempdir");
        let vfio = dir.path().join("vfio");
        fs::create_dir(&vfio).expect("mkdir");
        std::os::unix::fs::symlink("/dev/null", vfio.join("7")).expect("symlink");
        let nodes = vfio_nodes(dir.path());
        let null = fs::metadata("/dev/null").expect("/dev/null").rdev();
        assert_eq!(
            nodes
                .get(&(libc::major(null), libc::minor(null)))
                .map(String::as_str),
            Some("/dev/vfio/7")
        );
    }
}
