//! Paths and process helpers shared by every command.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The workspace root: xtask lives one level below it.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `target/` of the workspace. Fixed (not CARGO_TARGET_DIR) because the agent's build.rs embeds
/// `target/ebpf/iommu-enforcer.bpf.o` by that path.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target")
}

/// Progress line on stderr, so that stdout stays machine-readable (`cargo xtask vm` prints JSON).
pub fn say(msg: impl AsRef<str>) {
    eprintln!("xtask: {}", msg.as_ref());
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio (on stderr for its stdout) and fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    say(format!("$ {what}"));
    // Child stdout goes to our stderr: stdout is reserved for results.
    let status = cmd
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("cannot start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; fails on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot start `{what}`"))?;
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like `output` but `None` when the program is missing or fails: used for "is it there?" probes.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the variables a parent `cargo run` leaves behind that would leak into a nested build.
pub fn clean_cargo_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "RUSTC",
    ] {
        cmd.env_remove(var);
    }
    cmd
}
