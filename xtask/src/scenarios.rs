//! VM scenarios, one folder each under tests/vm/scenarios/<name>/: `guest.sh` (the guest steps),
//! an optional `setup.sh` (sourced by /init before the agent starts) and `check.rs` (its runs:
//! kernels, dry run, policy; and the host-side check over the agent's JSON lines, never dmesg).
//! The check modules are listed below; this module keeps what they share: the kernel lists and
//! the check helpers.
use iommu_enforcer_schema::{Action, Event, HookState, Kind, Line, Outcome};

use crate::checks::Checker;

pub struct Scenario {
    pub name: &'static str,
    /// (kernel series, extra kernel command line) for each boot of this scenario.
    pub boots: &'static [(&'static str, Option<&'static str>)],
    /// Run the agent with --dry-run, so the kernel's own refusal is what gets observed instead of
    /// the agent's veto of the sysfs write or VFIO open.
    pub dry_run: bool,
    /// Policy for the agent and the final audit: a file name in tests/vm/policies/.
    pub policy: Option<&'static str>,
    pub check: fn(&Checker),
}

const ALL: &[(&str, Option<&str>)] = &[
    ("5.10", None),
    ("6.1", None),
    ("6.12", None),
    ("7.3", None),
    (IOMMUFD, None),
];

const SIX: &[(&str, Option<&str>)] = &[
    ("6.1", None),
    ("6.12", None),
    ("7.3", None),
    (IOMMUFD, None),
];

/// Kernels where BPF LSM runs: 5.10 only when booted with it.
const LSM: &[(&str, Option<&str>)] = &[
    ("5.10", Some(LSM_BPF)),
    ("6.1", None),
    ("6.12", None),
    ("7.3", None),
    (IOMMUFD, None),
];

/// Every kernel, 5.10 both with and without BPF LSM.
const EVERY: &[(&str, Option<&str>)] = &[
    ("5.10", None),
    ("5.10", Some(LSM_BPF)),
    ("6.1", None),
    ("6.12", None),
    ("7.3", None),
    (IOMMUFD, None),
];

/// Scenarios whose subject is the agent's own logic (accounting, restarts, policy, rebinds) run
/// on the oldest and the newest kernel only, or on one, to keep CI inside its budget; what the
/// kernel does differently is covered by the scenarios that run everywhere.
const EDGES: &[(&str, Option<&str>)] = &[("5.10", None), ("7.3", None)];

const ONE: &[(&str, Option<&str>)] = &[("6.12", None)];

/// The only kernel with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV (built by kbuild.rs).
const IOMMUFD: &str = crate::kernels::BUILT;

const CDEV: &[(&str, Option<&str>)] = &[(IOMMUFD, None)];

/// The arm64 node (qemu-system-aarch64 virt with an SMMUv3, Debian's arm64 kernels): the core
/// scenarios on 6.12, the capability ladder and the reservation on 6.1 too. Under TCG with no
/// KVM an arm64 boot costs more than an x86 one, so only these run there (README, "arm64").
const ARM64: &[(&str, Option<&str>)] = &[("arm64-6.12", None)];

const ARM64_BOTH: &[(&str, Option<&str>)] = &[("arm64-6.1", None), ("arm64-6.12", None)];

/// The two-function device reserved: .0 for vfio-pci, .1 unbound; a trusted writer.
const RESERVE: Option<&str> = Some("reserve-two-function.toml");

/// Debian 5.10 leaves bpf out of the LSM list unless the command line adds it.
pub const LSM_BPF: &str = "lsm=lockdown,yama,bpf";

/// Whether BPF LSM runs in this boot (6.x, or 5.10 booted with it).
fn lsm_runs(c: &Checker) -> bool {
    c.has_trampolines() && (!c.is_5_10() || c.cmdline.as_deref().is_some_and(|l| l.contains("bpf")))
}

/// The hook was attached once it had something to veto (it starts on standby).
fn expect_hook_attached(c: &Checker, hook: &str) {
    let attached = c
        .lines
        .iter()
        .any(|l| matches!(l, Line::LsmHook { hook: h, state: HookState::Attached } if h == hook));
    c.expect(attached, format!("no lsm_hook line attaching {hook}"));
}

