//! Reading and checking the policy file.
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::reader::{self, Spanned, Str, Table, Value};
use super::{Intended, Policy, Reservations, Reserve, Selector, TrustedContainer};
use crate::bounded::{self, BoundedError};
use crate::pci::{ClassPrefix, DriverName, PciAddress, PciId};

/// The largest policy file read: far above any real policy (200,000 reservations are about
/// 11.4 MB), small enough that `/dev/zero` behind a regular-looking name cannot exhaust memory.
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

    /// Parses policy `text`; `path` names it in errors.
    /// Linear in the size of `text`: an entry's line is counted on from the entry before, and
    /// an error's line and column are counted only once it is reported.
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
        let raw = reader::read(text)
            .and_then(|root| raw_policy(root, text))
            .map_err(|(span, message)| invalid(span, message))?;

        let mut policy = Policy {
            source: Some(path.to_path_buf()),
            ..Policy::default()
        };
        if let Some(p) = raw.protect_user_groups {
            policy.protect_user_groups = p;
        }
        if let Some(list) = raw.allowed_drivers {
            policy.allowed_drivers = list.into_iter().map(Spanned::into_inner).collect();
        }
        if let Some(list) = raw.denied_drivers {
            let allowed: HashSet<&DriverName> = policy.allowed_drivers.iter().collect();
            for d in &list {
                if allowed.contains(d.get_ref()) {
                    return Err(invalid(
                        d.span(),
                        format!(
                            "driver {:?} is both in allowed_drivers and in denied_drivers",
                            d.get_ref().as_str()
                        ),
                    ));
                }
            }
            policy.denied_drivers = list.into_iter().map(Spanned::into_inner).collect();
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
            policy.trusted_writers.push(PathBuf::from(w.into_owned()));
        }
        policy.trusted_containers = raw.trusted_containers.unwrap_or_default();
        // Selector -> the entry that reserved it first. The first entry in error, as when each
        // entry was checked in turn: a duplicate before the entry that could not be one.
        // Entries scoped to different nodes may select the same devices.
        type Key<'r> = (&'r Selector, &'r [(String, String)]);
        let mut reserved: HashMap<Key<'_>, &Reserve> = HashMap::with_capacity(raw.reserve.len());
        for (r, span) in raw.reserve.iter().zip(raw.selector_spans) {
            let Some(first) = reserved.insert((&r.selector, &r.nodes), r) else {
                continue;
            };
            let (selector, driver) = (&r.selector, &r.driver);
            let message = if first.driver == *driver {
                format!(
                    "{selector} is already reserved at line {}: duplicate reservation",
                    first.line
                )
            } else {
                format!(
                    "{selector} is reserved for {driver} here and for {} at line {}: contradictory reservations",
                    first.driver, first.line
                )
            };
            return Err(invalid(span, message));
        }
        drop(reserved);
        if let Some((span, message)) = raw.entry_error {
            return Err(invalid(span, message));
        }
        policy.reserve = Reservations::new(raw.reserve);
        Ok(policy)
    }
}

/// The policy as written, every value already checked and typed (with where it was written,
/// for the checks across entries).
struct RawPolicy<'i> {
    protect_user_groups: Option<bool>,
    allowed_drivers: Option<Vec<Spanned<DriverName>>>,
    denied_drivers: Option<Vec<Spanned<DriverName>>>,
    trusted_writers: Option<Vec<Spanned<Str<'i>>>>,
    trusted_containers: Option<Vec<TrustedContainer>>,
    /// The reservations up to the first entry that cannot be one (`entry_error`): made while
    /// read, not kept as written, since a policy may hold 200,000.
    reserve: Vec<Reserve>,
    /// Where each reservation's selector was written.
    selector_spans: Vec<Range<usize>>,
    /// Why that entry is not a reservation: reported after the checks across entries before
    /// it (and after the other keys' checks), as when every entry was checked in turn.
    entry_error: Option<reader::Error>,
}

