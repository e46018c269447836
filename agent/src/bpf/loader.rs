//! Loads the eBPF object, hands it the kernel's field offsets, and attaches each program whose
//! target the running kernel has. The only module here that makes BPF syscalls.
//!
//! What protects the node outlives the agent: the state maps are pinned under
//! `pins::ROOT/maps-v<layout>` and reused by the next agent, and every link that the kernel
//! can pin is pinned under `pins::ROOT/links`. A new agent attaches its programs and then
//! renames its pins over the old ones, so some program is attached at every instant of a
//! restart or a rolling update; `enforcer detach` removes the pins for an uninstall.
use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{links::FdLink, BtfTracePoint, FEntry, FExit, KProbe, Lsm, ProgramError},
    Btf, Ebpf, EbpfLoader,
};
use iommu_enforcer_common::{names, offsets::UNRESOLVED, pins, pt_regs_mode};
use iommu_enforcer_schema::ProgramState;

use super::{
    features::{Features, Probeable},
    programs::{Attach, ProgramSpec, FREE_HOOK, PROGRAMS, WRITE_CHECK},
};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this enforcer was built without its eBPF object: run `cargo xtask build-ebpf` and rebuild, or pass --ebpf-object FILE")]
    NoObject,
    #[error("kernel BTF is required for the eBPF programs: {0}")]
    NoBtf(String),
    #[error("{0}: {1} (is bpffs mounted at /sys/fs/bpf?)")]
    PinDir(PathBuf, io::Error),
    #[error("loading the eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("map {0}: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error("the running kernel's BTF does not have what the programs read: {0}; refusing to load them (they do not test for it on every call)")]
    Unresolved(String),
    #[error(
        "{root} holds the state maps of map layout {found} (an agent of another version pinned \
         them); this agent uses layout v{own} and refuses to start over them: the pinned \
         programs keep enforcing from those maps. Roll this agent back to a version of layout \
         {found}, or stop the VFIO users on the node and run `enforcer detach --force` (README, \
         \"Upgrade and rollback\")",
        root = .0.display(),
        found = .1.iter().map(|l| format!("v{l}")).collect::<Vec<_>>().join(", "),
        own = .2
    )]
    ForeignLayout(PathBuf, Vec<u32>, u32),
}

/// The map layout this process pins under ([`pins::MAP_LAYOUT`], unless the hidden
/// `--map-layout` of the tests says otherwise).
static LAYOUT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(pins::MAP_LAYOUT);

/// The map layout this process pins under.
pub fn map_layout() -> u32 {
    LAYOUT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Plays an agent of another map layout (tests only: `--map-layout`).
pub fn set_map_layout(layout: u32) {
    LAYOUT.store(layout, std::sync::atomic::Ordering::Relaxed);
}

/// The map layouts pinned under `root` (its `maps-vN` directories), sorted.
pub fn pinned_layouts(root: &Path) -> Vec<u32> {
    let mut layouts: Vec<u32> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_prefix("maps-v")?.parse().ok()
        })
        .collect();
    layouts.sort_unstable();
    layouts
}

/// bpffs' `f_type`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `root` is a pin root: `Ok(false)` when it does not exist, an error when it is not a
/// directory on bpffs.
pub fn check_pin_root(root: &Path) -> io::Result<bool> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{}: not a directory, not a pin root",
                root.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io::Error::other(format!("{}: {e}", root.display()))),
    }
    let c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::other(format!("{}: {e}", root.display())))?;
    // SAFETY: a NUL-terminated path and a zeroed statfs the call fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::other(format!("{}: {e}", root.display())));
    }
    #[allow(clippy::unnecessary_cast)]
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(io::Error::other(format!(
            "{}: not on bpffs (mount -t bpf bpf /sys/fs/bpf), so nothing of the agent's is \
             pinned there; check --pin-root",
            root.display()
        )));
    }
    Ok(true)
}

