//! cgroup id -> pod identity, for events whose process may already have exited. A cgroup v2
//! id (what `bpf_get_current_cgroup_id` records) is the inode number of the cgroup's directory
//! in cgroup2fs, so a walk of the cgroup2 mount maps ids to paths. Ids are not reused (the
//! kernel allocates them cyclically on 64 bits), so a miss can be remembered too.
//!
//! The walk runs only on a miss, at most once per batch of records, and is bounded in
//! directories and depth; what it finds for every pod cgroup is kept, so a pod's later events
//! are hits.
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::parse::{pod_identity, PodIdentity};

/// Directories one walk visits at most (a node has a few per container).
pub const MAX_WALK_DIRS: usize = 65_536;
/// Depth below the cgroup2 root one walk descends to (kubelet's layout is 4 or 5 deep).
pub const MAX_WALK_DEPTH: usize = 12;
/// Ids kept at most; past it the cache starts over (the next walk refills the live ones).
pub const MAX_CACHED: usize = 65_536;

/// The cgroup2 root under `root`: `root` itself or its `unified/` (hybrid hosts).
pub fn cgroup2_root(root: &Path) -> Option<PathBuf> {
    [root.to_path_buf(), root.join("unified")]
        .into_iter()
        .find(|r| r.join("cgroup.controllers").is_file())
}

/// Why an id has no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No cgroup2 hierarchy under the root (not mounted, or v1 only).
    NoCgroup2,
    /// The id was not in the tree when walked: the cgroup was removed first.
    NotFound,
    /// The walk stopped at its bound before it saw every directory.
    WalkLimit,
    /// A directory could not be read (other than vanishing mid-walk).
    Io,
}

impl Failure {
    /// The `reason` label of `iommu_enforcer_pod_attribution_failures_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NoCgroup2 => "no_cgroup2",
            Failure::NotFound => "not_found",
            Failure::WalkLimit => "walk_limit",
            Failure::Io => "io",
        }
    }

    pub const ALL: [Failure; 4] = [
        Failure::NoCgroup2,
        Failure::NotFound,
        Failure::WalkLimit,
        Failure::Io,
    ];
}

#[derive(Clone, Debug)]
enum Entry {
    Pod(PodIdentity),
    NotPod,
    /// Looked for and not found by the walk that followed (the cgroup was gone).
    Missing(Failure),
}

/// The id -> identity cache over one cgroup2 mount.
pub struct CgroupIds {
    /// Where cgroup2 is expected (`/sys/fs/cgroup`, or its `unified/` on a hybrid host).
    root: PathBuf,
    cache: HashMap<u64, Entry>,
    /// Walks done so far (the log says how often misses cost one).
    pub walks: u64,
    /// Why the last walk did not finish, for the ids it left unanswered.
    last_failure: Option<Failure>,
}

