//! Which containers the policy trusts (`trusted_containers`), decided from the container
//! runtime's own state with no API token: each container's OCI bundle `config.json` carries its
//! pod and name as annotations, and its `linux.cgroupsPath` names its cgroup. Pure: bytes and
//! strings in, decisions out; [`super::containers`] reads the files.
//!
//! containerd (CRI plugin): `io.kubernetes.cri.sandbox-namespace`, `io.kubernetes.cri.sandbox-name`,
//! `io.kubernetes.cri.container-name`, `io.kubernetes.cri.container-type` (`sandbox` for the pause
//! container); bundle `/run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/config.json`.
//! CRI-O: `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`, `io.kubernetes.container.name`,
//! `io.kubernetes.cri-o.ContainerType`; bundle
//! `/run/containers/storage/overlay-containers/<id>/userdata/config.json`.
use std::collections::BTreeMap;

use serde::Deserialize;

use super::parse::pod_identity;

/// The largest `config.json` read: a real one is 10-30 KiB (the whole OCI spec of one
/// container); a file past this is not a runtime's and is not parsed.
pub const BUNDLE_LIMIT: usize = 1 << 20;

/// One `trusted_containers` entry of the policy: a Kubernetes container whose processes may write what a
/// trusted writer may, matched against the pod and container its runtime's OCI bundle names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedContainer {
    /// The pod's namespace, exactly.
    pub namespace: String,
    /// The container's name in the pod spec, exactly.
    pub container: String,
    /// A prefix of the pod's name (a DaemonSet's pods are `<name>-<suffix>`); `None`: any pod.
    pub pod: Option<String>,
}

impl TrustedContainer {
    /// Whether the container `container` of pod `namespace/pod` is this one.
    pub fn matches(&self, namespace: &str, pod: &str, container: &str) -> bool {
        self.namespace == namespace
            && self.container == container
            && self.pod.as_deref().is_none_or(|p| pod.starts_with(p))
    }
}

impl std::fmt::Display for TrustedContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pod = self
            .pod
            .as_deref()
            .map_or("*".to_string(), |p| format!("{p}*"));
        write!(f, "{}/{pod}/{}", self.namespace, self.container)
    }
}

/// A container as Kubernetes names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerName {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

impl std::fmt::Display for ContainerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.pod, self.container)
    }
}

/// What a bundle's `config.json` says that matters here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// `None` for a pod's sandbox (pause) container, or a container no CRI runtime annotated.
    pub name: Option<ContainerName>,
    /// `linux.cgroupsPath` as written.
    pub cgroups_path: Option<String>,
}

/// Why a `config.json` says nothing usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not JSON, or not an OCI spec's shape (a runtime may still be writing it).
    #[error("not an OCI runtime spec: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    annotations: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    linux: Option<Linux>,
}

#[derive(Deserialize)]
struct Linux {
    #[serde(default, rename = "cgroupsPath")]
    cgroups_path: Option<String>,
}

/// Annotation keys of one runtime: namespace, pod, container, container type and the type's
/// value for a sandbox.
struct Keys {
    namespace: &'static str,
    pod: &'static str,
    container: &'static str,
    kind: &'static str,
    sandbox: &'static str,
}

const CONTAINERD: Keys = Keys {
    namespace: "io.kubernetes.cri.sandbox-namespace",
    pod: "io.kubernetes.cri.sandbox-name",
    container: "io.kubernetes.cri.container-name",
    kind: "io.kubernetes.cri.container-type",
    sandbox: "sandbox",
};
const CRIO: Keys = Keys {
    namespace: "io.kubernetes.pod.namespace",
    pod: "io.kubernetes.pod.name",
    container: "io.kubernetes.container.name",
    kind: "io.kubernetes.cri-o.ContainerType",
    sandbox: "sandbox",
};

