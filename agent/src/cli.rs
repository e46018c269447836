//! Command-line surface. Exit codes: 0 nothing wrong, 1 violations found (or, for `audit`, scan
//! problems that hide a group's verdict, or reservations that match nothing), 2 error.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const EXIT_OK: u8 = 0;
pub const EXIT_VIOLATIONS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "enforcer",
    version,
    about = "Watches and guards IOMMU group ownership"
)]
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
    #[arg(long, global = true, default_value = iommu_enforcer_common::pins::ROOT, value_name = "DIR")]
    pub pin_root: PathBuf,
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
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DetachArgs {
    /// Detach even while groups are in use (their protection ends with it).
    #[arg(long)]
    pub force: bool,
}

/// The pinned protection state with the node's members and users. Errors on stderr.
fn status_of(
    common: &CommonArgs,
    daemon: &DaemonArgs,
) -> Result<crate::report::status::Status, u8> {
    let state = crate::enforce::pinned::ProtectionState::read(&daemon.pin_root).map_err(|e| {
        eprintln!("enforcer: {e}");
        EXIT_ERROR
    })?;
    let mut map = match crate::sysfs::scan(&common.sysfs_root) {
        Ok(scan) => scan.to_map(),
        Err(e) => {
            eprintln!("enforcer: {e}");
            return Err(EXIT_ERROR);
        }
    };
    map.set_holders(crate::sysfs::scan_holders(&common.proc_root, &common.sysfs_root).holders);
    Ok(crate::report::status::Status::new(&state, &map))
}

/// `enforcer status`: exit 0, 2 when the pinned state cannot be read.
pub fn status(common: &CommonArgs, daemon: &DaemonArgs, args: &StatusArgs) -> u8 {
    let status = match status_of(common, daemon) {
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
pub fn detach(common: &CommonArgs, daemon: &DaemonArgs, args: &DetachArgs) -> u8 {
    let (maps_dir, _) = crate::bpf::loader::pin_dirs(&daemon.pin_root);
    if maps_dir.exists() && !args.force {
        let status = match status_of(common, daemon) {
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
    match crate::bpf::loader::detach(&daemon.pin_root) {
        Ok(n) => {
            println!("removed {n} pins under {}", daemon.pin_root.display());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("enforcer detach: {}: {e}", daemon.pin_root.display());
            EXIT_ERROR
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
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
pub fn audit(common: &CommonArgs, args: &ReportArgs) -> u8 {
    let Some((map, problems, policy)) = load(common) else {
        return EXIT_ERROR;
    };
    let mut audit = crate::report::Audit::new(&map, problems, &policy);
    audit.enforcement = crate::report::Enforcement::probe(&common.sysfs_root);
    audit.unknown_drivers = common.unknown_drivers(&policy);
    for d in &audit.unknown_drivers {
        eprintln!("enforcer: warning: {}", d.message);
    }
    allocations(args, &mut audit.groups);
    if !print(args, &audit, crate::report::Audit::text) {
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
pub fn groups(common: &CommonArgs, args: &ReportArgs) -> u8 {
    let Some((map, problems, policy)) = load(common) else {
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
    use crate::pods::resources;
    let Some(socket) = &args.pod_resources_socket else {
        return;
    };
    match resources::list_blocking(socket, resources::DEADLINE) {
        Ok(pods) => crate::report::set_allocations(groups, &resources::Table::from_pods(&pods)),
        Err(e) => eprintln!(
            "enforcer: pod-resources {} ({}): {e}; devices name no pod",
            socket.display(),
            e.reason()
        ),
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
    let scan = match crate::io_deadline::run("sysfs scan", crate::io_deadline::SCAN, move || {
        crate::sysfs::scan(&root)
    }) {
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
    let mut map = scan.to_map();
    let mut problems = scan.problems;
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
    Some((map, problems, policy))
}

/// Prints `report` as JSON or text; `false` when it could not be serialized or written.
fn print<T: serde::Serialize>(args: &ReportArgs, report: &T, text: fn(&T) -> String) -> bool {
    if args.json {
        // Written as it is serialized, not built in memory first: the JSON of a
        // 100,000-device node is about 60 MB.
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
    } else {
        print!("{}", text(report));
    }
    true
}
