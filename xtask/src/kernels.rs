//! The Debian kernels the VM boots, downloaded with a private apt state (the machine's sources are
//! never touched) and unpacked with `dpkg -x` into `target/vm/kernels/<series>/`, not installed;
//! plus `6.12-iommufd`, built from Debian's 6.12 source by kbuild.rs.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::arch::Arch;
use crate::util::{output, run, say, target_dir};

/// In setup order: 6.12-iommufd is configured from the 6.12 package's config, so it comes after it.
/// `arm64-*`: Debian's arm64 kernels of the arm64 test node (qemu-system-aarch64, virt, SMMUv3),
/// under `target/vm/kernels-arm64/` so the x86 ones are never disturbed.
pub const SERIES: &[&str] = &[
    "5.10",
    "6.1",
    "6.12",
    "7.3",
    "6.12-iommufd",
    "arm64-6.1",
    "arm64-6.12",
];
/// The series `setup` builds from source instead of downloading.
pub const BUILT: &str = "6.12-iommufd";

/// The archives holding the series; bullseye and trixie are not in a bookworm machine's sources,
/// trixie-backports carries 7.3.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
";

/// An unpacked kernel: its image and its module tree.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub series: String,
    /// Debian package and version it came from (`linux-image-6.1.0-56-amd64-unsigned 6.1.192-2`).
    pub package: String,
    /// `uname -r` inside the guest, e.g. `6.1.0-56-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` (or `usr/lib/modules/<release>` on 6.12 and later).
    pub modules: PathBuf,
}

pub fn cache_dir(series: &str) -> PathBuf {
    match series.strip_prefix("arm64-") {
        Some(v) => arm64_dir().join(v),
        None => target_dir().join("vm/kernels").join(series),
    }
}

/// The arm64 node's kernels and its static busybox.
fn arm64_dir() -> PathBuf {
    target_dir().join("vm/kernels-arm64")
}

/// The static busybox of the guest: the machine's own (busybox-static) on x86_64, Debian's
/// arm64 busybox-static unpacked next to the arm64 kernels on arm64.
pub fn busybox(arch: Arch) -> PathBuf {
    match arch {
        Arch::X86_64 => PathBuf::from("/bin/busybox"),
        // trixie's busybox-static (the newest in the sources) installs under /usr/bin.
        Arch::Arm64 => {
            let root = arm64_dir().join("busybox/root");
            let merged = root.join("usr/bin/busybox");
            if merged.is_file() {
                merged
            } else {
                root.join("bin/busybox")
            }
        }
    }
}

/// The kernel version a series names: `6.12-iommufd` is a 6.12 kernel, `arm64-6.1` a 6.1 one.
pub fn version_of(series: &str) -> &str {
    let series = series.strip_prefix("arm64-").unwrap_or(series);
    series.split('-').next().unwrap_or(series)
}

/// The image and release under an unpacked root: `boot/vmlinuz-<release>` up to 7.1;
/// `usr/lib/modules/<release>/vmlinuz.unsigned` from 7.2, where Debian split the kernel into
/// linux-binary-unsigned, linux-modules and linux-base.
fn find_image(root: &Path) -> Option<(PathBuf, String)> {
    let in_boot = fs::read_dir(root.join("boot")).ok().and_then(|d| {
        d.filter_map(|e| e.ok()).find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Some((e.path(), release))
        })
    });
    in_boot.or_else(|| {
        fs::read_dir(root.join("usr/lib/modules"))
            .ok()?
            .filter_map(|e| e.ok())
            .find_map(|e| {
                let image = e.path().join("vmlinuz.unsigned");
                image
                    .is_file()
                    .then(|| (image, e.file_name().to_string_lossy().into_owned()))
            })
    })
}

impl Kernel {
    /// The cached kernel of `series`, if `setup` has unpacked it.
    pub fn cached(series: &str) -> Option<Kernel> {
        let dir = cache_dir(series);
        // `package` is written last, so its presence means the unpack completed.
        let package = fs::read_to_string(dir.join("package"))
            .ok()?
            .trim()
            .to_string();
        if series == BUILT && !crate::kbuild::is_current(&dir) {
            return None;
        }
        let root = dir.join("root");
        let (vmlinuz, release) = find_image(&root)?;
        let modules = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|m| root.join(m).join(&release))
            .find(|p| p.is_dir())?;
        Some(Kernel {
            series: series.to_string(),
            package,
            release,
            vmlinuz,
            modules,
        })
    }

    /// The kernel of `series`, building 6.12-iommufd first if this machine has not yet: the other
    /// series are there once `setup::ensure` ran, the built one only when a command boots it.
    pub fn ready(series: &str) -> Result<Kernel> {
        if series == BUILT && Kernel::cached(series).is_none() {
            ensure_all(true)?;
        }
        Kernel::get(series)
    }

    pub fn get(series: &str) -> Result<Kernel> {
        Kernel::cached(series)
            .ok_or_else(|| anyhow!("kernel {series} is not in {}", cache_dir(series).display()))
    }
}