/// Parses a bundle's `config.json` (already bounded to [`BUNDLE_LIMIT`] by the reader).
pub fn parse_bundle(bytes: &[u8]) -> Result<Bundle, BundleError> {
    let spec: Spec =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let text = |key: &str| spec.annotations.get(key).and_then(|v| v.as_str());
    let name = [CONTAINERD, CRIO].iter().find_map(|k| {
        if text(k.kind) == Some(k.sandbox) {
            return None;
        }
        Some(ContainerName {
            namespace: text(k.namespace)?.to_string(),
            pod: text(k.pod)?.to_string(),
            container: text(k.container)?.to_string(),
        })
    });
    Ok(Bundle {
        name,
        cgroups_path: spec.linux.and_then(|l| l.cgroups_path),
    })
}

/// The first policy entry that trusts container `name`.
pub fn trusted_by<'p>(
    policy: &'p [TrustedContainer],
    name: &ContainerName,
) -> Option<&'p TrustedContainer> {
    policy
        .iter()
        .find(|t| t.matches(&name.namespace, &name.pod, &name.container))
}

/// The cgroup directory, relative to the cgroup2 root, that an OCI `linux.cgroupsPath` names:
/// the cgroupfs form is a path (`/kubepods/besteffort/pod<uid>/<id>`); the systemd form is
/// `slice:prefix:name` (`kubepods-besteffort-pod<uid_>.slice:cri-containerd:<id>`), the unit
/// `<prefix>-<name>.scope` in the slice, whose parents are the slices of its dash-separated
/// prefixes (`kubepods.slice/kubepods-besteffort.slice/...`). `None` for anything else.
pub fn cgroup_dir(cgroups_path: &str) -> Option<String> {
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let dir = match parts.as_slice() {
        [path] if path.starts_with('/') => path.trim_matches('/').to_string(),
        [slice, prefix, name] if !slice.contains('/') && !name.is_empty() => {
            let unit = if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            };
            let mut dirs = slice_dirs(slice)?;
            dirs.push(unit);
            dirs.join("/")
        }
        _ => return None,
    };
    let ok = !dir.is_empty()
        && dir
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    ok.then_some(dir)
}

/// The directories of systemd slice `slice`: `a-b.slice` is `a.slice/a-b.slice`; the root
/// slice (`-.slice` or empty) is none.
fn slice_dirs(slice: &str) -> Option<Vec<String>> {
    if slice.is_empty() || slice == "-.slice" {
        return Some(Vec::new());
    }
    let name = slice.strip_suffix(".slice")?;
    if name.is_empty() || name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return None;
    }
    let mut dirs = Vec::new();
    let mut end = 0;
    for part in name.split('-') {
        end += part.len();
        dirs.push(format!("{}.slice", &name[..end]));
        end += 1;
    }
    Some(dirs)
}

/// Whether cgroup directory `dir` (from [`cgroup_dir`]) is the cgroup of container `id` as
/// kubelet lays it out: a bundle can name only its own container's cgroup, never a pod's, the
/// root or another container's.
pub fn is_container_cgroup(dir: &str, id: &str) -> bool {
    pod_identity(dir)
        .and_then(|p| p.container_id)
        .is_some_and(|c| c.eq_ignore_ascii_case(id))
        && dir
            .rsplit('/')
            .next()
            .is_some_and(|last| last.to_ascii_lowercase().contains(&id.to_ascii_lowercase()))
}

