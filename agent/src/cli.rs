//! Command-line surface. Exit codes: 0 nothing wrong, 1 violations found (or, for `audit`, scan
//! problems that hide a group's verdict, or reservations that match nothing), 2 error.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const EXIT_OK: u8 = 0;
pub const EXIT_VIOLATIONS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// `enforcer --version`: the version, the commit and the build date (agent/build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ENFORCER_COMMIT"),
    ", built ",
    env!("ENFORCER_BUILD_DATE"),
    ")"
);

/// The node agent when no subcommand is given; its options mean nothing to the subcommands,
/// which take only their own (`enforcer --dry-run audit` is an error, not a silent no-op).
/// `--log-level` and `--log-format` apply to every command.
#[derive(Parser, Debug)]
#[command(
    name = "enforcer",
    version = VERSION,
    about = "Watches and guards IOMMU group ownership"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub daemon: DaemonArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How the log (stderr) is written; every command.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Least severity logged: error, warn, info, debug or trace (or an env_logger filter such as
    /// `info,aya=warn`). Default: $RUST_LOG, else info.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// `text` (a timestamp, the level, the target and the message) or `json` (one object per
    /// line: time, level, target, message).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where to read the node from.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Root of the sysfs tree to read.
    #[arg(long, default_value = "/sys", value_name = "DIR")]
    pub sysfs_root: PathBuf,
    /// Root of procfs, searched for processes holding VFIO groups or cdevs open.
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,
}

/// Where to read the node from and which policy to apply: the agent, `audit` and `groups`.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Root of the sysfs tree to read.
    #[arg(long, default_value = "/sys", value_name = "DIR")]
    pub sysfs_root: PathBuf,
    /// Root of procfs, searched for processes holding VFIO groups or cdevs open.
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,
    /// Node policy (TOML).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// This node's labels, `key=value` lines: reservations scoped with `nodes = { ... }` apply
    /// only on nodes with those labels (the agent also reads NFD's `--nfd-features-dir`).
    #[arg(long, global = true, value_name = "FILE")]
    pub node_labels_file: Option<PathBuf>,
    /// Where the kernels' modules live: the policy's driver names are checked against
    /// `DIR/<running release>/modules.alias` and the drivers in sysfs.
    #[arg(
        long,
        global = true,
        default_value = "/lib/modules",
        value_name = "DIR"
    )]
    pub modules_dir: PathBuf,
}

impl CommonArgs {
    /// The labels of this node (`--node-labels-file`, and the NFD features in `nfd_dir` but
    /// the agent's own file); unreadable sources are said on stderr.
    pub fn node_labels(&self, nfd_dir: Option<&std::path::Path>) -> crate::policy::NodeLabels {
        let (labels, problems) = crate::policy::NodeLabels::read(
            self.node_labels_file.as_deref(),
            nfd_dir,
            crate::nfd::FILE_NAME,
        );
        for p in problems {
            eprintln!("enforcer: warning: {p}");
        }
        labels
    }

    /// The policy's driver names that neither a driver in sysfs nor a module of the running
    /// kernel offers.
    pub fn unknown_drivers(
        &self,
        policy: &crate::policy::Policy,
    ) -> Vec<crate::policy::known_drivers::UnknownDriver> {
        use crate::policy::known_drivers as kd;
        let alias = kd::modules_alias(&self.modules_dir);
        let known = kd::KnownDrivers::read(&self.sysfs_root, alias.as_deref());
        kd::check(policy, &known)
    }
}

/// Where the pins are (`status`, `detach`).
#[derive(Args, Debug, Clone)]
pub struct PinArgs {
    /// Where the agent pinned its programs, links and state maps (on bpffs).
    #[arg(long, default_value = iommu_enforcer_common::pins::ROOT, value_name = "DIR")]
    pub pin_root: PathBuf,
    /// Tests only: read the pins as a version of this map layout would.
    #[arg(long, hide = true, value_name = "N")]
    pub map_layout: Option<u32>,
}

