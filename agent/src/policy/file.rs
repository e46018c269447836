//! Reading and checking the policy file.
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::reader::{self, Spanned, Table, Value};
use super::{Intended, Policy, Reserve, Selector};
use crate::bounded::{self, BoundedError};
use crate::pci::{ClassPrefix, DriverName, PciAddress, PciId};

/// The largest policy file read: far above any real policy (200,000 reservations are about
/// 8 MiB), small enough that `/dev/zero` behind a regular-looking name cannot exhaust memory.
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
        let bytes = bounded::read(path, POLICY_LIMIT).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
            let (line, column) = LineIndex::new(prefix).line_column(prefix, valid);
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
    /// Linear in the size of `text`: positions are found in an index of line starts.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let lines = LineIndex::new(text);
        let invalid = |span: Range<usize>, message: String| {
            let (line, column) = lines.line_column(text, span.start);
            PolicyError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw = reader::read(text)
            .and_then(raw_policy)
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
            for d in &list {
                if policy.allowed_drivers.contains(d.get_ref()) {
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
            policy.trusted_writers.push(PathBuf::from(w));
        }
        // Selector -> (driver, line) of the entry that reserved it first.
        let mut reserved: HashMap<Selector, (Intended, usize)> = HashMap::new();
        for entry in raw.reserve {
            let span = entry.span();
            let r = entry.into_inner();
            let mut selectors = Vec::new();
            if let Some(g) = r.group {
                selectors.push((g.span(), Selector::Group(g.into_inner().0)));
            }
            if let Some(a) = r.device {
                selectors.push((a.span(), Selector::Device(a.into_inner())));
            }
            if let Some(id) = r.id {
                selectors.push((id.span(), Selector::Id(id.into_inner())));
            }
            if let Some(c) = r.class {
                selectors.push((c.span(), Selector::Class(c.into_inner())));
            }
            let (selector_span, selector) = match selectors.len() {
                0 => {
                    return Err(invalid(
                        span,
                        "empty reserve selector: set one of group, device, id, class".to_string(),
                    ))
                }
                1 => selectors.remove(0),
                _ => {
                    return Err(invalid(
                        selectors[1].0.clone(),
                        "more than one reserve selector: set only one of group, device, id, class"
                            .to_string(),
                    ))
                }
            };
            let driver = r
                .driver
                .map_or_else(|| Intended::Driver(vfio_pci()), Spanned::into_inner);
            let line = lines.line_column(text, span.start).0;
            if let Some((first, first_line)) = reserved.get(&selector) {
                let message = if *first == driver {
                    format!("{selector} is already reserved at line {first_line}: duplicate reservation")
                } else {
                    format!(
                        "{selector} is reserved for {driver} here and for {first} at line {first_line}: contradictory reservations"
                    )
                };
                return Err(invalid(selector_span, message));
            }
            reserved.insert(selector.clone(), (driver.clone(), line));
            policy.reserve.push(Reserve {
                selector,
                driver,
                rebind: r.rebind.unwrap_or(false),
                line,
            });
        }
        Ok(policy)
    }
}

/// The policy as written, every value already checked and typed (with where it was written,
/// for the checks across entries).
struct RawPolicy {
    protect_user_groups: Option<bool>,
    allowed_drivers: Option<Vec<Spanned<DriverName>>>,
    denied_drivers: Option<Vec<Spanned<DriverName>>>,
    trusted_writers: Option<Vec<Spanned<String>>>,
    reserve: Vec<Spanned<RawReserve>>,
}

#[derive(Default)]
struct RawReserve {
    group: Option<Spanned<GroupNumber>>,
    device: Option<Spanned<PciAddress>>,
    id: Option<Spanned<PciId>>,
    class: Option<Spanned<ClassPrefix>>,
    driver: Option<Spanned<Intended>>,
    rebind: Option<bool>,
}

const POLICY_KEYS: &[&str] = &[
    "protect_user_groups",
    "allowed_drivers",
    "denied_drivers",
    "trusted_writers",
    "reserve",
];
const RESERVE_KEYS: &[&str] = &["group", "device", "id", "class", "driver", "rebind"];

