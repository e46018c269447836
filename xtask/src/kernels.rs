//! The Debian kernels the VM boots, downloaded with a private apt state (the machine's sources are
//! never touched) and unpacked with `dpkg -x` into `target/vm/kernels/<series>/`, not installed.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::util::{output, run, say, target_dir};

pub const SERIES: &[&str] = &["5.10", "6.1", "6.12"];

/// The archives holding the three series; bullseye and trixie are not in a bookworm machine's sources.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
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
    /// `lib/modules/<release>` (or `usr/lib/modules/<release>` on 6.12).
    pub modules: PathBuf,
}

fn cache_dir(series: &str) -> PathBuf {
    target_dir().join("vm/kernels").join(series)
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
        let root = dir.join("root");
        let vmlinuz = fs::read_dir(root.join("boot"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })?;
        let release = vmlinuz
            .file_name()?
            .to_string_lossy()
            .strip_prefix("vmlinuz-")?
            .to_string();
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

    pub fn get(series: &str) -> Result<Kernel> {
        Kernel::cached(series)
            .ok_or_else(|| anyhow!("kernel {series} is not in {}", cache_dir(series).display()))
    }
}

/// Downloads and unpacks every series not yet cached.
pub fn ensure_all() -> Result<()> {
    let missing: Vec<&str> = SERIES
        .iter()
        .copied()
        .filter(|s| Kernel::cached(s).is_none())
        .collect();
    for s in SERIES.iter().filter(|s| !missing.contains(s)) {
        if let Some(k) = Kernel::cached(s) {
            say(format!(
                "setup: kernel {s} cached: {} ({})",
                k.package, k.release
            ));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let apt = PrivateApt::new(target_dir().join("vm/apt"))?;
    say("setup: apt-get update in the private apt state for the kernel archives (bullseye, bookworm, trixie)");
    apt.run(&["update", "-q"])?;
    let names = apt.output(&["pkgnames", "linux-image-"])?;
    let names: Vec<&str> = names.lines().map(str::trim).collect();
    let packages = missing
        .iter()
        .map(|s| resolve(s, &names).map(|p| (*s, p)))
        .collect::<Result<Vec<_>>>()?;

    let debs = apt.dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    for (series, package) in &packages {
        say(format!("setup: downloading kernel {series}: {package}"));
        apt.run_in(&debs, &["download", "-q", package])?;
        let deb = find_deb(&debs, package)?;
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
        let dir = cache_dir(series);
        // Not with_extension: "6.12" already has a dot.
        let tmp = dir.with_file_name(format!("{series}.partial"));
        let _ = fs::remove_dir_all(&tmp);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        say(format!(
            "setup: unpacking {} into {}",
            deb.display(),
            dir.display()
        ));
        run(Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(tmp.join("root")))?;
        fs::write(tmp.join("package"), format!("{package} {version}\n"))?;
        fs::rename(&tmp, &dir)
            .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
        let _ = fs::remove_file(&deb);
        let k = Kernel::get(series)?;
        say(format!(
            "setup: kernel {series} ready: {} ({})",
            k.package, k.release
        ));
    }
    Ok(())
}

/// The package for `series`: 5.10 is pinned to the build DESIGN.md measured; 6.1 and 6.12 take the
/// newest ABI in the archive today, since old ones are dropped from it.
fn resolve(series: &str, names: &[&str]) -> Result<String> {
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
        "6.12" => newest("linux-image-6.12.", "+deb13-amd64-unsigned"),
        other => bail!(
            "unknown kernel series {other} (known: {})",
            SERIES.join(", ")
        ),
    };
    found.ok_or_else(|| anyhow!("no linux-image package for kernel {series} in the Debian archive"))
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
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
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(dir: PathBuf) -> Result<Self> {
        for sub in [
            "preferences.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        fs::write(dir.join("sources.list"), SOURCES)?;
        Ok(PrivateApt { dir })
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
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        run(Command::new("apt-get").args(self.options()).args(args))
    }

    fn run_in(&self, cwd: &Path, args: &[&str]) -> Result<()> {
        run(Command::new("apt-get")
            .args(self.options())
            .args(args)
            .current_dir(cwd))
    }

    fn output(&self, args: &[&str]) -> Result<String> {
        output(Command::new("apt-cache").args(self.options()).args(args))
    }
}