/// Downloads and unpacks every series not yet cached; builds 6.12-iommufd too when `build`.
pub fn ensure_all(build: bool) -> Result<()> {
    let missing: Vec<&str> = SERIES
        .iter()
        .copied()
        .filter(|s| *s != BUILT && Kernel::cached(s).is_none())
        .collect();
    for s in SERIES
        .iter()
        .filter(|s| **s != BUILT && !missing.contains(s))
    {
        if let Some(k) = Kernel::cached(s) {
            say(format!(
                "setup: kernel {s} cached: {} ({})",
                k.package, k.release
            ));
        }
    }
    let build = build && Kernel::cached(BUILT).is_none();
    if let Some(k) = Kernel::cached(BUILT) {
        say(format!(
            "setup: kernel {BUILT} cached: {} ({})",
            k.package, k.release
        ));
    }
    let (arm64, missing): (Vec<&str>, Vec<&str>) = missing
        .into_iter()
        .partition(|s| Arch::of_series(s) == Arch::Arm64);
    if !arm64.is_empty() || !busybox(Arch::Arm64).is_file() {
        ensure_arm64(&arm64)?;
    }
    if missing.is_empty() && !build {
        return Ok(());
    }
    let apt = PrivateApt::new(target_dir().join("vm/apt"), Arch::X86_64)?;
    say("setup: apt-get update in the private apt state for the kernel archives (bullseye, bookworm, trixie, trixie-backports)");
    apt.run(&["update", "-q"])?;
    let names = apt.output(&["pkgnames", "linux-"])?;
    let names: Vec<&str> = names.lines().map(str::trim).collect();
    let packages = missing
        .iter()
        .map(|s| resolve(s, &names).map(|p| (*s, p)))
        .collect::<Result<Vec<_>>>()?;
    fetch(&apt, &packages)?;
    if build {
        crate::kbuild::ensure(&apt)?;
    }
    Ok(())
}

/// The arm64 kernels `missing` and the arm64 busybox-static, from a private apt state of its own
/// whose architecture is arm64 (`apt-get download` of arm64 packages; nothing installed).
fn ensure_arm64(missing: &[&str]) -> Result<()> {
    let apt = PrivateApt::new(arm64_dir().join("apt"), Arch::Arm64)?;
    say("setup: apt-get update in the private arm64 apt state (bookworm, trixie)");
    apt.run(&["update", "-q"])?;
    let names = apt.output(&["pkgnames", "linux-"])?;
    let names: Vec<&str> = names.lines().map(str::trim).collect();
    let mut packages = missing
        .iter()
        .map(|s| resolve(s, &names).map(|p| (*s, p)))
        .collect::<Result<Vec<_>>>()?;
    if !busybox(Arch::Arm64).is_file() {
        packages.push(("busybox", vec!["busybox-static".to_string()]));
    }
    fetch(&apt, &packages)
}

/// Downloads and unpacks each `(series, packages)` into its cache directory.
fn fetch(apt: &PrivateApt, packages: &[(&str, Vec<String>)]) -> Result<()> {
    let debs = apt.dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    for (series, parts) in packages {
        let package = &parts[0];
        say(format!(
            "setup: downloading kernel {series}: {}",
            parts.join(" ")
        ));
        let mut args = vec!["download", "-q"];
        args.extend(parts.iter().map(String::as_str));
        apt.run_in(&debs, &args)?;
        let parts_debs = parts
            .iter()
            .map(|p| find_deb(&debs, p))
            .collect::<Result<Vec<_>>>()?;
        let deb = &parts_debs[0];
        let version = deb
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .split('_')
                    .nth(1)
                    .unwrap_or("?")
                    .replace("%3a", ":")
            })
            .unwrap_or_default();
        let dir = if *series == "busybox" {
            arm64_dir().join("busybox")
        } else {
            cache_dir(series)
        };
        // Not with_extension: "6.12" already has a dot.
        let tmp = dir.with_file_name(format!("{series}.partial"));
        let _ = fs::remove_dir_all(&tmp);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        for deb in &parts_debs {
            say(format!(
                "setup: unpacking {} into {}",
                deb.display(),
                dir.display()
            ));
            run(Command::new("dpkg")
                .arg("-x")
                .arg(deb)
                .arg(tmp.join("root")))?;
        }
        // The split packages (7.2+) are recorded after the image's: `<image> <version> + <others>`.
        let mut record = format!("{package} {version}");
        if parts.len() > 1 {
            record.push_str(&format!(" + {}", parts[1..].join(" ")));
        }
        fs::write(tmp.join("package"), format!("{record}\n"))?;
        fs::rename(&tmp, &dir)
            .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
        for deb in &parts_debs {
            let _ = fs::remove_file(deb);
        }
        if *series == "busybox" {
            continue;
        }
        let k = Kernel::get(series)?;
        say(format!(
            "setup: kernel {series} ready: {} ({})",
            k.package, k.release
        ));
    }
    Ok(())
}

