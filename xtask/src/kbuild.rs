//! The `6.12-iommufd` kernel: no Debian binary kernel enables CONFIG_IOMMUFD, so `setup` builds
//! one from Debian's `linux-source-6.12`: `make x86_64_defconfig`, then the fragment
//! `xtask/kernels/6.12-iommufd.config` (IOMMUFD, VFIO_DEVICE_CDEV, and what the agent and the
//! test node need as Debian's 6.12 has it: BTF, BPF LSM, kprobes, fentry, the Intel IOMMU, VFIO,
//! the initramfs modules; everything else left out). The result is cached outside the work tree,
//! in `~/.cache/iommu-enforcer/kernels/6.12-iommufd-<key>/`, keyed by the source version and the
//! fragment, so a machine builds it once; `target/vm/kernels/6.12-iommufd` is a symlink to it.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::kernels::{self, Kernel, PrivateApt, BUILT};
use crate::util::{output, run, say, workspace_root};

const SOURCE: &str = "linux-source-6.12";
/// The kernel's own config the fragment is merged on.
const BASE_CONFIG: &str = "x86_64_defconfig";

fn fragment_path() -> PathBuf {
    workspace_root()
        .join("xtask/kernels")
        .join(format!("{BUILT}.config"))
}

fn cache_root() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
    Ok(PathBuf::from(home).join(".cache/iommu-enforcer/kernels"))
}

fn sha256(data: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum stdin")?
        .write_all(data)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("sha256sum failed ({})", out.status);
    }
    let hex = String::from_utf8_lossy(&out.stdout);
    Ok(hex.split_whitespace().next().unwrap_or("").to_string())
}

/// What the config depends on besides the source: the base config and the fragment. A cached
/// kernel whose recipe differs from today's is stale.
fn recipe() -> Result<String> {
    let fragment = fs::read_to_string(fragment_path())
        .with_context(|| format!("reading {}", fragment_path().display()))?;
    Ok(format!("{BASE_CONFIG}\n{fragment}"))
}

/// True when the cached kernel at `dir` was built from today's module list and fragment.
pub fn is_current(dir: &Path) -> bool {
    let Ok(want) = recipe().and_then(|r| sha256(r.as_bytes())) else {
        return false;
    };
    fs::read_to_string(dir.join("recipe.sha256")).is_ok_and(|h| h.trim() == want)
}

/// `CONFIG_X=v` and `# CONFIG_X is not set` lines of a fragment.
fn wanted_lines(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("CONFIG_") || (l.starts_with("# CONFIG_") && l.ends_with(" is not set"))
        })
        .collect()
}

/// The fragment lines `config` does not honour (olddefconfig drops what a dependency forbids).
fn unmet<'a>(fragment: &'a str, config: &str) -> Vec<&'a str> {
    wanted_lines(fragment)
        .into_iter()
        .filter(|want| {
            if let Some(sym) = want
                .strip_prefix("# ")
                .and_then(|l| l.strip_suffix(" is not set"))
            {
                // Unset is also what an absent symbol means.
                !config.lines().any(|l| l == *want)
                    && config.lines().any(|l| l.starts_with(&format!("{sym}=")))
            } else {
                !config.lines().any(|l| l == *want)
            }
        })
        .collect()
}

/// `<dir>.<suffix>` beside `dir`. Not with_extension: "6.12-iommufd-…" already has a dot.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.{suffix}"))
}

/// Builds (or finds in the cache) the kernel and links `target/vm/kernels/6.12-iommufd` to it.
pub fn ensure(apt: &PrivateApt) -> Result<()> {
    let policy = apt.output(&["policy", SOURCE])?;
    let version = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| *v != "(none)")
        .ok_or_else(|| anyhow!("no {SOURCE} in the Debian archive"))?
        .to_string();
    let recipe = recipe()?;
    let key_input = format!("source {SOURCE} {version}\n{recipe}");
    let key = sha256(key_input.as_bytes())?;
    let root = cache_root()?;
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let dir = root.join(format!("{BUILT}-{}", &key[..12]));
    // Work trees of one machine share the cache: one builds, the others wait for it.
    let lock_path = sibling(&dir, "lock");
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        say(format!(
            "setup: another setup is building {BUILT} (lock {}): waiting for it",
            lock_path.display()
        ));
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
    }
    if !dir.join("package").is_file() {
        crate::setup::ensure_packages(crate::setup::KERNEL_BUILD_PACKAGES)?;
        build(apt, &dir, &version, &recipe)?;
    } else {
        say(format!(
            "setup: kernel {BUILT} found built in {}",
            dir.display()
        ));
    }
    let link = kernels::cache_dir(BUILT);
    if let Some(parent) = link.parent() {
        fs::create_dir_all(parent)?;
    }
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&dir, &link)
        .with_context(|| format!("linking {} to {}", link.display(), dir.display()))?;
    let k = Kernel::get(BUILT)?;
    say(format!(
        "setup: kernel {BUILT} ready: {} ({})",
        k.package, k.release
    ));
    Ok(())
}

fn build(apt: &PrivateApt, dir: &Path, version: &str, recipe: &str) -> Result<()> {
    let src = sibling(dir, "build");
    if !src.join("Makefile").is_file() {
        unpack_source(apt, dir, version, &src)?;
    }
    if !src.join(".config.done").is_file() {
        configure(&src)?;
    }
    let seconds = make(dir, version, &src)?;
    install(dir, version, recipe, &src, seconds)?;
    // The tree is gigabytes of objects; the installed root is what the VM needs.
    let _ = fs::remove_dir_all(&src);
    Ok(())
}

