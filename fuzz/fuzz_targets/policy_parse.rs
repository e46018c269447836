//! `Policy::parse` on any text: never panics; an error names a real position in the text.
#![no_main]
use std::path::Path;

use iommu_enforcer::policy::{Policy, PolicyError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text, Path::new("fuzz.toml")) {
        Ok(policy) => {
            let lines = text.split('\n').count();
            assert!(policy
                .reserve
                .iter()
                .all(|r| r.line >= 1 && r.line <= lines));
        }
        Err(PolicyError::Invalid { line, column, .. }) => {
            assert!(line >= 1 && line <= text.split('\n').count(), "line {line}");
            assert!(column >= 1);
        }
        Err(e) => panic!("parse reads nothing, yet: {e}"),
    }
});
