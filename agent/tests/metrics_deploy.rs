//! deploy/ against the agent itself: the DaemonSet's args (and the audit overlay's --dry-run)
//! are accepted by the real command line, the example policy in the ConfigMap loads, and the
//! metrics address they give parses.
mod metrics_support;

use clap::Parser;
use iommu_enforcer::{cli::Cli, metrics::parse_addr, policy::Policy};
use metrics_support::root;

/// The `args:` list of the agent container in deploy/base/daemonset.yaml (a flat list of
/// plain scalars, as written there).
fn daemonset_args() -> Vec<String> {
    let path = root().join("deploy/base/daemonset.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut args = Vec::new();
    for line in lines.by_ref() {
        match line.trim().strip_prefix("- ") {
            Some(arg) => args.push(arg.trim_matches('"').to_owned()),
            None => break,
        }
    }
    assert!(!args.is_empty(), "no args: list in {}", path.display());
    args
}

#[test]
fn daemonset_args_parse_with_the_agent_cli_in_both_modes() {
    let args = daemonset_args();
    for extra in [None, Some("--dry-run")] {
        let argv = std::iter::once("enforcer".to_owned())
            .chain(args.iter().cloned())
            .chain(extra.map(str::to_owned));
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?} {extra:?}: {e}"));
        assert!(
            cli.command.is_none(),
            "the DaemonSet runs the agent, not a subcommand"
        );
        assert_eq!(cli.daemon.dry_run, extra.is_some());
        assert_eq!(cli.daemon.metrics_addr, "0.0.0.0:9477");
        assert_eq!(cli.common.proc_root.to_str(), Some("/host/proc"));
        assert_eq!(
            cli.common.policy.as_deref().and_then(|p| p.to_str()),
            Some("/etc/iommu-enforcer/policy.toml")
        );
        let addr = parse_addr(&cli.daemon.metrics_addr).expect("the address parses");
        assert_eq!(addr.port(), 9477);
    }
}

#[test]
fn the_example_policy_in_the_configmap_loads() {
    let path = root().join("deploy/base/policy.toml");
    Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
}
