//! Embeds the eBPF object built by `cargo xtask build-ebpf` (target/ebpf/iommu-enforcer.bpf.o;
//! target/ebpf/aarch64/iommu-enforcer.bpf.o for an aarch64 target; or
//! $IOMMU_ENFORCER_EBPF_OBJECT). Without it the agent still builds, so the pure parts and
//! `enforcer audit` need no eBPF toolchain; the daemon then refuses to start and says why.
//!
//! Also sets what `enforcer --version` prints besides the version: `ENFORCER_COMMIT` (the
//! environment's, else `git rev-parse --short=12 HEAD`, else `unknown`) and `ENFORCER_BUILD_DATE`
//! (UTC, from `SOURCE_DATE_EPOCH` when set, for reproducible builds; else today).
use std::{env, fs, path::PathBuf, process::Command};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The date (YYYY-MM-DD) of `secs` since the epoch (H. Hinnant's `civil_from_days`).
fn date(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn version_facts() {
    println!("cargo:rerun-if-env-changed=ENFORCER_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit re-runs this script (HEAD, the branch it names, packed refs).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let (Some(common), Some(branch)) = (
            git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]),
            git(&["symbolic-ref", "-q", "HEAD"]),
        ) {
            println!("cargo:rerun-if-changed={common}/{branch}");
            println!("cargo:rerun-if-changed={common}/packed-refs");
        }
    }
    let commit = env::var("ENFORCER_COMMIT")
        .ok()
        .filter(|c| !c.is_empty() && c != "unknown")
        .map(|c| c.chars().take(12).collect())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    let secs = env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo:rustc-env=ENFORCER_COMMIT={commit}");
    println!("cargo:rustc-env=ENFORCER_BUILD_DATE={}", date(secs));
}

fn main() {
    version_facts();
    println!("cargo:rerun-if-env-changed=IOMMU_ENFORCER_EBPF_OBJECT");
    let object = env::var_os("IOMMU_ENFORCER_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
            // One object per architecture (`cargo xtask build-ebpf` builds each with its
            // `bpf_target_arch`): the one of the target being built, never the host's.
            match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
                Ok("aarch64") => manifest.join("../target/ebpf/aarch64/iommu-enforcer.bpf.o"),
                _ => manifest.join("../target/ebpf/iommu-enforcer.bpf.o"),
            }
        });
    println!("cargo:rerun-if-changed={}", object.display());
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("iommu-enforcer.bpf.o");
    let bytes = fs::read(&object).unwrap_or_default();
    fs::write(&out, bytes).expect("OUT_DIR is writable");
}
