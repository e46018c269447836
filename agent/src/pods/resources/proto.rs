//! The kubelet's `ListPodResourcesResponse` (k8s.io/kubelet/pkg/apis/podresources/v1), decoded
//! by hand from protobuf bytes: pure, every input bounded. Only the fields the agent reads are
//! kept; every other field, of any wire type, is skipped.
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
/// Nesting of deprecated groups (wire types 3 and 4) in a skipped field.
pub const MAX_GROUP_DEPTH: usize = 32;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodResources {
    pub name: String,
    pub namespace: String,
    pub containers: Vec<ContainerResources>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerResources {
    pub name: String,
    pub devices: Vec<ContainerDevices>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerDevices {
    pub resource_name: String,
    pub device_ids: Vec<String>,
}

/// Why bytes are not a response. `at` is the byte offset in the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the response is {len} bytes, more than the {limit} read")]
    TooLarge { len: usize, limit: usize },
    #[error("varint at byte {at} runs past the end")]
    TruncatedVarint { at: usize },
    #[error("varint at byte {at} is longer than 64 bits")]
    VarintOverflow { at: usize },
    #[error("field at byte {at}: length {len} runs past the end")]
    LengthPastEnd { at: usize, len: u64 },
    #[error("field at byte {at}: fixed-size value runs past the end")]
    TruncatedFixed { at: usize },
    #[error("field at byte {at}: wire type {wire} does not exist")]
    BadWireType { at: usize, wire: u8 },
    #[error("field at byte {at}: field number {number} is out of range")]
    BadFieldNumber { at: usize, number: u64 },
    #[error("field at byte {at}: {what} has wire type {wire}, not length-delimited")]
    WrongWireType {
        at: usize,
        what: &'static str,
        wire: u8,
    },
    #[error("group at byte {at} nests deeper than {MAX_GROUP_DEPTH}")]
    GroupTooDeep { at: usize },
    #[error("end of group at byte {at} matches no start")]
    UnmatchedEndGroup { at: usize },
    #[error("group at byte {at} is not closed")]
    UnclosedGroup { at: usize },
    #[error("more than {limit} {what}")]
    TooMany { what: &'static str, limit: usize },
    #[error("{what} at byte {at} is {len} bytes, more than {MAX_STRING}")]
    StringTooLong {
        at: usize,
        what: &'static str,
        len: usize,
    },
    #[error("{what} at byte {at} is not UTF-8")]
    NotUtf8 { at: usize, what: &'static str },
}

type Result<T> = std::result::Result<T, DecodeError>;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A field: its number, wire type and where its key starts.
#[derive(Clone, Copy, Debug)]
struct Key {
    number: u32,
    wire: u8,
    at: usize,
}

/// A cursor over one message's bytes; `base` is where they start in the whole response.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn at(&self) -> usize {
        self.base + self.pos
    }

    fn varint(&mut self) -> Result<u64> {
        let at = self.at();
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(DecodeError::TruncatedVarint { at });
            };
            self.pos += 1;
            // The tenth byte holds bit 63 alone.
            if i == 9 && b > 1 {
                return Err(DecodeError::VarintOverflow { at });
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow { at })
    }

    /// The next field's key, or `None` at the end of the message.
    fn key(&mut self) -> Result<Option<Key>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let at = self.at();
        let raw = self.varint()?;
        let wire = (raw & 7) as u8;
        let number = raw >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(DecodeError::BadFieldNumber { at, number });
        }
        if wire > FIXED32 {
            return Err(DecodeError::BadWireType { at, wire });
        }
        Ok(Some(Key {
            number: number as u32,
            wire,
            at,
        }))
    }

    /// A length-delimited value and where it starts.
    fn bytes(&mut self, key: Key, what: &'static str) -> Result<(&'a [u8], usize)> {
        if key.wire != LEN {
            return Err(DecodeError::WrongWireType {
                at: key.at,
                what,
                wire: key.wire,
            });
        }
        let len = self.varint()?;
        let rest = self.buf.len() - self.pos;
        if len > rest as u64 {
            return Err(DecodeError::LengthPastEnd { at: key.at, len });
        }
        let start = self.at();
        let value = &self.buf[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok((value, start))
    }

    fn string(&mut self, key: Key, what: &'static str) -> Result<String> {
        let (bytes, at) = self.bytes(key, what)?;
        if bytes.len() > MAX_STRING {
            return Err(DecodeError::StringTooLong {
                at,
                what,
                len: bytes.len(),
            });
        }
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::NotUtf8 { at, what })
    }

    fn fixed(&mut self, key: Key, n: usize) -> Result<()> {
        if self.buf.len() - self.pos < n {
            return Err(DecodeError::TruncatedFixed { at: key.at });
        }
        self.pos += n;
        Ok(())
    }

    /// Skips the value of a field the agent does not read. A group is skipped to its matching
    /// end, iteratively, at most [`MAX_GROUP_DEPTH`] deep.
    fn skip(&mut self, key: Key) -> Result<()> {
        match key.wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed(key, 8),
            LEN => self.bytes(key, "a skipped field").map(drop),
            FIXED32 => self.fixed(key, 4),
            END_GROUP => Err(DecodeError::UnmatchedEndGroup { at: key.at }),
            _ => {
                let mut open = vec![key.number];
                while let Some(&number) = open.last() {
                    let Some(inner) = self.key()? else {
                        return Err(DecodeError::UnclosedGroup { at: key.at });
                    };
                    match inner.wire {
                        START_GROUP if open.len() == MAX_GROUP_DEPTH => {
                            return Err(DecodeError::GroupTooDeep { at: inner.at })
                        }
                        START_GROUP => open.push(inner.number),
                        END_GROUP if inner.number == number => {
                            open.pop();
                        }
                        END_GROUP => return Err(DecodeError::UnmatchedEndGroup { at: inner.at }),
                        _ => self.skip(inner)?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Pushes onto `list`, or fails when it already holds `limit`.
fn push<T>(list: &mut Vec<T>, item: T, what: &'static str, limit: usize) -> Result<()> {
    if list.len() == limit {
        return Err(DecodeError::TooMany { what, limit });
    }
    list.push(item);
    Ok(())
}

/// Decodes a `ListPodResourcesResponse`.
pub fn decode_list(message: &[u8]) -> Result<Vec<PodResources>> {
    if message.len() > MAX_RESPONSE {
        return Err(DecodeError::TooLarge {
            len: message.len(),
            limit: MAX_RESPONSE,
        });
    }
    let mut ids = 0usize;
    let mut pods = Vec::new();
    let mut r = Reader::new(message, 0);
    while let Some(key) = r.key()? {
        if key.number == 1 {
            let (bytes, at) = r.bytes(key, "pod_resources")?;
            let pod = pod(bytes, at, &mut ids)?;
            push(&mut pods, pod, "pods", MAX_PODS)?;
        } else {
            r.skip(key)?;
        }
    }
    Ok(pods)
}

fn pod(bytes: &[u8], base: usize, ids: &mut usize) -> Result<PodResources> {
    let mut pod = PodResources::default();
    let mut r = Reader::new(bytes, base);
    while let Some(key) = r.key()? {
        match key.number {
            1 => pod.name = r.string(key, "pod name")?,
            2 => pod.namespace = r.string(key, "pod namespace")?,
            3 => {
                let (bytes, at) = r.bytes(key, "containers")?;
                let c = container(bytes, at, ids)?;
                push(
                    &mut pod.containers,
                    c,
                    "containers in a pod",
                    MAX_CONTAINERS,
                )?;
            }
            _ => r.skip(key)?,
        }
    }
    Ok(pod)
}

fn container(bytes: &[u8], base: usize, ids: &mut usize) -> Result<ContainerResources> {
    let mut c = ContainerResources::default();
    let mut r = Reader::new(bytes, base);
    while let Some(key) = r.key()? {
        match key.number {
            1 => c.name = r.string(key, "container name")?,
            2 => {
                let (bytes, at) = r.bytes(key, "devices")?;
                let d = devices(bytes, at, ids)?;
                push(
                    &mut c.devices,
                    d,
                    "device entries in a container",
                    MAX_DEVICE_ENTRIES,
                )?;
            }
            // cpu_ids (packed or not), memory, dynamic_resources (DRA: not read).
            _ => r.skip(key)?,
        }
    }
    Ok(c)
}

fn devices(bytes: &[u8], base: usize, ids: &mut usize) -> Result<ContainerDevices> {
    let mut d = ContainerDevices::default();
    let mut r = Reader::new(bytes, base);
    while let Some(key) = r.key()? {
        match key.number {
            1 => d.resource_name = r.string(key, "resource name")?,
            2 => {
                let id = r.string(key, "device id")?;
                if *ids == MAX_DEVICE_IDS {
                    return Err(DecodeError::TooMany {
                        what: "device ids",
                        limit: MAX_DEVICE_IDS,
                    });
                }
                *ids += 1;
                d.device_ids.push(id);
            }
            // topology
            _ => r.skip(key)?,
        }
    }
    Ok(d)
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
