//! Command-line surface. Exit codes: 0 nothing wrong, 1 violations found, 2 error.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const EXIT_OK: u8 = 0;
pub const EXIT_VIOLATIONS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "enforcer", version, about = "Watches and guards IOMMU group ownership")]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub daemon: DaemonArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where to read the node from and which policy to apply; shared by every command.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Root of the sysfs tree to read.
    #[arg(long, global = true, default_value = "/sys", value_name = "DIR")]
    pub sysfs_root: PathBuf,
    /// Root of procfs, searched for processes holding VFIO groups or cdevs open.
    #[arg(long, global = true, default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,
    /// Node policy (TOML).
    #[arg(long, global = true, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// Options of the node agent (no subcommand).
#[derive(Args, Debug, Clone)]
pub struct DaemonArgs {
    /// Observe and report, but veto and pin nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Address of the Prometheus endpoint.
    #[arg(long, default_value = "0.0.0.0:9477", value_name = "ADDR")]
    pub metrics_addr: String,
    /// Path of the eBPF object to load instead of the one built into the binary.
    #[arg(long, value_name = "FILE")]
    pub ebpf_object: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One-shot report: groups, owners, viability with reasons, what the policy would veto.
    Audit(ReportArgs),
    /// The group map alone.
    Groups(ReportArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `enforcer audit`.
pub fn audit(_common: &CommonArgs, _args: &ReportArgs) -> u8 {
    todo!("issue 2: audit")
}

/// `enforcer groups`.
pub fn groups(_common: &CommonArgs, _args: &ReportArgs) -> u8 {
    todo!("issue 2: groups")
}
