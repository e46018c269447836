use super::*;

// Wire types, for the encoder below.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A tiny protobuf encoder: just what the kubelet's reply uses.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    fn key(&mut self, field: u64, wire: u8) -> &mut Self {
        self.varint(field << 3 | u64::from(wire))
    }
    fn bytes(&mut self, field: u64, b: &[u8]) -> &mut Self {
        self.key(field, LEN).varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn string(&mut self, field: u64, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    fn message(&mut self, field: u64, m: &Enc) -> &mut Self {
        self.bytes(field, &m.0)
    }
    fn int(&mut self, field: u64, v: u64) -> &mut Self {
        self.key(field, VARINT).varint(v)
    }
}

/// What a kubelet with KubeVirt's PCI host-device plugin and a CPU-managed pod answers, field
/// for field as its Go encoder writes it: cpu_ids packed, memory and topology present, a DRA
/// entry, a pod with no devices.
pub fn kubelet_reply() -> Vec<u8> {
    let numa = |id| {
        let mut node = Enc::default();
        node.int(1, id);
        let mut topo = Enc::default();
        topo.message(1, &node);
        topo
    };
    let mut gpu = Enc::default();
    gpu.string(1, "nvidia.com/GH100_H100")
        .string(2, "0000:41:00.0")
        .string(2, "0000:C1:00.0")
        .message(3, &numa(0));
    let mut cpus = Enc::default();
    for c in [2u64, 3, 66, 67] {
        cpus.varint(c);
    }
    let mut memory = Enc::default();
    memory
        .string(1, "memory")
        .int(2, 8 << 30)
        .message(3, &numa(0));
    let mut claim = Enc::default();
    claim
        .string(1, "gpu.nvidia.com")
        .string(2, "gpu-claim")
        .string(3, "vms");
    let mut compute = Enc::default();
    compute
        .string(1, "compute")
        .message(2, &gpu)
        .bytes(3, &cpus.0)
        .message(4, &memory)
        .message(5, &claim);
    let mut launcher = Enc::default();
    launcher
        .string(1, "virt-launcher-gpu-vm-x7k2p")
        .string(2, "vms")
        .message(3, &compute);
    let mut sidecar = Enc::default();
    sidecar.string(1, "guest-console-log");
    let mut plain = Enc::default();
    plain
        .string(1, "coredns-5d78c9869d-4xwpl")
        .string(2, "kube-system")
        .message(3, &sidecar);
    let mut reply = Enc::default();
    reply.message(1, &launcher).message(1, &plain);
    reply.0
}

#[test]
fn a_kubelet_reply_decodes_to_its_pods_containers_and_devices() {
    let pods = decode_list(&kubelet_reply()).unwrap();
    assert_eq!(
        pods,
        vec![
            PodResources {
                name: "virt-launcher-gpu-vm-x7k2p".into(),
                namespace: "vms".into(),
                containers: vec![ContainerResources {
                    name: "compute".into(),
                    devices: vec![ContainerDevices {
                        resource_name: "nvidia.com/GH100_H100".into(),
                        device_ids: vec!["0000:41:00.0".into(), "0000:C1:00.0".into()],
                    }],
                }],
            },
            PodResources {
                name: "coredns-5d78c9869d-4xwpl".into(),
                namespace: "kube-system".into(),
                containers: vec![ContainerResources {
                    name: "guest-console-log".into(),
                    devices: vec![],
                }],
            },
        ]
    );
    assert_eq!(decode_list(&[]), Ok(vec![]));
}

#[test]
fn unknown_fields_of_every_wire_type_are_skipped() {
    let mut pod = Enc::default();
    pod.int(9, u64::MAX) // varint, 10 bytes
        .string(1, "p")
        .key(10, FIXED64);
    pod.0.extend_from_slice(&[1; 8]);
    pod.key(11, FIXED32);
    pod.0.extend_from_slice(&[2; 4]);
    // A group holding a group, a varint and a string.
    pod.key(12, START_GROUP)
        .key(13, START_GROUP)
        .int(1, 5)
        .key(13, END_GROUP)
        .string(2, "in a group")
        .key(12, END_GROUP)
        .string(2, "ns")
        .bytes(99, &[0xff, 0xfe]); // not UTF-8, but unknown: skipped
    let mut reply = Enc::default();
    reply.int(2, 1).message(1, &pod).string(7, "x");
    assert_eq!(
        decode_list(&reply.0).unwrap(),
        vec![PodResources {
            name: "p".into(),
            namespace: "ns".into(),
            containers: vec![]
        }]
    );
}

#[test]
fn the_last_value_of_a_repeated_singular_field_wins() {
    let mut pod = Enc::default();
    pod.string(1, "old").string(1, "new");
    let mut reply = Enc::default();
    reply.message(1, &pod);
    assert_eq!(decode_list(&reply.0).unwrap()[0].name, "new");
}

/// The decode error of `bytes`, which must not decode.
fn protobuf_error(bytes: &[u8]) -> String {
    match decode_list(bytes) {
        Err(DecodeError::Protobuf(e)) => e.to_string(),
        other => panic!("{bytes:x?} decoded to {other:?}"),
    }
}

#[test]
fn malformed_bytes_are_errors_never_a_panic_or_an_allocation() {
    // Truncated and overlong varints.
    protobuf_error(&[0x0a, 0x80]);
    protobuf_error(&[0x88]);
    let mut eleven = vec![0x48];
    eleven.extend_from_slice(&[0x80; 10]);
    eleven.push(0);
    protobuf_error(&eleven);
    // Lengths past the end, at the top and inside a pod; a huge length allocates nothing.
    protobuf_error(&[0x0a, 0x05, 0x0a]);
    protobuf_error(&[0x0a, 0x03, 0x0a, 0x09, b'a']);
    let mut huge = vec![0x0a];
    huge.extend_from_slice(&[0xff; 9]);
    huge.push(0x01);
    protobuf_error(&huge);
    // Fixed-size values cut short, field number 0, wire types 6 and 7.
    protobuf_error(&[0x49, 1, 2, 3]);
    protobuf_error(&[0x4d, 1, 2, 3]);
    protobuf_error(&[0x00]);
    protobuf_error(&[0x0e]);
    protobuf_error(&[0x0f]);
    // pod_resources as a varint.
    protobuf_error(&[0x08, 0x01]);
}

#[test]
fn groups_must_match_and_nest_boundedly() {
    protobuf_error(&[0x4c]);
    protobuf_error(&[0x4b]);
    protobuf_error(&[0x4b, 0x54]);
    let mut deep = Enc::default();
    for _ in 0..32 {
        deep.key(9, START_GROUP);
    }
    for _ in 0..32 {
        deep.key(9, END_GROUP);
    }
    assert_eq!(decode_list(&deep.0), Ok(vec![]));
    // A million nested starts: refused at prost's recursion limit, no stack growth.
    let million = vec![0x4b; 1_000_000];
    assert!(protobuf_error(&million).contains("recursion limit"));
}

#[test]
fn strings_are_bounded_and_utf8() {
    let mut pod = Enc::default();
    pod.bytes(1, &[b'a', 0xc3]);
    let mut reply = Enc::default();
    reply.message(1, &pod);
    protobuf_error(&reply.0);
    let mut pod = Enc::default();
    pod.string(2, &"n".repeat(MAX_STRING + 1));
    let mut reply = Enc::default();
    reply.message(1, &pod);
    assert!(matches!(
        decode_list(&reply.0),
        Err(DecodeError::StringTooLong {
            what: "pod namespace",
            len,
        }) if len == MAX_STRING + 1
    ));
}

#[test]
fn counts_are_bounded() {
    let mut reply = Enc::default();
    for _ in 0..=MAX_PODS {
        reply.bytes(1, &[]);
    }
    assert_eq!(
        decode_list(&reply.0),
        Err(DecodeError::TooMany {
            what: "pods",
            limit: MAX_PODS
        })
    );
    let mut pod = Enc::default();
    for _ in 0..=MAX_CONTAINERS {
        pod.bytes(3, &[]);
    }
    let mut reply = Enc::default();
    reply.message(1, &pod);
    assert!(matches!(
        decode_list(&reply.0),
        Err(DecodeError::TooMany {
            limit: MAX_CONTAINERS,
            ..
        })
    ));
    // Device ids count across the whole reply, not per entry.
    let mut entry = Enc::default();
    for _ in 0..MAX_DEVICE_IDS / 4 + 1 {
        entry.string(2, "x");
    }
    let mut container = Enc::default();
    for _ in 0..4 {
        container.message(2, &entry);
    }
    let mut pod = Enc::default();
    pod.message(3, &container);
    let mut reply = Enc::default();
    reply.message(1, &pod);
    assert_eq!(
        decode_list(&reply.0),
        Err(DecodeError::TooMany {
            what: "device ids",
            limit: MAX_DEVICE_IDS
        })
    );
    let big = vec![0u8; MAX_RESPONSE + 1];
    assert_eq!(
        decode_list(&big),
        Err(DecodeError::TooLarge {
            len: MAX_RESPONSE + 1,
            limit: MAX_RESPONSE
        })
    );
}

#[test]
fn every_prefix_of_a_reply_is_an_error_or_fewer_pods_never_a_panic() {
    let reply = kubelet_reply();
    for n in 0..reply.len() {
        let _ = decode_list(&reply[..n]);
    }
    // Every single-byte change too.
    for i in 0..reply.len() {
        for b in [0x00, 0x07, 0x80, 0xff] {
            let mut r = reply.clone();
            r[i] = b;
            let _ = decode_list(&r);
        }
    }
}
