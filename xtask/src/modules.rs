//! Picks kernel modules and their dependencies out of an unpacked Debian kernel. Debian ships no
//! modules.dep in the package (depmod runs at install), so dependencies come from each module's
//! `.modinfo` `depends=`; `.ko.xz` files are decompressed here so that busybox insmod can load them.
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context, Result};

use crate::elf;
use crate::kernels::Kernel;
use crate::util::say;

/// A module ready for the initramfs.
pub struct Module {
    pub name: String,
    /// Path below `lib/modules/<release>/`, always ending in `.ko`.
    pub path: String,
    pub data: Vec<u8>,
    pub depends: Vec<String>,
}

/// Module names compare with `-` and `_` as the same character, as the kernel and modprobe do.
fn modname(s: &str) -> String {
    s.replace('-', "_")
}

fn index(dir: &Path, base: &Path, out: &mut HashMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index(&path, base, out)?;
        } else if let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) {
            if let Some(stem) = name
                .strip_suffix(".ko.xz")
                .or_else(|| name.strip_suffix(".ko"))
            {
                out.insert(
                    modname(stem),
                    path.strip_prefix(base).unwrap_or(&path).to_path_buf(),
                );
            }
        }
    }
    Ok(())
}

fn read_module(file: &Path) -> Result<Vec<u8>> {
    if file.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(file)
            .output()
            .with_context(|| format!("running xz -dc {}", file.display()))?;
        if !out.status.success() {
            return Err(anyhow!(
                "xz -dc {} failed: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        return Ok(out.stdout);
    }
    fs::read(file).with_context(|| format!("reading {}", file.display()))
}

/// `wanted` modules and everything they depend on. Names that are built into this kernel or absent
/// from it are reported and skipped (e.g. virtio_pci is built in on 6.12, vfio_virqfd merged into vfio).
pub fn collect(kernel: &Kernel, wanted: &[&str]) -> Result<Vec<Module>> {
    let mut paths = HashMap::new();
    index(&kernel.modules.join("kernel"), &kernel.modules, &mut paths)?;
    let builtin = fs::read_to_string(kernel.modules.join("modules.builtin")).unwrap_or_default();
    let is_builtin = |name: &str| {
        builtin.lines().any(|l| {
            Path::new(l)
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_suffix(".ko"))
                .map(modname)
                .as_deref()
                == Some(name)
        })
    };

    let mut found: BTreeMap<String, Module> = BTreeMap::new();
    let mut queue: Vec<String> = wanted.iter().map(|w| modname(w)).collect();
    let mut skipped = Vec::new();
    while let Some(name) = queue.pop() {
        if found.contains_key(&name) {
            continue;
        }
        let Some(rel) = paths.get(&name) else {
            skipped.push(format!(
                "{name} ({})",
                if is_builtin(&name) {
                    "built in"
                } else {
                    "not in this kernel"
                }
            ));
            continue;
        };
        let data = read_module(&kernel.modules.join(rel))?;
        let info = elf::modinfo(&data)
            .with_context(|| format!("reading .modinfo of {}", rel.display()))?;
        let depends: Vec<String> = info
            .iter()
            .filter(|(k, _)| k == "depends")
            .flat_map(|(_, v)| {
                v.split(',')
                    .filter(|d| !d.is_empty())
                    .map(modname)
                    .collect::<Vec<_>>()
            })
            .collect();
        queue.extend(depends.iter().cloned());
        let path = rel.to_string_lossy().trim_end_matches(".xz").to_string();
        found.insert(
            name.clone(),
            Module {
                name,
                path,
                data,
                depends,
            },
        );
    }
    if !skipped.is_empty() {
        say(format!(
            "initramfs: kernel {}: skipping modules {}",
            kernel.series,
            skipped.join(", ")
        ));
    }
    Ok(found.into_values().collect())
}

/// A modules.dep in depmod's format: each module, then all its dependencies ordered so that loading
/// them from last to first works (what modprobe does).
pub fn modules_dep(modules: &[Module]) -> String {
    let by_name: HashMap<&str, &Module> = modules.iter().map(|m| (m.name.as_str(), m)).collect();
    fn visit<'a>(
        m: &'a Module,
        by_name: &HashMap<&str, &'a Module>,
        seen: &mut Vec<&'a str>,
        order: &mut Vec<&'a str>,
    ) {
        for d in &m.depends {
            if let Some(dep) = by_name.get(d.as_str()) {
                if !seen.contains(&dep.name.as_str()) {
                    seen.push(dep.name.as_str());
                    visit(dep, by_name, seen, order);
                    order.push(dep.path.as_str());
                }
            }
        }
    }
    let mut out = String::new();
    for m in modules {
        let (mut seen, mut order) = (Vec::new(), Vec::new());
        visit(m, &by_name, &mut seen, &mut order);
        // `order` has dependencies before their users; depmod lists users first.
        order.reverse();
        out.push_str(&m.path);
        out.push(':');
        for p in order {
            out.push(' ');
            out.push_str(p);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, depends: &[&str]) -> Module {
        Module {
            name: name.to_string(),
            path: format!("kernel/{name}.ko"),
            data: Vec::new(),
            depends: depends.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn modules_dep_lists_users_before_what_they_use() {
        let mods = [
            module("vfio_pci", &["vfio_pci_core"]),
            module("vfio_pci_core", &["vfio", "irqbypass"]),
            module("vfio", &[]),
            module("irqbypass", &[]),
        ];
        let dep = modules_dep(&mods);
        let line = dep.lines().next().unwrap_or_default();
        let (_, deps) = line.split_once(':').unwrap_or_default();
        let deps: Vec<&str> = deps.split_whitespace().collect();
        // modprobe loads from the last entry backwards: vfio_pci_core must come after its users
        // and before nothing it depends on.
        assert_eq!(deps[0], "kernel/vfio_pci_core.ko");
        assert_eq!(deps.len(), 3);
        assert!(dep.contains("kernel/vfio.ko:\n"));
    }

    #[test]
    fn dash_and_underscore_name_the_same_module() {
        assert_eq!(modname("vfio-pci"), "vfio_pci");
    }
}
