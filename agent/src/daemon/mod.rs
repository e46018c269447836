//! The node agent: probes the kernel, loads and attaches the eBPF programs it supports, scans
//! sysfs, then keeps the group map current from kernel events, printing one JSON line per event
//! and per verdict change (docs/events.md). Detaches and exits cleanly on SIGTERM/SIGINT.
//!
//! Event-driven: the loop wakes for ring-buffer records, log lines, signals and inotify (the
//! trusted writers' paths, the policy file's directory: a changed policy is applied live) only. Holders
//! follow the open and release records, losses are read after each drain, absent kprobe
//! targets are looked for again when a `module_load` record says a module loaded, and kept
//! pins are re-read when a `driver_override` store is recorded. procfs is scanned at start and
//! on a resync after lost records. Timers are armed only while something is pending: the pin
//! poll of a kernel where the pin watch's program cannot attach, the retry of a pin or rebind
//! write that failed (100 ms doubling to 5 s), and the 1 s re-read while records are being
//! lost. An idle agent arms none.
mod accounting;
mod attribution;
mod live;
pub mod output;
mod policy_reload;
pub mod privileges;
mod scan;
mod unmatched;
mod vfio_nodes;

use std::{fs, os::unix::fs::MetadataExt, path::PathBuf, sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use log::{info, warn};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, Signal, SignalKind},
};

use iommu_enforcer_schema::{HookState, Line};

use self::{live::Live, output::Sink};
use crate::{
    bpf::{
        self,
        features::Features,
        loader::{self, Loaded},
    },
    cli::{CommonArgs, DaemonArgs, EXIT_ERROR, EXIT_OK},
    enforce::{self, kernel_maps::KernelMaps, sysfs_files::kernel_dev, Enforcer},
    metrics::{self, Limits, Metrics},
    nfd,
    node::{FollowUp, NodeState, ProbeConvention},
    pods::containers::{StateWatch, TrustedContainers, BACKOFF},
    policy::{
        watch::{self as policy_file, PolicyWatch},
        writer_watch::WriterWatch,
        Policy,
    },
};

const DEV_ROOT: &str = "/dev";
/// How often kept pins are compared with sysfs where no program records `driver_override`
/// stores (its target absent or refused): the only timer, armed only there and only while the
/// agent keeps pins, since a cleared pin must come back before a driver binds.
const PIN_POLL: Duration = Duration::from_secs(1);

