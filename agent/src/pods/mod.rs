//! Pod attribution without an API token: which pod and container a process belongs to, from
//! its cgroup v2 path as kubelet lays it out ([`parse`], pure), found from an event's cgroup id
//! ([`cgroup_ids`], a walk of the cgroup2 mount) or a holder's `/proc/PID/cgroup`; and, where the
//! kubelet's pod-resources socket is mounted, the pod a device plugin allocated a device to
//! ([`resources`]). The containers the policy trusts are named by their runtime's bundle
//! ([`trusted`], pure) and found with their cgroup ids ([`containers`]).
pub mod cgroup_ids;
pub mod containers;
pub mod parse;
pub mod resources;
pub mod trusted;

pub use cgroup_ids::{CgroupIds, Failure};
pub use parse::{pod_identity, proc_cgroup_identity, PodIdentity};
