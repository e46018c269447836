//! The cgroup ids of the containers the policy trusts, read from the runtimes' state
//! directories (`--cri-state-dir`): each child is a container id, its bundle's `config.json`
//! (`<id>/config.json`, containerd; `<id>/userdata/config.json`, CRI-O) names the container
//! ([`super::trusted`]) and its cgroup, whose cgroup2 inode number is the id the eBPF programs
//! see. A container whose bundle or cgroup is not there yet is *pending* and read again at the
//! next scan; a decided one is never read again while its directory stays.
//!
//! [`StateWatch`] says when to scan (inotify on the state directories, no timer); the daemon
//! also scans again after a short backoff while containers are pending ([`BACKOFF`]), and when a
//! veto names a container this has not decided ([`TrustedContainers::should_rescan_for`]).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use log::{debug, info, warn};

use super::trusted::{self, ContainerName, TrustedContainer, BUNDLE_LIMIT};
use crate::bounded;

/// The default `--cri-state-dir`s: containerd's CRI task bundles and CRI-O's containers.
pub const DEFAULT_STATE_DIRS: [&str; 2] = [
    "/run/containerd/io.containerd.runtime.v2.task/k8s.io",
    "/run/containers/storage/overlay-containers",
];

/// Container directories read per state directory at most (a node runs a few hundred).
pub const MAX_CONTAINERS: usize = 16_384;

/// When pending containers are looked at again after a scan that left some: a bundle's
/// directory appears before its `config.json` is written and before the runtime makes its
/// cgroup, a few milliseconds to a second later. Then nothing until the next change.
pub const BACKOFF: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// What is known of one container directory.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Known {
    /// Trusted, with its cgroup id.
    Trusted { name: ContainerName, cgroup: u64 },
    /// Decided: not a container the policy names (or a sandbox, or not annotated).
    Untrusted,
    /// Its bundle, a complete `config.json` or its cgroup is not there yet.
    Pending(String),
}

/// The trusted containers of one node, as last scanned.
pub struct TrustedContainers {
    dirs: Vec<PathBuf>,
    cgroup_root: PathBuf,
    policy: Vec<TrustedContainer>,
    /// (state dir index, container id) -> what it is.
    known: HashMap<(usize, String), Known>,
    /// Container ids a veto named that no state directory held at the scan that followed:
    /// not scanned for again until a state directory changes.
    absent: HashSet<String>,
    /// The set last handed out.
    current: BTreeMap<u64, ContainerName>,
    /// Scans done (tests and logs).
    pub scans: u64,
}

impl TrustedContainers {
    pub fn new(dirs: &[PathBuf], cgroup_root: &Path, policy: &[TrustedContainer]) -> Self {
        Self {
            dirs: dirs.to_vec(),
            cgroup_root: cgroup_root.to_path_buf(),
            policy: policy.to_vec(),
            known: HashMap::new(),
            absent: HashSet::new(),
            current: BTreeMap::new(),
            scans: 0,
        }
    }

    /// The state directories scanned.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The policy changed: every container is decided again at the next scan.
    pub fn set_policy(&mut self, policy: &[TrustedContainer]) {
        self.policy = policy.to_vec();
        self.known.clear();
        self.absent.clear();
    }

    /// Whether some container is still pending (worth a retry after a backoff).
    pub fn pending(&self) -> bool {
        self.known.values().any(|k| matches!(k, Known::Pending(_)))
    }

    /// Whether a veto by container `id` calls for a scan: it is pending, or no scan has seen
    /// it since the state directories last changed.
    pub fn should_rescan_for(&self, id: &str) -> bool {
        if self.absent.contains(id) {
            return false;
        }
        let mut seen = self.known.iter().filter(|((_, c), _)| c == id).peekable();
        seen.peek().is_none() || seen.any(|(_, k)| matches!(k, Known::Pending(_)))
    }

    /// A state directory changed: ids remembered as absent may be there now.
    pub fn forget_absent(&mut self) {
        self.absent.clear();
    }