/// Debian's linux-source package, downloaded and unpacked into `src`.
fn unpack_source(apt: &PrivateApt, dir: &Path, version: &str, src: &Path) -> Result<()> {
    let debs = apt.dir.join("debs");
    fs::create_dir_all(&debs)?;
    say(format!("setup: downloading {SOURCE} {version}"));
    apt.run_in(&debs, &["download", "-q", &format!("{SOURCE}={version}")])?;
    let deb = kernels::find_deb(&debs, SOURCE)?;
    let unpacked = sibling(dir, "deb");
    let _ = fs::remove_dir_all(&unpacked);
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    let tarball = unpacked.join(format!("usr/src/{SOURCE}.tar.xz"));
    let _ = fs::remove_dir_all(src);
    fs::create_dir_all(src)?;
    run(Command::new("tar")
        .arg("-xJf")
        .arg(&tarball)
        .arg("--strip-components=1")
        .arg("-C")
        .arg(src))?;
    let _ = fs::remove_dir_all(&unpacked);
    let _ = fs::remove_file(&deb);
    Ok(())
}

/// The base config with the fragment merged; an option the fragment sets that Kconfig dropped
/// (a missing dependency) is an error, not a kernel built without it.
fn configure(src: &Path) -> Result<()> {
    let fragment = fragment_path();
    say(format!(
        "setup: configuring {BUILT}: {BASE_CONFIG}, then {}",
        fragment.display()
    ));
    run(Command::new("make").arg(BASE_CONFIG).current_dir(src))?;
    run(Command::new("scripts/kconfig/merge_config.sh")
        .args(["-m", ".config"])
        .arg(&fragment)
        .current_dir(src))?;
    run(Command::new("make").arg("olddefconfig").current_dir(src))?;
    let config = fs::read_to_string(src.join(".config"))?;
    let text = fs::read_to_string(&fragment)?;
    let missed = unmet(&text, &config);
    if !missed.is_empty() {
        bail!(
            "the {BUILT} config does not honour {}: {}",
            fragment.display(),
            missed.join(", ")
        );
    }
    fs::write(src.join(".config.done"), "")?;
    Ok(())
}

/// `make bzImage modules` at nice 19, its output in a log beside `dir`; the seconds it took.
fn make(dir: &Path, version: &str, src: &Path) -> Result<u64> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    say(format!(
        "setup: building {BUILT} ({SOURCE} {version}) with {jobs} jobs at nice 19: about 12 minutes on 2 idle cores, once per machine; log in {}",
        sibling(dir, "make.log").display()
    ));
    let started = Instant::now();
    let log = fs::File::create(sibling(dir, "make.log"))?;
    let status = Command::new("nice")
        .args([
            "-n",
            "19",
            "make",
            &format!("-j{jobs}"),
            "bzImage",
            "modules",
        ])
        .current_dir(src)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("cannot start make")?;
    if !status.success() {
        bail!(
            "building {BUILT} failed ({status}): see {}",
            sibling(dir, "make.log").display()
        );
    }
    Ok(started.elapsed().as_secs())
}

/// The kernel, its config and its modules installed into `dir` (through a partial directory
/// renamed at the end, so a cut build never looks complete), with what it was built from.
fn install(dir: &Path, version: &str, recipe: &str, src: &Path, seconds: u64) -> Result<()> {
    let release = output(
        Command::new("make")
            .args(["-s", "kernelrelease"])
            .current_dir(src),
    )?
    .trim()
    .to_string();
    let partial = sibling(dir, "partial");
    let _ = fs::remove_dir_all(&partial);
    let boot = partial.join("root/boot");
    fs::create_dir_all(&boot)?;
    fs::copy(
        src.join("arch/x86/boot/bzImage"),
        boot.join(format!("vmlinuz-{release}")),
    )?;
    fs::copy(src.join(".config"), boot.join(format!("config-{release}")))?;
    run(Command::new("make")
        .arg(format!(
            "INSTALL_MOD_PATH={}",
            partial.join("root").display()
        ))
        .args(["INSTALL_MOD_STRIP=1", "modules_install"])
        .current_dir(src))?;
    fs::write(partial.join("build-seconds"), format!("{seconds}\n"))?;
    fs::write(
        partial.join("recipe.sha256"),
        format!("{}\n", sha256(recipe.as_bytes())?),
    )?;
    fs::write(
        partial.join("package"),
        format!("{SOURCE} {version} built with xtask/kernels/{BUILT}.config\n"),
    )?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&partial, dir)
        .with_context(|| format!("moving {} to {}", partial.display(), dir.display()))?;
    say(format!("setup: built {BUILT} ({release}) in {seconds} s"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_keep_the_whole_name() {
        let dir = Path::new("/c/6.12-iommufd-0123456789ab");
        assert_eq!(
            sibling(dir, "build"),
            Path::new("/c/6.12-iommufd-0123456789ab.build")
        );
    }

    #[test]
    fn unmet_lines_are_the_ones_the_config_does_not_carry() {
        let fragment = "# comment\nCONFIG_IOMMUFD=m\nCONFIG_VFIO_DEVICE_CDEV=y\n# CONFIG_A is not set\n# CONFIG_B is not set\n";
        let config = "CONFIG_IOMMUFD=m\n# CONFIG_VFIO_DEVICE_CDEV is not set\nCONFIG_A=y\n";
        assert_eq!(
            unmet(fragment, config),
            vec!["CONFIG_VFIO_DEVICE_CDEV=y", "# CONFIG_A is not set"]
        );
    }
}
