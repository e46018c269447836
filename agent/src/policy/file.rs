//! Reading and checking the policy file.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use super::{Intended, Policy, Reservations, Reserve, Selector, TrustedContainer};
use crate::bounded::{self, BoundedError};
use crate::pci::{ClassPrefix, DriverName, PciAddress, PciId};

/// The largest policy file read: far above any real policy (a ConfigMap holds at most 1 MiB,
/// about 16,000 reservations), small enough that `/dev/zero` behind a regular-looking name
/// cannot exhaust memory.
pub const POLICY_LIMIT: usize = 16 << 20;

/// Why a policy file could not be used. Displayed as `FILE:LINE:COLUMN: message`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{}: cannot read policy: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: BoundedError,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        message: String,
    },
}

impl Policy {
    /// Reads and checks the policy file at `path`: a regular file of at most
    /// [`POLICY_LIMIT`] bytes of UTF-8 (a FIFO or a device node is refused unread).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        Policy::from_bytes(Policy::read(path)?, path)
    }

    /// The bytes of the policy file at `path`, read as [`Policy::load`] reads them.
    pub fn read(path: &Path) -> Result<Vec<u8>, PolicyError> {
        bounded::read(path, POLICY_LIMIT).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks the bytes of a policy file (UTF-8, then [`Policy::parse`]); `path` names it.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Policy, PolicyError> {
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
            let (line, column) = line_column(prefix, valid);
            PolicyError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message: "the policy is not UTF-8".to_string(),
            }
        })?;
        Policy::parse(&text, path)
    }

    /// Parses policy `text`; `path` names it in errors. `toml` reads it into spanned typed
    /// values ([`RawPolicy`]): TOML errors, unknown keys, wrong types and values that are no
    /// address, ID, class, slot, group or driver name stop it there, at their place. The
    /// checks across keys and entries follow, in file order.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let invalid = |span: Range<usize>, message: String| {
            let (line, column) = line_column(text, span.start);
            PolicyError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let mut message = e.message().trim_end().to_string();
            // toml names no key here; the key is what its span covers.
            if message == "duplicate key" {
                if let Some(key) = text.get(span.clone()).filter(|k| !k.contains('\n')) {
                    message = format!("duplicate key `{}`", key.trim_matches(['"', '\'']));
                }
            }
            invalid(span, message)
        })?;

        let mut policy = Policy {
            source: Some(path.to_path_buf()),
            ..Policy::default()
        };
        if let Some(p) = raw.protect_user_groups {
            policy.protect_user_groups = p;
        }
        if let Some(list) = raw.allowed_drivers {
            policy.allowed_drivers = list.into_iter().map(|d| d.into_inner().0).collect();
        }
        if let Some(list) = raw.denied_drivers {
            let allowed: HashSet<&DriverName> = policy.allowed_drivers.iter().collect();
            for d in &list {
                if allowed.contains(&d.get_ref().0) {
                    return Err(invalid(
                        d.span(),
                        format!(
                            "driver {:?} is both in allowed_drivers and in denied_drivers",
                            d.get_ref().0.as_str()
                        ),
                    ));
                }
            }
            policy.denied_drivers = list.into_iter().map(|d| d.into_inner().0).collect();
        }
        for w in raw.trusted_writers.unwrap_or_default() {
            let span = w.span();
            let w = w.into_inner();
            if !w.starts_with('/') {
                return Err(invalid(
                    span,
                    format!("trusted_writers: {w:?} is not an absolute path"),
                ));
            }
            policy.trusted_writers.push(PathBuf::from(w));
        }
        for c in raw.trusted_containers.unwrap_or_default() {
            let span = c.span();
            let c = c.into_inner();
            let missing = |field: &str| {
                invalid(
                    span.clone(),
                    format!("trusted_containers: missing field `{field}`"),
                )
            };
            policy.trusted_containers.push(TrustedContainer {
                namespace: c.namespace.ok_or_else(|| missing("namespace"))?.0,
                container: c.container.ok_or_else(|| missing("container"))?.0,
                pod: c.pod.map(|p| p.0),
            });
        }

        // Each entry in turn: its selector, then whether an entry before reserved it.
        let mut lines = LineCounter::new(text);
        let mut reserve = Vec::with_capacity(raw.reserve.len());
        // Selector and nodes -> the line and driver of the entry that reserved them first.
        // Entries scoped to different nodes may select the same devices.
        let mut reserved: HashMap<Scope, (usize, Intended)> =
            HashMap::with_capacity(raw.reserve.len());
        for entry in raw.reserve {
            let span = entry.span();
            let (r, selector_span) = reservation(entry.into_inner(), span, &mut lines)
                .map_err(|(s, m)| invalid(s, m))?;
            let key = (r.selector.clone(), r.nodes.clone());
            if let Some((line, driver)) = reserved.get(&key) {
                let selector = &r.selector;
                let message = if *driver == r.driver {
                    format!("{selector} is already reserved at line {line}: duplicate reservation")
                } else {
                    format!(
                        "{selector} is reserved for {} here and for {driver} at line {line}: contradictory reservations",
                        r.driver
                    )
                };
                return Err(invalid(selector_span, message));
            }
            reserved.insert(key, (r.line, r.driver.clone()));
            reserve.push(r);
        }
        policy.reserve = Reservations::new(reserve);
        Ok(policy)
    }
}

