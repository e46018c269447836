//! What the running kernel offers, probed once at start: BTF, BPF LSM, which probe targets
//! exist. The capability ladder of docs/design.md section 2 is decided from this.
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use iommu_enforcer_common::kernel_fields::{Lookup, FIELDS};

use super::btf::KernelBtf;
use crate::bounded;

/// The values of the kernel-field globals for this kernel, one per row of
/// `iommu_enforcer_common::kernel_fields` (in its order); `None` where the BTF lacks the field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub fields: Vec<(&'static str, Option<u32>)>,
    /// What `OFF_FILE_COUNT`'s counter reads for one reference: 1 for `f_count`, 0 for `f_ref`
    /// (count - 1).
    pub file_count_one: u32,
}

impl Offsets {
    /// The value resolved for one global.
    pub fn get(&self, global: &str) -> Option<u32> {
        self.fields
            .iter()
            .find(|(g, _)| *g == global)
            .and_then(|(_, v)| *v)
    }
}

pub struct Features {
    /// `uname -r`.
    pub kernel_release: String,
    pub btf: Result<KernelBtf, String>,
    /// Whether BTF was there at start (it is released after attaching: [`Self::shed_btf`]).
    btf_present: bool,
    /// Active LSMs in order (`/sys/kernel/security/lsm`), or why they could not be read.
    pub lsms: Result<Vec<String>, String>,
    /// The kprobe targets asked about (the caller's program table says which): the only names
    /// kept from the listings.
    wanted: BTreeSet<&'static str>,
    /// Those of them found in kallsyms (vmlinux and modules).
    symbols: BTreeSet<String>,
    /// The kprobe targets ftrace can patch (tracefs `available_filter_functions`), or `None`
    /// when tracefs is not mounted under the sysfs root: then kallsyms and the attach decide.
    traceable: Option<BTreeSet<String>>,
    /// Where tracefs was found (`<sysfs>/kernel/tracing` or the debugfs one).
    tracefs: Option<PathBuf>,
}

/// Whether a kprobe target can be probed on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probeable {
    Yes,
    /// Not in kallsyms: its module has not loaded (yet).
    NotLoaded,
    /// In kallsyms but not in `available_filter_functions`: compiled `notrace` (every kernel
    /// `inline` is, so an out-of-line copy of an inline stub such as 6.12's
    /// `vfio_device_fops_cdev_open` without VFIO_DEVICE_CDEV). It never becomes probeable.
    Notrace,
}

impl Probeable {
    pub fn is_present(self) -> bool {
        self == Self::Yes
    }
}

/// Longest line kept from kallsyms or available_filter_functions (names are at most
/// KSYM_NAME_LEN = 512 bytes, plus address, type and module).
const SYMBOL_LINE_LIMIT: u64 = 1024;
/// Most bytes read from either listing (Debian's kallsyms is about 10 MB).
const LISTING_LIMIT: u64 = 256 << 20;

impl Features {
    /// Reads the kernel's self-description below the given roots; `kprobe_targets` are the
    /// functions whose probe-ability [`Self::probeable`] answers for.
    pub fn probe(
        sysfs_root: &Path,
        proc_root: &Path,
        kprobe_targets: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        let kernel_release = bounded::read_text(
            &proc_root.join("sys/kernel/osrelease"),
            bounded::ATTRIBUTE_LIMIT,
        )
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
        let btf_path = sysfs_root.join("kernel/btf/vmlinux");
        let btf = match fs::read(&btf_path) {
            Ok(data) => KernelBtf::parse(&data).map_err(|e| format!("{}: {e}", btf_path.display())),
            Err(e) => Err(format!(
                "{}: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)",
                btf_path.display()
            )),
        };
        let lsm_path = sysfs_root.join("kernel/security/lsm");
        let lsms = bounded::read_text(&lsm_path, bounded::ATTRIBUTE_LIMIT)
            .map(|s| parse_lsm_list(&s))
            .map_err(|e| format!("{}: {e} (is securityfs mounted?)", lsm_path.display()));
        let mut features = Features {
            kernel_release,
            btf_present: btf.is_ok(),
            btf,
            lsms,
            wanted: kprobe_targets.into_iter().collect(),
            symbols: BTreeSet::new(),
            traceable: None,
            tracefs: ["kernel/tracing", "kernel/debug/tracing"]
                .into_iter()
                .map(|d| sysfs_root.join(d))
                .find(|d| d.join("available_filter_functions").is_file()),
        };
        features.refresh_symbols(proc_root);
        features
    }

