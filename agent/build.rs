//! Embeds the eBPF object built by `cargo xtask build-ebpf` (target/ebpf/iommu-enforcer.bpf.o, or
//! $IOMMU_ENFORCER_EBPF_OBJECT). Without it the agent still builds, so the pure parts and
//! `enforcer audit` need no eBPF toolchain; the daemon then refuses to start and says why.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=IOMMU_ENFORCER_EBPF_OBJECT");
    let object = env::var_os("IOMMU_ENFORCER_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
            manifest.join("../target/ebpf/iommu-enforcer.bpf.o")
        });
    println!("cargo:rerun-if-changed={}", object.display());
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("iommu-enforcer.bpf.o");
    let bytes = fs::read(&object).unwrap_or_default();
    fs::write(&out, bytes).expect("OUT_DIR is writable");
}