/// What a reservation covers: its selector on the nodes with these labels.
type Scope = (Selector, Vec<(String, String)>);

/// Why an entry is not a reservation, and where.
type EntryError = (Range<usize>, String);

/// The policy as written: every key known, every value typed and checked on its own (the
/// wrappers' `Deserialize`), with where it was written for the checks across keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    protect_user_groups: Option<bool>,
    allowed_drivers: Option<Vec<Spanned<Allowed>>>,
    denied_drivers: Option<Vec<Spanned<Denied>>>,
    trusted_writers: Option<Vec<Spanned<String>>>,
    trusted_containers: Option<Vec<Spanned<RawContainer>>>,
    #[serde(default)]
    reserve: Vec<Spanned<RawReserve>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReserve {
    group: Option<Spanned<GroupNumber>>,
    device: Option<Spanned<Address>>,
    id: Option<Spanned<Id>>,
    class: Option<Spanned<Class>>,
    slot: Option<Spanned<Slot>>,
    driver: Option<Intended>,
    rebind: Option<bool>,
    nodes: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

/// The reservation of an entry of one selector; its selector's place.
fn reservation(
    r: RawReserve,
    span: Range<usize>,
    lines: &mut LineCounter<'_>,
) -> Result<(Reserve, Range<usize>), EntryError> {
    let selectors = [
        r.group
            .map(|g| (g.span(), Selector::Group(g.into_inner().0))),
        r.device
            .map(|a| (a.span(), Selector::Device(a.into_inner().0))),
        r.id.map(|id| (id.span(), Selector::Id(id.into_inner().0))),
        r.class
            .map(|c| (c.span(), Selector::Class(c.into_inner().0))),
        r.slot.map(|s| (s.span(), Selector::Slot(s.into_inner().0))),
    ];
    let mut selectors = selectors.into_iter().flatten();
    let (selector_span, selector) =
        match (selectors.next(), selectors.next()) {
            (Some(only), None) => only,
            (None, _) => {
                return Err((
                    span,
                    "empty reserve selector: set one of group, device, id, class, slot".to_string(),
                ))
            }
            (Some(_), Some((second, _))) => return Err((
                second,
                "more than one reserve selector: set only one of group, device, id, class, slot"
                    .to_string(),
            )),
        };
    let reserve = Reserve {
        selector,
        driver: r.driver.unwrap_or_else(|| Intended::Driver(vfio_pci())),
        rebind: r.rebind.unwrap_or(false),
        line: lines.line(span.start),
        nodes: r.nodes.map(nodes).transpose()?.unwrap_or_default(),
    };
    Ok((reserve, selector_span))
}

/// A string value that `parse` makes into a `T`, or the message `why` gives, at the value.
fn parsed<'de, D, T>(
    d: D,
    parse: impl FnOnce(&str) -> Option<T>,
    why: impl FnOnce(&str) -> String,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    parse(&s).ok_or_else(|| de::Error::custom(why(&s)))
}

