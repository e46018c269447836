//! The two architectures the agent, its eBPF object, the image and the test node are built for.
//! Everything arch-specific in the xtask is looked up here, from the target, never guessed at
//! run time.
use std::path::PathBuf;

use crate::util::target_dir;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// Debian's and OCI's name: `amd64`, `arm64`.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The static agent's Rust target. x86_64: glibc with crt-static (what the node always
    /// used); arm64: musl, static by default, linked by Debian's aarch64-linux-gnu-gcc against
    /// the target's self-contained crt objects (no C code in the dependency tree).
    pub fn rust_triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// `--cfg bpf_target_arch=...` of the eBPF build: selects aya's `pt_regs` layout for
    /// kprobes and the syscall ABI of ebpf/src/syscall_abi.rs.
    pub fn bpf_target_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// Where the eBPF object for this architecture goes (agent/build.rs reads the same path
    /// for its own target).
    pub fn ebpf_object(self) -> PathBuf {
        match self {
            Arch::X86_64 => target_dir().join("ebpf/iommu-enforcer.bpf.o"),
            Arch::Arm64 => target_dir().join("ebpf/aarch64/iommu-enforcer.bpf.o"),
        }
    }

    /// ELF `e_machine` of its binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// The architecture of a kernel series (`arm64-6.12` is arm64, `6.12` x86_64).
    pub fn of_series(series: &str) -> Arch {
        if series.starts_with("arm64-") {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names_say_their_architecture() {
        assert_eq!(Arch::of_series("arm64-6.12"), Arch::Arm64);
        assert_eq!(Arch::of_series("6.12-iommufd"), Arch::X86_64);
        assert_eq!(Arch::parse("aarch64"), Some(Arch::Arm64));
        assert_ne!(Arch::X86_64.ebpf_object(), Arch::Arm64.ebpf_object());
    }
}
