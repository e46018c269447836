//! Host-side view of one boot for scenario checks: the agent's lines (docs/events.md) read back
//! into the schema's types, the final audit JSON and the `@fact key=value` lines a guest script
//! printed. Problems are collected behind a RefCell, so a query borrowing the checker can write
//! its own failure message. A fact a check reads that the script never printed is a problem (a
//! missing or misspelt key must not read as "" and let an assertion pass); a fact that a script
//! prints only on some paths is read with [`Checker::fact_opt`].
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use iommu_enforcer_schema::{Event, Kind, Line};
use serde_json::Value;

use crate::qemu::Channel;
use crate::topology;

mod query;

pub use query::{Events, Verdict, Verdicts};

pub struct Checker {
    pub series: String,
    pub cmdline: Option<String>,
    /// The agent's stdout lines that parsed, in order.
    pub lines: Vec<Line>,
    /// `enforcer audit --json`: another output, not in the schema.
    pub audit: Option<Value>,
    pub facts: HashMap<String, String>,
    problems: RefCell<Vec<String>>,
    /// Facts read and found missing, each reported once.
    missing: RefCell<BTreeSet<String>>,
}

impl Checker {
    pub fn new(series: &str, cmdline: Option<&str>, ch: &Channel) -> Checker {
        let mut problems = Vec::new();
        let mut lines = Vec::new();
        for (i, raw) in ch.events.iter().enumerate() {
            match serde_json::from_str::<Line>(raw) {
                Ok(line) => lines.push(line),
                Err(e) => problems.push(format!(
                    "agent stdout line {} does not parse as an output line ({e}): {raw}",
                    i + 1
                )),
            }
        }
        let audit = serde_json::from_str::<Value>(ch.audit.trim()).ok();
        let mut facts = HashMap::new();
        for line in ch.script.lines().filter_map(|l| l.strip_prefix("@fact ")) {
            match line.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    facts.insert(k.trim().to_string(), v.trim().to_string());
                }
                _ => problems.push(format!("script line `@fact {line}` is not KEY=VALUE")),
            }
        }
        Checker {
            series: series.to_string(),
            cmdline: cmdline.map(str::to_string),
            lines,
            audit,
            facts,
            problems: RefCell::new(problems),
            missing: RefCell::new(BTreeSet::new()),
        }
    }

    pub fn problem(&self, what: impl Into<String>) {
        self.problems.borrow_mut().push(what.into());
    }

    pub fn expect(&self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.problem(what);
        }
    }

    /// Everything found wrong, in the order found.
    pub fn into_problems(self) -> Vec<String> {
        self.problems.into_inner()
    }

    pub fn is_5_10(&self) -> bool {
        self.series == "5.10"
    }

    /// Whether the kernel can attach a BPF trampoline (fentry, fexit, LSM) to a kernel
    /// function: not Debian's arm64 6.1 (arm64 has ftrace direct calls from 6.4; its 6.0
    /// trampolines attach to BPF programs only), whose attaches fail with ENOTSUPP.
    pub fn has_trampolines(&self) -> bool {
        self.series != "arm64-6.1"
    }

    /// The kernel version of the series (`arm64-6.1` is a 6.1 kernel).
    pub fn version(&self) -> &str {
        crate::kernels::version_of(&self.series)
    }

    /// The fact `key` the script printed. One it never printed is a problem (reported once per
    /// key) and reads as "", so whatever the check then expects of it fails or is moot.
    pub fn fact(&self, key: &str) -> String {
        match self.facts.get(key) {
            Some(v) => v.clone(),
            None => {
                if self.missing.borrow_mut().insert(key.to_string()) {
                    self.problem(format!("fact {key} missing: the script never printed it"));
                }
                String::new()
            }
        }
    }

    /// A fact the script prints only on some paths: None when it did not.
    pub fn fact_opt(&self, key: &str) -> Option<&str> {
        self.facts.get(key).map(String::as_str)
    }

    /// A device address from the topology (VM_DEV_FN1 ...).
    pub fn dev(&self, var: &str) -> &'static str {
        topology::address(var)
    }

    /// The lines `is` accepts: `c.of_type(|l| matches!(l, Line::Resync { .. }))`.
    pub fn of_type(&self, is: impl Fn(&Line) -> bool) -> Vec<&Line> {
        self.lines.iter().filter(|l| is(l)).collect()
    }

    /// Every `event` line, of any kind.
    pub fn every_event(&self) -> impl Iterator<Item = &Event> {
        self.lines.iter().filter_map(Line::as_event)
    }

    /// The `event` lines of `kind`, to narrow with filters (`.device(d)`, `.rule(r)`, ...) and
    /// count, list or expect.
    pub fn events(&self, kind: Kind) -> Events<'_> {
        Events::of_kind(self, kind)
    }

    /// Every `verdict` line.
    fn every_verdict(&self) -> Vec<Verdict<'_>> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Verdict {
                    group,
                    owner,
                    viable,
                    reasons,
                } => Some(Verdict {
                    group,
                    owner: *owner,
                    viable: *viable,
                    reasons,
                }),
                _ => None,
            })
            .collect()
    }

    /// The `verdict` lines of `group`.
    pub fn verdicts(&self, group: &str) -> Verdicts<'_> {
        Verdicts::of_group(self, group)
    }

    /// Checks every boot shares: the agent started, was ready, and shut down cleanly.
    pub fn common(&self) {
        let caps = self
            .of_type(|l| matches!(l, Line::Capabilities { .. }))
            .len();
        self.expect(
            caps == 1,
            format!("expected one `capabilities` line, got {caps}"),
        );
        let ready = self.of_type(|l| matches!(l, Line::Ready { .. })).len();
        self.expect(
            ready == 1,
            format!("expected one `ready` line, got {ready}"),
        );
        // A scenario that kill -9s the agent on purpose says so in a fact.
        let want = usize::from(self.fact_opt("agent_killed") != Some("yes"));
        let shutdown = self.of_type(|l| matches!(l, Line::Shutdown { .. })).len();
        self.expect(
            shutdown == want,
            format!("expected {want} `shutdown` line after SIGTERM, got {shutdown}"),
        );
    }

    /// The audit JSON's entry for `device`: the first object with a string field equal to it
    /// under a name the audit uses for addresses.
    pub fn audit_device(&self, device: &str) -> Option<&Value> {
        fn find<'a>(v: &'a Value, device: &str) -> Option<&'a Value> {
            match v {
                Value::Object(map) => {
                    let names = ["address", "device", "bdf", "name"];
                    if names
                        .iter()
                        .any(|k| map.get(*k).and_then(Value::as_str) == Some(device))
                    {
                        return Some(v);
                    }
                    map.values().find_map(|c| find(c, device))
                }
                Value::Array(items) => items.iter().find_map(|c| find(c, device)),
                _ => None,
            }
        }
        self.audit.as_ref().and_then(|a| find(a, device))
    }
}