impl PinArgs {
    fn apply_layout(&self) {
        if let Some(layout) = self.map_layout {
            crate::bpf::loader::set_map_layout(layout);
        }
    }
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
    /// Where the programs, links and state maps are pinned (on bpffs); they outlive the agent.
    #[arg(long, default_value = iommu_enforcer_common::pins::ROOT, value_name = "DIR")]
    pub pin_root: PathBuf,
    /// Tests only: pin the state maps as an agent of this map layout version would (the
    /// upgrade and rollback scenario plays an agent of another layout with it).
    #[arg(long, hide = true, value_name = "N")]
    pub map_layout: Option<u32>,
    /// Keep node labels for Node Feature Discovery in DIR/iommu-enforcer (NFD's features.d).
    #[arg(long, value_name = "DIR")]
    pub nfd_features_dir: Option<PathBuf>,
    /// The host's root filesystem, against which policy paths (trusted_writers) are resolved.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub host_root: PathBuf,
    /// The host's cgroup2 mount (or a hybrid host's cgroup root, whose `unified/` is used):
    /// events' cgroup ids are looked up here to name their pod and container.
    #[arg(long, default_value = "/sys/fs/cgroup", value_name = "DIR")]
    pub cgroup_root: PathBuf,
    /// The kubelet's pod-resources socket (/var/lib/kubelet/pod-resources/kubelet.sock): events
    /// on a device a device plugin allocated name its pod (`allocated_to`). Not read when absent.
    #[arg(long, value_name = "PATH")]
    pub pod_resources_socket: Option<PathBuf>,
    /// Container runtime state directories whose children are container ids with their OCI
    /// bundle (containerd's CRI tasks, CRI-O's containers): the policy's `trusted_containers`
    /// are found there. Repeatable or comma-separated; read only when the policy trusts
    /// containers.
    #[arg(
        long,
        value_name = "DIR",
        value_delimiter = ',',
        default_values = crate::pods::containers::DEFAULT_STATE_DIRS
    )]
    pub cri_state_dir: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One-shot report: groups, owners, viability with reasons, what the policy would veto.
    Audit(ReportArgs),
    /// The group map alone.
    Groups(ReportArgs),
    /// What the kernel protects now, from the pinned state (no agent needed): every group in
    /// use, reserved or idle on a user driver, its members, pins and users.
    Status(StatusArgs),
    /// Uninstall: remove the pinned programs, links and maps, so the hooks detach once no agent
    /// holds them. Until then they keep enforcing, with or without an agent. Refused while a
    /// group is in use, unless --force.
    Detach(DetachArgs),
    /// Print a shell completion script for SHELL on stdout.
    Completions(CompletionsArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pins: PinArgs,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Args, Debug, Clone)]
pub struct DetachArgs {
    /// Detach even while groups are in use (their protection ends with it), or when the pins
    /// are of another map layout, whose use this version cannot read.
    #[arg(long)]
    pub force: bool,
    /// Succeed when the pin root does not exist (a node the agent never ran on); without it a
    /// missing pin root is an error (a mistyped --pin-root).
    #[arg(long)]
    pub if_present: bool,
    /// Also remove the agent's Node Feature Discovery label file, DIR/iommu-enforcer.
    #[arg(long, value_name = "DIR")]
    pub nfd_features_dir: Option<PathBuf>,
    #[command(flatten)]
    pub pins: PinArgs,
    #[command(flatten)]
    pub node: NodeArgs,
}

impl Cli {
    /// Parses the command line; the agent's options given with a subcommand are an error (they
    /// would be silently ignored), the log options apply to every command.
    pub fn parse_args() -> Cli {
        Self::parse_from_or_exit(std::env::args_os())
    }

    /// [`Cli::parse_args`] of `argv`: the parsed command line or clap's error.
    pub fn try_parse_args<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(argv)?;
        if let Some((sub, _)) = matches.subcommand() {
            let agent_only: Vec<String> = cmd
                .get_arguments()
                .filter(|a| !a.is_global_set())
                .filter(|a| {
                    matches.value_source(a.get_id().as_str())
                        == Some(clap::parser::ValueSource::CommandLine)
                })
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect();
            if !agent_only.is_empty() {
                return Err(cmd.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "{} is an option of the agent (no subcommand) and means nothing to \
                         `{sub}`; see `enforcer {sub} --help`",
                        agent_only.join(", ")
                    ),
                ));
            }
        }
        Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
    }

    fn parse_from_or_exit<I, T>(argv: I) -> Cli
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_args(argv).unwrap_or_else(|e| e.exit())
    }
}

/// `enforcer completions SHELL`.
pub fn completions(args: &CompletionsArgs) -> u8 {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "enforcer", &mut std::io::stdout());
    EXIT_OK
}

/// The pinned protection state with the node's members and users. Errors on stderr.
fn status_of(node: &NodeArgs, pins: &PinArgs) -> Result<crate::report::status::Status, u8> {
    let state = crate::enforce::pinned::ProtectionState::read(&pins.pin_root).map_err(|e| {
        eprintln!("enforcer: {e}");
        EXIT_ERROR
    })?;
    let mut map = match crate::sysfs::scan(&node.sysfs_root) {
        Ok(scan) => scan.to_map(),
        Err(e) => {
            eprintln!("enforcer: {e}");
            return Err(EXIT_ERROR);
        }
    };
    map.set_holders(crate::sysfs::scan_holders(&node.proc_root, &node.sysfs_root).holders);
    Ok(crate::report::status::Status::new(&state, &map))
}