/// The daemon's entry point: the policy, the runtime, the agent; its exit code.
pub fn main(common: &CommonArgs, args: &DaemonArgs) -> u8 {
    if let Some(layout) = args.map_layout {
        loader::set_map_layout(layout);
    }
    let policy = match &common.policy {
        Some(path) => match policy_file::load(path) {
            Ok(p) => p,
            Err(e) => {
                // Before anything is loaded or pinned: the error, exit 2, nothing else.
                eprintln!("enforcer: {e}");
                return EXIT_ERROR;
            }
        },
        None => (Policy::default(), policy_file::default_digest()),
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

fn object_bytes(args: &DaemonArgs) -> anyhow::Result<std::borrow::Cow<'static, [u8]>> {
    Ok(match &args.ebpf_object {
        Some(path) => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .into(),
        None => bpf::EMBEDDED_OBJECT.into(),
    })
}

/// The agent: [`start`] until `ready`, then [`run`] until a signal.
async fn agent(
    common: &CommonArgs,
    args: &DaemonArgs,
    policy: (Policy, String),
) -> anyhow::Result<()> {
    let labels = args.nfd_features_dir.clone();
    let (policy, digest) = policy;
    let policy = scoped(common, labels.as_deref(), policy);
    let started = start(common, args, (policy, digest)).await?;
    run(
        started,
        common,
        args.dry_run,
        &args.pin_root,
        labels.as_deref(),
    )
    .await
}

/// `policy` as it applies to this node (reservations scoped to other nodes' labels left
/// out), its driver names checked against what the kernel offers (warnings in the log).
fn scoped(common: &CommonArgs, nfd_dir: Option<&std::path::Path>, policy: Policy) -> Policy {
    let policy = policy.for_node(&common.node_labels(nfd_dir));
    for d in common.unknown_drivers(&policy) {
        warn!("policy: {}", d.message);
    }
    policy
}

/// What a started agent runs on: the live state and every source the loop waits on.
struct Started {
    live: Live,
    features: Features,
    metrics: Arc<Metrics>,
    events: AsyncFd<RingBuf<MapData>>,
    writers: Option<AsyncFd<WriterWatch>>,
    /// The `--policy` file's directory, watched: a changed file is applied (or rejected).
    policy: Option<AsyncFd<PolicyWatch>>,
    host_root: PathBuf,
    /// The container runtimes' state directories, when the policy trusts containers.
    containers: Option<AsyncFd<StateWatch>>,
    term: Signal,
    int: Signal,
}

/// Everything up to `ready`: signal handlers, metrics endpoint, probe, load, scan, seed,
/// attach, the start lines and the records a previous agent left in the ring.
async fn start(
    common: &CommonArgs,
    args: &DaemonArgs,
    (policy, digest): (Policy, String),
) -> anyhow::Result<Started> {
    // Handlers first: a SIGTERM that arrives while the agent starts (or right after `ready`,
    // while it frees the BTF) is kept for the loop ([`run`]), not the default action that ends the
    // process without its `shutdown` line.
    let term = signal(SignalKind::terminate())?;
    let int = signal(SignalKind::interrupt())?;
    // The endpoint first: a bad --metrics-addr is an error before anything is attached.
    let metrics = Arc::new(Metrics::new()?);
    // Before the server: its connection cap is a reserve below this limit.
    raise_nofile_limit();
    // Serve /healthz at once, from a thread of its own; /readyz says 503 until the first scan
    // is done.
    let limits = Limits::default();
    let bound = metrics::serve_on_thread(&args.metrics_addr, Arc::clone(&metrics), limits).await?;
    info!(
        "metrics on http://{bound}/metrics (at most {} connections, {} s to send a request, {} s to take a response)",
        limits.max_connections,
        limits.header_timeout.as_secs(),
        limits.write_timeout.as_secs()
    );
    raise_memlock_limit();
    // stdout through a bounded queue to a thread of its own: a log shipper that stops reading
    // fills the queue (lines then dropped and counted), never the event loop.
    let sink = Sink::new(Some(Arc::clone(&metrics)))
        .with_nfd(args.nfd_features_dir.as_deref())
        .queued(output::QUEUE_LINES)?;

    let mut features = Features::probe(
        &common.sysfs_root,
        &common.proc_root,
        bpf::programs::kprobe_targets(),
    );
    log_features(&features);
    // Before anything is loaded: a missing capability named, not a failed map creation.
    privileges::check(&args.pin_root).map_err(anyhow::Error::msg)?;
    let object = object_bytes(args)?;
    let mut loaded = loader::load(&object, &features, &args.pin_root)?;
    let kernel = KernelMaps::take(&mut loaded)?;
    let mut events = watch(loaded.take_events()?)?;
    let (start, ledger) = accounting::begin(&mut loaded);
    if !features.bpf_lsm_active() {
        warn!("BPF LSM is not active on this kernel: vetoes are unavailable; reservation still protects reserved groups");
    }

    let map = scan::group_map(&common.sysfs_root)?;
    let dev_root = PathBuf::from(DEV_ROOT);
    let fresh = loaded.fresh_maps;
    // The writers as the host names them, watched so that one installed or replaced later is
    // trusted when it happens.
    let writers = WriterWatch::new(&args.host_root, &policy.trusted_writers)
        .map_err(|e| {
            warn!("trusted writers: cannot watch their paths ({e}); they are resolved once, now")
        })
        .ok()
        .flatten()
        .map(watch)
        .transpose()?;
    // The policy file live: watched from before its first use, so no change is missed.
    let policy_watch = common
        .policy
        .as_deref()
        .map(|path| PolicyWatch::new(path, &digest))
        .transpose()
        .map_err(|e| warn!("policy: cannot watch the file ({e}); changes need a restart"))
        .ok()
        .flatten()
        .map(watch)
        .transpose()?;
    let policy_line = policy_reload::applied(common.policy.as_deref(), &digest);
    // Watched before the first scan, so a container that appears in between is not missed.
    let containers = watch_containers(&policy, &args.cri_state_dir)?;
    let trusted_containers = TrustedContainers::new(
        &args.cri_state_dir,
        &args.cgroup_root,
        &policy.trusted_containers,
    );
    let policy = crate::policy::host_path::for_host(&args.host_root, policy);
    let enforcer = Enforcer::new(
        &common.sysfs_root,
        &dev_root,
        args.dry_run,
        Some(kernel),
        &policy,
    )
    .with_proc_root(&common.proc_root)
    .with_metrics(Some(Arc::clone(&metrics)));
    let mut enforcer = enforcer;
    if loaded.pinning() {
        // The hooks guard the pins on this bpffs instance while anything is protected.
        let (maps_dir, links_dir) = loader::pin_dirs(&args.pin_root);
        let dirs = [&args.pin_root, &maps_dir, &links_dir].map(fs::metadata);
        match dirs {
            [Ok(root), Ok(maps), Ok(links)] => enforcer.set_pins(
                kernel_dev(root.dev()),
                [root.ino(), maps.ino(), links.ino()].map(|i| i as u32),
            ),
            _ => warn!(
                "{}: cannot stat the pin directories: the pins are not guarded",
                args.pin_root.display()
            ),
        }
    }
    let node = NodeState::new(
        map,
        policy,
        ProbeConvention::for_release(&features.kernel_release),
    );
    let mut live = Live::new(
        loaded,
        node,
        enforcer,
        sink,
        live::Roots {
            sysfs: common.sysfs_root.clone(),
            proc: common.proc_root.clone(),
            dev: dev_root,
        },
        attribution::Attribution::new(&args.cgroup_root)
            .with_pod_resources(args.pod_resources_socket.as_deref(), Some(&metrics)),
    );
    live.ledger = ledger;
    live.containers = Some(trusted_containers);
    // Before the first apply: the kernel map starts with the containers running now.
    live.scan_containers(&[]);
    let holders = scan::holders(&common.proc_root, &common.sysfs_root);
    // The first verdict of every group: printed after the capability line, below.
    let start_verdicts = live.node.set_holders(holders);
    if fresh {
        live.enforcer.seed(&live.node, features.has_dma_ownership());
    } else {
        info!("adopting the protection state a previous agent left pinned");
    }
    // The maps hold the topology and policy before any program that reads them attaches; a
    // previous agent's programs stay attached until these replace them.
    let mut first = live.enforce();
    live.loaded.attach_all(&features);
    // Opens are counted once the open hook runs and something that outlives the agent uncounts
    // them (the free hook, attached first, or from 5.15 VFIO's release kprobe, a pinned link):
    // from then on a group bound to vfio-pci but not open is idle, and may be handed back.
    let report = live.loaded.report();
    let attached = |h: &str| report.get(h).is_some_and(|s| s.is_attached());
    let counted = features.bpf_lsm_active()
        && attached("file_open")
        && (attached(bpf::programs::FREE_HOOK) || features.kprobe_links_pinned());
    live.enforcer.set_opens_counted(counted);
    // An earlier agent may have left the write-time check attached: this one took it over.
    live.enforcer
        .set_write_armed(live.loaded.write_check_armed());
    info!(
        "VFIO opens {}",
        if counted {
            "are counted by the LSM file hooks: protection follows use"
        } else {
            "are not counted by anything that outlives the agent: a group bound to a user driver stays protected"
        }
    );
    first.extend(live.enforce());
    let caps = capabilities(&features, &live.loaded, args.dry_run);
    live.sink.track(&live.node);
    live.sink.emit(&[caps, policy_line]);
    for (target, status) in live.loaded.report() {
        info!("{target}: {status}");
    }
    // Decided once: the program is a vmlinux function's, it does not come later.
    // Said once here; `run` arms its poll on the same status.
    if !live.loaded.pin_watch_attached() {
        warn!("pin watch: {}", pin_watch(&live.loaded));
    } else {
        info!("pin watch: {}", pin_watch(&live.loaded));
    }
    let hooks: Vec<Line> = ["kernfs_init_security", "file_open", "file_permission"]
        .into_iter()
        .filter_map(|h| {
            let state = match live.loaded.report().get(h)? {
                s if s.is_attached() => HookState::Attached,
                loader::ProgramStatus::Standby => HookState::Standby,
                _ => return None,
            };
            Some(Line::LsmHook {
                hook: h.to_string(),
                state,
            })
        })
        .collect();
    live.sink.emit(&hooks);
    live.sink.emit(&start_verdicts);
    live.sink.emit(&first);
    live.sink.emit(&live.node.changed_verdicts());
    // An earlier agent ran on these pins: what overflowed since it last reported, then the
    // records it left in the ring, then a full re-read (those records predate the scan).
    let restart = start.line();
    live.sink.emit(restart.as_slice());
    let backlog = live.drain(events.get_mut());
    live.follow_up(FollowUp {
        rescan_sysfs: restart.is_some(),
        rescan_holders: true,
    });
    if backlog.module_loaded {
        attach_after_module_load(&mut live, &mut features, common, args.dry_run);
    }
    // Descriptors counted while no agent ran, or the trust the policy gives, may want the
    // write-time check now.
    live.sync_write_check();
    live.sink.emit(&[Line::Ready {
        groups: live.node.map().groups().count(),
    }]);
    // Ready means: enforcing what was asked. With BPF LSM active and not in dry-run, the hooks
    // must be attached.
    let wanted_lsm = !args.dry_run && features.bpf_lsm_active();
    if wanted_lsm && !live.loaded.lsm_ready() {
        warn!("not ready: enforcement was asked for but the LSM hooks are not attached");
    } else {
        metrics.set_ready(true);
    }
    info!(
        "start: {}; {}",
        enforcing(
            args.dry_run,
            features.bpf_lsm_active(),
            live.loaded.lsm_ready()
        ),
        what_stays(&live.loaded, &args.pin_root)
    );
    // Idle cost: the kernel BTF (two parsed copies, tens of MB) is not needed past the first
    // attach, and the start's big reads leave freed heap that the allocator keeps otherwise.
    features.shed_btf();
    live.loaded.release_btf();
    trim_heap();
    Ok(Started {
        live,
        features,
        metrics,
        events,
        writers,
        policy: policy_watch,
        host_root: args.host_root.clone(),
        containers,
        term,
        int,
    })
}

/// The event loop of a started agent, then the shutdown: the last drain, the `shutdown` line;
/// the pinned programs stay attached.
async fn run(
    started: Started,
    common: &CommonArgs,
    dry_run: bool,
    pin_root: &std::path::Path,
    nfd_dir: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let Started {
        mut live,
        mut features,
        metrics,
        mut events,
        mut writers,
        mut policy,
        host_root,
        mut containers,
        mut term,
        mut int,
    } = started;
    // The next look at containers still pending: (when, step of BACKOFF). Armed only while
    // some are, for at most the sum of BACKOFF after the change that made them.
    let backoff = |step: usize| {
        BACKOFF
            .get(step)
            .map(|d| (tokio::time::Instant::now() + *d, step))
    };
    let mut retry = live
        .containers
        .as_ref()
        .filter(|t| t.pending())
        .and_then(|_| backoff(0));
    let poll_pins = !live.loaded.pin_watch_attached();
    let mut pin_poll = tokio::time::interval_at(tokio::time::Instant::now() + PIN_POLL, PIN_POLL);
    pin_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // NFD drops the node labels at their expiry: renewed at half of it, the agent's only
    // periodic wakeup for them (none without --nfd-features-dir).
    let mut nfd_renew =
        tokio::time::interval_at(tokio::time::Instant::now() + nfd::RENEW, nfd::RENEW);
    nfd_renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let signal_name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            guard = events.readable_mut() => {
                let mut guard = guard?;
                // Cleared before the drain: a record submitted during it wakes the loop again.
                guard.clear_ready();
                let drained = live.drain(guard.get_inner_mut());
                if drained.module_loaded {
                    attach_after_module_load(&mut live, &mut features, common, dry_run);
                }
                if drained.containers_pending && retry.is_none() {
                    retry = backoff(0);
                }
            }
            // Armed only while a pin or rebind write failed and waits for its retry.
            () = sleep_until(live.enforcer.next_retry()) => {
                live.follow_up(FollowUp::default());
            }
            // Armed only while records are being lost: the node is re-read every second
            // while the loss counter keeps rising, whether or not the ring drains.
            () = sleep_until(live.loss_recheck) => {
                live.check_losses();
            }
            // Armed only while a request holds the write-time check attached.
            () = sleep_until(live.write_check.next_look()) => {
                live.sync_write_check();
            }
            // Not polled (so no timer is armed) where stores are recorded, or while no pin is
            // kept.
            _ = pin_poll.tick(), if poll_pins && live.enforcer.keeps_pins() => {
                if live.enforcer.pins_drifted() {
                    live.follow_up(FollowUp::default());
                }
            }
            _ = nfd_renew.tick(), if live.sink.has_nfd() => live.sink.renew_nfd(),
            guard = async {
                match writers.as_mut() {
                    Some(w) => w.readable_mut().await,
                    None => std::future::pending().await,
                }
            } => {
                let mut guard = guard?;
                guard.clear_ready();
                let w = guard.get_inner_mut();
                if w.changed() {
                    let paths = w.resolved();
                    live.enforcer.set_trusted_writers(&paths);
                    live.follow_up(FollowUp::default());
                }
            }
            guard = async {
                match policy.as_mut() {
                    Some(p) => p.readable_mut().await,
                    None => std::future::pending().await,
                }
            } => {
                let mut guard = guard?;
                guard.clear_ready();
                if let Some(change) = guard.get_inner_mut().changed() {
                    let change = match change {
                        policy_file::Change::Apply { policy, digest } => policy_file::Change::Apply {
                            policy: scoped(common, nfd_dir, policy),
                            digest,
                        },
                        rejected => rejected,
                    };
                    if let Some(w) = policy_reload::apply(&mut live, &host_root, change) {
                        writers = w.map(watch).transpose()?;
                        // The trusted containers follow the policy in force.
                        let policy = live.node.policy().clone();
                        if containers.is_none() {
                            let dirs = live
                                .containers
                                .as_ref()
                                .map(|t| t.dirs().to_vec())
                                .unwrap_or_default();
                            containers = watch_containers(&policy, &dirs)?;
                        }
                        if let Some(t) = live.containers.as_mut() {
                            t.set_policy(&policy.trusted_containers);
                        }
                        let scan = live.scan_containers(&[]);
                        if scan.changed {
                            live.follow_up(FollowUp::default());
                        }
                        retry = if scan.pending { backoff(0) } else { None };
                    }
                }
            }
            guard = async {
                match containers.as_mut() {
                    Some(w) => w.readable_mut().await,
                    None => std::future::pending().await,
                }
            } => {
                let mut guard = guard?;
                guard.clear_ready();
                guard.get_inner().drain();
                if let Some(t) = live.containers.as_mut() {
                    t.forget_absent();
                }
                let scan = live.scan_containers(&[]);
                if scan.changed {
                    live.follow_up(FollowUp::default());
                }
                retry = if scan.pending { backoff(0) } else { None };
            }
            _ = async {
                match retry {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let step = retry.map_or(0, |(_, s)| s);
                let scan = live.scan_containers(&[]);
                if scan.changed {
                    live.follow_up(FollowUp::default());
                }
                retry = if scan.pending { backoff(step + 1) } else { None };
            }
        }
    };
    metrics.set_ready(false);
    // What the programs reported up to the signal is still said.
    live.drain(events.get_mut());
    drop(events);
    let Live { loaded, sink, .. } = live;
    let stays = what_stays(&loaded, pin_root);
    let enforced = enforcing(dry_run, features.bpf_lsm_active(), loaded.lsm_ready());
    // Pinned links stay attached: the node stays protected until the next agent replaces them
    // or `enforcer detach` removes them.
    drop(loaded);
    sink.emit(&[Line::Shutdown {
        signal: signal_name.to_owned(),
    }]);
    sink.close(Duration::from_secs(2));
    info!("stop ({signal_name}): {enforced}; {stays}");
    Ok(())
}