/// Whether `name` is a container id as runtimes write them (hex, at most 64 digits).
pub fn is_container_id(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3e2d1c0b0a99887766554433221100ffeeddccbbaa99887766554433221100";
    const UID_: &str = "8d2f7c1e_3b4a_4c5d_9e6f_0a1b2c3d4e5f";
    const UID: &str = "8d2f7c1e-3b4a-4c5d-9e6f-0a1b2c3d4e5f";

    /// A containerd CRI bundle's config.json, trimmed to what matters plus some noise.
    fn containerd(kind: &str, container: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.1.0","process":{{"args":["vfio-manage","bind","--all"],"cwd":"/"}},
"root":{{"path":"rootfs"}},
"annotations":{{"io.kubernetes.cri.container-type":"{kind}",
"io.kubernetes.cri.container-name":"{container}",
"io.kubernetes.cri.image-name":"nvcr.io/nvidia/cloud-native/vfio-manager:v0.3",
"io.kubernetes.cri.sandbox-id":"{ID}",
"io.kubernetes.cri.sandbox-name":"nvidia-vfio-manager-x7k2p",
"io.kubernetes.cri.sandbox-namespace":"gpu-operator",
"io.kubernetes.cri.sandbox-uid":"{UID}"}},
"linux":{{"cgroupsPath":"kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}","namespaces":[{{"type":"pid"}}]}}}}"#
        )
    }

    fn crio(kind: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.0.2-dev","annotations":{{
"io.kubernetes.cri-o.ContainerType":"{kind}",
"io.kubernetes.container.name":"nvidia-vfio-manager",
"io.kubernetes.pod.name":"nvidia-vfio-manager-x7k2p",
"io.kubernetes.pod.namespace":"gpu-operator",
"io.kubernetes.pod.uid":"{UID}"}},
"linux":{{"cgroupsPath":"/kubepods/besteffort/pod{UID}/crio-{ID}"}}}}"#
        )
    }

    fn name(container: &str) -> Option<ContainerName> {
        Some(ContainerName {
            namespace: "gpu-operator".into(),
            pod: "nvidia-vfio-manager-x7k2p".into(),
            container: container.into(),
        })
    }

    fn policy() -> Vec<TrustedContainer> {
        vec![TrustedContainer {
            namespace: "gpu-operator".into(),
            container: "nvidia-vfio-manager".into(),
            pod: None,
        }]
    }

    #[test]
    fn containerd_bundle() {
        let b = parse_bundle(containerd("container", "nvidia-vfio-manager").as_bytes()).unwrap();
        assert_eq!(b.name, name("nvidia-vfio-manager"));
        let dir = cgroup_dir(b.cgroups_path.as_deref().unwrap()).unwrap();
        assert_eq!(
            dir,
            format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope")
        );
        assert!(is_container_cgroup(&dir, ID));
        assert!(trusted_by(&policy(), b.name.as_ref().unwrap()).is_some());
        // Another container of the same pod is not trusted.
        let other = parse_bundle(containerd("container", "sidecar").as_bytes()).unwrap();
        assert!(trusted_by(&policy(), other.name.as_ref().unwrap()).is_none());
        // The pod's sandbox (pause) container is never a container of the policy.
        let sandbox =
            parse_bundle(containerd("sandbox", "nvidia-vfio-manager").as_bytes()).unwrap();
        assert_eq!(sandbox.name, None);
    }

    #[test]
    fn crio_bundle() {
        let b = parse_bundle(crio("container").as_bytes()).unwrap();
        assert_eq!(b.name, name("nvidia-vfio-manager"));
        let dir = cgroup_dir(b.cgroups_path.as_deref().unwrap()).unwrap();
        assert_eq!(dir, format!("kubepods/besteffort/pod{UID}/crio-{ID}"));
        assert!(is_container_cgroup(&dir, ID));
        assert_eq!(parse_bundle(crio("sandbox").as_bytes()).unwrap().name, None);
        // CRI-O's systemd form, guaranteed QoS.
        let dir = cgroup_dir(&format!("kubepods-pod{UID_}.slice:crio:{ID}")).unwrap();
        assert_eq!(
            dir,
            format!("kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID}.scope")
        );
        assert!(is_container_cgroup(&dir, ID));
    }

    #[test]
    fn malformed_and_unannotated_bundles() {
        for bad in ["", "{", "null", "{\"annotations\": 3}", "\u{0}\u{1}"] {
            assert!(
                matches!(parse_bundle(bad.as_bytes()), Err(BundleError::Malformed(_))),
                "{bad:?}"
            );
        }
        // A half-written file (a runtime still writing it) is malformed, not a container.
        let full = containerd("container", "nvidia-vfio-manager");
        assert!(parse_bundle(&full.as_bytes()[..full.len() / 2]).is_err());
        // Valid JSON without annotations, or with some missing: no name.
        let none = parse_bundle(b"{\"ociVersion\":\"1.0.0\"}").unwrap();
        assert_eq!((none.name, none.cgroups_path), (None, None));
        let partial = r#"{"annotations":{"io.kubernetes.cri.container-name":"nvidia-vfio-manager",
            "io.kubernetes.cri.sandbox-namespace":"gpu-operator"}}"#;
        assert_eq!(parse_bundle(partial.as_bytes()).unwrap().name, None);
        // Annotations that are not strings are ignored, not an error for the rest.
        let odd = r#"{"annotations":{"io.kubernetes.cri.container-name":7,
            "io.kubernetes.cri.sandbox-name":"p","io.kubernetes.cri.sandbox-namespace":"n"}}"#;
        assert_eq!(parse_bundle(odd.as_bytes()).unwrap().name, None);
    }

    #[test]
    fn a_huge_bundle_parses_in_bounded_time() {
        // The reader stops at BUNDLE_LIMIT; a file of that size still parses quickly.
        let padding = "x".repeat(BUNDLE_LIMIT - 1000);
        let json = format!(
            r#"{{"process":{{"env":["PAD={padding}"]}},"annotations":{{"io.kubernetes.pod.namespace":"gpu-operator","io.kubernetes.pod.name":"nvidia-vfio-manager-x7k2p","io.kubernetes.container.name":"nvidia-vfio-manager"}}}}"#
        );
        assert!(json.len() <= BUNDLE_LIMIT);
        let start = std::time::Instant::now();
        assert_eq!(
            parse_bundle(json.as_bytes()).unwrap().name,
            name("nvidia-vfio-manager")
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        // Deeply nested JSON is refused by serde_json's recursion limit, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_bundle(deep.as_bytes()).is_err());
    }

    #[test]
    fn cgroups_paths() {
        assert_eq!(
            cgroup_dir("/kubepods/pod1/abc").as_deref(),
            Some("kubepods/pod1/abc")
        );
        assert_eq!(
            cgroup_dir("-.slice:docker:abc").as_deref(),
            Some("docker-abc.scope")
        );
        assert_eq!(
            cgroup_dir("kubelet-kubepods-burstable.slice:cri-containerd:abc").as_deref(),
            Some("kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/cri-containerd-abc.scope")
        );
        for bad in [
            "",
            "/",
            "relative/path",
            "/kubepods/../etc",
            "a:b",
            "a.slice:b:c:d",
            "kubepods--x.slice:cri-containerd:abc",
            "notaslice:cri-containerd:abc",
            "kubepods.slice:cri-containerd:",
            "kube/pods.slice:cri-containerd:abc",
        ] {
            assert_eq!(cgroup_dir(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_bundle_names_only_its_own_containers_cgroup() {
        let pod = format!("kubepods.slice/kubepods-pod{UID_}.slice");
        let own = format!("{pod}/cri-containerd-{ID}.scope");
        assert!(is_container_cgroup(&own, ID));
        assert!(is_container_cgroup(&own, &ID.to_ascii_uppercase()));
        let other = "a".repeat(64);
        assert!(!is_container_cgroup(&own, &other));
        assert!(!is_container_cgroup(&pod, ID), "the pod's cgroup");
        assert!(!is_container_cgroup("system.slice/containerd.service", ID));
        assert!(!is_container_cgroup(&format!("system.slice/{ID}"), ID));
        // A cgroup the container made below its own is not its own.
        assert!(!is_container_cgroup(&format!("{own}/init.scope"), ID));
        assert!(is_container_id(ID));
        assert!(!is_container_id("not-hex"));
        assert!(!is_container_id(&"a".repeat(65)));
    }
}
