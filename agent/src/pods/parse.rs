//! Which pod and container a cgroup v2 path belongs to, as kubelet lays cgroups out. Pure: text
//! in, identity out.
//!
//! systemd driver: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice/
//! <runtime>-<id>.scope` (guaranteed pods have no qos level: `kubepods-pod<uid>.slice`); a kubelet
//! `--cgroup-root` prefixes every name (`kubelet-kubepods-...`). cgroupfs driver:
//! `kubepods/<qos>/pod<uid>/<id>` (guaranteed: `kubepods/pod<uid>/<id>`). Runtimes: containerd
//! `cri-containerd-<id>`, CRI-O `crio-<id>` (its `crio-conmon-<id>` is the monitor, not the
//! container), docker `docker-<id>`; cgroupfs names are the bare id.
use serde::Serialize;

/// The pod (and container) a process's cgroup belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodIdentity {
    /// `metadata.uid` of the pod, with dashes (`"8d2f7c1e-…"`; a static pod's is 32 hex digits).
    pub pod_uid: String,
    /// The runtime's container id (64 hex digits), bare: Kubernetes shows it as
    /// `<runtime>://<id>` in `status.containerStatuses[].containerID`. `None` for a process in
    /// the pod's own cgroup or in a runtime's monitor (CRI-O conmon).
    pub container_id: Option<String>,
}

/// A pod UID or container id is at most this long; anything longer is not kubelet's.
const MAX_ID: usize = 64;

/// The pod identity of cgroup `path` (absolute from the cgroup2 root, or as /proc/PID/cgroup
/// shows it, possibly with leading `/..` inside a cgroup namespace); `None` outside a pod.
pub fn pod_identity(path: &str) -> Option<PodIdentity> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // The pod level is the last component naming a pod under a kubepods ancestor.
    let (i, pod_uid) = parts.iter().enumerate().rev().find_map(|(i, part)| {
        let under_kubepods = parts[..i].iter().any(|p| is_kubepods(p));
        under_kubepods.then(|| pod_component(part).map(|uid| (i, uid)))?
    })?;
    let container_id = parts.get(i + 1).and_then(|c| container_component(c));
    Some(PodIdentity {
        pod_uid,
        container_id,
    })
}

/// `kubepods`, `kubepods.slice`, or with a `--cgroup-root` prefix `kubelet-kubepods.slice`.
fn is_kubepods(part: &str) -> bool {
    let name = part.strip_suffix(".slice").unwrap_or(part);
    name == "kubepods" || name.ends_with("-kubepods")
}

/// The pod UID of a pod-level component: `pod<uid>` (cgroupfs) or `…-pod<uid_>.slice` (systemd).
fn pod_component(part: &str) -> Option<String> {
    if let Some(slice) = part.strip_suffix(".slice") {
        let (prefix, uid) = slice.rsplit_once("-pod")?;
        if !is_kubepods(prefix) && !is_qos_slice(prefix) {
            return None;
        }
        // systemd escapes `-` in a unit name as `_`.
        return valid_uid(uid, '_').then(|| uid.replace('_', "-"));
    }
    let uid = part.strip_prefix("pod")?;
    valid_uid(uid, '-').then(|| uid.to_string())
}

/// `kubepods-besteffort`, `kubepods-burstable` (and prefixed forms).
fn is_qos_slice(prefix: &str) -> bool {
    ["besteffort", "burstable"].iter().any(|qos| {
        prefix
            .strip_suffix(qos)
            .and_then(|p| p.strip_suffix('-'))
            .is_some_and(is_kubepods)
    })
}

/// Hex digits and `sep`, with at least one digit: a UUID or a static pod's hash.
fn valid_uid(uid: &str, sep: char) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_ID
        && uid.chars().all(|c| c.is_ascii_hexdigit() || c == sep)
        && uid.chars().any(|c| c.is_ascii_hexdigit())
}

/// The container id of the component under the pod level, when it names one.
fn container_component(part: &str) -> Option<String> {
    let name = part.strip_suffix(".scope").unwrap_or(part);
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let id = ["cri-containerd-", "crio-", "docker-"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    let ok = !id.is_empty() && id.len() <= MAX_ID && id.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| id.to_ascii_lowercase())
}