/// Where one program stands on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramStatus {
    /// Attached, and its link pinned: it stays attached if the agent dies.
    Attached,
    /// Attached, but its link cannot be pinned on this kernel (kprobes before 5.15 are perf
    /// events, not BPF links): it lives as long as the agent.
    AttachedUnpinned,
    /// The kernel has no such function or tracepoint (yet, for module functions).
    Absent,
    /// The function exists but can never carry a kprobe (why): decided once, not retried.
    Unprobeable(&'static str),
    Failed(String),
    /// Loaded and ready to attach when wanted (the write-time check, detached now).
    Standby,
    /// Not attached: another program does its work on this kernel (why).
    NotNeeded(&'static str),
}

impl std::fmt::Display for ProgramStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Attached => f.write_str("attached"),
            Self::AttachedUnpinned => f.write_str("attached (not pinned)"),
            Self::Absent => f.write_str("absent"),
            Self::Unprobeable(why) => write!(f, "absent: {why}"),
            Self::Failed(why) => write!(f, "failed: {why}"),
            Self::Standby => f.write_str("standby"),
            Self::NotNeeded(why) => write!(f, "not needed: {why}"),
        }
    }
}

impl ProgramStatus {
    /// As the capabilities line reports it.
    pub fn state(&self) -> ProgramState {
        match self {
            Self::Attached => ProgramState::Attached,
            Self::AttachedUnpinned => ProgramState::AttachedUnpinned,
            Self::Absent => ProgramState::Absent(None),
            Self::Unprobeable(why) => ProgramState::Absent(Some((*why).to_owned())),
            Self::Failed(why) => ProgramState::Failed(why.clone()),
            Self::Standby => ProgramState::Standby,
            Self::NotNeeded(why) => ProgramState::NotNeeded((*why).to_owned()),
        }
    }

    /// Attached, or ready to do its part: standing by to attach, or not needed here.
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            Self::Attached | Self::AttachedUnpinned | Self::Standby | Self::NotNeeded(_)
        )
    }

    pub fn is_attached(&self) -> bool {
        matches!(self, Self::Attached | Self::AttachedUnpinned)
    }
}

/// The loaded object and what got attached. Dropping it leaves the pinned links attached.
pub struct Loaded {
    ebpf: Ebpf,
    /// The kernel's BTF, for programs attached by BTF id; released once they are attached
    /// (megabytes, and later attaches are kprobes, which do not need it).
    btf: Option<Btf>,
    /// By program name.
    status: BTreeMap<&'static str, ProgramStatus>,
    /// Links the kernel cannot pin, detached when the agent exits; and the descriptors of the
    /// pinned ones, kept so that a pin removed behind the agent's back (a bpffs unmount the
    /// hooks could not refuse) detaches nothing while the agent runs.
    unpinned: Vec<Box<dyn std::any::Any>>,
    links_dir: PathBuf,
    /// Whether bpffs took the pins: without it (not mounted) nothing outlives the agent.
    pinning: bool,
    /// The write-time program's link while it is attached (its pin is under `links_dir`).
    write_check: Option<Box<dyn std::any::Any>>,
    /// The write-time program stays attached: this kernel cannot attach it again once detached.
    write_check_fixed: bool,
    /// Whether the state maps were created by this load (no earlier agent left them).
    pub fresh_maps: bool,
}

impl Loaded {
    /// Whether bpffs took the pins.
    pub fn pinning(&self) -> bool {
        self.pinning
    }
}

/// The directories under `root` (normally `pins::ROOT`).
pub fn pin_dirs(root: &Path) -> (PathBuf, PathBuf) {
    (
        root.join(format!("maps-v{}", map_layout())),
        root.join("links"),
    )
}