    /// Re-reads kallsyms and ftrace's table for the kprobe targets: at start, and when a
    /// module has loaded (the only time an absent target can appear).
    pub fn refresh_symbols(&mut self, proc_root: &Path) {
        if let Ok(f) = fs::File::open(proc_root.join("kallsyms")) {
            // `addr type name [module]`
            self.symbols = names_in(f, 2, &self.wanted);
        }
        if let Some(dir) = &self.tracefs {
            // `name [module]`; unreadable (not root, lockdown) means: decide from kallsyms.
            self.traceable = fs::File::open(dir.join("available_filter_functions"))
                .ok()
                .map(|f| names_in(f, 0, &self.wanted));
        }
    }

    /// Whether a kprobe can go on `name`, as far as the kernel's own listings tell.
    pub fn probeable(&self, name: &str) -> Probeable {
        match (&self.traceable, self.symbols.contains(name)) {
            (Some(t), _) if t.contains(name) => Probeable::Yes,
            (Some(_), true) => Probeable::Notrace,
            (None, true) => Probeable::Yes,
            (_, false) => Probeable::NotLoaded,
        }
    }

    /// Whether the kernel has BTF (CONFIG_DEBUG_INFO_BTF), as found at start.
    pub fn has_btf(&self) -> bool {
        self.btf_present
    }

    /// Drops the parsed BTF (megabytes) once the programs that need it are attached; the
    /// queries on it answer `false` from then on, and only kprobes attach later.
    pub fn shed_btf(&mut self) {
        if self.btf.is_ok() {
            self.btf = Err("released after the programs were attached".to_owned());
        }
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.btf.as_ref().is_ok_and(|b| b.has_function(name))
    }

    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.btf.as_ref().is_ok_and(|b| b.has_tracepoint(name))
    }

    /// BPF LSM programs only run when `bpf` is among the active LSMs: on Debian 5.10 an LSM
    /// program attaches but never runs without `lsm=...,bpf` (docs/design.md section 2).
    pub fn bpf_lsm_active(&self) -> bool {
        self.lsms
            .as_ref()
            .is_ok_and(|l| l.iter().any(|m| m == "bpf"))
    }

    /// DMA-ownership functions exist from 5.19 on; before that the VFIO notifier BUG()s instead.
    pub fn has_dma_ownership(&self) -> bool {
        self.has_function("iommu_device_use_default_domain")
    }

    pub fn offsets(&self) -> Offsets {
        // Without BTF every row is there, unresolved: the loader names them all.
        let btf = self.btf.as_ref().ok();
        Offsets {
            fields: FIELDS
                .iter()
                .map(|f| (f.global, btf.and_then(|b| resolve(b, f.lookup))))
                .collect(),
            file_count_one: u32::from(
                btf.is_some_and(|b| b.member_offset("file", "f_count").is_some()),
            ),
        }
    }

    /// `bpf_task_pt_regs` exists from 5.15 on; before, the hooks compute `task_pt_regs()`.
    pub fn has_task_pt_regs_helper(&self) -> bool {
        release_at_least(&self.kernel_release, (5, 15))
    }

    /// What `really_probe` returns for a bound device: 1 before 5.13, 0 since (ef6dcbdd8eb2).
    pub fn probe_ok_ret(&self) -> u32 {
        u32::from(!release_at_least(&self.kernel_release, (5, 13)))
    }

    /// Whether the LSM hook exists as a BPF LSM attach point (`bpf_lsm_<hook>`).
    pub fn has_lsm_hook(&self, hook: &str) -> bool {
        self.has_function(&format!("bpf_lsm_{hook}"))
    }
}

impl Features {
    /// Whether kprobes attach as BPF links, which can be pinned and outlive the agent (5.15+;
    /// before, they are perf events that close with it).
    pub fn kprobe_links_pinned(&self) -> bool {
        release_at_least(&self.kernel_release, (5, 15))
    }

