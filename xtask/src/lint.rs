//! `cargo xtask lint`, the first step of `cargo xtask test`: `cargo fmt --check`, `cargo clippy
//! --workspace -- -D warnings`, the same two on ebpf/ (nightly, for the bpf target of each
//! architecture, as `build-ebpf` builds it; its `#![deny(clippy::undocumented_unsafe_blocks)]`
//! holds every unsafe block to a `// SAFETY:` reason), shellcheck on every shell script in the
//! tree (tracked `*.sh` files and scripts with a sh/bash shebang under .ci/), and no doc citing
//! a missing file. tests/vm/.shellcheckrc says what the guest scripts (busybox ash) leave
//! unquoted on purpose.
use std::process::Command;

use anyhow::Result;

use crate::arch::Arch;
use crate::artifacts::ebpf_cargo;
use crate::util::{output, say, workspace_root};

/// The shell scripts shellcheck checks, relative to the workspace root.
pub fn scripts() -> Result<Vec<String>> {
    let root = workspace_root();
    let listed = output(Command::new("git").args(["ls-files"]).current_dir(&root))?;
    Ok(listed
        .lines()
        .filter(|f| {
            f.ends_with(".sh")
                || (f.starts_with(".ci/")
                    && std::fs::read_to_string(root.join(f)).is_ok_and(|s| {
                        s.starts_with("#!/bin/sh")
                            || s.starts_with("#!/usr/bin/env bash")
                            || s.starts_with("#!/bin/bash")
                    }))
        })
        .map(str::to_owned)
        .collect())
}

/// The tracked Markdown files, relative to the workspace root.
pub fn markdown_files() -> Result<Vec<String>> {
    let root = workspace_root();
    let listed = output(
        Command::new("git")
            .args(["ls-files", "*.md"])
            .current_dir(&root),
    )?;
    Ok(listed.lines().map(str::to_owned).collect())
}

/// Runs the checks; `false` when one failed (each says why on its own output).
pub fn lint() -> Result<bool> {
    let root = workspace_root();
    let mut ok = true;
    say("lint: cargo fmt --check");
    ok &= Command::new("cargo")
        .args(["fmt", "--all", "--check"])
        .current_dir(&root)
        .status()?
        .success();
    say("lint: cargo clippy --workspace -- -D warnings");
    ok &= Command::new("cargo")
        .args(["clippy", "--workspace", "--", "-D", "warnings"])
        .current_dir(&root)
        .status()?
        .success();
    // ebpf/ is outside the workspace (nightly, bpf target): its own fmt, and clippy for each
    // architecture (syscall_abi.rs differs), which also enforces its `// SAFETY:` comments.
    let ebpf = root.join("ebpf");
    say("lint: cargo +nightly fmt --check in ebpf/");
    ok &= Command::new("cargo")
        .args(["+nightly", "fmt", "--check"])
        .current_dir(&ebpf)
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()?
        .success();
    for arch in [Arch::X86_64, Arch::Arm64] {
        let bpf_arch = arch.bpf_target_arch();
        say(format!(
            "lint: cargo +nightly clippy on ebpf/ for {bpf_arch} -- -D warnings"
        ));
        let target = ebpf.join("target/clippy").join(bpf_arch);
        ok &= ebpf_cargo(arch, "clippy", &target)
            .args(["--", "-D", "warnings"])
            .status()?
            .success();
    }
    crate::setup::ensure_packages(&["shellcheck"])?;
    let scripts = scripts()?;
    say(format!("lint: shellcheck on {} scripts", scripts.len()));
    ok &= Command::new("shellcheck")
        .args(&scripts)
        .current_dir(&root)
        .status()?
        .success();
    let missing = crate::doc_paths::missing(&root, &markdown_files()?);
    say(format!(
        "lint: the docs name only files that are there ({} missing)",
        missing.len()
    ));
    for m in &missing {
        println!("  cited but not there: {m}");
    }
    ok &= missing.is_empty();
    say(if ok { "lint: clean" } else { "lint: FAILED" });
    Ok(ok)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_guest_script_and_the_ci_runner_are_checked() {
        let scripts = super::scripts().expect("git ls-files");
        for s in [
            "tests/vm/lib.sh",
            "tests/vm/init.sh",
            "tests/deploy/validate.sh",
            ".ci/run",
        ] {
            assert!(scripts.iter().any(|x| x == s), "{s} not in {scripts:?}");
        }
        assert!(scripts.iter().any(|x| x.starts_with("tests/vm/scenarios/")));
    }
}