/// The pod identity of a `/proc/PID/cgroup` text: from the cgroup v2 line (`0::PATH`), else
/// (a v1 or hybrid host, where the unified hierarchy may not follow kubelet's layout) from the
/// first v1 line that names a pod.
pub fn proc_cgroup_identity(text: &str) -> Option<PodIdentity> {
    let paths = || {
        text.lines().filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let id = fields.next()?;
            let _controllers = fields.next()?;
            Some((id, fields.next()?))
        })
    };
    let v2 = paths()
        .find(|(id, _)| *id == "0")
        .and_then(|(_, p)| pod_identity(p));
    v2.or_else(|| paths().find_map(|(_, p)| pod_identity(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8d2f7c1e-3b4a-4c5d-9e6f-0a1b2c3d4e5f";
    const UID_: &str = "8d2f7c1e_3b4a_4c5d_9e6f_0a1b2c3d4e5f";
    const ID: &str = "4f3e2d1c0b0a99887766554433221100ffeeddccbbaa99887766554433221100";

    fn pod(uid: &str, container: Option<&str>) -> Option<PodIdentity> {
        Some(PodIdentity {
            pod_uid: uid.to_string(),
            container_id: container.map(str::to_string),
        })
    }

    #[test]
    fn systemd_driver_every_qos_and_runtime() {
        for qos in ["besteffort", "burstable"] {
            for runtime in ["cri-containerd", "crio", "docker"] {
                let path = format!(
                    "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_}.slice/{runtime}-{ID}.scope"
                );
                assert_eq!(pod_identity(&path), pod(UID, Some(ID)), "{path}");
            }
        }
    }

    #[test]
    fn systemd_driver_guaranteed_has_no_qos_level() {
        let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(pod_identity(&path), pod(UID, Some(ID)));
    }

    #[test]
    fn cgroupfs_driver_every_qos_and_runtime() {
        for qos in ["besteffort/", "burstable/", ""] {
            for runtime in ["", "crio-", "docker-", "cri-containerd-"] {
                let path = format!("/kubepods/{qos}pod{UID}/{runtime}{ID}");
                assert_eq!(pod_identity(&path), pod(UID, Some(ID)), "{path}");
            }
        }
    }

    #[test]
    fn cgroup_root_prefix_and_namespace_relative_paths() {
        let kind = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(pod_identity(&kind), pod(UID, Some(ID)));
        let cgroupfs_root = format!("/kubelet/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(pod_identity(&cgroupfs_root), pod(UID, Some(ID)));
        // /proc/PID/cgroup of a process outside the reader's cgroup namespace.
        let relative = format!("/../../kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope");
        assert_eq!(pod_identity(&relative), pod(UID, Some(ID)));
    }

    #[test]
    fn pod_level_monitors_and_nested_cgroups() {
        let pod_only =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        assert_eq!(pod_identity(&pod_only), pod(UID, None));
        let conmon = format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope");
        assert_eq!(pod_identity(&conmon), pod(UID, None));
        // A cgroup the container made below its own (systemd inside, a nested runtime).
        let nested = format!("/kubepods/pod{UID}/{ID}/init.scope");
        assert_eq!(pod_identity(&nested), pod(UID, Some(ID)));
        // A static pod's UID is a hash, without dashes.
        let static_pod =
            "/kubepods/besteffort/pod0123456789abcdef0123456789abcdef/".to_string() + ID;
        assert_eq!(
            pod_identity(&static_pod),
            pod("0123456789abcdef0123456789abcdef", Some(ID))
        );
        let not_container = format!("/kubepods/pod{UID}/not-an-id");
        assert_eq!(pod_identity(&not_container), pod(UID, None));
    }

    #[test]
    fn not_a_pod() {
        for path in [
            "/",
            "",
            "/system.slice/containerd.service",
            "/user.slice/user-1000.slice/session-2.scope",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/kubepods/besteffort",
            // A pod-looking name outside kubepods.
            &format!("/system.slice/pod{UID}/{ID}"),
            &format!("/kubepods/pod{UID}x/{ID}"),
            &format!("/kubepods.slice/other-pod{UID_}.slice/{ID}"),
            &format!("/kubepods/pod{}/{ID}", "a".repeat(65)),
            "/kubepods/pod/x",
            "/kubepods/pod---/x",
        ] {
            assert_eq!(pod_identity(path), None, "{path}");
        }
    }

    #[test]
    fn proc_cgroup_lines() {
        let v2 = format!("0::/kubepods/pod{UID}/{ID}\n");
        assert_eq!(proc_cgroup_identity(&v2), pod(UID, Some(ID)));
        let hybrid = format!(
            "12:memory:/kubepods/pod{UID}/{ID}\n1:name=systemd:/kubepods/pod{UID}/{ID}\n0::/\n"
        );
        assert_eq!(proc_cgroup_identity(&hybrid), pod(UID, Some(ID)));
        let host = "12:memory:/user.slice\n0::/user.slice/session-1.scope\n";
        assert_eq!(proc_cgroup_identity(host), None);
        assert_eq!(proc_cgroup_identity("garbage\n"), None);
        assert_eq!(proc_cgroup_identity(""), None);
    }
}
