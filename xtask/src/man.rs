//! `cargo xtask man`: the man pages of `enforcer` and each of its subcommands, generated from the
//! agent's clap definitions (the same ones `enforcer --help` and `enforcer completions` use).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::util::{say, workspace_root};

/// Where the pages go unless `--out` says otherwise.
pub fn default_dir() -> PathBuf {
    workspace_root().join("target/man")
}

/// Writes `enforcer.1` and `enforcer-<subcommand>.1` into `dir`; returns their paths.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let cmd = iommu_enforcer::cli::Cli::command().version(iommu_enforcer::cli::VERSION);
    let mut written = Vec::new();
    let mut page = |cmd: clap::Command, name: String| -> Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.name(Box::leak(name.clone().into_boxed_str()) as &'static str))
            .render(&mut out)
            .with_context(|| format!("rendering {name}"))?;
        std::fs::write(&path, out).with_context(|| path.display().to_string())?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands() {
        page(sub.clone(), format!("enforcer-{}", sub.get_name()))?;
    }
    page(cmd, "enforcer".to_owned())?;
    Ok(written)
}

pub fn man(out: Option<PathBuf>) -> Result<()> {
    let dir = out.unwrap_or_else(default_dir);
    for path in write_pages(&dir)? {
        say(format!("man: wrote {}", path.display()));
    }
    say(format!(
        "man: read one with `man -l {}/enforcer.1`",
        dir.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_per_command_with_its_options() {
        let dir = tempfile_dir();
        let pages = super::write_pages(&dir).expect("pages");
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for n in [
            "enforcer.1",
            "enforcer-audit.1",
            "enforcer-detach.1",
            "enforcer-completions.1",
        ] {
            assert!(names.iter().any(|x| x == n), "{names:?}");
        }
        let detach = std::fs::read_to_string(dir.join("enforcer-detach.1")).unwrap();
        assert!(detach.contains("pin\\-root"), "{detach}");
        assert!(!detach.contains("dry\\-run"));
        let main = std::fs::read_to_string(dir.join("enforcer.1")).unwrap();
        assert!(main.contains("dry\\-run") && main.contains("log\\-format"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