/// Whether the agent enforces, as said on stderr at start and at stop.
fn enforcing(dry_run: bool, bpf_lsm: bool, lsm_attached: bool) -> &'static str {
    match (dry_run, bpf_lsm, lsm_attached) {
        (true, _, _) => "dry run, not enforcing: violations are counted as would_veto, nothing is vetoed or pinned",
        (false, true, true) => "enforcing: the BPF LSM hooks veto, reservations are pinned",
        (false, true, false) => "enforcing reservations only: the BPF LSM hooks are not attached",
        (false, false, _) => "enforcing reservations only: BPF LSM is not active on this kernel, nothing can veto",
    }
}

/// What outlives the agent: the pinned programs and state, or nothing.
fn what_stays(loaded: &bpf::loader::Loaded, pin_root: &std::path::Path) -> String {
    let pinned = loaded
        .report()
        .values()
        .filter(|s| **s == bpf::loader::ProgramStatus::Attached)
        .count();
    let unpinned = loaded
        .report()
        .values()
        .filter(|s| **s == bpf::loader::ProgramStatus::AttachedUnpinned)
        .count();
    if !loaded.pinning() || pinned == 0 {
        return "nothing is pinned: every program ends with this agent".to_owned();
    }
    let mut said = format!(
        "after this agent exits, {pinned} programs stay attached and pinned under {} with the \
         protection state, enforcing until the next agent replaces them or `enforcer detach` \
         removes them",
        pin_root.display()
    );
    if unpinned > 0 {
        said.push_str(&format!(" ({unpinned} unpinned programs end with it)"));
    }
    said
}

