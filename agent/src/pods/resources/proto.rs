//! The kubelet's `ListPodResourcesResponse` (k8s.io/kubelet/pkg/apis/podresources/v1): the
//! messages as hand-written structs decoded by prost's derive (no protoc, no generated code).
//! Only the fields the agent reads are declared; prost skips every other field, of any wire
//! type, groups included.
//!
//! ```text
//! message ListPodResourcesResponse { repeated PodResources pod_resources = 1; }
//! message PodResources { string name = 1; string namespace = 2; repeated ContainerResources containers = 3; }
//! message ContainerResources { string name = 1; repeated ContainerDevices devices = 2;
//!     repeated int64 cpu_ids = 3; repeated ContainerMemory memory = 4;
//!     repeated DynamicResource dynamic_resources = 5; }   // 3..5 skipped
//! message ContainerDevices { string resource_name = 1; repeated string device_ids = 2;
//!     TopologyInfo topology = 3; }                         // 3 skipped
//! ```
//!
//! Memory: the reply is capped at [`MAX_RESPONSE`] before it is decoded; the counts below are
//! checked on the decoded reply. The kubelet is trusted (its socket is root's), so these bounds
//! are against a kubelet bug, not an attacker: the worst 4 MiB reply (two-byte empty entries)
//! decodes to 2 Mi empty pods of 72 bytes, about 150 MB for a moment, inside the DaemonSet's
//! 256 Mi limit.

use prost::Message;

/// The largest response read (the gRPC message, without its 5-byte prefix).
pub const MAX_RESPONSE: usize = 4 << 20;
/// Pods in one response (kubelet's `--max-pods` is 110 by default).
pub const MAX_PODS: usize = 4096;
/// Containers of one pod, init and sidecar containers included.
pub const MAX_CONTAINERS: usize = 512;
/// `ContainerDevices` entries of one container.
pub const MAX_DEVICE_ENTRIES: usize = 512;
/// Device ids in the whole response.
pub const MAX_DEVICE_IDS: usize = 65536;
/// Bytes of one string: names are at most 253, device ids are addresses or UUIDs.
pub const MAX_STRING: usize = 1024;

#[derive(Clone, PartialEq, Eq, Message)]
struct ListPodResourcesResponse {
    #[prost(message, repeated, tag = "1")]
    pod_resources: Vec<PodResources>,
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct PodResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(message, repeated, tag = "3")]
    pub containers: Vec<ContainerResources>,
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct ContainerResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub devices: Vec<ContainerDevices>,
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct ContainerDevices {
    #[prost(string, tag = "1")]
    pub resource_name: String,
    #[prost(string, repeated, tag = "2")]
    pub device_ids: Vec<String>,
}

/// Why bytes are not a response the agent takes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the response is {len} bytes, more than the {limit} read")]
    TooLarge { len: usize, limit: usize },
    #[error("not a ListPodResourcesResponse: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("more than {limit} {what}")]
    TooMany { what: &'static str, limit: usize },
    #[error("{what} is {len} bytes, more than {MAX_STRING}")]
    StringTooLong { what: &'static str, len: usize },
}

type Result<T> = std::result::Result<T, DecodeError>;

/// The pods of a `ListPodResourcesResponse`, within the bounds above.
pub fn decode_list(message: &[u8]) -> Result<Vec<PodResources>> {
    if message.len() > MAX_RESPONSE {
        return Err(DecodeError::TooLarge {
            len: message.len(),
            limit: MAX_RESPONSE,
        });
    }
    let pods = ListPodResourcesResponse::decode(message)?.pod_resources;
    check_bounds(&pods)?;
    Ok(pods)
}

fn check_bounds(pods: &[PodResources]) -> Result<()> {
    at_most("pods", pods.len(), MAX_PODS)?;
    let mut ids = 0usize;
    for pod in pods {
        short("pod name", &pod.name)?;
        short("pod namespace", &pod.namespace)?;
        at_most("containers of a pod", pod.containers.len(), MAX_CONTAINERS)?;
        for container in &pod.containers {
            short("container name", &container.name)?;
            at_most(
                "device entries of a container",
                container.devices.len(),
                MAX_DEVICE_ENTRIES,
            )?;
            for entry in &container.devices {
                short("resource name", &entry.resource_name)?;
                for id in &entry.device_ids {
                    short("device id", id)?;
                }
                ids += entry.device_ids.len();
                at_most("device ids", ids, MAX_DEVICE_IDS)?;
            }
        }
    }
    Ok(())
}

fn at_most(what: &'static str, n: usize, limit: usize) -> Result<()> {
    if n > limit {
        return Err(DecodeError::TooMany { what, limit });
    }
    Ok(())
}

fn short(what: &'static str, s: &str) -> Result<()> {
    if s.len() > MAX_STRING {
        return Err(DecodeError::StringTooLong { what, len: s.len() });
    }
    Ok(())
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
