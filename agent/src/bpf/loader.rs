//! Loads the eBPF object, hands it the kernel's field offsets, and attaches each program whose
//! target the running kernel has. The only module here that makes BPF syscalls.
use std::collections::BTreeMap;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{lsm::LsmLinkId, BtfTracePoint, FEntry, FExit, KProbe, Lsm, ProgramError},
    Btf, Ebpf, EbpfLoader,
};
use iommu_enforcer_common::{names, offsets::UNRESOLVED, pt_regs_mode};

use super::{
    features::Features,
    programs::{Attach, ProgramSpec, PROGRAMS},
};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this enforcer was built without its eBPF object: run `cargo xtask build-ebpf` and rebuild, or pass --ebpf-object FILE")]
    NoObject,
    #[error("kernel BTF is required for the eBPF programs: {0}")]
    NoBtf(String),
    #[error("loading the eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("map {0}: {1}")]
    Map(&'static str, aya::maps::MapError),
}

/// Where one program stands on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramStatus {
    Attached,
    /// Loaded and verified, attached only while there is something to veto: an LSM hook costs
    /// every process, so it is not left on paths where it cannot deny anything.
    Standby,
    /// The kernel has no such function or tracepoint (yet, for module functions).
    Absent,
    Failed(String),
}

impl std::fmt::Display for ProgramStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Attached => f.write_str("attached"),
            Self::Standby => f.write_str("standby"),
            Self::Absent => f.write_str("absent"),
            Self::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// The loaded object and what got attached. Dropping it detaches everything.
pub struct Loaded {
    ebpf: Ebpf,
    btf: Btf,
    /// By program name.
    status: BTreeMap<&'static str, ProgramStatus>,
    /// Links of the LSM hooks while attached, by program name.
    lsm_links: BTreeMap<&'static str, LsmLinkId>,
}

/// What the programs are told at load time (frozen: it cannot change while they run).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Decide and report vetoes, deny nothing.
    pub dry_run: bool,
    /// The agent's own tgid, whose writes always pass.
    pub agent_tgid: u32,
}

/// Loads `object` (not yet attaching anything).
pub fn load(object: &[u8], features: &Features, settings: Settings) -> Result<Loaded, LoadError> {
    if object.is_empty() {
        return Err(LoadError::NoObject);
    }
    if let Err(why) = &features.btf {
        return Err(LoadError::NoBtf(why.clone()));
    }
    let btf = Btf::from_sys_fs().map_err(|e| LoadError::NoBtf(e.to_string()))?;
    let off = features.offsets();
    let u = |o: Option<u32>| o.unwrap_or(UNRESOLVED);
    let regs_mode = if features.has_task_pt_regs_helper() {
        pt_regs_mode::HELPER
    } else {
        pt_regs_mode::STACK
    };
    let globals = [
        (names::OFF_DEVICE_DRIVER, u(off.device_driver)),
        (names::OFF_DEVICE_IOMMU_GROUP, u(off.device_iommu_group)),
        (names::OFF_GROUP_ID, u(off.group_id)),
        (names::OFF_INODE_RDEV, u(off.inode_rdev)),
        (names::OFF_FILE_INODE, u(off.file_inode)),
        (names::OFF_INODE_SB, u(off.inode_sb)),
        (names::OFF_INODE_INO, u(off.inode_ino)),
        (names::OFF_SB_MAGIC, u(off.sb_magic)),
        (names::OFF_SB_DEV, u(off.sb_dev)),
        (names::OFF_TASK_MM, u(off.task_mm)),
        (names::OFF_TASK_STACK, u(off.task_stack)),
        (names::OFF_MM_EXE_FILE, u(off.mm_exe_file)),
        (names::OFF_REGS_ORIG_AX, u(off.regs_orig_ax)),
        (names::OFF_REGS_SI, u(off.regs_si)),
        (names::OFF_REGS_DX, u(off.regs_dx)),
        (names::PT_REGS_SIZE, u(off.pt_regs_size)),
        (names::PT_REGS_MODE, regs_mode),
        (names::AGENT_TGID, settings.agent_tgid),
        (names::DRY_RUN, u32::from(settings.dry_run)),
    ];
    let mut loader = EbpfLoader::new();
    loader.btf(Some(&btf));
    for (name, value) in &globals {
        loader.override_global(name, value, true);
    }
    let ebpf = loader.load(object)?;
    Ok(Loaded {
        ebpf,
        btf,
        status: BTreeMap::new(),
        lsm_links: BTreeMap::new(),
    })
}