/// `device = "0000:01:00.0"`.
struct Address(PciAddress);

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, PciAddress::parse, |a| {
            format!("device {a:?} is not a PCI address (DDDD:BB:DD.F, e.g. 0000:01:00.0)")
        })
        .map(Address)
    }
}

/// `id = "10de:2204"`.
struct Id(PciId);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, PciId::parse, |id| {
            format!("id {id:?} is not vendor:device in hex (e.g. 10de:2204)")
        })
        .map(Id)
    }
}

/// `class = "0x0300"`.
struct Class(ClassPrefix);

impl<'de> Deserialize<'de> for Class {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, ClassPrefix::parse, |c| {
            format!("class {c:?} is not a class code prefix of 2, 4 or 6 hex digits (e.g. 0x0300)")
        })
        .map(Class)
    }
}

/// `slot = "3"`: a physical slot's name as sysfs shows it, a directory name of
/// `bus/pci/slots`.
struct Slot(String);

impl<'de> Deserialize<'de> for Slot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = |s: &str| {
            (!s.is_empty() && s.len() <= 64 && !s.contains('/') && !s.chars().any(char::is_control))
                .then(|| s.to_string())
        };
        parsed(d, name, |s| {
            format!("slot {s:?} is not a slot name (a name under /sys/bus/pci/slots, e.g. \"3\")")
        })
        .map(Slot)
    }
}

/// A reservation's `driver`: `none` (stay unbound) or a driver name.
impl<'de> Deserialize<'de> for Intended {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "none" {
            return Ok(Intended::Unbound);
        }
        DriverName::parse(&s)
            .map(Intended::Driver)
            .map_err(|why| de::Error::custom(format!("reserve driver {s:?} {why}")))
    }
}

/// A driver name of `allowed_drivers` ...
struct Allowed(DriverName);
/// ... and of `denied_drivers`.
struct Denied(DriverName);

fn driver_in<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<DriverName, D::Error> {
    let s = String::deserialize(d)?;
    DriverName::parse(&s).map_err(|why| de::Error::custom(format!("{key}: driver {s:?} {why}")))
}

impl<'de> Deserialize<'de> for Allowed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        driver_in(d, "allowed_drivers").map(Allowed)
    }
}

impl<'de> Deserialize<'de> for Denied {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        driver_in(d, "denied_drivers").map(Denied)
    }
}

/// A group number written as `"14"` or `14`.
struct GroupNumber(u32);

impl<'de> Deserialize<'de> for GroupNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = GroupNumber;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an IOMMU group number such as \"14\"")
            }

            fn visit_i64<E: de::Error>(self, i: i64) -> Result<GroupNumber, E> {
                u32::try_from(i)
                    .map(GroupNumber)
                    .map_err(|_| E::custom(format!("group {i} is not an IOMMU group number")))
            }

            fn visit_u64<E: de::Error>(self, i: u64) -> Result<GroupNumber, E> {
                u32::try_from(i)
                    .map(GroupNumber)
                    .map_err(|_| E::custom(format!("group {i} is not an IOMMU group number")))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<GroupNumber, E> {
                let bad = || E::custom(format!("group {s:?} is not an IOMMU group number"));
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                s.parse().map(GroupNumber).map_err(|_| bad())
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `nodes = { "label" = "value", ... }`: Kubernetes label keys and values, sorted by key;
/// a key or value Kubernetes would refuse is an error at its place.
fn nodes(
    written: BTreeMap<Spanned<String>, Spanned<String>>,
) -> Result<Vec<(String, String)>, EntryError> {
    let label = |s: &str, slash: bool| {
        s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') || (slash && b == b'/')
        })
    };
    let mut out = Vec::with_capacity(written.len());
    for (key, value) in written {
        let k = key.get_ref();
        if k.is_empty() || k.len() > 316 || !label(k, true) {
            return Err((key.span(), format!("nodes: {k:?} is not a node label key")));
        }
        let v = value.get_ref();
        if v.len() > 63 || !label(v, false) {
            return Err((
                value.span(),
                format!("nodes: {v:?} is not a node label value"),
            ));
        }
        out.push((key.into_inner(), value.into_inner()));
    }
    out.sort();
    Ok(out)
}

