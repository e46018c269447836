//! The policy's driver names against the drivers this kernel offers: those registered now
//! (`bus/pci/drivers`) and the modules that declare PCI aliases (`modules.alias` of the running
//! kernel). A name nothing offers would be pinned into `driver_override`, which the kernel
//! compares with the driver's own name: the device would never bind. Said as a warning with
//! the nearest name ("did you mean"), not an error: one policy serves many nodes, and a module
//! may be missing on some. [`check`] is pure; [`KnownDrivers::read`] does the reading.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Intended, Policy};
use crate::bounded;

/// Modules whose PCI driver registers under another name than the module's (the kernel's
/// `driver_override` wants the driver's): the ones a passthrough policy names.
const MODULE_DRIVER: &[(&str, &str)] = &[("vfio_pci", "vfio-pci"), ("pci_stub", "pci-stub")];

/// `modules.alias` of a kernel is a few MiB.
const ALIAS_LIMIT: usize = 64 << 20;

/// What the kernel offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownDrivers {
    /// `bus/pci/drivers/*`: registered now.
    pub registered: BTreeSet<String>,
    /// Modules with a `pci:` alias; `None` when `modules.alias` could not be read (then only
    /// names that are a registered driver's spelled otherwise are reported).
    pub modules: Option<BTreeSet<String>>,
}

/// One driver name nothing offers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UnknownDriver {
    pub driver: String,
    /// `allowed_drivers` or `reserve`.
    pub key: &'static str,
    /// The reservation's policy line.
    pub line: Option<usize>,
    pub did_you_mean: Option<String>,
    pub message: String,
}

impl KnownDrivers {
    /// The drivers under `sysfs_root` and the modules of `modules_alias` (when readable).
    pub fn read(sysfs_root: &Path, modules_alias: Option<&Path>) -> KnownDrivers {
        let registered = std::fs::read_dir(sysfs_root.join("bus/pci/drivers"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let modules = modules_alias
            .and_then(|p| bounded::read_text(p, ALIAS_LIMIT).ok())
            .map(|text| pci_modules(&text));
        KnownDrivers {
            registered,
            modules,
        }
    }
}

/// `<dir>/<running kernel's release>/modules.alias`.
pub fn modules_alias(modules_dir: &Path) -> Option<PathBuf> {
    // SAFETY: uname fills the struct it is given; all-zero is a valid utsname.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: uname wrote a NUL-terminated release into the array.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    Some(
        modules_dir
            .join(release.to_str().ok()?)
            .join("modules.alias"),
    )
}

/// The modules `alias pci:... MODULE` lines name.
pub fn pci_modules(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("alias") && words.next()?.starts_with("pci:"))
                .then(|| words.next().map(str::to_string))?
        })
        .collect()
}

/// `-` and `_` are one character to modprobe: the spelling a module name is compared in.
fn norm(s: &str) -> String {
    s.replace('-', "_")
}

