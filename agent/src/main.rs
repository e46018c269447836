//! `enforcer`: the node agent (no subcommand), `audit`, `groups`, `status`, `detach` and
//! `completions`.
use std::process::ExitCode;

use iommu_enforcer::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    iommu_enforcer::logging::init(&cli.log);
    let code = match &cli.command {
        Some(Command::Audit(args)) => iommu_enforcer::cli::audit(args),
        Some(Command::Groups(args)) => iommu_enforcer::cli::groups(args),
        Some(Command::Status(args)) => iommu_enforcer::cli::status(args),
        Some(Command::Detach(args)) => iommu_enforcer::cli::detach(args),
        Some(Command::Completions(args)) => iommu_enforcer::cli::completions(args),
        None => iommu_enforcer::daemon::main(&cli.common, &cli.daemon),
    };
    ExitCode::from(code)
}
