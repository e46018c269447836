//! The node agent: probes the kernel, loads and attaches the eBPF programs it supports, scans
//! sysfs, then keeps the group map current from kernel events, printing one JSON line per event
//! and per verdict change (docs/events.md). Detaches and exits cleanly on SIGTERM/SIGINT.
pub mod output;
mod scan;
pub mod state;
mod vfio_nodes;

use std::{collections::BTreeMap, path::Path, time::Duration};

use aya::maps::{MapData, RingBuf};
use log::{error, info, warn};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use self::{
    output::{emit, Line},
    state::{FollowUp, NodeState, ProbeConvention},
};
use crate::{
    bpf::{
        self,
        features::Features,
        loader::{self, Loaded},
        record,
    },
    cli::{CommonArgs, DaemonArgs, EXIT_ERROR, EXIT_OK},
    enforce::{self, lsm_maps::LsmMaps, Enforcer},
    policy::Policy,
};

/// How often holders are re-read (closing a VFIO file produces no event) and losses checked.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often module kprobe targets that were absent are looked for again.
const MODULE_RETRY: Duration = Duration::from_secs(5);
const DEV_ROOT: &str = "/dev";

pub fn run(common: &CommonArgs, args: &DaemonArgs) -> u8 {
    init_logging();
    let policy = match &common.policy {
        Some(path) => match Policy::load(path) {
            Ok(p) => p,
            Err(e) => {
                error!("{e}");
                eprintln!("enforcer: {e}");
                return EXIT_ERROR;
            }
        },
        None => Policy::default(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("enforcer: cannot start the runtime: {e}");
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(agent(common, args, policy)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("enforcer: {e:#}");
            EXIT_ERROR
        }
    }
}

fn init_logging() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.target(env_logger::Target::Stderr).init();
}

fn object_bytes(args: &DaemonArgs) -> anyhow::Result<std::borrow::Cow<'static, [u8]>> {
    Ok(match &args.ebpf_object {
        Some(path) => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .into(),
        None => bpf::EMBEDDED_OBJECT.into(),
    })
}

async fn agent(common: &CommonArgs, args: &DaemonArgs, policy: Policy) -> anyhow::Result<()> {
    let mut features = Features::probe(&common.sysfs_root, &common.proc_root);
    info!(
        "kernel {}: BTF {}, BPF LSM {}, DMA-ownership functions {}",
        features.kernel_release,
        if features.btf.is_ok() {
            "present"
        } else {
            "missing"
        },
        if features.bpf_lsm_active() {
            "active"
        } else {
            "inactive"
        },
        if features.has_dma_ownership() {
            "present (5.19+)"
        } else {
            "absent (pre-5.19: a mixed group BUG()s the kernel)"
        },
    );
    let object = object_bytes(args)?;
    let settings = loader::Settings {
        dry_run: args.dry_run,
        agent_tgid: std::process::id(),
    };
    let mut loaded = loader::load(&object, &features, settings)?;
    loaded.attach_all(&features);
    emit(&[capabilities(&features, &loaded, args.dry_run)]);
    if !features.bpf_lsm_active() {
        warn!("BPF LSM is not active on this kernel: vetoes are unavailable; reservation still protects reserved groups");
    }
    let lsm_maps = if loaded.lsm_attached() {
        Some(LsmMaps::take(&mut loaded)?)
    } else {
        None
    };
    for (target, status) in loaded.report() {
        info!("{target}: {status}");
    }
    // Must stay alive, or the programs' log lines are dropped (DESIGN.md section 5).
    let mut ebpf_logger = loaded.logger().map(watch).transpose()?;

    let map = scan::group_map(&common.sysfs_root)?;
    let convention = ProbeConvention::for_release(&features.kernel_release);
    let mut enforcer = Enforcer::new(&common.sysfs_root, Path::new(DEV_ROOT), args.dry_run, lsm_maps, &policy);
    let mut node = NodeState::new(map, policy, convention);
    let mut lines = node.set_holders(scan::holders(&common.proc_root, &common.sysfs_root));
    lines.extend(node.changed_verdicts());
    lines.extend(enforcer.apply(&mut node));
    lines.push(Line::Ready {
        groups: node.map().groups().count(),
    });
    emit(&lines);

    let mut events = watch(loaded.take_events()?)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let mut module_retry = tokio::time::interval(MODULE_RETRY);
    let mut lost_seen = loaded.lost_total().unwrap_or(0);
    let mut nodes = vfio_nodes::vfio_nodes(Path::new(DEV_ROOT));

    let signal_name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            guard = events.readable_mut() => {
                let mut guard = guard?;
                guard.clear_ready();
                drain(guard.get_inner_mut(), &mut node, &mut enforcer, &mut nodes, common);
            }
            guard = async {
                match ebpf_logger.as_mut() {
                    Some(l) => l.readable_mut().await,
                    None => std::future::pending().await,
                }
            } => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = housekeeping.tick() => {
                let lost = loaded.lost_total().unwrap_or(lost_seen);
                if lost > lost_seen {
                    // Records were dropped: say how many, then rebuild the map from sysfs.
                    emit(&[Line::Lost { count: lost - lost_seen }]);
                    lost_seen = lost;
                    follow_up(&mut node, &mut enforcer, FollowUp { rescan_sysfs: true, rescan_holders: true }, common);
                } else {
                    follow_up(&mut node, &mut enforcer, FollowUp { rescan_sysfs: false, rescan_holders: true }, common);
                }
                // Belt and braces: a wakeup raced with clear_ready must not strand records.
                drain(events.get_mut(), &mut node, &mut enforcer, &mut nodes, common);
            }
            _ = module_retry.tick(), if loaded.waiting_for_targets() => {
                features.refresh_symbols(&common.proc_root);
                let before = loaded.attached_count();
                loaded.attach_all(&features);
                if loaded.attached_count() != before {
                    info!("module probes attached after their module loaded");
                    emit(&[capabilities(&features, &loaded, args.dry_run)]);
                }
            }
        }
    };
    drop(events);
    drop(loaded); // detaches every program
    emit(&[Line::Shutdown {
        signal: signal_name.to_owned(),
    }]);
    info!("{signal_name}: programs detached, exiting");
    Ok(())
}