/// The hostile actor of the hand-back flows tried while the group was in use and never won.
fn expect_hostile_refused(c: &Checker, group: &str) {
    let tries: u32 = c.fact("hostile_tries").parse().unwrap_or(0);
    c.expect(tries > 0, "the hostile actor made no attempt");
    expect_fact(c, "hostile_wins", "0");
    c.events(Kind::Veto)
        .group(group)
        .action(Action::Vetoed)
        .note("the hostile actor's writes, refused in the kernel")
        .expect_at_least(4);
    expect_fact(c, "alive", "yes");
}

fn expect_fact(c: &Checker, key: &str, want: &str) {
    let got = c.fact(key);
    c.expect(
        got == want,
        format!("fact {key} is {got:?}, expected {want:?}"),
    );
}

/// The agent's own reservation writes for the two-function device.
fn expect_pins(c: &Checker, action: Action) {
    for (var, value) in [("VM_DEV_FN0", "vfio-pci"), ("VM_DEV_FN1", "none")] {
        c.events(Kind::Pin)
            .device(c.dev(var))
            .driver(value)
            .action(action)
            .result(Outcome::Ok)
            .expect(1);
    }
}

/// The cdev the script opened, as the agent must name it in `path`.
fn cdev_path(c: &Checker) -> String {
    let cdev = c.fact("cdev");
    c.expect(
        cdev.starts_with("/dev/vfio/devices/vfio"),
        format!("the script found no cdev of the device: {cdev:?}"),
    );
    cdev
}

/// An event as the agent printed it, for messages.
fn json(e: &Event) -> String {
    serde_json::to_string(e).unwrap_or_else(|_| format!("{e:?}"))
}

fn expect_alive_and(c: &Checker, fn1_driver: &str) {
    expect_fact(c, "alive", "yes");
    expect_fact(c, "fn1_driver", fn1_driver);
}

/// A fact that must be a number; a missing or garbled one is a problem, counted as 0.
fn count_fact(c: &Checker, key: &str) -> u64 {
    let v = c.fact(key);
    match v.parse() {
        Ok(n) => n,
        Err(_) => {
            c.problem(format!("fact {key} is {v:?}, not a count"));
            0
        }
    }
}

/// What the boot's agent printed of the burst: ok binds and unbinds of pci-stub on the burst
/// device, and opens (ok, failed) and releases of the flood's group file.
fn burst_seen(c: &Checker, dev: &str, node: &str) -> (u64, u64) {
    let cycles = c
        .events(Kind::Bind)
        .device(dev)
        .driver("pci-stub")
        .result(Outcome::Ok)
        .count()
        + c.events(Kind::Unbind)
            .device(dev)
            .driver("pci-stub")
            .count();
    let opens = c.events(Kind::VfioOpen).path(node).count()
        + c.events(Kind::VfioRelease).path(node).count();
    (cycles as u64, opens as u64)
}

/// Records counted lost by the boot's agent: `lost` counts and `restart` missed.
fn counted_lost(c: &Checker) -> u64 {
    c.lines
        .iter()
        .map(|l| match l {
            Line::Lost { count } => *count,
            Line::Restart { missed, .. } => *missed,
            _ => 0,
        })
        .sum()
}

/// Every event of `events` names pod `uid` and container `id`; `what` says whose they are.
fn expect_pod(c: &Checker, events: &[&Event], what: &str, uid: &str, id: &str) {
    c.expect(!events.is_empty(), format!("no {what} event"));
    for e in events {
        let got = (e.pod_uid.as_deref(), e.container_id.as_deref());
        c.expect(
            got == (Some(uid), Some(id)),
            format!(
                "{what}: expected pod_uid {uid} and container_id {id}, got {}",
                json(e)
            ),
        );
    }
}

