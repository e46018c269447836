//! `enforcer`: the node agent (no subcommand), `audit`, `groups`, `status` and `detach`.
use std::process::ExitCode;

use clap::Parser;
use iommu_enforcer::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.command {
        Some(Command::Audit(args)) => iommu_enforcer::cli::audit(&cli.common, args),
        Some(Command::Groups(args)) => iommu_enforcer::cli::groups(&cli.common, args),
        Some(Command::Status(args)) => iommu_enforcer::cli::status(&cli.common, &cli.daemon, args),
        Some(Command::Detach(args)) => iommu_enforcer::cli::detach(&cli.common, &cli.daemon, args),
        None => iommu_enforcer::daemon::main(&cli.common, &cli.daemon),
    };
    ExitCode::from(code)
}