/// The policy's driver names (`allowed_drivers`, each reservation's `driver`) that nothing
/// in `known` offers, in policy order, each once.
pub fn check(policy: &Policy, known: &KnownDrivers) -> Vec<UnknownDriver> {
    let mut named: Vec<(&str, &'static str, Option<usize>)> = policy
        .allowed_drivers
        .iter()
        .map(|d| (d.as_str(), "allowed_drivers", None))
        .collect();
    named.extend(policy.reserve.iter().filter_map(|r| match &r.driver {
        Intended::Driver(d) => Some((d.as_str(), "reserve", Some(r.line))),
        Intended::Unbound => None,
    }));
    let mut seen = BTreeSet::new();
    named
        .into_iter()
        .filter(|(d, _, _)| seen.insert(*d))
        .filter_map(|(driver, key, line)| {
            let (why, did_you_mean) = unknown(driver, known)?;
            let at = line.map_or_else(String::new, |l| format!(" (policy line {l})"));
            let hint = did_you_mean
                .as_ref()
                .map_or_else(String::new, |s| format!("; did you mean {s:?}?"));
            Some(UnknownDriver {
                driver: driver.to_string(),
                key,
                line,
                message: format!("{key} driver {driver:?}{at}: {why}{hint}"),
                did_you_mean,
            })
        })
        .collect()
}

/// Why `driver` is not offered, and the nearest name that is; `None` when it is offered (or
/// nothing read can tell).
fn unknown(driver: &str, known: &KnownDrivers) -> Option<(String, Option<String>)> {
    if known.registered.contains(driver) {
        return None;
    }
    if let Some((_, d)) = MODULE_DRIVER.iter().find(|(m, _)| *m == driver) {
        return Some((
            format!("that is the module; its driver registers as {d:?}"),
            Some(d.to_string()),
        ));
    }
    if let Some(r) = known.registered.iter().find(|r| norm(r) == norm(driver)) {
        return Some((
            format!("the driver registered in bus/pci/drivers is spelled {r:?}"),
            Some(r.clone()),
        ));
    }
    let modules = known.modules.as_ref()?;
    if modules.contains(&norm(driver)) {
        return None;
    }
    let candidates = known
        .registered
        .iter()
        .chain(modules)
        .map(String::as_str)
        .chain(MODULE_DRIVER.iter().map(|(_, d)| *d));
    let nearest = candidates
        .map(|c| (distance(&norm(driver), &norm(c)), c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c.to_string());
    Some((
        "no driver in bus/pci/drivers and no module in modules.alias has that name".to_string(),
        nearest,
    ))
}

/// Levenshtein distance, in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (here + 1)
                .min(row[j] + 1)
                .min(prev + usize::from(ca != *cb));
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(registered: &[&str], modules: Option<&[&str]>) -> KnownDrivers {
        let set = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        KnownDrivers {
            registered: set(registered),
            modules: modules.map(set),
        }
    }

    fn policy(text: &str) -> Policy {
        Policy::parse(text, Path::new("p.toml")).expect("policy")
    }

    #[test]
    fn modules_with_pci_aliases() {
        let m = pci_modules(
            "# Aliases extracted from modules themselves.\nalias pci:v000010DEd*sv*sd*bc03sc*i* nvidia\nalias pci:v*d*sv*sd*bc*sc*i* vfio_pci\nalias usb:v1D6Bp0002d* xhci_hcd\nalias fs-ext4 ext4\n",
        );
        assert_eq!(
            m,
            ["nvidia", "vfio_pci"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
    }

    #[test]
    fn the_module_name_of_vfio_pci_is_no_driver_name() {
        let p = policy("[[reserve]]\ngroup = 14\ndriver = \"vfio_pci\"\n");
        for k in [
            known(&["vfio-pci"], Some(&["vfio_pci"])),
            known(&[], Some(&["vfio_pci"])),
            known(&[], None),
        ] {
            let w = check(&p, &k);
            assert_eq!(w.len(), 1, "{k:?}");
            assert_eq!(w[0].did_you_mean.as_deref(), Some("vfio-pci"));
            assert_eq!(w[0].line, Some(1));
            assert!(
                w[0].message
                    .starts_with("reserve driver \"vfio_pci\" (policy line 1): ")
                    && w[0].message.ends_with("did you mean \"vfio-pci\"?"),
                "{}",
                w[0].message
            );
        }
    }

    #[test]
    fn registered_drivers_and_modules_not_loaded_pass() {
        let p = policy(
            "allowed_drivers = [\"nvidia_vfio_pci\"]\n[[reserve]]\ngroup = 1\n[[reserve]]\ngroup = 2\ndriver = \"nvgrace-gpu-vfio-pci\"\n[[reserve]]\ngroup = 3\ndriver = \"none\"\n",
        );
        let k = known(
            &["vfio-pci"],
            Some(&["nvidia_vfio_pci", "nvgrace_gpu_vfio_pci"]),
        );
        assert_eq!(check(&p, &k), Vec::new());
    }

    #[test]
    fn a_typo_gets_the_nearest_name_and_a_name_spelled_otherwise_its_spelling() {
        let p = policy("allowed_drivers = [\"nvidia_vfio_pic\", \"snd-hda-intel\", \"zzz\"]\n");
        let k = known(
            &["snd_hda_intel", "vfio-pci"],
            Some(&["nvidia_vfio_pci", "snd_hda_intel"]),
        );
        let found = check(&p, &k);
        let w: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|w| (w.key, w.did_you_mean.as_deref()))
            .collect();
        assert_eq!(
            w,
            vec![
                ("allowed_drivers", Some("nvidia_vfio_pci")),
                ("allowed_drivers", Some("snd_hda_intel")),
                ("allowed_drivers", None),
            ]
        );
        // Without modules.alias only what is certain is said.
        let w = check(&p, &known(&["snd_hda_intel"], None));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].driver, "snd-hda-intel");
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("vfio_pic", "vfio_pci"), 2);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("nvme", "nvme"), 0);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