/// `enforcer status`: exit 0, 2 when the pinned state cannot be read.
pub fn status(args: &StatusArgs) -> u8 {
    args.pins.apply_layout();
    let status = match status_of(&args.node, &args.pins) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if args.json {
        match serde_json::to_string(&status) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("enforcer: {e}");
                return EXIT_ERROR;
            }
        }
    } else {
        print!("{}", status.text());
    }
    EXIT_OK
}

/// `enforcer detach`: exit 0 when the pins are gone (or were never there), 1 when refused
/// because groups are in use, 2 on error.
pub fn detach(args: &DetachArgs) -> u8 {
    use crate::bpf::loader;
    args.pins.apply_layout();
    let root = &args.pins.pin_root;
    match loader::check_pin_root(root) {
        Ok(true) => {}
        Ok(false) if args.if_present => {
            println!("nothing pinned under {}", root.display());
            return clear_labels(args);
        }
        Ok(false) => {
            eprintln!(
                "enforcer detach: {}: no such directory, so nothing of the agent's is pinned \
                 there; check --pin-root (the agent's default is {}), or pass --if-present when \
                 a node without pins is fine",
                root.display(),
                iommu_enforcer_common::pins::ROOT
            );
            return EXIT_ERROR;
        }
        Err(e) => {
            eprintln!("enforcer detach: {e}");
            return EXIT_ERROR;
        }
    }
    let layouts = loader::pinned_layouts(root);
    let own = loader::map_layout();
    let foreign: Vec<u32> = layouts.iter().copied().filter(|l| *l != own).collect();
    if !args.force {
        if !foreign.is_empty() {
            eprintln!(
                "enforcer detach: refused: {} holds the state maps of map layout {} (another \
                 version of the agent; this one reads layout {own}), so it cannot tell which \
                 groups are in use. Detach with that version, or stop every VFIO user on the \
                 node and pass --force.",
                root.display(),
                list(&foreign)
            );
            return EXIT_VIOLATIONS;
        }
        if layouts.contains(&own) {
            let status = match status_of(&args.node, &args.pins) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let in_use = status.in_use();
            if !in_use.is_empty() {
                eprintln!(
                    "enforcer detach: refused, in use: {}; detaching would drop their protection \
                     while user space holds them. Stop their users, or pass --force.",
                    in_use.join("; ")
                );
                return EXIT_VIOLATIONS;
            }
        }
    }
    match loader::detach(root) {
        Ok(n) => {
            println!("removed {n} pins under {}", root.display());
            clear_labels(args)
        }
        Err(e) => {
            eprintln!("enforcer detach: {}: {e}", root.display());
            EXIT_ERROR
        }
    }
}