/// The inotify watch on the runtimes' state directories, when `policy` trusts containers (none
/// otherwise: nothing to wake for).
fn watch_containers(
    policy: &Policy,
    dirs: &[PathBuf],
) -> anyhow::Result<Option<AsyncFd<StateWatch>>> {
    if policy.trusted_containers.is_empty() {
        return Ok(None);
    }
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    info!(
        "trusted containers: {} policy entries, found in {}",
        policy.trusted_containers.len(),
        shown.join(", ")
    );
    match StateWatch::new(dirs) {
        Ok(w) => Ok(Some(watch(w)?)),
        Err(e) => {
            warn!("trusted containers: cannot watch the runtimes' state ({e}); scanned at start, on policy changes and when a veto names an unknown container");
            Ok(None)
        }
    }
}

/// Sleeps until `at`; never returns when `None` (no timer is armed).
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Raises RLIMIT_NOFILE to its hard limit: a flood of connections to the metrics port must not
/// leave enforcement without descriptors for its sysfs reads and pin writes (the metrics
/// server also caps its connections far below the limit, metrics::http).
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct passed by reference.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        warn!(
            "cannot read RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let soft = lim.rlim_cur;
    if soft >= lim.rlim_max {
        info!("RLIMIT_NOFILE: {soft} (already the hard limit)");
        return;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        info!(
            "RLIMIT_NOFILE raised from {soft} to the hard limit {}",
            lim.rlim_max
        );
    } else {
        warn!(
            "cannot raise RLIMIT_NOFILE from {soft} to {}: {}",
            lim.rlim_max,
            std::io::Error::last_os_error()
        );
    }
}