    /// Whether a loaded LSM program can be attached again after its link was released (not on
    /// 5.10, where the first attach consumes the program's trampoline target: ENOENT after).
    /// Where it cannot, the write-time check stays attached.
    pub fn lsm_reattach(&self) -> bool {
        release_at_least(&self.kernel_release, (5, 15))
    }

    /// `FMODE_ATOMIC_POS` (0x8000) on the kernels known to set it on regular files and
    /// directories before `security_file_open` (5.10 to 7.x, tested here), else 0: the open
    /// hook's fast path is then off, never wrong.
    pub fn fmode_regular(&self) -> u32 {
        let known = release_at_least(&self.kernel_release, (5, 10))
            && !release_at_least(&self.kernel_release, (8, 0));
        if known {
            0x8000
        } else {
            0
        }
    }
}

/// The value of one row of the kernel-field table in `btf`.
pub fn resolve(btf: &KernelBtf, lookup: Lookup) -> Option<u32> {
    match lookup {
        Lookup::Member(alternatives) => alternatives
            .iter()
            .find_map(|(name, path)| btf.member_path_offset(name, path)),
        Lookup::Sum((a, a_path), (b, b_path)) => btf
            .member_path_offset(a, a_path)
            .zip(btf.member_path_offset(b, b_path))
            .map(|(a, b)| a + b),
        Lookup::Size(name) => btf.struct_size(name),
        Lookup::SyscallNr => syscall_regs::nr(btf),
        Lookup::SyscallArg(n) => syscall_regs::arg(btf, n),
        // Where the override string's pointer is: `pci_dev.driver_override`, or since the
        // driver core took it over (6.19; Debian backports it, 6.12.118 has it)
        // `device.driver_override.name`, read from the device itself.
        Lookup::PciOverrideBase => {
            if btf.member_offset("pci_dev", "driver_override").is_some() {
                btf.member_offset("pci_dev", "dev")
            } else {
                btf.member_path_offset("device", &["driver_override", "name"])
                    .map(|_| 0)
            }
        }
    }
}

/// Where the syscall number and its first arguments are in `struct pt_regs`, for the
/// architecture this agent is built for (its eBPF object is built for the same one,
/// ebpf/src/syscall_abi.rs): the `OFF_REGS_*` globals keep their x86-64 names.
pub mod syscall_regs {
    use super::KernelBtf;

    /// x86_64: `orig_ax`.
    #[cfg(not(target_arch = "aarch64"))]
    pub fn nr(btf: &KernelBtf) -> Option<u32> {
        btf.member_offset("pt_regs", "orig_ax")
    }

    /// x86_64: `di`, `si`, `dx`.
    #[cfg(not(target_arch = "aarch64"))]
    pub fn arg(btf: &KernelBtf, n: u32) -> Option<u32> {
        let name = ["di", "si", "dx"].get(n as usize)?;
        btf.member_offset("pt_regs", name)
    }

    /// arm64: `syscallno` (an s32; the programs read 4 bytes there).
    #[cfg(target_arch = "aarch64")]
    pub fn nr(btf: &KernelBtf) -> Option<u32> {
        btf.member_offset("pt_regs", "syscallno")
    }

    /// arm64: argument 0 from `orig_x0` (`regs[0]` becomes the return value), 1 and 2 from
    /// `regs[1]`, `regs[2]` (u64 each, inside the anonymous union's struct).
    #[cfg(target_arch = "aarch64")]
    pub fn arg(btf: &KernelBtf, n: u32) -> Option<u32> {
        match n {
            0 => btf.member_offset("pt_regs", "orig_x0"),
            1 | 2 => btf.member_offset("pt_regs", "regs").map(|r| r + 8 * n),
            _ => None,
        }
    }
}

/// Whether a release string such as `5.10.0-32-amd64` is at least `(major, minor)`.
pub fn release_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= want
}