/// The schema over the document tree: unknown keys and wrong types are errors, worded as serde
/// words them.
fn raw_policy(root: Table) -> Result<RawPolicy, reader::Error> {
    let mut raw = RawPolicy {
        protect_user_groups: None,
        allowed_drivers: None,
        denied_drivers: None,
        trusted_writers: None,
        reserve: Vec::new(),
    };
    for (key, value) in root.entries {
        match key.get_ref().as_str() {
            "protect_user_groups" => raw.protect_user_groups = Some(boolean(value)?),
            "allowed_drivers" => raw.allowed_drivers = Some(drivers(value, "allowed_drivers")?),
            "denied_drivers" => raw.denied_drivers = Some(drivers(value, "denied_drivers")?),
            "trusted_writers" => raw.trusted_writers = Some(strings(value)?),
            "reserve" => {
                for item in array(value)? {
                    let span = item.span();
                    let t = match item.into_inner() {
                        Value::Table(t) => t,
                        other => return Err(invalid_type(&other, span, "struct RawReserve")),
                    };
                    raw.reserve.push(Spanned::new(span, raw_reserve(t)?));
                }
            }
            _ => return Err(unknown(&key, POLICY_KEYS)),
        }
    }
    Ok(raw)
}

fn raw_reserve(table: Table) -> Result<RawReserve, reader::Error> {
    let mut r = RawReserve::default();
    for (key, value) in table.entries {
        match key.get_ref().as_str() {
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
            "driver" => r.driver = Some(intended(string(value)?)?),
            "rebind" => r.rebind = Some(boolean(value)?),
            _ => return Err(unknown(&key, RESERVE_KEYS)),
        }
    }
    Ok(r)
}

fn unknown(key: &Spanned<String>, expected: &[&str]) -> reader::Error {
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

fn invalid_type(v: &Value, span: Range<usize>, expected: &str) -> reader::Error {
    let found = match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer `{i}`"),
        Value::Boolean(b) => format!("boolean `{b}`"),
        other => other.kind().to_string(),
    };
    (span, format!("invalid type: {found}, expected {expected}"))
}

fn boolean(v: Spanned<Value>) -> Result<bool, reader::Error> {
    match v.get_ref() {
        Value::Boolean(b) => Ok(*b),
        other => Err(invalid_type(other, v.span(), "a boolean")),
    }
}

fn string(v: Spanned<Value>) -> Result<Spanned<String>, reader::Error> {
    let span = v.span();
    match v.into_inner() {
        Value::String(s) => Ok(Spanned::new(span, s)),
        other => Err(invalid_type(&other, span, "a string")),
    }
}

fn array(v: Spanned<Value>) -> Result<Vec<Spanned<Value>>, reader::Error> {
    let span = v.span();
    match v.into_inner() {
        Value::Array(items) => Ok(items),
        other => Err(invalid_type(&other, span, "a sequence")),
    }
}

fn strings(v: Spanned<Value>) -> Result<Vec<Spanned<String>>, reader::Error> {
    array(v)?.into_iter().map(string).collect()
}

/// A group number written as `"14"` or `14`.
struct GroupNumber(u32);

fn group_number(v: Value, span: Range<usize>) -> Result<GroupNumber, reader::Error> {
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
    v: Spanned<String>,
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
fn drivers(v: Spanned<Value>, key: &str) -> Result<Vec<Spanned<DriverName>>, reader::Error> {
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
fn intended(v: Spanned<String>) -> Result<Spanned<Intended>, reader::Error> {
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

/// The byte offsets where the lines of a text start, built in one pass.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// 1-based line and column (in characters) of byte `offset` in `text`, the text this
    /// index was built from: a binary search for the line, then a count within it.
    fn line_column(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = text.get(start..offset).map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let text = "a = 1\nbb = \"é\"\n";
        let index = LineIndex::new(text);
        assert_eq!(index.line_column(text, 0), (1, 1));
        assert_eq!(index.line_column(text, 5), (1, 6));
        assert_eq!(index.line_column(text, 6), (2, 1));
        assert_eq!(index.line_column(text, 11), (2, 6));
        // after the two-byte é: one character further
        assert_eq!(index.line_column(text, 14), (2, 8));
        assert_eq!(index.line_column(text, text.len()), (3, 1));
        assert_eq!(index.line_column(text, 999), (3, 1));
    }
}