/// A module loaded: kprobe targets still absent are looked for again (the only moment they can
/// appear), and a new capability line says what attached.
fn attach_after_module_load(
    live: &mut Live,
    features: &mut Features,
    common: &CommonArgs,
    dry_run: bool,
) {
    if !live.loaded.waiting_for_targets() {
        return;
    }
    features.refresh_symbols(&common.proc_root);
    let before = live.loaded.attached_count();
    live.loaded.attach_all(features);
    if live.loaded.attached_count() != before {
        info!("module probes attached after their module loaded");
        let line = capabilities(features, &live.loaded, dry_run);
        live.sink.emit(&[line]);
    }
}

/// Hands freed heap back to the kernel (glibc keeps it for reuse; an idle agent does not reuse
/// the start's buffers). Not on other C libraries, which do without.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Before 5.11 BPF maps and programs are charged against RLIMIT_MEMLOCK, whose default (64 KiB
/// or 8 MiB) is too small for the ring buffer; later kernels use memory cgroups and ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct passed by reference.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        warn!(
            "cannot raise RLIMIT_MEMLOCK ({}): loading may fail on kernels before 5.11",
            std::io::Error::last_os_error()
        );
    }
}

fn log_features(features: &Features) {
    let word = |yes: bool, a: &'static str, b: &'static str| if yes { a } else { b };
    info!(
        "kernel {}: BTF {}, BPF LSM {}, DMA-ownership functions {}",
        features.kernel_release,
        word(features.has_btf(), "present", "missing"),
        word(features.bpf_lsm_active(), "active", "inactive"),
        word(
            features.has_dma_ownership(),
            "present (5.19+)",
            "absent (pre-5.19: a mixed group BUG()s the kernel)"
        ),
    );
}