/// One `trusted_containers` entry as written: `{ namespace, container, pod }`, the first two
/// required (checked with the entry's place; named as serde names the type in its messages).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "struct TrustedContainer")]
struct RawContainer {
    namespace: Option<Name<Namespace>>,
    container: Option<Name<ContainerName>>,
    pod: Option<Name<Pod>>,
}

/// A field of a `trusted_containers` entry: its name and what Kubernetes accepts there.
trait Field {
    const NAME: &'static str;
    const MAX: usize;
    /// A pod name prefix (a subdomain) may hold dots.
    const DOTS: bool;
}

struct Namespace;
struct ContainerName;
struct Pod;

impl Field for Namespace {
    const NAME: &'static str = "namespace";
    const MAX: usize = 63;
    const DOTS: bool = false;
}

impl Field for ContainerName {
    const NAME: &'static str = "container";
    const MAX: usize = 63;
    const DOTS: bool = false;
}

impl Field for Pod {
    const NAME: &'static str = "pod";
    const MAX: usize = 253;
    const DOTS: bool = true;
}

/// The value of field `F`, checked as Kubernetes checks it.
struct Name<F>(String, std::marker::PhantomData<F>);

impl<'de, F: Field> Deserialize<'de> for Name<F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if kubernetes_name(&s, F::MAX, F::DOTS) {
            return Ok(Name(s, std::marker::PhantomData));
        }
        let what = if F::DOTS {
            "a pod name prefix (lowercase letters, digits, '-' and '.', at most 253)"
        } else {
            "a Kubernetes name (lowercase letters, digits and '-', at most 63)"
        };
        Err(de::Error::custom(format!(
            "trusted_containers: {} {s:?} is not {what}",
            F::NAME
        )))
    }
}

/// A namespace or container name (an RFC 1123 label), or with `dots` a prefix of a pod name
/// (a subdomain): what Kubernetes accepts, so that a typo is an error and not a silent miss.
fn kubernetes_name(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        })
}

/// The driver of a `[[reserve]]` entry that names none.
fn vfio_pci() -> DriverName {
    DriverName::parse("vfio-pci").expect("a valid driver name")
}

/// 1-based line and column (in characters) of byte `offset` in `text`: a count from the start,
/// made only for the one error reported.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = 1 + newlines(before);
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = text
        .get(start..before.len())
        .map_or(0, |l| l.chars().count())
        + 1;
    (line, column)
}

fn newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// The lines of offsets met in increasing order (the reservations'), each counted on from the
/// one before: one pass over the text for all of them.
struct LineCounter<'t> {
    text: &'t [u8],
    offset: usize,
    line: usize,
}

impl<'t> LineCounter<'t> {
    fn new(text: &'t str) -> Self {
        LineCounter {
            text: text.as_bytes(),
            offset: 0,
            line: 1,
        }
    }

    /// The 1-based line of byte `offset`.
    fn line(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        if offset < self.offset {
            // Not met in order (no reader makes this): count from the start again.
            (self.offset, self.line) = (0, 1);
        }
        self.line += newlines(&self.text[self.offset..offset]);
        self.offset = offset;
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let text = "a = 1\nbb = \"é\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 5), (1, 6));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 11), (2, 6));
        // after the two-byte é: one character further
        assert_eq!(line_column(text, 14), (2, 8));
        assert_eq!(line_column(text, text.len()), (3, 1));
        assert_eq!(line_column(text, 999), (3, 1));
        // inside the é: the column of the line's start, as a slice there is no text
        assert_eq!(line_column(text, 13), (2, 1));
    }

    #[test]
    fn lines_counted_on_agree_with_counts_from_the_start() {
        let text = "a = 1\n\n[[reserve]]\ngroup = 1\n";
        let mut lines = LineCounter::new(text);
        for offset in [0, 3, 6, 7, 7, 19, 2, 8, 999] {
            assert_eq!(lines.line(offset), line_column(text, offset).0, "{offset}");
        }
    }
}