#[cfg(test)]
mod tests {
    use super::Checker;
    use crate::qemu::Channel;

    fn checker(script: &str) -> Checker {
        let ch = Channel {
            script: script.to_string(),
            ..Channel::default()
        };
        Checker::new("6.12", None, &ch)
    }

    #[test]
    fn a_printed_fact_reads_back_trimmed() {
        let c = checker("noise\n@fact group=8 \n@fact alive=yes\n");
        assert_eq!(c.fact("group"), "8");
        assert_eq!(c.fact_opt("alive"), Some("yes"));
        assert_eq!(c.into_problems(), Vec::<String>::new());
    }

    #[test]
    fn a_missing_or_misspelt_fact_is_a_problem_once() {
        let c = checker("@fact group=8\n");
        assert_eq!(c.fact("gruop"), "");
        assert_eq!(c.fact("gruop"), "");
        assert_eq!(c.fact_opt("agent_killed"), None);
        assert_eq!(
            c.into_problems(),
            ["fact gruop missing: the script never printed it"]
        );
    }

    #[test]
    fn a_fact_line_without_a_key_is_a_problem() {
        let c = checker("@fact group\n@fact =8\n");
        assert_eq!(
            c.into_problems(),
            [
                "script line `@fact group` is not KEY=VALUE",
                "script line `@fact =8` is not KEY=VALUE"
            ]
        );
    }
}