#[path = "../../tests/vm/scenarios/agent-faults/check.rs"]
mod agent_faults;
#[path = "../../tests/vm/scenarios/agent-killed/check.rs"]
mod agent_killed;
#[path = "../../tests/vm/scenarios/blocked-removal/check.rs"]
mod blocked_removal;
#[path = "../../tests/vm/scenarios/burst/check.rs"]
mod burst;
#[path = "../../tests/vm/scenarios/capabilities/check.rs"]
mod capabilities;
#[path = "../../tests/vm/scenarios/cdev-bind-iommufd/check.rs"]
mod cdev_bind_iommufd;
#[path = "../../tests/vm/scenarios/cdev-open-not-viable/check.rs"]
mod cdev_open_not_viable;
#[path = "../../tests/vm/scenarios/claim-over-kernel-driver/check.rs"]
mod claim_over_kernel_driver;
#[path = "../../tests/vm/scenarios/claim-race/check.rs"]
mod claim_race;
#[path = "../../tests/vm/scenarios/claim-user-group/check.rs"]
mod claim_user_group;
#[path = "../../tests/vm/scenarios/daemonset-caps/check.rs"]
mod daemonset_caps;
#[path = "../../tests/vm/scenarios/handback/check.rs"]
mod handback;
#[path = "../../tests/vm/scenarios/handback-vfio-manager/check.rs"]
mod handback_vfio_manager;
#[path = "../../tests/vm/scenarios/hidden-holder/check.rs"]
mod hidden_holder;
#[path = "../../tests/vm/scenarios/hostile-io-uring/check.rs"]
mod hostile_io_uring;
#[path = "../../tests/vm/scenarios/hostile-topology/check.rs"]
mod hostile_topology;
#[path = "../../tests/vm/scenarios/kernel-bind-refused/check.rs"]
mod kernel_bind_refused;
#[path = "../../tests/vm/scenarios/kill-mid-burst/check.rs"]
mod kill_mid_burst;
#[path = "../../tests/vm/scenarios/malformed-policy/check.rs"]
mod malformed_policy;
#[path = "../../tests/vm/scenarios/map-layout/check.rs"]
mod map_layout;
#[path = "../../tests/vm/scenarios/observe-5.10/check.rs"]
mod observe_5_10;
#[path = "../../tests/vm/scenarios/pin-restored/check.rs"]
mod pin_restored;
#[path = "../../tests/vm/scenarios/pod-attribution/check.rs"]
mod pod_attribution;
#[path = "../../tests/vm/scenarios/pod-resources/check.rs"]
mod pod_resources;
#[path = "../../tests/vm/scenarios/policy-live/check.rs"]
mod policy_live;
#[path = "../../tests/vm/scenarios/rebind-loop/check.rs"]
mod rebind_loop;
#[path = "../../tests/vm/scenarios/reserve-prevents-bind/check.rs"]
mod reserve_prevents_bind;
#[path = "../../tests/vm/scenarios/reserve-rebind/check.rs"]
mod reserve_rebind;
#[path = "../../tests/vm/scenarios/traced-trusted-writer/check.rs"]
mod traced_trusted_writer;
#[path = "../../tests/vm/scenarios/trusted-writer-installed/check.rs"]
mod trusted_writer_installed;
#[path = "../../tests/vm/scenarios/vfio-open-not-viable/check.rs"]
mod vfio_open_not_viable;
#[path = "../../tests/vm/scenarios/write-check/check.rs"]
mod write_check;
#[path = "../../tests/vm/scenarios/write-paths/check.rs"]
mod write_paths;
/// Every scenario folder and its runs, in the order their boots are queued.
const FOLDERS: &[(&str, &[Scenario])] = &[
    ("capabilities", capabilities::RUNS),
    ("claim-user-group", claim_user_group::RUNS),
    ("kernel-bind-refused", kernel_bind_refused::RUNS),
    ("claim-over-kernel-driver", claim_over_kernel_driver::RUNS),
    ("rebind-loop", rebind_loop::RUNS),
    ("observe-5.10", observe_5_10::RUNS),
    ("reserve-prevents-bind", reserve_prevents_bind::RUNS),
    ("write-check", write_check::RUNS),
    ("write-paths", write_paths::RUNS),
    ("vfio-open-not-viable", vfio_open_not_viable::RUNS),
    ("reserve-rebind", reserve_rebind::RUNS),
    ("hostile-topology", hostile_topology::RUNS),
    ("hostile-io-uring", hostile_io_uring::RUNS),
    ("blocked-removal", blocked_removal::RUNS),
    ("hidden-holder", hidden_holder::RUNS),
    ("agent-faults", agent_faults::RUNS),
    ("agent-killed", agent_killed::RUNS),
    ("claim-race", claim_race::RUNS),
    ("pin-restored", pin_restored::RUNS),
    ("traced-trusted-writer", traced_trusted_writer::RUNS),
    ("daemonset-caps", daemonset_caps::RUNS),
    ("cdev-bind-iommufd", cdev_bind_iommufd::RUNS),
    ("cdev-open-not-viable", cdev_open_not_viable::RUNS),
    ("burst", burst::RUNS),
    ("kill-mid-burst", kill_mid_burst::RUNS),
    ("map-layout", map_layout::RUNS),
    ("malformed-policy", malformed_policy::RUNS),
    ("trusted-writer-installed", trusted_writer_installed::RUNS),
    ("policy-live", policy_live::RUNS),
    ("pod-attribution", pod_attribution::RUNS),
    ("handback", handback::RUNS),
    ("pod-resources", pod_resources::RUNS),
    ("handback-vfio-manager", handback_vfio_manager::RUNS),
];

