//! What the agent needs before it loads anything, said plainly: without CAP_BPF (or
//! CAP_SYS_ADMIN) every map creation fails with EPERM, which aya reports map by map as "failed
//! to create map `GROUPS`"; the check names the capability instead, and the mount the pins need.
use std::path::Path;

use log::warn;

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set of this process (`CapEff` of /proc/self/status).
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

/// `CapEff:` of a /proc/PID/status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

fn has(set: u64, cap: u32) -> bool {
    set & (1 << cap) != 0
}

/// What is missing from `set` to load the programs: `Err` when the agent cannot start, with the
/// message; `Ok` with warnings for what only some programs need.
pub fn missing(set: u64) -> Result<Vec<String>, String> {
    let admin = has(set, CAP_SYS_ADMIN);
    if !admin && !has(set, CAP_BPF) {
        return Err(format!(
            "missing capability CAP_BPF (or CAP_SYS_ADMIN; effective set {set:#x}): the eBPF maps \
             and programs cannot be created. Run as root, or grant CAP_BPF, CAP_PERFMON, \
             CAP_SYS_RESOURCE, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH as the DaemonSet does \
             (deploy/base/daemonset.yaml). `enforcer audit` needs none of them."
        ));
    }
    let mut warnings = Vec::new();
    if !admin && !has(set, CAP_PERFMON) {
        warnings.push(format!(
            "missing capability CAP_PERFMON (effective set {set:#x}): the tracing and kprobe \
             programs will fail to attach"
        ));
    }
    Ok(warnings)
}

/// Checks the capabilities and the bpffs mount the pins go on; an error stops the agent before
/// it loads anything.
pub fn check(pin_root: &Path) -> Result<(), String> {
    if let Some(set) = effective() {
        for w in missing(set)? {
            warn!("{w}");
        }
    }
    let parent = pin_root.parent().unwrap_or(pin_root);
    if !crate::bpf::loader::check_pin_root(parent).unwrap_or(false) {
        warn!(
            "{} is not a bpffs mount (mount -t bpf bpf {0}; in a pod, mount the host's \
             /sys/fs/bpf): nothing can be pinned, so the programs and the protection state end \
             with this agent",
            parent.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cap_bpf_is_an_error_that_names_it() {
        let e = missing(0).unwrap_err();
        assert!(e.contains("CAP_BPF"), "{e}");
        assert!(missing(1 << CAP_SYS_ADMIN).unwrap().is_empty());
        let w = missing(1 << CAP_BPF).unwrap();
        assert!(w.iter().any(|w| w.contains("CAP_PERFMON")), "{w:?}");
        assert!(missing((1 << CAP_BPF) | (1 << CAP_PERFMON))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn cap_eff_is_read_from_proc_status() {
        let status = "Name:\tenforcer\nCapInh:\t0000000000000000\nCapEff:\t000001c000000000\n";
        assert_eq!(parse_cap_eff(status), Some(0x1c0_0000_0000));
    }
}