/// Registers a ring buffer or an inotify watch with the runtime for readiness.
fn watch<T: std::os::fd::AsRawFd>(ring: T) -> anyhow::Result<AsyncFd<T>> {
    // SAFETY: both ring buffer types and the writers' inotify watch own their fd and keep it
    // open until they are dropped, which is after the AsyncFd that wraps them.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("epoll registration failed: {e}"))
}

/// How kept pins are watched on this kernel, as the capability line and the log say it.
fn pin_watch(loaded: &Loaded) -> String {
    let target = bpf::programs::PIN_WATCH_TARGET;
    if loaded.pin_watch_attached() {
        format!("event (fexit {target}: every driver_override store)")
    } else {
        let status = loaded
            .report()
            .get(target)
            .map_or_else(|| "absent".to_owned(), ToString::to_string);
        format!(
            "poll every {} s (fexit {target} {status})",
            PIN_POLL.as_secs()
        )
    }
}

fn capabilities(features: &Features, loaded: &Loaded, dry_run: bool) -> Line {
    Line::Capabilities {
        enforcement: enforce::status(features.bpf_lsm_active(), loaded.lsm_ready(), dry_run),
        kernel: features.kernel_release.clone(),
        btf: features.has_btf(),
        bpf_lsm: features.bpf_lsm_active(),
        dry_run,
        pin_watch: pin_watch(loaded),
        programs: loaded
            .report()
            .into_iter()
            .map(|(t, s)| (t.to_owned(), s.state()))
            .collect(),
    }
}