impl Loaded {
    /// Attaches every program whose target exists; records why the others did not attach.
    pub fn attach_all(&mut self, features: &Features) {
        for spec in PROGRAMS {
            if matches!(
                self.status.get(spec.program),
                Some(ProgramStatus::Attached | ProgramStatus::Standby)
            ) {
                continue;
            }
            let status = if !spec.target_present(features) {
                ProgramStatus::Absent
            } else {
                match self.attach(spec) {
                    Ok(()) if spec.attach == Attach::Lsm => ProgramStatus::Standby,
                    Ok(()) => ProgramStatus::Attached,
                    // A symbol kallsyms lists but kprobes refuse (a stub such as 6.12's
                    // vfio_device_fops_cdev_open without CONFIG_VFIO_DEVICE_CDEV) is not there
                    // to trace: absent, not broken.
                    Err(e) if spec.may_appear_later() && refused_by_kprobes(&e) => {
                        log::info!(
                            "{}: in kallsyms but not probeable ({e}); treated as absent",
                            spec.target
                        );
                        ProgramStatus::Absent
                    }
                    Err(e) => ProgramStatus::Failed(describe(&e)),
                }
            };
            self.status.insert(spec.program, status);
        }
    }

    /// Programs still absent whose target may appear later (a module loading).
    pub fn waiting_for_targets(&self) -> bool {
        PROGRAMS.iter().any(|p| {
            p.may_appear_later() && self.status.get(p.program) == Some(&ProgramStatus::Absent)
        })
    }

    fn attach(&mut self, spec: &ProgramSpec) -> Result<(), ProgramError> {
        let program = self
            .ebpf
            .program_mut(spec.program)
            .ok_or(ProgramError::UnexpectedProgramType)?;
        match spec.attach {
            Attach::FEntry => {
                let p: &mut FEntry = program.try_into()?;
                p.load(spec.target, &self.btf)?;
                p.attach()?;
            }
            Attach::FExit => {
                let p: &mut FExit = program.try_into()?;
                p.load(spec.target, &self.btf)?;
                p.attach()?;
            }
            Attach::TracePoint => {
                let p: &mut BtfTracePoint = program.try_into()?;
                p.load(spec.target, &self.btf)?;
                p.attach()?;
            }
            Attach::Lsm => {
                // Loaded and verified now; attached by `set_lsm_hook` when needed.
                let p: &mut Lsm = program.try_into()?;
                p.load(spec.target, &self.btf)?;
            }
            Attach::KProbe | Attach::KRetProbe => {
                let p: &mut KProbe = program.try_into()?;
                if p.fd().is_err() {
                    p.load()?;
                }
                p.attach(spec.target, 0)?;
            }
        }
        Ok(())
    }