/// Loads `object` (not yet attaching anything), reusing the pinned state maps under `pin_root`.
pub fn load(object: &[u8], features: &Features, pin_root: &Path) -> Result<Loaded, LoadError> {
    if object.is_empty() {
        return Err(LoadError::NoObject);
    }
    if let Err(why) = &features.btf {
        return Err(LoadError::NoBtf(why.clone()));
    }
    let btf = Btf::from_sys_fs().map_err(|e| LoadError::NoBtf(e.to_string()))?;
    let (maps_dir, links_dir) = pin_dirs(pin_root);
    // Another layout's maps: their programs enforce from them, and this agent cannot adopt
    // them (their keys, values or meaning differ). Refused before anything is loaded.
    let foreign: Vec<u32> = pinned_layouts(pin_root)
        .into_iter()
        .filter(|l| *l != map_layout())
        .collect();
    if !foreign.is_empty() {
        return Err(LoadError::ForeignLayout(
            pin_root.to_path_buf(),
            foreign,
            map_layout(),
        ));
    }
    let pinning = match [&maps_dir, &links_dir]
        .into_iter()
        .try_for_each(|dir| fs::create_dir_all(dir).map_err(|e| LoadError::PinDir(dir.clone(), e)))
    {
        Ok(()) => true,
        Err(e) => {
            log::warn!("{e}: nothing is pinned, so the programs and the protection state end with this agent");
            false
        }
    };
    let fresh_maps = !pinning || !maps_dir.join(names::GROUPS).exists();
    let map_paths: Vec<(&str, PathBuf)> = if pinning {
        pins::MAPS.iter().map(|m| (*m, maps_dir.join(m))).collect()
    } else {
        Vec::new()
    };
    let globals = globals(features);
    let unresolved: Vec<&str> = globals
        .iter()
        .filter(|(_, v)| *v == UNRESOLVED)
        .map(|(name, _)| *name)
        .collect();
    if !unresolved.is_empty() {
        return Err(LoadError::Unresolved(unresolved.join(", ")));
    }
    let mut loader = EbpfLoader::new();
    loader.btf(Some(&btf));
    // An existing pin is reused, a missing one created and pinned.
    for (name, path) in &map_paths {
        loader.map_pin_path(name, path.as_path());
    }
    for (name, value) in &globals {
        loader.override_global(name, value, true);
    }
    let ebpf = loader.load(object)?;
    Ok(Loaded {
        ebpf,
        btf: Some(btf),
        status: BTreeMap::new(),
        unpinned: Vec::new(),
        links_dir,
        pinning,
        write_check: None,
        write_check_fixed: false,
        fresh_maps,
    })
}