#[derive(Default)]
struct RawReserve {
    group: Option<Spanned<GroupNumber>>,
    device: Option<Spanned<PciAddress>>,
    id: Option<Spanned<PciId>>,
    class: Option<Spanned<ClassPrefix>>,
    slot: Option<Spanned<String>>,
    driver: Option<Spanned<Intended>>,
    rebind: Option<bool>,
    nodes: Option<Vec<(String, String)>>,
}

const POLICY_KEYS: &[&str] = &[
    "protect_user_groups",
    "allowed_drivers",
    "denied_drivers",
    "trusted_writers",
    "trusted_containers",
    "reserve",
];
const TRUSTED_CONTAINER_KEYS: &[&str] = &["namespace", "container", "pod"];
const RESERVE_KEYS: &[&str] = &[
    "group", "device", "id", "class", "slot", "driver", "rebind", "nodes",
];

/// The schema over the document tree: unknown keys and wrong types are errors, worded as serde
/// words them.
fn raw_policy<'i>(root: Table<'i>, text: &str) -> Result<RawPolicy<'i>, reader::Error> {
    let mut raw = RawPolicy {
        protect_user_groups: None,
        allowed_drivers: None,
        denied_drivers: None,
        trusted_writers: None,
        trusted_containers: None,
        reserve: Vec::new(),
        selector_spans: Vec::new(),
        entry_error: None,
    };
    for (key, value) in root.entries {
        match key.get_ref().as_ref() {
            "protect_user_groups" => raw.protect_user_groups = Some(boolean(value)?),
            "allowed_drivers" => raw.allowed_drivers = Some(drivers(value, "allowed_drivers")?),
            "denied_drivers" => raw.denied_drivers = Some(drivers(value, "denied_drivers")?),
            "trusted_writers" => raw.trusted_writers = Some(strings(value)?),
            "trusted_containers" => {
                raw.trusted_containers = Some(
                    array(value)?
                        .into_iter()
                        .map(trusted_container)
                        .collect::<Result<_, _>>()?,
                )
            }
            "reserve" => {
                let items = array(value)?;
                raw.reserve.reserve(items.len());
                raw.selector_spans.reserve(items.len());
                let mut lines = LineCounter::new(text);
                for item in items {
                    let span = item.span();
                    let t = match item.into_inner() {
                        Value::Table(t) => t,
                        other => return Err(invalid_type(&other, span, "struct RawReserve")),
                    };
                    let r = raw_reserve(t)?;
                    if raw.entry_error.is_some() {
                        continue;
                    }
                    match reservation(r, span, &mut lines) {
                        Ok((reserve, selector_span)) => {
                            raw.reserve.push(reserve);
                            raw.selector_spans.push(selector_span);
                        }
                        Err(e) => raw.entry_error = Some(e),
                    }
                }
            }
            _ => return Err(unknown(&key, POLICY_KEYS)),
        }
    }
    Ok(raw)
}

