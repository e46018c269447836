//! `cargo xtask fuzz`: a short run of every cargo-fuzz target under fuzz/ (nightly, libFuzzer),
//! each seeded from its committed corpus in fuzz/corpus/<target>/. New inputs go to a scratch
//! corpus under target/, so the committed seeds change only when someone adds one on purpose;
//! a crash leaves its input in fuzz/artifacts/<target>/ and fails the run.
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{run, say, target_dir, workspace_root};

/// Every target in fuzz/Cargo.toml, in the order they run.
pub const TARGETS: [&str; 5] = [
    "policy_parse",
    "config_space",
    "sysfs_attributes",
    "record_apply",
    "pod_resources",
];

/// Installs cargo-fuzz when `cargo fuzz` is missing (idempotent: a present one is kept).
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    say("fuzz: cargo-fuzz is missing; installing it (cargo install --locked cargo-fuzz)");
    run(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))
}

/// The `cargo +nightly fuzz run` arguments of one target: the scratch corpus first (libFuzzer
/// writes new inputs to the first directory), the committed seeds second.
fn run_args(target: &str, seconds: u64) -> Vec<String> {
    let scratch = target_dir().join("fuzz-corpus").join(target);
    let seeds = workspace_root().join("fuzz/corpus").join(target);
    vec![
        "+nightly".into(),
        "fuzz".into(),
        "run".into(),
        target.into(),
        scratch.display().to_string(),
        seeds.display().to_string(),
        "--".into(),
        format!("-max_total_time={seconds}"),
    ]
}

/// Runs every target for `seconds`; `Ok(false)` when one found a crash (or did not build).
pub fn fuzz(seconds: u64) -> Result<bool> {
    ensure_cargo_fuzz()?;
    let mut failed = Vec::new();
    for target in TARGETS {
        say(format!(
            "fuzz: {target} for {seconds} s (cargo +nightly fuzz run {target} -- -max_total_time={seconds})"
        ));
        let scratch = target_dir().join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let ok = run(Command::new("cargo")
            .args(run_args(target, seconds))
            .current_dir(workspace_root().join("fuzz")))
        .is_ok();
        if !ok {
            say(format!(
                "fuzz: {target} FAILED: its input is under fuzz/artifacts/{target}/"
            ));
            failed.push(target);
        }
    }
    if failed.is_empty() {
        say(format!(
            "fuzz: {} targets ran {seconds} s each without a crash",
            TARGETS.len()
        ));
    }
    Ok(failed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_source_and_a_seed_corpus() {
        let fuzz = workspace_root().join("fuzz");
        let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
        for target in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target}"
            );
            assert!(
                fuzz.join(format!("fuzz_targets/{target}.rs")).is_file(),
                "{target}"
            );
            let seeds = std::fs::read_dir(fuzz.join("corpus").join(target))
                .map(Iterator::count)
                .unwrap_or(0);
            assert!(seeds > 0, "{target}: no seed corpus");
        }
    }

    #[test]
    fn runs_use_nightly_a_time_limit_and_keep_the_seeds_read_only() {
        let args = run_args("policy_parse", 30);
        assert_eq!(&args[..4], ["+nightly", "fuzz", "run", "policy_parse"]);
        assert!(args[4].ends_with("target/fuzz-corpus/policy_parse"));
        assert!(args[5].ends_with("fuzz/corpus/policy_parse"));
        assert_eq!(&args[6..], ["--", "-max_total_time=30"]);
    }
}
