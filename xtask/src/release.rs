//! `cargo xtask release`: what a release publishes, under target/release/<version>/: the image
//! (built and smoke-tested by `cargo xtask image`, saved as an OCI archive), the manifests of
//! every install path rendered with that image's reference pinned, the man pages and shell
//! completions, and SHA256SUMS over all of it. It checks first that the deploy manifests pass
//! tests/deploy/validate.sh and that the eBPF object's license string is one the kernel takes as
//! GPL-compatible (LICENSES/README.md).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::util::{output, run, say, target_dir, workspace_root};

/// The kustomizations a release renders: (file name, directory).
pub const MANIFESTS: &[(&str, &str)] = &[
    ("iommu-enforcer-audit.yaml", "deploy/overlays/audit"),
    ("iommu-enforcer.yaml", "deploy/base"),
    (
        "iommu-enforcer-kube-rbac-proxy.yaml",
        "deploy/overlays/kube-rbac-proxy",
    ),
    (
        "iommu-enforcer-kube-prometheus-stack.yaml",
        "deploy/overlays/kube-prometheus-stack",
    ),
    ("iommu-enforcer-uninstall.yaml", "deploy/uninstall"),
];

/// The license strings the kernel's `license_is_gpl_compatible()` accepts.
pub const GPL_COMPATIBLE: &[&str] = &[
    "GPL",
    "GPL v2",
    "GPL and additional rights",
    "Dual BSD/GPL",
    "Dual MIT/GPL",
    "Dual MPL/GPL",
];

/// `rendered` with every reference to the image the manifests name by default
/// (`localhost/iommu-enforcer:<version>`) replaced by `image`.
pub fn pin_image(rendered: &str, image: &str) -> String {
    let default = crate::image::tag();
    rendered
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let item = t.strip_prefix("- ").unwrap_or(t);
            match item.strip_prefix("image: ") {
                Some(v) if v.trim_matches('"') == default => {
                    format!("{}image: {image}", &l[..l.len() - item.len()])
                }
                _ => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The `license` section of an ELF object, without its NUL.
pub fn license_of(object: &[u8]) -> Option<String> {
    let bytes = crate::elf::section(object, "license").ok()??;
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8(bytes[..end].to_vec()).ok()
}

pub fn release(registry: Option<String>) -> Result<()> {
    let root = workspace_root();
    let version = crate::image::version();
    let out = target_dir().join("release").join(version);
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| out.display().to_string())?;
    }
    fs::create_dir_all(&out).with_context(|| out.display().to_string())?;

    say("release: tests/deploy/validate.sh (every overlay and component)");
    run(Command::new("bash").arg(root.join("tests/deploy/validate.sh")))?;
    crate::image::image()?;
    let object = target_dir().join("ebpf/iommu-enforcer.bpf.o");
    let bytes = fs::read(&object).with_context(|| object.display().to_string())?;
    match license_of(&bytes) {
        Some(l) if GPL_COMPATIBLE.contains(&l.as_str()) => say(format!(
            "release: the eBPF object's license is {l:?} (GPL-compatible)"
        )),
        other => bail!(
            "{}: license section {other:?} is not one the kernel takes as GPL-compatible: the \
             programs' GPL-only helpers would be refused",
            object.display()
        ),
    }

    // The image: tagged for the registry when one is given, and saved as an archive.
    let local = crate::image::tag();
    let image = match &registry {
        Some(r) => {
            let remote = format!("{}/iommu-enforcer:{version}", r.trim_end_matches('/'));
            run(Command::new("podman").args(["tag", &local, &remote]))?;
            remote
        }
        None => local.clone(),
    };
    let archive = out.join(format!("iommu-enforcer-{version}.oci.tar"));
    run(Command::new("podman")
        .args(["save", "--format", "oci-archive", "-o"])
        .arg(&archive)
        .arg(&local))?;

    let kubectl = target_dir().join("deploy-venv/bin/kubectl");
    for (name, dir) in MANIFESTS {
        let rendered = output(Command::new(&kubectl).arg("kustomize").arg(root.join(dir)))?;
        let pinned = pin_image(&rendered, &image);
        fs::write(out.join(name), pinned).with_context(|| name.to_string())?;
    }
    crate::man::write_pages(&out.join("man"))?;
    let completions = out.join("completions");
    fs::create_dir_all(&completions)?;
    let enforcer = crate::artifacts::build_guest_bins()?.enforcer;
    for shell in ["bash", "zsh", "fish"] {
        let script = output(Command::new(&enforcer).args(["completions", shell]))?;
        fs::write(completions.join(format!("enforcer.{shell}")), script)?;
    }
    fs::copy(&enforcer, out.join("enforcer"))?;
    for f in ["LICENSE", "CHANGELOG.md"] {
        fs::copy(root.join(f), out.join(f))?;
    }
    write_checksums(&out)?;
    say(format!(
        "release: {image}; artifacts and SHA256SUMS in {}",
        out.display()
    ));
    println!("{image}");
    Ok(())
}

/// SHA256SUMS of every file under `dir` (paths relative to it), as `sha256sum -c` reads them.
fn write_checksums(dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let rel: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix(dir).ok())
        .map(|p| p.display().to_string())
        .collect();
    let sums = output(Command::new("sha256sum").args(&rel).current_dir(dir))?;
    fs::write(dir.join("SHA256SUMS"), sums)?;
    Ok(())
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, files)?;
        } else {
            files.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_image_is_pinned_and_others_are_left_alone() {
        let default = crate::image::tag();
        let rendered = format!(
            "spec:\n  containers:\n    - image: {default}\n      name: enforcer\n    - image: registry.k8s.io/pause:3.10\n"
        );
        let pinned = pin_image(&rendered, "registry.example.com/iommu-enforcer:0.1.0");
        assert!(pinned.contains("    - image: registry.example.com/iommu-enforcer:0.1.0\n"));
        assert!(pinned.contains("image: registry.k8s.io/pause:3.10"));
        assert!(!pinned.contains(&default));
    }

    #[test]
    fn every_install_path_is_released() {
        for (_, dir) in MANIFESTS {
            assert!(
                workspace_root()
                    .join(dir)
                    .join("kustomization.yaml")
                    .exists(),
                "{dir}"
            );
        }
    }

    #[test]
    fn the_ebpf_license_string_is_gpl_compatible() {
        // The object's source states it; the built object is checked by `release` itself.
        let src =
            fs::read_to_string(workspace_root().join("ebpf/src/main.rs")).expect("ebpf source");
        let line = src
            .lines()
            .skip_while(|l| !l.contains("link_section = \"license\""))
            .find(|l| l.contains("*b\""))
            .expect("a license section");
        let s = line
            .split("*b\"")
            .nth(1)
            .and_then(|r| r.split("\\0").next());
        assert!(s.is_some_and(|s| GPL_COMPATIBLE.contains(&s)), "{line}");
    }
}