/// The reservation of an entry of one selector; its selector's place.
fn reservation(
    r: RawReserve,
    span: Range<usize>,
    lines: &mut LineCounter<'_>,
) -> Result<(Reserve, Range<usize>), reader::Error> {
    let selectors = [
        r.group
            .map(|g| (g.span(), Selector::Group(g.into_inner().0))),
        r.device
            .map(|a| (a.span(), Selector::Device(a.into_inner()))),
        r.id.map(|id| (id.span(), Selector::Id(id.into_inner()))),
        r.class.map(|c| (c.span(), Selector::Class(c.into_inner()))),
        r.slot.map(|s| (s.span(), Selector::Slot(s.into_inner()))),
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
    let driver = r
        .driver
        .map_or_else(|| Intended::Driver(vfio_pci()), Spanned::into_inner);
    let reserve = Reserve {
        selector,
        driver,
        rebind: r.rebind.unwrap_or(false),
        line: lines.line(span.start),
        nodes: r.nodes.unwrap_or_default(),
    };
    Ok((reserve, selector_span))
}

fn raw_reserve(table: Table<'_>) -> Result<RawReserve, reader::Error> {
    let mut r = RawReserve::default();
    for (key, value) in table.entries {
        match key.get_ref().as_ref() {
            "group" => {
                let span = value.span();
                r.group = Some(Spanned::new(
                    span.clone(),
                    group_number(value.into_inner(), span)?,
                ));
            }
            "device" => {
                r.device = Some(checked(string(value)?, PciAddress::parse, |a| {
                    format!("device {a:?} is not a PCI address (DDDD:BB:DD.F, e.g. 0000:01:00.0)")
                })?)
            }
            "id" => {
                r.id = Some(checked(string(value)?, PciId::parse, |id| {
                    format!("id {id:?} is not vendor:device in hex (e.g. 10de:2204)")
                })?)
            }
            "class" => {
                r.class = Some(checked(string(value)?, ClassPrefix::parse, |c| {
                    format!("class {c:?} is not a class code prefix of 2, 4 or 6 hex digits (e.g. 0x0300)")
                })?)
            }
            "slot" => {
                r.slot = Some(checked(string(value)?, slot_name, |s| {
                    format!("slot {s:?} is not a slot name (a name under /sys/bus/pci/slots, e.g. \"3\")")
                })?)
            }
            "nodes" => r.nodes = Some(node_labels(value)?),
            "driver" => r.driver = Some(intended(string(value)?)?),
            "rebind" => r.rebind = Some(boolean(value)?),
            _ => return Err(unknown(&key, RESERVE_KEYS)),
        }
    }
    Ok(r)
}

/// One `trusted_containers` entry: `{ namespace, container, pod }`, the first two required.
fn trusted_container(item: Spanned<Value<'_>>) -> Result<TrustedContainer, reader::Error> {
    let span = item.span();
    let table = match item.into_inner() {
        Value::Table(t) => t,
        other => return Err(invalid_type(&other, span, "struct TrustedContainer")),
    };
    let (mut namespace, mut container, mut pod) = (None, None, None);
    for (key, value) in table.entries {
        let field = key.get_ref().as_ref();
        let (slot, max, dots) = match field {
            "namespace" => (&mut namespace, 63, false),
            "container" => (&mut container, 63, false),
            "pod" => (&mut pod, 253, true),
            _ => return Err(unknown(&key, TRUSTED_CONTAINER_KEYS)),
        };
        let v = string(value)?;
        if !kubernetes_name(v.get_ref(), max, dots) {
            let what = if dots {
                "a pod name prefix (lowercase letters, digits, '-' and '.', at most 253)"
            } else {
                "a Kubernetes name (lowercase letters, digits and '-', at most 63)"
            };
            return Err((
                v.span(),
                format!(
                    "trusted_containers: {field} {:?} is not {what}",
                    v.get_ref()
                ),
            ));
        }
        *slot = Some(v.get_ref().to_string());
    }
    let missing = |field: &str| {
        (
            span.clone(),
            format!("trusted_containers: missing field `{field}`"),
        )
    };
    Ok(TrustedContainer {
        namespace: namespace.ok_or_else(|| missing("namespace"))?,
        container: container.ok_or_else(|| missing("container"))?,
        pod,
    })
}

/// A physical slot's name as sysfs shows it: a directory name of `bus/pci/slots`.
fn slot_name(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= 64 && !s.contains('/') && !s.chars().any(char::is_control))
        .then(|| s.to_string())
}

/// `nodes = { "label" = "value", ... }`: Kubernetes label keys and values, sorted by key.
fn node_labels(v: Spanned<Value<'_>>) -> Result<Vec<(String, String)>, reader::Error> {
    let span = v.span();
    let table = match v.into_inner() {
        Value::Table(t) => t,
        other => return Err(invalid_type(&other, span, "a table of node labels")),
    };
    let label = |s: &str, slash: bool| {
        s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') || (slash && b == b'/')
        })
    };
    let mut out = Vec::with_capacity(table.entries.len());
    for (key, value) in table.entries {
        let k = key.get_ref();
        if k.is_empty() || k.len() > 316 || !label(k, true) {
            return Err((key.span(), format!("nodes: {k:?} is not a node label key")));
        }
        let v = string(value)?;
        if v.get_ref().len() > 63 || !label(v.get_ref(), false) {
            return Err((
                v.span(),
                format!("nodes: {:?} is not a node label value", v.get_ref()),
            ));
        }
        out.push((k.to_string(), v.get_ref().to_string()));
    }
    out.sort();
    Ok(out)
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