/// Every global the agent sets in the object before loading (`override_global`, which fails
/// when one is missing), with its value for this kernel.
pub fn globals(features: &Features) -> Vec<(&'static str, u32)> {
    let off = features.offsets();
    let u = |o: Option<u32>| o.unwrap_or(UNRESOLVED);
    let regs_mode = if features.has_task_pt_regs_helper() {
        pt_regs_mode::HELPER
    } else {
        pt_regs_mode::STACK
    };
    let mut rows: Vec<(&'static str, u32)> = off
        .fields
        .iter()
        .map(|(name, value)| (*name, u(*value)))
        .collect();
    rows.extend([
        (names::PT_REGS_MODE, regs_mode),
        (names::FILE_COUNT_ONE, off.file_count_one),
        (names::PROBE_OK, features.probe_ok_ret()),
        (names::FMODE_REGULAR, features.fmode_regular()),
    ]);
    rows
}

/// Names this process in the pinned `CONFIG` as the one `enforcer detach` run, so that the
/// hooks that guard the pins let it remove them (they clear the slot when it exits).
fn name_detacher(maps_dir: &Path) -> io::Result<()> {
    use aya::maps::{Array, Map, MapData};
    let path = maps_dir.join(names::CONFIG);
    let data = MapData::from_pin(&path)
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    let map = Map::from_map_data(data)
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    let mut config: Array<MapData, u32> =
        Array::try_from(map).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    config
        .set(
            iommu_enforcer_common::config::DETACH_TGID,
            std::process::id(),
            0,
        )
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}

/// Removes every pin under `pin_root`: the programs detach once no agent holds them.
pub fn detach(pin_root: &Path) -> io::Result<usize> {
    let mut removed = 0;
    if !pin_root.exists() {
        return Ok(0);
    }
    // Every layout's CONFIG names this process, so the hooks that guard the pins let it
    // remove them. Another layout's is best effort: its slot may mean something else there.
    let own = map_layout();
    for layout in pinned_layouts(pin_root) {
        let maps_dir = pin_root.join(format!("maps-v{layout}"));
        if maps_dir.join(names::CONFIG).exists() {
            match name_detacher(&maps_dir) {
                Err(e) if layout == own => return Err(e),
                Err(e) => log::warn!("{e}: the pins of layout v{layout} may refuse removal"),
                Ok(()) => {}
            }
        }
    }
    for dir in fs::read_dir(pin_root)? {
        let dir = dir?.path();
        if dir.is_dir() {
            for pin in fs::read_dir(&dir)? {
                fs::remove_file(pin?.path())?;
                removed += 1;
            }
            fs::remove_dir(&dir)?;
        } else {
            fs::remove_file(&dir)?;
            removed += 1;
        }
    }
    fs::remove_dir(pin_root)?;
    Ok(removed)
}

impl Loaded {
    /// Attaches every program whose target exists; records why the others did not attach.
    /// Called again after a module load: then only kprobes still absent are tried (vmlinux
    /// targets do not appear later).
    pub fn attach_all(&mut self, features: &Features) {
        for spec in PROGRAMS {
            if self.status.get(spec.program).is_some_and(|s| {
                s.is_attached()
                    || matches!(s, ProgramStatus::Unprobeable(_))
                    || !spec.may_appear_later()
            }) {
                continue;
            }
            let notrace =
                spec.may_appear_later() && features.probeable(spec.target) == Probeable::Notrace;
            let status = if spec.program == FREE_HOOK && features.kprobe_links_pinned() {
                ProgramStatus::NotNeeded(FREE_NOT_NEEDED)
            } else if spec.program == WRITE_CHECK && spec.target_present(features) {
                self.write_check_fixed = !features.lsm_reattach();
                self.stand_by_write_check()
            } else if notrace {
                ProgramStatus::Unprobeable(NOTRACE)
            } else if !spec.target_present(features) {
                ProgramStatus::Absent
            } else {
                match self.attach(spec) {
                    Ok(status) => status,
                    // Without tracefs to tell, a symbol kallsyms lists but kprobes refuse (a
                    // notrace stub) is found out here: absent for good, not broken.
                    Err(e) if spec.may_appear_later() && refused_by_kprobes(&e) => {
                        log::info!("{}: in kallsyms but kprobes refuse it ({e})", spec.target);
                        ProgramStatus::Unprobeable(REFUSED)
                    }
                    // fentry, fexit and LSM programs on a kernel that cannot build a BPF
                    // trampoline for a kernel function: absent for good, and said why.
                    Err(e) if !spec.may_appear_later() && no_trampoline(&e) => {
                        log::info!("{}: no BPF trampoline on this kernel ({e})", spec.target);
                        ProgramStatus::Unprobeable(NO_TRAMPOLINE)
                    }
                    Err(e) => ProgramStatus::Failed(describe(&e)),
                }
            };
            self.status.insert(spec.program, status);
        }
    }

    /// Loads the write-time program without attaching it, or, when an earlier agent left it
    /// attached (its pin is there), attaches it in that one's place: it stays attached until
    /// the daemon decides otherwise.
    fn stand_by_write_check(&mut self) -> ProgramStatus {
        let spec = PROGRAMS
            .iter()
            .find(|p| p.program == WRITE_CHECK)
            .expect("the write-time program is in the table");
        if self.write_check_fixed || (self.pinning && self.links_dir.join(WRITE_CHECK).exists()) {
            return match self.arm_write_check() {
                Ok(()) => ProgramStatus::Attached,
                Err(e) => ProgramStatus::Failed(e),
            };
        }
        let Some(btf) = self.btf.as_ref() else {
            return ProgramStatus::Failed("the kernel BTF was released after start".into());
        };
        let loaded = self
            .ebpf
            .program_mut(spec.program)
            .ok_or(ProgramError::UnexpectedProgramType)
            .and_then(|p| {
                let p: &mut Lsm = p.try_into()?;
                p.load(spec.target, btf)
            });
        match loaded {
            Ok(()) => ProgramStatus::Standby,
            Err(e) => ProgramStatus::Failed(describe(&e)),
        }
    }

    /// Attaches the write-time program (loading it first if needed) and pins its link; the
    /// caller says so in `CONFIG[WRITE_ARMED]` afterwards.
    pub fn arm_write_check(&mut self) -> Result<(), String> {
        if self.write_check.is_some() {
            return Ok(());
        }
        let btf = self.btf.as_ref();
        let program = self
            .ebpf
            .program_mut(WRITE_CHECK)
            .ok_or_else(|| format!("no program {WRITE_CHECK}"))?;
        let p: &mut Lsm = program.try_into().map_err(|e| describe(&e))?;
        if p.fd().is_err() {
            let btf =
                btf.ok_or("the kernel BTF was released before the write-time program was loaded")?;
            p.load(WRITE_CHECK, btf).map_err(|e| describe(&e))?;
        }
        let id = p.attach().map_err(|e| describe(&e))?;
        let link: FdLink = p.take_link(id).map_err(|e| describe(&e))?.into();
        let status = self.pin(WRITE_CHECK, link).map_err(|e| describe(&e))?;
        self.write_check = self.unpinned.pop();
        self.status.insert(WRITE_CHECK, status);
        Ok(())
    }

    /// Detaches the write-time program: its pin goes, then its link. The caller has cleared
    /// `CONFIG[WRITE_ARMED]` before.
    pub fn disarm_write_check(&mut self) -> io::Result<()> {
        if self.write_check.is_none() {
            return Ok(());
        }
        if self.pinning {
            match fs::remove_file(self.links_dir.join(WRITE_CHECK)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Kept attached: a detach that cannot remove the pin would leave it anyway.
                Err(e) => return Err(e),
            }
        }
        self.write_check = None;
        self.status.insert(WRITE_CHECK, ProgramStatus::Standby);
        Ok(())
    }

    /// Whether the write-time program is attached.
    pub fn write_check_armed(&self) -> bool {
        self.write_check.is_some()
    }

    /// Whether the write-time program must stay attached (this kernel cannot re-attach it).
    pub fn write_check_fixed(&self) -> bool {
        self.write_check_fixed
    }

    /// Writable control-file descriptors the kernel counts for the write-time check
    /// (`WRITERS`), or why it cannot be read.
    pub fn writers(&self) -> Result<i32, LoadError> {
        let map = self
            .ebpf
            .map(names::WRITERS)
            .ok_or(LoadError::MissingMap(names::WRITERS))?;
        let writers: Array<_, i32> =
            Array::try_from(map).map_err(|e| LoadError::Map(names::WRITERS, e))?;
        writers
            .get(&0, 0)
            .map_err(|e| LoadError::Map(names::WRITERS, e))
    }

    /// Programs still absent whose target may appear later (a module loading).
    pub fn waiting_for_targets(&self) -> bool {
        PROGRAMS.iter().any(|p| {
            p.may_appear_later() && self.status.get(p.program) == Some(&ProgramStatus::Absent)
        })
    }

    /// Pins `link` in place of the previous agent's: pinned under a temporary name, then renamed
    /// over the old pin, which detaches the old program only once this one runs.
    fn pin(&mut self, program: &str, link: FdLink) -> Result<ProgramStatus, ProgramError> {
        if !self.pinning {
            self.unpinned.push(Box::new(link));
            return Ok(ProgramStatus::AttachedUnpinned);
        }
        let path = self.links_dir.join(program);
        // bpffs refuses names with a dot.
        let tmp = self.links_dir.join(format!("{program}_new"));
        let _ = fs::remove_file(&tmp);
        let pinned = link.pin(&tmp).map_err(|e| {
            ProgramError::IOError(io::Error::other(format!("pinning {}: {e}", tmp.display())))
        })?;
        fs::rename(&tmp, &path).map_err(ProgramError::IOError)?;
        self.unpinned.push(Box::new(pinned));
        Ok(ProgramStatus::Attached)
    }

    fn attach(&mut self, spec: &ProgramSpec) -> Result<ProgramStatus, ProgramError> {
        let kernel_btf = self.btf.as_ref();
        let btf = || {
            kernel_btf.ok_or_else(|| {
                ProgramError::IOError(io::Error::other("the kernel BTF was released after start"))
            })
        };
        let program = self
            .ebpf
            .program_mut(spec.program)
            .ok_or(ProgramError::UnexpectedProgramType)?;
        let link: FdLink = match spec.attach {
            Attach::FEntry => {
                let p: &mut FEntry = program.try_into()?;
                p.load(spec.target, btf()?)?;
                let id = p.attach()?;
                p.take_link(id)?.into()
            }
            Attach::FExit => {
                let p: &mut FExit = program.try_into()?;
                p.load(spec.target, btf()?)?;
                let id = p.attach()?;
                p.take_link(id)?.into()
            }
            Attach::TracePoint => {
                let p: &mut BtfTracePoint = program.try_into()?;
                p.load(spec.target, btf()?)?;
                let id = p.attach()?;
                p.take_link(id)?.into()
            }
            Attach::Lsm => {
                let p: &mut Lsm = program.try_into()?;
                p.load(spec.target, btf()?)?;
                let id = p.attach()?;
                p.take_link(id)?.into()
            }
            Attach::KProbe | Attach::KRetProbe => {
                let p: &mut KProbe = program.try_into()?;
                if p.fd().is_err() {
                    p.load()?;
                }
                let id = p.attach(spec.target, 0)?;
                let link = p.take_link(id)?;
                match FdLink::try_from(link) {
                    Ok(fd) => fd,
                    Err(_) => {
                        // Before 5.15 a kprobe is a perf event, not a pinnable BPF link. (The
                        // failed conversion consumed the link wrapper; attach again and keep it.)
                        let id = p.attach(spec.target, 0)?;
                        let link = p.take_link(id)?;
                        self.unpinned.push(Box::new(link));
                        return Ok(ProgramStatus::AttachedUnpinned);
                    }
                }
            }
        };
        self.pin(spec.program, link)
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

    /// Frees the kernel BTF: every program that needs it has been tried.
    pub fn release_btf(&mut self) {
        self.btf = None;
    }

    pub fn attached_count(&self) -> usize {
        self.status.values().filter(|s| s.is_attached()).count()
    }

    /// Takes a map out of the object (the enforcer owns the LSM maps).
    pub fn take_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        self.ebpf.take_map(name)
    }

    /// Whether `driver_override` stores are recorded (ebpf/src/pin_watch.rs): kept pins are
    /// then re-read on those records, not by a timer.
    pub fn pin_watch_attached(&self) -> bool {
        self.report()
            .get(super::programs::PIN_WATCH_TARGET)
            .is_some_and(ProgramStatus::is_attached)
    }

    /// Whether every LSM hook is attached, or ready to attach when needed: vetoes are possible.
    pub fn lsm_ready(&self) -> bool {
        PROGRAMS
            .iter()
            .filter(|p| p.attach == Attach::Lsm)
            .all(|p| {
                self.status
                    .get(p.program)
                    .is_some_and(ProgramStatus::is_ready)
            })
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

    /// One slot of the pinned `AGENT_LOG` (see `common::agent_log`).
    pub fn agent_log(&self, slot: u32) -> Result<u64, LoadError> {
        let map = self
            .ebpf
            .map(names::AGENT_LOG)
            .ok_or(LoadError::MissingMap(names::AGENT_LOG))?;
        let log: Array<_, u64> =
            Array::try_from(map).map_err(|e| LoadError::Map(names::AGENT_LOG, e))?;
        log.get(&slot, 0)
            .map_err(|e| LoadError::Map(names::AGENT_LOG, e))
    }

    pub fn set_agent_log(&mut self, slot: u32, value: u64) -> Result<(), LoadError> {
        let map = self
            .ebpf
            .map_mut(names::AGENT_LOG)
            .ok_or(LoadError::MissingMap(names::AGENT_LOG))?;
        let mut log: Array<_, u64> =
            Array::try_from(map).map_err(|e| LoadError::Map(names::AGENT_LOG, e))?;
        log.set(slot, value, 0)
            .map_err(|e| LoadError::Map(names::AGENT_LOG, e))
    }
}

/// Why `file_free_security` is not attached from 5.15 on.
const FREE_NOT_NEEDED: &str =
    "VFIO's release kprobe uncounts opens (a pinned link since 5.15), so no program runs on every close";

/// Why a kprobe target that kallsyms lists is reported absent without retries.
const NOTRACE: &str = "notrace (in kallsyms, not in tracefs available_filter_functions: an inline stub such as a config-disabled feature's), not retried";
const REFUSED: &str =
    "kprobes refuse it (in kallsyms; tracefs not readable to tell why), not retried";

const NO_TRAMPOLINE: &str = "no BPF trampoline on this kernel (ENOTSUPP attaching to a kernel function: arm64 has ftrace direct calls from 6.4), not retried";

/// The kernel's internal ENOTSUPP, which the trampoline attach returns as is.
const ENOTSUPP: i32 = 524;

/// Whether an attach failed because this kernel cannot attach a trampoline to a kernel
/// function at all (ENOTSUPP: Debian's arm64 6.1, without DYNAMIC_FTRACE_WITH_DIRECT_CALLS).
fn no_trampoline(e: &ProgramError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.raw_os_error() == Some(ENOTSUPP);
        }
        source = err.source();
    }
    false
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
