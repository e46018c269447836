//! `cargo xtask`: toolchain set-up, the eBPF build and the QEMU test node.
mod arch;
mod artifacts;
mod bench;
mod checks;
mod cpio;
mod doc_paths;
mod elf;
mod fuzz;
mod idle;
mod image;
mod initramfs;
mod kbuild;
mod kernels;
mod lint;
mod man;
mod metrics_scrape;
mod modules;
mod qemu;
mod release;
mod scenarios;
mod setup;
mod test_all;
mod topology;
mod util;
mod vm;
mod vmtest;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, toolchain set-up and the QEMU test node"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the VM need (idempotent; needs root on a fresh machine).
    Setup,
    /// Build the eBPF programs into target/ebpf/iommu-enforcer.bpf.o (arm64:
    /// target/ebpf/aarch64/iommu-enforcer.bpf.o).
    BuildEbpf {
        /// Target architecture of the programs (their kprobe and syscall register layout).
        #[arg(long, default_value = "x86_64", value_parser = ["x86_64", "arm64"])]
        arch: String,
    },
    /// Boot the test node once and print the agent's JSON lines and the final audit JSON.
    Vm {
        /// Kernel series to boot (arm64: 6.1 or 6.12).
        #[arg(long, value_parser = ["5.10", "6.1", "6.12", "7.3", "6.12-iommufd"])]
        kernel: Option<String>,
        /// The node's architecture: x86_64 (q35, intel-iommu) or arm64 (virt, SMMUv3).
        #[arg(long, default_value = "x86_64", value_parser = ["x86_64", "arm64"])]
        arch: String,
        /// Run the agent with --dry-run.
        #[arg(long)]
        dry_run: bool,
        /// Policy file for the agent and the final audit.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Guest script run by busybox sh (default: tests/vm/demo.sh).
        #[arg(long, value_name = "FILE")]
        script: Option<PathBuf>,
        /// Appended to the kernel command line.
        #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
        cmdline: Option<String>,
    },
    /// Every VM scenario on every kernel it applies to.
    VmTest {
        /// Only these kernel series (comma-separated; the arm64 node's are arm64-6.1 and
        /// arm64-6.12).
        #[arg(long)]
        kernel: Option<String>,
        /// Only these scenarios (comma-separated names).
        #[arg(long)]
        scenario: Option<String>,
        /// Boots run at the same time.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
    },
    /// Cost of the agent's LSM hooks on open(): tests/vm/bench.sh in one boot.
    VmBench {
        /// Kernel series to boot.
        #[arg(long, default_value = "6.1", value_parser = ["5.10", "6.1", "6.12", "7.3", "6.12-iommufd"])]
        kernel: String,
        /// Policy file for the agent.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// pread/pwrite calls per measurement (open()+close(): a fifth of it; with --icount a
        /// tenth of it, since counts are exact).
        #[arg(long, default_value_t = 200_000)]
        iterations: u32,
        /// Make a VFIO group non-viable first, so the file_open hook is attached while measuring.
        #[arg(long)]
        non_viable_group: bool,
        /// Exact instruction counts: QEMU's `-icount shift=0`, a group in use, each loop
        /// detached, with an empty program and attached; fails above the goals (read/write
        /// <= 1.02x detached, open+close <= 1.03x).
        #[arg(long)]
        icount: bool,
    },
    /// The idle agent's wakeups, CPU ticks and RSS, on the test node and on a synthetic tree of
    /// 1,000 devices: tests/vm/idle.sh in one boot.
    VmIdle {
        /// Kernel series to boot.
        #[arg(long, default_value = "6.12", value_parser = ["5.10", "6.1", "6.12"])]
        kernel: String,
        /// Seconds idle per phase.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Devices in the synthetic sysfs tree.
        #[arg(long, default_value_t = 1000)]
        devices: u32,
    },
    /// A real Prometheus scrapes the agent in the test node; every dashboard query is evaluated.
    VmMetrics {
        /// Kernel series to boot.
        #[arg(long, default_value = "6.1", value_parser = ["5.10", "6.1", "6.12", "7.3", "6.12-iommufd"])]
        kernel: String,
    },
    /// A short run of every fuzz target under fuzz/ (installs cargo-fuzz if missing; nightly).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Build the agent image without a registry (FROM scratch, podman/buildah from Debian,
    /// installed when missing) as localhost/iommu-enforcer:<version>, and smoke-test it in podman.
    Image,
    /// A release under target/release/<version>/: the image (built, smoke-tested, saved as an
    /// OCI archive), the manifests with its reference pinned, man pages, completions, SHA256SUMS.
    Release {
        /// Tag and pin the image as REGISTRY/iommu-enforcer:<version> (default: the local tag).
        #[arg(long, value_name = "REGISTRY")]
        registry: Option<String>,
    },
    /// cargo fmt --check, cargo clippy -D warnings and shellcheck on every shell script (the
    /// first step of `cargo xtask test`).
    Lint,
    /// Man pages of `enforcer` and its subcommands from its clap definitions (target/man/).
    Man {
        /// Directory for the pages (default target/man).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The whole test suite: setup if needed, lint (fmt, clippy, shellcheck), cargo test --workspace, the deploy checks, the
    /// fuzz targets (30 s each), the image, vm-metrics, then vm-test.
    Test,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<bool> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup().map(|()| true),
        Cmd::BuildEbpf { arch } => {
            setup::ensure()?;
            let arch = arch::Arch::parse(&arch).unwrap_or(arch::Arch::X86_64);
            artifacts::build_ebpf_for(arch).map(|()| true)
        }
        Cmd::Vm {
            kernel,
            arch,
            dry_run,
            policy,
            script,
            cmdline,
        } => vm::vm(&vm::VmArgs {
            kernel: vm::series_for(&arch, kernel)?,
            dry_run,
            policy,
            script,
            cmdline,
        }),
        Cmd::VmTest {
            kernel,
            scenario,
            jobs,
        } => {
            let (passed, failed) = vmtest::vm_test(&vmtest::Filter {
                kernel,
                scenario,
                jobs,
            })?;
            println!("{passed} passed, {failed} failed");
            Ok(failed == 0 && passed > 0)
        }
        Cmd::VmMetrics { kernel } => metrics_scrape::vm_metrics(&kernel),
        Cmd::VmIdle {
            kernel,
            seconds,
            devices,
        } => idle::vm_idle(&kernel, seconds, devices),
        Cmd::VmBench {
            kernel,
            policy,
            iterations,
            non_viable_group,
            icount,
        } => bench::vm_bench(&bench::BenchArgs {
            kernel,
            policy,
            // Counts are exact: a tenth of the calls measures as well.
            iterations: if icount { iterations / 10 } else { iterations },
            non_viable: non_viable_group,
            icount,
        }),
        Cmd::Fuzz { seconds } => fuzz::fuzz(seconds),
        Cmd::Image => image::image().map(|()| true),
        Cmd::Release { registry } => release::release(registry).map(|()| true),
        Cmd::Lint => lint::lint(),
        Cmd::Man { out } => man::man(out).map(|()| true),
        Cmd::Test => test_all::test(),
    }
}
