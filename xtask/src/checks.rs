//! Host-side view of one boot for scenario checks: the agent's JSON lines (docs/events.md), the
//! final audit JSON and the `@fact key=value` lines a guest script printed.
use std::collections::HashMap;

use serde_json::Value;

use crate::qemu::Channel;
use crate::topology;

pub struct Checker {
    pub series: String,
    pub cmdline: Option<String>,
    pub lines: Vec<Value>,
    pub audit: Option<Value>,
    pub facts: HashMap<String, String>,
    pub problems: Vec<String>,
}

pub fn str_of<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

impl Checker {
    pub fn new(series: &str, cmdline: Option<&str>, ch: &Channel) -> Checker {
        let mut problems = Vec::new();
        let mut lines = Vec::new();
        for (i, raw) in ch.events.iter().enumerate() {
            match serde_json::from_str::<Value>(raw) {
                Ok(v) if v.get("type").and_then(Value::as_str).is_some() => lines.push(v),
                _ => problems.push(format!(
                    "agent stdout line {} is not a JSON object with a type: {raw}",
                    i + 1
                )),
            }
        }
        let audit = serde_json::from_str::<Value>(ch.audit.trim()).ok();
        let facts = ch
            .script
            .lines()
            .filter_map(|l| l.strip_prefix("@fact "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Checker {
            series: series.to_string(),
            cmdline: cmdline.map(str::to_string),
            lines,
            audit,
            facts,
            problems,
        }
    }

    pub fn expect(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.problems.push(what.into());
        }
    }

    pub fn is_5_10(&self) -> bool {
        self.series == "5.10"
    }

    pub fn fact(&self, key: &str) -> String {
        self.facts.get(key).cloned().unwrap_or_default()
    }

    /// A device address from the topology (VM_DEV_FN1 ...).
    pub fn dev(&self, var: &str) -> &'static str {
        topology::address(var)
    }

    pub fn of_type(&self, t: &str) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|v| str_of(v, "type") == Some(t))
            .collect()
    }

    /// `event` lines of `kind` matching every `(field, value)` given (strings compared as strings,
    /// numbers and booleans parsed from `value`, `null` matches JSON null).
    pub fn events(&self, kind: &str, fields: &[(&str, &str)]) -> Vec<&Value> {
        self.of_type("event")
            .into_iter()
            .filter(|v| str_of(v, "kind") == Some(kind))
            .filter(|v| {
                fields.iter().all(|(f, want)| match v.get(*f) {
                    Some(Value::String(s)) => s == want,
                    Some(Value::Null) | None => *want == "null",
                    Some(Value::Number(n)) => n.as_i64().is_some_and(|n| want.parse() == Ok(n)),
                    Some(Value::Bool(b)) => want.parse() == Ok(*b),
                    Some(_) => false,
                })
            })
            .collect()
    }

    pub fn verdicts(&self, group: &str) -> Vec<&Value> {
        self.of_type("verdict")
            .into_iter()
            .filter(|v| str_of(v, "group") == Some(group))
            .collect()
    }

    /// Checks every boot shares: the agent started, was ready, and shut down cleanly.
    pub fn common(&mut self) {
        let caps = self.of_type("capabilities").len();
        self.expect(
            caps == 1,
            format!("expected one `capabilities` line, got {caps}"),
        );
        let ready = self.of_type("ready").len();
        self.expect(
            ready == 1,
            format!("expected one `ready` line, got {ready}"),
        );
        // A scenario that kill -9s the agent on purpose says so in a fact.
        let want = usize::from(self.fact("agent_killed") != "yes");
        let shutdown = self.of_type("shutdown").len();
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
