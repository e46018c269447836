//! Embeds the eBPF object built by `cargo xtask build-ebpf` (target/ebpf/iommu-enforcer.bpf.o;
//! target/ebpf/aarch64/iommu-enforcer.bpf.o for an aarch64 target; or
//! $IOMMU_ENFORCER_EBPF_OBJECT). Without it the agent still builds, so the pure parts and
//! `enforcer audit` need no eBPF toolchain; the daemon then refuses to start and says why.
use std::{env, fs, path::PathBuf};

fn main() {
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