/// With `--nfd-features-dir`: removes the agent's node-label file, so NFD drops its labels.
fn clear_labels(args: &DetachArgs) -> u8 {
    let Some(dir) = &args.nfd_features_dir else {
        return EXIT_OK;
    };
    let file = dir.join(crate::nfd::FILE_NAME);
    match std::fs::remove_file(&file) {
        Ok(()) => {
            println!("removed {}", file.display());
            EXIT_OK
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => EXIT_OK,
        Err(e) => {
            eprintln!("enforcer detach: {}: {e}", file.display());
            EXIT_ERROR
        }
    }
}

fn list(layouts: &[u32]) -> String {
    layouts
        .iter()
        .map(|l| format!("v{l}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// The kubelet's pod-resources socket: each device a device plugin allocated names its pod
    /// (`allocated_to`).
    #[arg(long, value_name = "PATH")]
    pub pod_resources_socket: Option<PathBuf>,
}

/// `enforcer audit`: every group with owner, viability, reasons and why-shared line, the
/// violations of the policy and what the agent would do. Exit 0 when nothing is wrong, 1 when
/// violations exist, scan problems leave a group's verdict unknown or a reservation matches
/// nothing on the node (a warning on stderr), 2 on error (a bad policy
/// is reported before anything is read).
pub fn audit(args: &ReportArgs) -> u8 {
    let common = &args.common;
    let Some((map, problems, policy)) = load(common) else {
        return EXIT_ERROR;
    };
    // The JSON is written group by group as each is judged (`StreamedAudit`), the text from
    // the whole report.
    let mut audit = if args.json {
        crate::report::Audit::without_groups(&map, problems, &policy)
    } else {
        crate::report::Audit::new(&map, problems, &policy)
    };
    audit.enforcement = crate::report::Enforcement::probe(&common.sysfs_root);
    audit.unknown_drivers = common.unknown_drivers(&policy);
    for d in &audit.unknown_drivers {
        eprintln!("enforcer: warning: {}", d.message);
    }
    let printed = if args.json {
        let table = allocation_table(args);
        write_json(&crate::report::StreamedAudit {
            map: &map,
            policy: &policy,
            allocations: table.as_ref(),
            rest: &audit,
        })
    } else {
        allocations(args, &mut audit.groups);
        print(args, &audit, crate::report::Audit::text)
    };
    if !printed {
        return EXIT_ERROR;
    }
    for r in &audit.unmatched_reservations {
        eprintln!("enforcer: warning: the reservation of {r} matches nothing on this node");
    }
    if audit.violations.is_empty()
        && audit.unmatched_reservations.is_empty()
        && audit.unknown_drivers.is_empty()
        && !audit.scan_problems.iter().any(|p| p.hides_verdict())
    {
        EXIT_OK
    } else {
        EXIT_VIOLATIONS
    }
}

/// `enforcer groups`: the group map alone. Exit 0, 2 on error.
pub fn groups(args: &ReportArgs) -> u8 {
    let Some((map, problems, policy)) = load(&args.common) else {
        return EXIT_ERROR;
    };
    let mut groups = crate::report::Groups::new(&map, problems, &policy);
    allocations(args, &mut groups.groups);
    if print(args, &groups, crate::report::Groups::text) {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}

/// With `--pod-resources-socket`: the pod each device is allocated to. A kubelet that does not
/// answer is said on stderr; the report goes on without.
fn allocations(args: &ReportArgs, groups: &mut [crate::report::GroupReport]) {
    if let Some(table) = allocation_table(args) {
        crate::report::set_allocations(groups, &table);
    }
}

/// The allocation table asked for with `--pod-resources-socket`, if the kubelet answers.
fn allocation_table(args: &ReportArgs) -> Option<crate::pods::resources::Table> {
    use crate::pods::resources;
    let socket = args.pod_resources_socket.as_ref()?;
    match resources::list_blocking(socket, resources::DEADLINE) {
        Ok(pods) => Some(resources::Table::from_pods(&pods)),
        Err(e) => {
            eprintln!(
                "enforcer: pod-resources {} ({}): {e}; devices name no pod",
                socket.display(),
                e.reason()
            );
            None
        }
    }
}

/// Reads the policy (first: a bad policy stops everything), then sysfs and procfs. Errors are
/// printed on stderr.
fn load(
    common: &CommonArgs,
) -> Option<(
    crate::model::GroupMap,
    Vec<crate::sysfs::ScanProblem>,
    crate::policy::Policy,
)> {
    let policy = match &common.policy {
        Some(path) => match crate::policy::Policy::load(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("enforcer: {e}");
                return None;
            }
        },
        None => crate::policy::Policy::default(),
    };
    let policy = policy.for_node(&common.node_labels(None));
    // With a deadline: a device mid-removal can block a sysfs read for as long as its VFIO
    // group is held; the audit says so instead of hanging.
    let root = common.sysfs_root.clone();
    let scan = match crate::io_deadline::run_progressing(
        "sysfs scan",
        crate::io_deadline::SCAN,
        &crate::io_deadline::SCAN_PROGRESS,
        move || crate::sysfs::scan(&root),
    ) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("enforcer: {e}");
            return None;
        }
        Err(stalled) => {
            eprintln!(
                "enforcer: sysfs scan of {}: {stalled}",
                common.sysfs_root.display()
            );
            return None;
        }
    };
    let mut scan = scan;
    let mut problems = std::mem::take(&mut scan.problems);
    let mut map = scan.into_map();
    let (proc_root, sysfs_root) = (common.proc_root.clone(), common.sysfs_root.clone());
    let holders =
        match crate::io_deadline::run("holders scan", crate::io_deadline::SCAN, move || {
            crate::sysfs::scan_holders(&proc_root, &sysfs_root)
        }) {
            Ok(h) => h,
            Err(stalled) => {
                eprintln!(
                    "enforcer: scan of {}/*/fd: {stalled}",
                    common.proc_root.display()
                );
                return None;
            }
        };
    map.set_holders(holders.holders);
    problems.extend(holders.problems);
    log::debug!(
        "read {} groups from {} ({} scan problems)",
        map.groups().count(),
        common.sysfs_root.display(),
        problems.len()
    );
    Some((map, problems, policy))
}

/// Prints `report` as JSON or text; `false` when it could not be serialized or written.
fn print<T: serde::Serialize>(args: &ReportArgs, report: &T, text: fn(&T) -> String) -> bool {
    if args.json {
        return write_json(report);
    }
    print!("{}", text(report));
    true
}

/// Writes `report` as pretty JSON on stdout; `false` when it could not be serialized or written.
fn write_json<T: serde::Serialize>(report: &T) -> bool {
    // Written as it is serialized, not built in memory first: the JSON of a
    // 100,000-device node is about 70 MB.
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, report)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        eprintln!("enforcer: cannot write the report: {e}");
        return false;
    }
    true
}