impl CgroupIds {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            cache: HashMap::new(),
            walks: 0,
            last_failure: None,
        }
    }

    /// The identity of cgroup `id`: `Ok(None)` outside a pod. Only the cache: call
    /// [`CgroupIds::prepare`] with the ids first.
    pub fn lookup(&self, id: u64) -> Result<Option<&PodIdentity>, Failure> {
        match self.cache.get(&id) {
            Some(Entry::Pod(p)) => Ok(Some(p)),
            Some(Entry::NotPod) => Ok(None),
            Some(Entry::Missing(f)) => Err(*f),
            None => Err(self.last_failure.unwrap_or(Failure::NotFound)),
        }
    }

    /// Makes every id of `ids` answerable: one walk when any is not cached yet (id 0, no
    /// cgroup recorded, is never looked up). An id the walk could not answer is answered
    /// `Err` by [`CgroupIds::lookup`].
    pub fn prepare(&mut self, ids: impl IntoIterator<Item = u64>) {
        let wanted: HashSet<u64> = ids
            .into_iter()
            .filter(|id| *id != 0 && !self.cache.contains_key(id))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let failure = match self.walk(&wanted) {
            Ok(()) => Failure::NotFound,
            Err(f @ Failure::WalkLimit) => f,
            // No tree yet (cgroup2 mounted later) or an unreadable part: the next batch with
            // these ids looks again instead of remembering a miss that may not be one.
            Err(_) => return,
        };
        for id in wanted {
            self.cache.entry(id).or_insert(Entry::Missing(failure));
        }
    }

    /// A walk now, for nothing in particular: at start, so pods that exist are known before
    /// their processes can exit.
    pub fn refresh(&mut self) -> Result<(), Failure> {
        self.walk(&HashSet::new())
    }

    /// The cgroup2 root: `root` itself or its `unified/` (hybrid hosts).
    fn cgroup2_root(&self) -> Option<PathBuf> {
        cgroup2_root(&self.root)
    }

    /// Walks the tree, keeping every pod cgroup and every wanted id it sees.
    fn walk(&mut self, wanted: &HashSet<u64>) -> Result<(), Failure> {
        let result = self.walk_tree(wanted);
        self.last_failure = result.err();
        result
    }

    fn walk_tree(&mut self, wanted: &HashSet<u64>) -> Result<(), Failure> {
        self.walks += 1;
        let root = self.cgroup2_root().ok_or(Failure::NoCgroup2)?;
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        let root_ino = std::fs::metadata(&root).map_err(|_| Failure::Io)?.ino();
        if wanted.contains(&root_ino) {
            self.cache.insert(root_ino, Entry::NotPod);
        }
        let mut result = Ok(());
        let mut visited = 0usize;
        // (directory, its path below the root, depth)
        let mut stack = vec![(root, String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => {
                    result = Err(Failure::Io);
                    continue;
                }
            };
            for entry in entries.filter_map(Result::ok) {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                visited += 1;
                if visited > MAX_WALK_DIRS {
                    return Err(Failure::WalkLimit);
                }
                let name = entry.file_name();
                let path = format!("{rel}/{}", name.to_string_lossy());
                // readdir's d_ino on cgroup2fs is the cgroup id (kernfs_ino), no stat needed.
                let ino = entry.ino();
                let identity = pod_identity(&path);
                if identity.is_some() || wanted.contains(&ino) {
                    let e = identity.map_or(Entry::NotPod, Entry::Pod);
                    self.cache.insert(ino, e);
                }
                if depth + 1 < MAX_WALK_DEPTH {
                    stack.push((entry.path(), path, depth + 1));
                } else if result.is_ok() {
                    result = Err(Failure::WalkLimit);
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const UID: &str = "8d2f7c1e-3b4a-4c5d-9e6f-0a1b2c3d4e5f";
    const UID_: &str = "8d2f7c1e_3b4a_4c5d_9e6f_0a1b2c3d4e5f";
    const ID: &str = "4f3e2d1c0b0a99887766554433221100ffeeddccbbaa99887766554433221100";

    fn ino(p: &Path) -> u64 {
        fs::metadata(p).unwrap().ino()
    }

    /// A tree shaped like cgroup2 (a plain directory tree: the inode mapping is the same).
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let pod = dir.path().join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ));
        fs::create_dir_all(&pod).unwrap();
        let host = dir.path().join("system.slice/containerd.service");
        fs::create_dir_all(&host).unwrap();
        (dir, pod, host)
    }

    #[test]
    fn ids_resolve_and_stay_known_after_the_cgroup_is_gone() {
        let (dir, pod, host) = tree();
        let mut ids = CgroupIds::new(dir.path());
        let (pod_id, host_id) = (ino(&pod), ino(&host));
        ids.prepare([pod_id, host_id, 0]);
        let want = PodIdentity {
            pod_uid: UID.into(),
            container_id: Some(ID.into()),
        };
        assert_eq!(ids.lookup(pod_id), Ok(Some(&want)));
        assert_eq!(ids.lookup(host_id), Ok(None));
        // The container exits and its cgroup is removed: the id still answers.
        fs::remove_dir(&pod).unwrap();
        ids.prepare([pod_id]);
        assert_eq!(ids.lookup(pod_id), Ok(Some(&want)));
        assert_eq!(ids.lookup(ino(dir.path())), Err(Failure::NotFound));
    }

    #[test]
    fn a_refresh_knows_pods_before_their_first_event() {
        let (dir, pod, _) = tree();
        let mut ids = CgroupIds::new(dir.path());
        let pod_id = ino(&pod);
        ids.refresh().unwrap();
        fs::remove_dir(&pod).unwrap();
        assert!(matches!(ids.lookup(pod_id), Ok(Some(_))));
    }

    #[test]
    fn a_cgroup_removed_before_the_walk_is_a_counted_miss_and_no_second_walk() {
        let (dir, pod, _) = tree();
        let mut ids = CgroupIds::new(dir.path());
        let gone = dir.path().join("kubepods.slice/gone");
        fs::create_dir(&gone).unwrap();
        let gone_id = ino(&gone);
        // Made before `gone` goes, so it cannot reuse its inode number (cgroup2 never reuses
        // ids; a test filesystem does).
        let new = dir.path().join("system.slice/new.service");
        fs::create_dir(&new).unwrap();
        fs::remove_dir(&gone).unwrap();
        ids.prepare([gone_id]);
        assert_eq!(ids.lookup(gone_id), Err(Failure::NotFound));
        // Remembered: a later batch with the same id does not walk again; a new id does.
        assert_eq!(ids.walks, 1);
        ids.prepare([gone_id]);
        assert_eq!(ids.walks, 1);
        // The pod was kept by the first walk: no walk for it either.
        ids.prepare([ino(&pod)]);
        assert_eq!(ids.walks, 1);
        ids.prepare([ino(&new)]);
        assert_eq!((ids.walks, ids.lookup(ino(&new))), (2, Ok(None)));
    }

    #[test]
    fn hybrid_hosts_use_unified_and_v1_only_hosts_fail() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = CgroupIds::new(dir.path());
        ids.prepare([12345]);
        assert_eq!(ids.lookup(12345), Err(Failure::NoCgroup2));
        // Not remembered: cgroup2 mounted later answers.
        fs::write(dir.path().join("cgroup.controllers"), "").unwrap();
        let root_id = ino(dir.path());
        ids.prepare([root_id]);
        assert_eq!(ids.lookup(root_id), Ok(None));
        fs::remove_file(dir.path().join("cgroup.controllers")).unwrap();
        let unified = dir.path().join("unified");
        let pod = unified.join(format!("kubepods/pod{UID}/{ID}"));
        fs::create_dir_all(&pod).unwrap();
        fs::write(unified.join("cgroup.controllers"), "").unwrap();
        let mut ids = CgroupIds::new(dir.path());
        ids.prepare([ino(&pod)]);
        assert_eq!(
            ids.lookup(ino(&pod)).unwrap().map(|p| p.pod_uid.as_str()),
            Some(UID)
        );
    }

    #[test]
    fn the_walk_is_bounded_in_depth() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "").unwrap();
        let mut deep = dir.path().to_path_buf();
        for i in 0..MAX_WALK_DEPTH + 3 {
            deep = deep.join(format!("d{i}"));
        }
        fs::create_dir_all(&deep).unwrap();
        let mut ids = CgroupIds::new(dir.path());
        assert_eq!(ids.refresh(), Err(Failure::WalkLimit));
        ids.prepare([ino(&deep)]);
        assert_eq!(ids.lookup(ino(&deep)), Err(Failure::WalkLimit));
    }
}
