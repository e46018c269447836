//! Which pod a device plugin allocated a PCI device to, from the kubelet's pod-resources socket
//! (`PodResourcesLister.List`, v1): the [`client`] (gRPC over HTTP/2 on a unix socket, one
//! deadline), the gRPC framing ([`grpc`]) and protobuf decoding ([`proto`]), both pure and
//! bounded, and the [`table`] of PCI address -> allocation the events are joined to. The reply
//! carries no pod UID: the join is by device id, so only plugins whose ids are PCI addresses
//! (VFIO passthrough plugins) are joined; DRA's `dynamic_resources` are not read.
pub mod client;
pub mod grpc;
pub mod proto;
pub mod table;

pub use client::{list, list_blocking, ListError, DEADLINE, DEFAULT_SOCKET};
pub use table::{pci_address, Table};
