//! Reading and checking the policy file.
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::reader::{self, Spanned, Table, Value};
use super::{ClassPrefix, Intended, Policy, Reserve, Selector};
use crate::bounded::{self, BoundedError};
use crate::model::parse_address;

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
            policy.allowed_drivers = drivers(list, "allowed_drivers", &invalid)?;
        }
        if let Some(list) = raw.denied_drivers {
            let spans: Vec<Range<usize>> = list.iter().map(Spanned::span).collect();
            policy.denied_drivers = drivers(list, "denied_drivers", &invalid)?;
            for (d, span) in policy.denied_drivers.iter().zip(spans) {
                if policy.allowed_drivers.contains(d) {
                    return Err(invalid(
                        span,
                        format!("driver {d:?} is both in allowed_drivers and in denied_drivers"),
                    ));
                }
            }
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
                let sel = parse_address(a.get_ref())
                    .map(Selector::Device)
                    .ok_or_else(|| {
                        invalid(
                            a.span(),
                            format!(
                                "device {:?} is not a PCI address (DDDD:BB:DD.F, e.g. 0000:01:00.0)",
                                a.get_ref()
                            ),
                        )
                    })?;
                selectors.push((a.span(), sel));
            }
            if let Some(id) = r.id {
                let (vendor, device) = parse_id(id.get_ref()).ok_or_else(|| {
                    invalid(
                        id.span(),
                        format!(
                            "id {:?} is not vendor:device in hex (e.g. 10de:2204)",
                            id.get_ref()
                        ),
                    )
                })?;
                selectors.push((id.span(), Selector::Id { vendor, device }));
            }
            if let Some(c) = r.class {
                let prefix = parse_class(c.get_ref()).ok_or_else(|| {
                    invalid(
                        c.span(),
                        format!(
                            "class {:?} is not a class code prefix of 2, 4 or 6 hex digits (e.g. 0x0300)",
                            c.get_ref()
                        ),
                    )
                })?;
                selectors.push((c.span(), Selector::Class(prefix)));
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
            let driver = match r.driver {
                None => Intended::Driver("vfio-pci".to_string()),
                Some(d) if d.get_ref() == "none" => Intended::Unbound,
                Some(d) => {
                    let span = d.span();
                    let d = d.into_inner();
                    check_driver_name(&d)
                        .map_err(|why| invalid(span, format!("reserve driver {d:?} {why}")))?;
                    Intended::Driver(d)
                }
            };
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

struct RawPolicy {
    protect_user_groups: Option<bool>,
    allowed_drivers: Option<Vec<Spanned<String>>>,
    denied_drivers: Option<Vec<Spanned<String>>>,
    trusted_writers: Option<Vec<Spanned<String>>>,
    reserve: Vec<Spanned<RawReserve>>,
}

#[derive(Default)]
struct RawReserve {
    group: Option<Spanned<GroupNumber>>,
    device: Option<Spanned<String>>,
    id: Option<Spanned<String>>,
    class: Option<Spanned<String>>,
    driver: Option<Spanned<String>>,
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
            "allowed_drivers" => raw.allowed_drivers = Some(strings(value)?),
            "denied_drivers" => raw.denied_drivers = Some(strings(value)?),
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
            "device" => r.device = Some(string(value)?),
            "id" => r.id = Some(string(value)?),
            "class" => r.class = Some(string(value)?),
            "driver" => r.driver = Some(string(value)?),
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

fn drivers<F>(
    list: Vec<Spanned<String>>,
    key: &str,
    invalid: &F,
) -> Result<Vec<String>, PolicyError>
where
    F: Fn(Range<usize>, String) -> PolicyError,
{
    list.into_iter()
        .map(|d| {
            let span = d.span();
            let d = d.into_inner();
            check_driver_name(&d)
                .map(|()| d.clone())
                .map_err(|why| invalid(span, format!("{key}: driver {d:?} {why}")))
        })
        .collect()
}

fn check_driver_name(d: &str) -> Result<(), &'static str> {
    if d.is_empty() {
        Err("is empty")
    } else if d
        .bytes()
        .any(|b| b == b'/' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        Err("is not a driver name")
    } else {
        Ok(())
    }
}

/// `10de:2204` -> (0x10de, 0x2204).
fn parse_id(s: &str) -> Option<(u16, u16)> {
    let (v, d) = s.split_once(':')?;
    let part = |p: &str| {
        (p.len() == 4 && p.bytes().all(|c| c.is_ascii_hexdigit()))
            .then(|| u16::from_str_radix(p, 16).ok())?
    };
    Some((part(v)?, part(d)?))
}

/// `0x0300`, `03`, `0x030000` -> a prefix of the 24-bit class code.
fn parse_class(s: &str) -> Option<ClassPrefix> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if !matches!(digits.len(), 2 | 4 | 6) || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(ClassPrefix {
        value: u32::from_str_radix(digits, 16).ok()?,
        digits: u8::try_from(digits.len()).ok()?,
    })
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
    fn ids_and_classes() {
        assert_eq!(parse_id("10de:2204"), Some((0x10de, 0x2204)));
        assert_eq!(parse_id("10de:220"), None);
        assert_eq!(parse_id("0x10de:2204"), None);
        let p = parse_class("0x0300").unwrap();
        assert!(p.matches(0x030000) && p.matches(0x030001) && !p.matches(0x030200));
        assert!(parse_class("0x03").unwrap().matches(0x038000));
        assert!(parse_class("0x040300").unwrap().matches(0x040300));
        assert_eq!(parse_class("0x3"), None);
        assert_eq!(parse_class("display"), None);
    }

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