/// Every run of every scenario: the arm64 ones first (their boots are the longest, so they
/// start first), then the others in the order of [`FOLDERS`].
pub fn all() -> Vec<&'static Scenario> {
    let runs = || FOLDERS.iter().flat_map(|(_, runs)| runs.iter());
    let arm64 = |s: &Scenario| s.boots.iter().all(|(k, _)| k.starts_with("arm64-"));
    runs()
        .filter(|s| arm64(s))
        .chain(runs().filter(|s| !arm64(s)))
        .collect()
}

/// A scenario's folder: tests/vm/scenarios/<name>/.
pub fn folder(name: &str) -> std::path::PathBuf {
    crate::util::workspace_root()
        .join("tests/vm/scenarios")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::{folder, FOLDERS};

    /// The keys a check reads by name (`c.fact("k")`, `expect_fact(c, "k", ..)`, ...), from its
    /// source with whitespace folded; keys built with format! are left to the boots.
    fn read_keys(check: &str) -> Vec<String> {
        let text = check.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = text.replace("( ", "(");
        let mut keys = Vec::new();
        for call in [
            "fact(\"",
            "fact_opt(\"",
            "expect_fact(c, \"",
            "count_fact(c, \"",
        ] {
            for (at, _) in text.match_indices(call) {
                let rest = &text[at + call.len()..];
                if let Some(end) = rest.find('"') {
                    keys.push(rest[..end].to_string());
                }
            }
        }
        keys
    }

    /// The keys a script prints (`fact KEY VALUE`), a shell expansion in one as `*`.
    fn printed_keys(script: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let words: Vec<&str> = script
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            if pair[0] == "fact" {
                let mut key = String::new();
                let mut chars = pair[1].chars().peekable();
                while let Some(c) = chars.next() {
                    if c != '$' {
                        key.push(c);
                        continue;
                    }
                    if chars.peek() == Some(&'{') {
                        for c in chars.by_ref() {
                            if c == '}' {
                                break;
                            }
                        }
                    } else {
                        while chars
                            .next_if(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .is_some()
                        {}
                    }
                    key.push('*');
                }
                keys.push(key);
            }
        }
        keys
    }

    /// `*` matches one or more characters.
    fn matches(pattern: &str, key: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == key,
            Some((head, tail)) => {
                key.starts_with(head)
                    && (head.len() + 1..=key.len()).any(|i| matches(tail, &key[i..]))
            }
        }
    }

    #[test]
    fn the_patterns_of_printed_keys() {
        assert_eq!(
            printed_keys("\tfact ${1}_pin_0 $x; fact fds_$1 3\nfact(){ :; }"),
            ["*_pin_0", "fds_*"]
        );
        assert!(matches("*_pin_0", "start_pin_0"));
        assert!(matches("fds_*", "fds_during"));
        assert!(!matches("fds_*", "fds_"));
        assert!(!matches("group", "groups"));
    }

    #[test]
    fn every_fact_a_check_names_is_printed_by_its_scripts() {
        let vm = folder("").join("..");
        let shared: String = ["lib.sh", "burst.sh"]
            .iter()
            .map(|f| std::fs::read_to_string(vm.join(f)).expect("shared script"))
            .collect();
        for (name, _) in FOLDERS {
            let dir = folder(name);
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            let printed = printed_keys(&(read("guest.sh") + &read("setup.sh") + &shared));
            for key in read_keys(&read("check.rs")) {
                assert!(
                    printed.iter().any(|p| matches(p, &key)),
                    "{name}/check.rs reads fact {key}, which no script of it prints"
                );
            }
        }
    }

    #[test]
    fn every_folder_is_listed_and_every_listed_folder_has_its_guest_script() {
        let mut on_disk: Vec<String> = std::fs::read_dir(folder(""))
            .expect("tests/vm/scenarios")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = FOLDERS.iter().map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(
            on_disk, listed,
            "folders under tests/vm/scenarios vs FOLDERS"
        );
        for (name, runs) in FOLDERS {
            assert!(folder(name).join("guest.sh").is_file(), "{name}/guest.sh");
            assert!(!runs.is_empty(), "{name} has no run");
            for run in *runs {
                assert_eq!(run.name, *name, "a run of folder {name}");
            }
        }
    }
}