    /// Scans the state directories; `Some(set)` when the trusted cgroup ids changed (logged at
    /// info with who they are). `asked` are container ids a veto named: those still not found
    /// are not scanned for again until [`TrustedContainers::forget_absent`].
    pub fn scan(&mut self, asked: &[String]) -> Option<BTreeSet<u64>> {
        if self.policy.is_empty() {
            // Nothing to look for: no read at all.
            self.known.clear();
            if self.current.is_empty() {
                return None;
            }
            self.current.clear();
            info!("trusted containers: none (the policy trusts no container)");
            return Some(BTreeSet::new());
        }
        self.scans += 1;
        let cgroup2 = super::cgroup_ids::cgroup2_root(&self.cgroup_root);
        let mut seen = HashSet::new();
        for (i, dir) in self.dirs.iter().enumerate() {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    debug!("trusted containers: {}: {e}", dir.display());
                    continue;
                }
            };
            for entry in entries.filter_map(Result::ok).take(MAX_CONTAINERS) {
                let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !trusted::is_container_id(&id) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let key = (i, id);
                let decided = self
                    .known
                    .get(&key)
                    .is_some_and(|k| !matches!(k, Known::Pending(_)));
                if !decided {
                    let k = resolve(&entry.path(), &key.1, cgroup2.as_deref(), &self.policy);
                    if let Known::Pending(why) = &k {
                        debug!("trusted containers: {} pending: {why}", key.1);
                    }
                    self.known.insert(key.clone(), k);
                }
                seen.insert(key);
            }
        }
        // Containers whose directory went are forgotten (their ids are never reused).
        self.known.retain(|k, _| seen.contains(k));
        for id in asked {
            if !self.known.keys().any(|(_, c)| c == id) {
                self.absent.insert(id.clone());
            }
        }
        let now: BTreeMap<u64, ContainerName> = self
            .known
            .values()
            .filter_map(|k| match k {
                Known::Trusted { name, cgroup } => Some((*cgroup, name.clone())),
                _ => None,
            })
            .collect();
        if now == self.current {
            return None;
        }
        self.current = now;
        if self.current.is_empty() {
            info!("trusted containers: none running");
        } else {
            let list: Vec<String> = self
                .current
                .iter()
                .map(|(cgroup, name)| format!("{name} -> cgroup {cgroup}"))
                .collect();
            info!("trusted containers: {}", list.join(", "));
        }
        Some(self.current.keys().copied().collect())
    }
}

/// What container directory `dir` (named `id`) is: its bundle read and decided, and for a
/// trusted one, its cgroup found.
fn resolve(dir: &Path, id: &str, cgroup2: Option<&Path>, policy: &[TrustedContainer]) -> Known {
    let config = ["config.json", "userdata/config.json"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists());
    let Some(config) = config else {
        return Known::Pending("no config.json yet".into());
    };
    let bytes = match bounded::read(&config, BUNDLE_LIMIT) {
        Ok(b) => b,
        Err(bounded::BoundedError::NotFound) => return Known::Pending("config.json went".into()),
        Err(e @ (bounded::BoundedError::TooLong { .. } | bounded::BoundedError::NotRegular(_))) => {
            warn!("trusted containers: {}: {e}; not trusted", config.display());
            return Known::Untrusted;
        }
        Err(e) => return Known::Pending(format!("{}: {e}", config.display())),
    };
    let bundle = match trusted::parse_bundle(&bytes) {
        Ok(b) => b,
        // Possibly still being written: read again later.
        Err(e) => return Known::Pending(format!("{}: {e}", config.display())),
    };
    let Some(name) = bundle.name else {
        return Known::Untrusted;
    };
    if trusted::trusted_by(policy, &name).is_none() {
        return Known::Untrusted;
    }
    let Some(cgroups_path) = bundle.cgroups_path else {
        warn!("trusted containers: {name} ({id}): its config.json has no linux.cgroupsPath; not trusted");
        return Known::Untrusted;
    };
    let dir = match trusted::cgroup_dir(&cgroups_path) {
        Some(d) if trusted::is_container_cgroup(&d, id) => d,
        _ => {
            warn!("trusted containers: {name} ({id}): cgroupsPath {cgroups_path:?} is not that container's kubelet cgroup; not trusted");
            return Known::Untrusted;
        }
    };
    let Some(root) = cgroup2 else {
        return Known::Pending("no cgroup2 tree".into());
    };
    match std::fs::metadata(root.join(&dir)) {
        Ok(m) if m.is_dir() => Known::Trusted {
            name,
            cgroup: m.ino(),
        },
        _ => Known::Pending(format!("cgroup {dir} not there yet")),
    }
}