    /// Status per kernel target, as the capability report shows it: a kprobe/kretprobe pair is
    /// attached only when both halves are.
    pub fn report(&self) -> BTreeMap<&'static str, ProgramStatus> {
        let mut out: BTreeMap<&'static str, ProgramStatus> = BTreeMap::new();
        for spec in PROGRAMS {
            let status = self
                .status
                .get(spec.program)
                .cloned()
                .unwrap_or(ProgramStatus::Absent);
            match out.get(spec.target) {
                Some(ProgramStatus::Attached) | None => {
                    out.insert(spec.target, status);
                }
                Some(_) => {}
            }
        }
        out
    }

    pub fn attached_count(&self) -> usize {
        self.status
            .values()
            .filter(|s| **s == ProgramStatus::Attached)
            .count()
    }

    /// Takes a map out of the object (the enforcer owns the LSM maps).
    pub fn take_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        self.ebpf.take_map(name)
    }

    /// Whether both LSM hooks loaded (attached or on standby): vetoes are possible.
    pub fn lsm_ready(&self) -> bool {
        PROGRAMS
            .iter()
            .filter(|p| p.attach == Attach::Lsm)
            .all(|p| {
                matches!(
                    self.status.get(p.program),
                    Some(ProgramStatus::Attached | ProgramStatus::Standby)
                )
            })
    }

    /// Attaches or detaches one LSM hook (by program name); true when that changed something.
    pub fn set_lsm_hook(&mut self, program: &'static str, wanted: bool) -> bool {
        let attached = self.lsm_links.contains_key(program);
        if attached == wanted || !self.lsm_ready() {
            return false;
        }
        let Some(p) = self.ebpf.program_mut(program) else {
            return false;
        };
        let Ok(p) = <&mut Lsm>::try_from(p) else {
            return false;
        };
        let result = if wanted {
            p.attach().map(|id| {
                self.lsm_links.insert(program, id);
            })
        } else {
            match self.lsm_links.remove(program) {
                Some(id) => p.detach(id),
                None => Ok(()),
            }
        };
        match result {
            Ok(()) => {
                let status = if wanted {
                    ProgramStatus::Attached
                } else {
                    ProgramStatus::Standby
                };
                log::info!("LSM hook {program}: {status}");
                self.status.insert(program, status);
                true
            }
            Err(e) => {
                log::warn!(
                    "LSM hook {program}: cannot {}: {e}",
                    if wanted { "attach" } else { "detach" }
                );
                false
            }
        }
    }

    /// The event ring buffer, taken out of the object for the reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self
            .ebpf
            .take_map(names::EVENTS)
            .ok_or(LoadError::MissingMap(names::EVENTS))?;
        RingBuf::try_from(map).map_err(|e| LoadError::Map(names::EVENTS, e))
    }

    /// Records dropped so far because the ring buffer was full, summed over CPUs.
    pub fn lost_total(&self) -> Result<u64, LoadError> {
        let map = self
            .ebpf
            .map(names::LOST)
            .ok_or(LoadError::MissingMap(names::LOST))?;
        let lost: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| LoadError::Map(names::LOST, e))?;
        let values = lost
            .get(&0, 0)
            .map_err(|e| LoadError::Map(names::LOST, e))?;
        Ok(values.iter().sum())
    }

    /// aya-log's reader for the programs' own log lines.
    pub fn logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        aya_log::EbpfLogger::init(&mut self.ebpf).ok()
    }
}

/// Whether an attach failed because the kernel will not put a kprobe there (EINVAL, ENOENT),
/// rather than for lack of rights or a broken program.
fn refused_by_kprobes(e: &ProgramError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(io.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT));
        }
        source = err.source();
    }
    false
}

/// One line, with the verifier's verdict when it refused the program (the full log goes to
/// the debug log).
fn describe(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            log::debug!("verifier log:\n{log}");
            // The statistics lines come last; the reason stands just before them.
            let reason: Vec<&str> = log
                .lines()
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("verification time")
                        && !l.starts_with("stack depth")
                        && !l.starts_with("processed ")
                })
                .rev()
                .take(2)
                .collect();
            let reason: Vec<&str> = reason.into_iter().rev().collect();
            format!(
                "BPF_PROG_LOAD: {io_error}; verifier: {}",
                reason.join(" | ")
            )
        }
        other => {
            // "`perf_event_open` failed" says little without its cause.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}