fn unknown(key: &Spanned<Str<'_>>, expected: &[&str]) -> reader::Error {
    let list: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
    (
        key.span(),
        format!(
            "unknown field `{}`, expected one of {}",
            key.get_ref(),
            list.join(", ")
        ),
    )
}

fn invalid_type(v: &Value<'_>, span: Range<usize>, expected: &str) -> reader::Error {
    let found = match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer `{i}`"),
        Value::Boolean(b) => format!("boolean `{b}`"),
        other => other.kind().to_string(),
    };
    (span, format!("invalid type: {found}, expected {expected}"))
}

fn boolean(v: Spanned<Value<'_>>) -> Result<bool, reader::Error> {
    match v.get_ref() {
        Value::Boolean(b) => Ok(*b),
        other => Err(invalid_type(other, v.span(), "a boolean")),
    }
}

fn string(v: Spanned<Value<'_>>) -> Result<Spanned<Str<'_>>, reader::Error> {
    let span = v.span();
    match v.into_inner() {
        Value::String(s) => Ok(Spanned::new(span, s)),
        other => Err(invalid_type(&other, span, "a string")),
    }
}

fn array(v: Spanned<Value<'_>>) -> Result<Vec<Spanned<Value<'_>>>, reader::Error> {
    let span = v.span();
    match v.into_inner() {
        Value::Array(items) => Ok(items),
        other => Err(invalid_type(&other, span, "a sequence")),
    }
}

fn strings(v: Spanned<Value<'_>>) -> Result<Vec<Spanned<Str<'_>>>, reader::Error> {
    array(v)?.into_iter().map(string).collect()
}

/// A group number written as `"14"` or `14`.
struct GroupNumber(u32);

fn group_number(v: Value<'_>, span: Range<usize>) -> Result<GroupNumber, reader::Error> {
    let bad = |shown: String| {
        (
            span.clone(),
            format!("group {shown} is not an IOMMU group number"),
        )
    };
    match v {
        Value::Integer(i) => u32::try_from(i)
            .map(GroupNumber)
            .map_err(|_| bad(i.to_string())),
        Value::String(s) => {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("{s:?}")));
            }
            s.parse()
                .map(GroupNumber)
                .map_err(|_| bad(format!("{s:?}")))
        }
        other => Err(invalid_type(
            &other,
            span.clone(),
            "an IOMMU group number such as \"14\"",
        )),
    }
}

/// A string value made into `T` by `parse`, or `message(the string)` at its place.
fn checked<T>(
    v: Spanned<Str<'_>>,
    parse: impl Fn(&str) -> Option<T>,
    message: impl Fn(&str) -> String,
) -> Result<Spanned<T>, reader::Error> {
    let span = v.span();
    match parse(v.get_ref()) {
        Some(t) => Ok(Spanned::new(span, t)),
        None => Err((span, message(v.get_ref()))),
    }
}

/// A list of driver names (`allowed_drivers`, `denied_drivers`), each checked.
fn drivers(v: Spanned<Value<'_>>, key: &str) -> Result<Vec<Spanned<DriverName>>, reader::Error> {
    strings(v)?
        .into_iter()
        .map(|d| {
            let span = d.span();
            DriverName::parse(d.get_ref())
                .map(|name| Spanned::new(span.clone(), name))
                .map_err(|why| (span, format!("{key}: driver {:?} {why}", d.get_ref())))
        })
        .collect()
}

/// A reserve entry's `driver`: `none` (stay unbound) or a driver name.
fn intended(v: Spanned<Str<'_>>) -> Result<Spanned<Intended>, reader::Error> {
    let span = v.span();
    if v.get_ref() == "none" {
        return Ok(Spanned::new(span, Intended::Unbound));
    }
    DriverName::parse(v.get_ref())
        .map(|d| Spanned::new(span.clone(), Intended::Driver(d)))
        .map_err(|why| (span, format!("reserve driver {:?} {why}", v.get_ref())))
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