fn parse_lsm_list(s: &str) -> Vec<String> {
    s.trim()
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `wanted` names found in a listing whose `column` (whitespace-separated) is the name,
/// read line by line so that only the few names wanted are ever held; bounded in total size
/// and per line.
fn names_in(listing: impl Read, column: usize, wanted: &BTreeSet<&str>) -> BTreeSet<String> {
    let mut reader = BufReader::new(listing.take(LISTING_LIMIT));
    let mut found = BTreeSet::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(SYMBOL_LINE_LIMIT)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let name = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.split_whitespace().nth(column));
        if let Some(name) = name.filter(|n| wanted.contains(n)) {
            found.insert(name.to_owned());
        }
        if line.last() != Some(&b'\n') {
            // An over-long line: skip its rest.
            let mut rest = Vec::new();
            if reader.read_until(b'\n', &mut rest).map_or(true, |n| n == 0) {
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's own kprobe targets.
    fn targets() -> impl Iterator<Item = &'static str> {
        crate::bpf::programs::kprobe_targets()
    }

    #[test]
    fn lsm_list() {
        assert_eq!(
            parse_lsm_list("lockdown,capability,landlock,yama,apparmor,bpf\n"),
            [
                "lockdown",
                "capability",
                "landlock",
                "yama",
                "apparmor",
                "bpf"
            ]
        );
        assert!(parse_lsm_list("\n").is_empty());
    }

    #[test]
    fn releases() {
        assert!(!release_at_least("5.10.0-32-amd64", (5, 15)));
        assert!(release_at_least("6.1.0-56-amd64", (5, 15)));
        assert!(release_at_least("6.12.118+deb13-amd64", (6, 2)));
        assert!(!release_at_least("unknown", (5, 0)));
    }

    #[test]
    fn kallsyms_module_symbols() {
        let text = "ffffffffc0a01000 t vfio_group_fops_open\t[vfio]\n\
                    ffffffff81000000 T _stext\n\
                    ffffffffc0a02000 t vfio_group_fops_release\t[vfio]\n";
        let found = names_in(text.as_bytes(), 2, &targets().collect());
        assert!(found.contains("vfio_group_fops_open"));
        assert!(found.contains("vfio_group_fops_release"));
        assert!(!found.contains("vfio_device_fops_cdev_open"));
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn a_stub_in_kallsyms_but_not_in_ftrace_is_notrace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let proc = dir.path().join("proc");
        let tracing = dir.path().join("sys/kernel/tracing");
        fs::create_dir_all(&proc).expect("mkdir");
        fs::create_dir_all(&tracing).expect("mkdir");
        fs::write(
            proc.join("kallsyms"),
            "ffffffffc0a01000 t vfio_group_fops_open\t[vfio]\n\
             ffffffffc0a03000 t vfio_device_fops_cdev_open\t[vfio]\n",
        )
        .expect("write");
        // An over-long line first: skipped, not mistaken for names.
        let long = "x".repeat(5000);
        fs::write(
            tracing.join("available_filter_functions"),
            format!("{long} vfio_device_fops_cdev_open\nvfio_group_fops_open [vfio]\n"),
        )
        .expect("write");
        let f = Features::probe(&dir.path().join("sys"), &proc, targets());
        assert_eq!(f.probeable("vfio_group_fops_open"), Probeable::Yes);
        assert_eq!(
            f.probeable("vfio_device_fops_cdev_open"),
            Probeable::Notrace
        );
        assert_eq!(f.probeable("vfio_group_fops_release"), Probeable::NotLoaded);
        // Without tracefs, kallsyms alone says present and the attach decides.
        let bare = Features::probe(&dir.path().join("nosys"), &proc, targets());
        assert_eq!(bare.probeable("vfio_device_fops_cdev_open"), Probeable::Yes);
    }

    #[test]
    fn missing_btf_and_securityfs_are_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Features::probe(dir.path(), dir.path(), targets());
        assert!(f
            .btf
            .as_ref()
            .err()
            .is_some_and(|e| e.contains("CONFIG_DEBUG_INFO_BTF")));
        assert!(!f.bpf_lsm_active());
        assert!(!f.has_function("really_probe"));
        let offsets = f.offsets();
        assert_eq!(offsets.fields.len(), FIELDS.len());
        assert!(offsets.fields.iter().all(|(_, v)| v.is_none()));
        assert_eq!(offsets.file_count_one, 0);
        assert_eq!(f.kernel_release, "unknown");
    }
}
