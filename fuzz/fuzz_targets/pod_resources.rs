//! The kubelet pod-resources reply decoder (gRPC framing, then protobuf) on any bytes: never
//! panics, keeps its bounds, and what it decodes encodes back to bytes that decode the same.
#![no_main]
use iommu_enforcer::pods::resources::{
    grpc,
    proto::{self, PodResources},
    Table,
};
use libfuzzer_sys::fuzz_target;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(out: &mut Vec<u8>, number: u64, value: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// The decoded pods, encoded again (the fields the decoder keeps).
fn encode(pods: &[PodResources]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pods {
        let mut pod = Vec::new();
        field(&mut pod, 1, p.name.as_bytes());
        field(&mut pod, 2, p.namespace.as_bytes());
        for c in &p.containers {
            let mut container = Vec::new();
            field(&mut container, 1, c.name.as_bytes());
            for d in &c.devices {
                let mut devices = Vec::new();
                field(&mut devices, 1, d.resource_name.as_bytes());
                for id in &d.device_ids {
                    field(&mut devices, 2, id.as_bytes());
                }
                field(&mut container, 2, &devices);
            }
            field(&mut pod, 3, &container);
        }
        field(&mut out, 1, &pod);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The message itself, and the same bytes as a response body.
    let framed = grpc::unframe(data).ok();
    for message in std::iter::once(data).chain(framed) {
        let Ok(pods) = proto::decode_list(message) else {
            continue;
        };
        assert!(pods.len() <= proto::MAX_PODS);
        let mut ids = 0;
        for p in &pods {
            assert!(p.name.len() <= proto::MAX_STRING && p.namespace.len() <= proto::MAX_STRING);
            assert!(p.containers.len() <= proto::MAX_CONTAINERS);
            for c in &p.containers {
                assert!(c.devices.len() <= proto::MAX_DEVICE_ENTRIES);
                ids += c.devices.iter().map(|d| d.device_ids.len()).sum::<usize>();
            }
        }
        assert!(ids <= proto::MAX_DEVICE_IDS);
        let table = Table::from_pods(&pods);
        assert!(table.devices.len() + table.ignored_ids <= ids);
        assert_eq!(proto::decode_list(&encode(&pods)).as_ref(), Ok(&pods));
    }
});