/// The packages for `series`, the image first: 5.10 is pinned to the build docs/design.md measured; 6.1,
/// 6.12 and 7.3 take the newest in the archive today, since old ones are dropped from it. 7.3 is
/// three packages (image; modules; config and System.map), all of one release.
fn resolve(series: &str, names: &[&str]) -> Result<Vec<String>> {
    let newest = |prefix: &str, suffix: &str| {
        names
            .iter()
            .filter_map(|n| {
                let mid = n.strip_prefix(prefix)?.strip_suffix(suffix)?;
                mid.parse::<u32>().ok().map(|v| (v, n.to_string()))
            })
            .max()
            .map(|(_, n)| n)
    };
    let found = match series {
        "5.10" => names
            .iter()
            .find(|n| **n == "linux-image-5.10.0-32-amd64-unsigned")
            .map(|n| n.to_string()),
        "6.1" => newest("linux-image-6.1.0-", "-amd64-unsigned"),
        "arm64-6.1" => newest("linux-image-6.1.0-", "-arm64-unsigned"),
        "arm64-6.12" => newest("linux-image-6.12.", "+deb13-arm64-unsigned"),
        "6.12" => newest("linux-image-6.12.", "+deb13-amd64-unsigned"),
        "7.3" => {
            let image = newest("linux-binary-unsigned-7.3.", "+deb13-amd64").ok_or_else(|| {
                anyhow!("no linux-binary-unsigned-7.3.N+deb13-amd64 package in trixie-backports")
            })?;
            let release = image.trim_start_matches("linux-binary-unsigned-");
            let parts = vec![
                image.clone(),
                format!("linux-modules-{release}"),
                format!("linux-base-{release}"),
            ];
            if let Some(gone) = parts.iter().find(|p| !names.contains(&p.as_str())) {
                bail!("{image} is in the archive but {gone} is not");
            }
            return Ok(parts);
        }
        other => bail!(
            "unknown kernel series {other} (known: {})",
            SERIES.join(", ")
        ),
    };
    found
        .map(|p| vec![p])
        .ok_or_else(|| anyhow!("no linux-image package for kernel {series} in the Debian archive"))
}

pub fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .ok_or_else(|| {
            anyhow!(
                "apt-get download left no {package}_*.deb in {}",
                dir.display()
            )
        })
}

/// apt with its own sources, state and cache under `dir`.
pub struct PrivateApt {
    pub dir: PathBuf,
    arch: Arch,
}

impl PrivateApt {
    fn new(dir: PathBuf, arch: Arch) -> Result<Self> {
        for sub in [
            "preferences.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        fs::write(dir.join("sources.list"), SOURCES)?;
        Ok(PrivateApt { dir, arch })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".to_string(),
            format!("Dir::Etc::PreferencesParts={d}/preferences.d"),
            format!("Dir::State={d}/state"),
            format!("Dir::Cache={d}/cache"),
            "Debug::NoLocking=1".to_string(),
            // The _apt sandbox user cannot write into the work tree; it is our own cache anyway.
            "APT::Sandbox::User=root".to_string(),
            // The packages' architecture, not the machine's (arm64 kernels are only downloaded).
            format!("APT::Architecture={}", self.arch.debian()),
            format!("APT::Architectures={}", self.arch.debian()),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        run(Command::new("apt-get").args(self.options()).args(args))
    }

    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Result<()> {
        run(Command::new("apt-get")
            .args(self.options())
            .args(args)
            .current_dir(cwd))
    }

    pub fn output(&self, args: &[&str]) -> Result<String> {
        output(Command::new("apt-cache").args(self.options()).args(args))
    }
}