/// What a state directory (or the nearest existing directory above one not there yet) is
/// watched for: entries made, removed or renamed, and the directory itself going.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// inotify on the state directories: readable when a container directory appears or goes.
pub struct StateWatch {
    dirs: Vec<PathBuf>,
    fd: OwnedFd,
}

impl StateWatch {
    pub fn new(dirs: &[PathBuf]) -> io::Result<Self> {
        // SAFETY: no pointers; the fd returned is owned below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let w = Self {
            dirs: dirs.to_vec(),
            fd,
        };
        w.arm();
        Ok(w)
    }

    /// Reads the pending notifications and watches directories that appeared since.
    pub fn drain(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a buffer of the length given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
        }
        self.arm();
    }

    /// Watches each state directory, or while it is not there, the nearest directory above it
    /// (a runtime started after the agent makes it). Adding a watch twice is a no-op.
    fn arm(&self) {
        for dir in &self.dirs {
            if let Some(existing) = dir.ancestors().find(|d| d.is_dir()) {
                add_watch(self.fd.as_raw_fd(), existing);
            }
        }
    }
}

impl AsRawFd for StateWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn add_watch(fd: RawFd, dir: &Path) {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    if unsafe { libc::inotify_add_watch(fd, c.as_ptr(), MASK) } < 0 {
        debug!(
            "trusted containers: cannot watch {}: {}",
            dir.display(),
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const UID_: &str = "8d2f7c1e_3b4a_4c5d_9e6f_0a1b2c3d4e5f";
    const TRUSTED: &str = "aaaa0000000000000000000000000000000000000000000000000000000000a1";
    const OTHER: &str = "bbbb0000000000000000000000000000000000000000000000000000000000b2";

    struct Node {
        _dir: tempfile::TempDir,
        containerd: PathBuf,
        crio: PathBuf,
        cgroup: PathBuf,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let containerd = dir
            .path()
            .join("run/containerd/io.containerd.runtime.v2.task/k8s.io");
        let crio = dir.path().join("run/containers/storage/overlay-containers");
        let cgroup = dir.path().join("cgroup");
        fs::create_dir_all(&containerd).unwrap();
        fs::create_dir_all(&cgroup).unwrap();
        fs::write(cgroup.join("cgroup.controllers"), "").unwrap();
        Node {
            _dir: dir,
            containerd,
            crio,
            cgroup,
        }
    }

    fn policy() -> Vec<TrustedContainer> {
        vec![TrustedContainer {
            namespace: "gpu-operator".into(),
            container: "nvidia-vfio-manager".into(),
            pod: None,
        }]
    }

    fn containerd_config(container: &str, id: &str) -> String {
        format!(
            r#"{{"annotations":{{"io.kubernetes.cri.container-type":"container",
"io.kubernetes.cri.container-name":"{container}",
"io.kubernetes.cri.sandbox-name":"nvidia-vfio-manager-x7k2p",
"io.kubernetes.cri.sandbox-namespace":"gpu-operator"}},
"linux":{{"cgroupsPath":"kubepods-besteffort-pod{UID_}.slice:cri-containerd:{id}"}}}}"#
        )
    }

    fn cgroup_of(n: &Node, id: &str) -> PathBuf {
        n.cgroup.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{id}.scope"
        ))
    }

    fn ino(p: &Path) -> u64 {
        fs::metadata(p).unwrap().ino()
    }

    fn scanner(n: &Node) -> TrustedContainers {
        TrustedContainers::new(
            &[n.containerd.clone(), n.crio.clone()],
            &n.cgroup,
            &policy(),
        )
    }

    #[test]
    fn a_container_pending_until_its_config_and_cgroup_are_there() {
        let n = node();
        let mut t = scanner(&n);
        assert_eq!(t.scan(&[]), None, "nothing yet, nothing changed");
        let bundle = n.containerd.join(TRUSTED);
        fs::create_dir(&bundle).unwrap();
        assert_eq!(t.scan(&[]), None);
        assert!(t.pending(), "the bundle without its config.json");
        fs::write(
            bundle.join("config.json"),
            containerd_config("nvidia-vfio-manager", TRUSTED),
        )
        .unwrap();
        assert_eq!(t.scan(&[]), None);
        assert!(t.pending(), "the config without its cgroup");
        let cg = cgroup_of(&n, TRUSTED);
        fs::create_dir_all(&cg).unwrap();
        assert_eq!(t.scan(&[]), Some(BTreeSet::from([ino(&cg)])));
        assert!(!t.pending());
        assert_eq!(t.scan(&[]), None, "unchanged");
        // The container goes: its bundle directory is removed.
        fs::remove_dir_all(&bundle).unwrap();
        assert_eq!(t.scan(&[]), Some(BTreeSet::new()));
    }

    #[test]
    fn other_containers_sandboxes_and_bad_bundles_are_not_trusted() {
        let n = node();
        let mut t = scanner(&n);
        let other = n.containerd.join(OTHER);
        fs::create_dir(&other).unwrap();
        fs::write(
            other.join("config.json"),
            containerd_config("sidecar", OTHER),
        )
        .unwrap();
        fs::create_dir_all(cgroup_of(&n, OTHER)).unwrap();
        // A bundle naming the trusted container but pointing at another container's cgroup.
        let forged = n.containerd.join(TRUSTED);
        fs::create_dir(&forged).unwrap();
        fs::write(
            forged.join("config.json"),
            containerd_config("nvidia-vfio-manager", OTHER),
        )
        .unwrap();
        // Not a container id, and a file where a directory should be.
        fs::create_dir(n.containerd.join("not-an-id")).unwrap();
        fs::write(n.containerd.join("cccc"), "").unwrap();
        assert_eq!(t.scan(&[]), None);
        assert!(!t.pending());
        assert!(!t.should_rescan_for(OTHER), "decided");
        // A config.json over the limit is refused unread past it.
        let huge = n.containerd.join("dddd");
        fs::create_dir(&huge).unwrap();
        fs::write(huge.join("config.json"), vec![b' '; BUNDLE_LIMIT + 1]).unwrap();
        assert_eq!(t.scan(&[]), None);
        assert!(!t.pending());
        // Half-written JSON: pending, decided once complete.
        fs::write(huge.join("config.json"), "{\"annotations\":").unwrap();
        let mut fresh = scanner(&n);
        assert_eq!(fresh.scan(&[]), None);
        assert!(fresh.pending());
    }

    #[test]
    fn crio_bundles_and_vetoes_by_unknown_containers() {
        let n = node();
        let mut t = scanner(&n);
        assert!(t.should_rescan_for(TRUSTED), "never seen");
        assert_eq!(t.scan(&[TRUSTED.to_string()]), None);
        assert!(!t.should_rescan_for(TRUSTED), "looked for, not there");
        let userdata = n.crio.join(TRUSTED).join("userdata");
        fs::create_dir_all(&userdata).unwrap();
        let uid = UID_.replace('_', "-");
        fs::write(
            userdata.join("config.json"),
            format!(
                r#"{{"annotations":{{"io.kubernetes.cri-o.ContainerType":"container",
"io.kubernetes.container.name":"nvidia-vfio-manager","io.kubernetes.pod.name":"m-1",
"io.kubernetes.pod.namespace":"gpu-operator"}},
"linux":{{"cgroupsPath":"/kubepods/besteffort/pod{uid}/crio-{TRUSTED}"}}}}"#
            ),
        )
        .unwrap();
        let cg = n
            .cgroup
            .join(format!("kubepods/besteffort/pod{uid}/crio-{TRUSTED}"));
        fs::create_dir_all(&cg).unwrap();
        t.forget_absent();
        assert!(t.should_rescan_for(TRUSTED));
        assert_eq!(t.scan(&[]), Some(BTreeSet::from([ino(&cg)])));
        assert!(!t.should_rescan_for(TRUSTED));
        // The policy changes: decided again.
        t.set_policy(&[]);
        assert_eq!(t.scan(&[]), Some(BTreeSet::new()));
    }

    #[test]
    fn the_watch_sees_a_state_directory_made_after_start() {
        let n = node();
        let w = StateWatch::new(std::slice::from_ref(&n.crio)).unwrap();
        let readable = || {
            let mut p = libc::pollfd {
                fd: w.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, its length given.
            unsafe { libc::poll(&mut p, 1, 5000) == 1 }
        };
        // /run/containers is not there: its parent is watched.
        fs::create_dir_all(&n.crio).unwrap();
        assert!(readable());
        w.drain();
        fs::create_dir(n.crio.join(TRUSTED)).unwrap();
        assert!(
            readable(),
            "the state directory itself is watched once it exists"
        );
        w.drain();
    }
}
