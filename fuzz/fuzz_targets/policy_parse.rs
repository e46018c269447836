//! `Policy::parse` on any text: `toml` into the policy's spanned, typed values
//! (agent/src/policy/file.rs) and the checks after it. Never panics; an error names a real
//! position in the text; and it agrees with `toml`'s own document tree of the same text: it
//! accepts no document `toml` refuses, and what it accepts reads as `toml` reads it (every key,
//! each reservation's selector and driver, in order).
#![no_main]
use std::path::{Path, PathBuf};

use iommu_enforcer::policy::{Policy, PolicyError};
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    match Policy::parse(text, Path::new("fuzz.toml")) {
        Ok(policy) => {
            assert!(policy
                .reserve
                .iter()
                .all(|r| r.line >= 1 && r.line <= lines.len()));
            let doc = toml::from_str::<Table>(text)
                .unwrap_or_else(|e| panic!("the reader accepted what toml refuses: {e}"));
            same_policy(&policy, &doc);
        }
        Err(PolicyError::Invalid { line, column, .. }) => {
            assert!(line >= 1 && line <= lines.len(), "line {line}");
            let width = lines[line - 1].chars().count();
            assert!(column >= 1 && column <= width + 1, "column {column} of {width}");
        }
        Err(e) => panic!("parse reads nothing, yet: {e}"),
    }
});

/// The policy `toml`'s tree describes, compared key by key with what the reader made of it.
fn same_policy(policy: &Policy, doc: &Table) {
    let flag = doc.get("protect_user_groups").map(|v| v.as_bool().unwrap());
    assert_eq!(policy.protect_user_groups, flag.unwrap_or(true));
    let list = |key: &str| -> Option<Vec<String>> {
        let items = doc.get(key)?.as_array().unwrap();
        Some(items.iter().map(|s| s.as_str().unwrap().to_string()).collect())
    };
    if let Some(allowed) = list("allowed_drivers") {
        let names: Vec<&str> = policy.allowed_drivers.iter().map(|d| d.as_str()).collect();
        assert_eq!(names, allowed);
    }
    if let Some(denied) = list("denied_drivers") {
        let names: Vec<&str> = policy.denied_drivers.iter().map(|d| d.as_str()).collect();
        assert_eq!(names, denied);
    }
    let writers: Vec<PathBuf> = list("trusted_writers")
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(policy.trusted_writers, writers);
    let entries = doc
        .get("reserve")
        .map_or(&[][..], |v| v.as_array().unwrap().as_slice());
    assert_eq!(policy.reserve.len(), entries.len());
    for (r, entry) in policy.reserve.iter().zip(entries) {
        let t = entry.as_table().unwrap();
        let driver = t.get("driver").map_or("vfio-pci", |d| d.as_str().unwrap());
        assert_eq!(r.driver.to_string(), driver);
        assert_eq!(r.rebind, t.get("rebind").is_some_and(|b| b.as_bool().unwrap()));
        assert_eq!(r.selector.to_string(), selector(t));
    }
}

/// How the policy shows the one selector of a reservation `toml` read (lowercase hex, class
/// with `0x`).
fn selector(t: &Table) -> String {
    let text = |key: &str| t.get(key).map(|v| v.as_str().unwrap().to_ascii_lowercase());
    if let Some(g) = t.get("group") {
        let n = match g {
            Value::Integer(i) => u32::try_from(*i).unwrap(),
            Value::String(s) => s.parse().unwrap(),
            other => panic!("group {other:?} accepted"),
        };
        format!("group {n}")
    } else if let Some(d) = text("device") {
        format!("device {d}")
    } else if let Some(id) = text("id") {
        format!("id {id}")
    } else if let Some(c) = text("class") {
        format!("class 0x{}", c.strip_prefix("0x").unwrap_or(&c))
    } else if let Some(s) = t.get("slot") {
        format!("slot {:?}", s.as_str().unwrap())
    } else {
        panic!("a reservation without a selector was accepted: {t:?}")
    }
}
