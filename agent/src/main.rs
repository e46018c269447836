//! `enforcer`: the node agent (no subcommand), `audit`, `groups` and `detach`.
use std::process::ExitCode;

use clap::Parser;
use iommu_enforcer::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.command {
        Some(Command::Audit(args)) => iommu_enforcer::cli::audit(&cli.common, args),
        Some(Command::Groups(args)) => iommu_enforcer::cli::groups(&cli.common, args),
        Some(Command::Detach) => iommu_enforcer::cli::detach(&cli.daemon),
        None => iommu_enforcer::daemon::main(&cli.common, &cli.daemon),
    };
    ExitCode::from(code)
}