/// Registers a ring buffer (events or aya-log's) with the runtime for readiness.
fn watch<T: std::os::fd::AsRawFd>(ring: T) -> anyhow::Result<AsyncFd<T>> {
    // SAFETY: both ring buffer types own their map fd and keep it open until they are dropped,
    // which is after the AsyncFd that wraps them.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("epoll registration failed: {e}"))
}

/// Reads every record in the ring buffer, applies it to the node, prints the resulting lines.
fn drain(
    ring: &mut RingBuf<MapData>,
    node: &mut NodeState,
    enforcer: &mut Enforcer,
    nodes: &mut BTreeMap<(u32, u32), String>,
    common: &CommonArgs,
) {
    let mut follow = FollowUp::default();
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        let ev = match record::decode(&item) {
            Ok(ev) => ev,
            Err(e) => {
                warn!("dropping a malformed ring-buffer record: {e}");
                continue;
            }
        };
        let path = ev.rdev.map(|rdev| {
            if !nodes.contains_key(&rdev) {
                *nodes = vfio_nodes::vfio_nodes(Path::new(DEV_ROOT));
            }
            nodes
                .get(&rdev)
                .cloned()
                .unwrap_or_else(|| format!("char {}:{}", rdev.0, rdev.1))
        });
        let (lines, f) = node.apply(&ev, path);
        out.extend(lines);
        follow.rescan_sysfs |= f.rescan_sysfs;
        follow.rescan_holders |= f.rescan_holders;
    }
    emit(&out);
    follow_up(node, enforcer, follow, common);
}

/// Re-reads what the events say changed, then lets the enforcer catch up with the node.
fn follow_up(node: &mut NodeState, enforcer: &mut Enforcer, follow: FollowUp, common: &CommonArgs) {
    let mut lines = Vec::new();
    if follow.rescan_sysfs {
        enforcer.forget_inodes();
        match scan::group_map(&common.sysfs_root) {
            Ok(map) => lines.extend(node.resync(map)),
            Err(e) => warn!("resync from sysfs failed, keeping the live map: {e}"),
        }
    }
    if follow.rescan_holders {
        lines.extend(node.set_holders(scan::holders(&common.proc_root, &common.sysfs_root)));
    }
    lines.extend(enforcer.apply(node));
    emit(&lines);
}

fn capabilities(features: &Features, loaded: &Loaded, dry_run: bool) -> Line {
    let status = enforce::status(features.bpf_lsm_active(), loaded.lsm_attached(), dry_run);
    Line::Capabilities {
        enforcement: BTreeMap::from([
            ("lsm".to_string(), status.lsm),
            ("reservation".to_string(), status.reservation),
        ]),
        kernel: features.kernel_release.clone(),
        btf: features.btf.is_ok(),
        bpf_lsm: features.bpf_lsm_active(),
        dry_run,
        programs: loaded
            .report()
            .into_iter()
            .map(|(t, s)| (t.to_owned(), s.to_string()))
            .collect(),
    }
}
