//! Queries over the agent's lines: the events of a kind (or the verdicts of a group) narrowed by
//! filters that remember what they filter, and expectations that write their own failure
//! message into the checker, naming the kind, the filters, the count and the closest lines seen.
use std::fmt::Display;

use iommu_enforcer_schema::{Action, Allocation, Event, Kind, Outcome, Owner, Rule, Scope, Why};

use super::Checker;

/// How many of the closest (or of the unexpected) lines a failure message shows.
const SHOWN: usize = 3;

/// One condition on an item: the field it reads, the value it wants, and how to show the value
/// an item has (for the closest lines of a failure message).
struct Filter<'c, T> {
    field: &'static str,
    want: String,
    holds: Box<dyn Fn(T) -> bool + 'c>,
    got: Box<dyn Fn(T) -> String + 'c>,
}

/// Items of one kind (`veto` events, `verdict` lines) and the filters that narrow them.
pub struct Query<'c, T> {
    checker: &'c Checker,
    /// What one item is, for messages: "`veto` event".
    what: String,
    all: Vec<T>,
    filters: Vec<Filter<'c, T>>,
    note: Option<String>,
}

/// `event` lines of one kind.
pub type Events<'c> = Query<'c, &'c Event>;
/// `verdict` lines.
pub type Verdicts<'c> = Query<'c, Verdict<'c>>;

/// A `verdict` line's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict<'a> {
    pub group: &'a str,
    pub owner: Owner,
    pub viable: bool,
    pub reasons: &'a [String],
}

/// An item's short description when no filter says which fields matter.
pub trait Brief {
    fn brief(&self) -> String;
}

impl Brief for &Event {
    fn brief(&self) -> String {
        let mut parts = vec![
            format!("device={}", shown(self.device.as_deref())),
            format!("driver={}", shown(self.driver.as_deref())),
            format!("result={}", self.result),
        ];
        if let Some(rule) = self.rule {
            parts.push(format!("rule={rule}"));
        }
        if let Some(action) = self.action {
            parts.push(format!("action={action}"));
        }
        if let Some(errno) = &self.errno {
            parts.push(format!("errno={errno}"));
        }
        parts.join(", ")
    }
}

impl Brief for Verdict<'_> {
    fn brief(&self) -> String {
        format!(
            "group={}, owner={}, viable={}",
            self.group, self.owner, self.viable
        )
    }
}

/// A string field as messages show it: the text, or `null`.
fn shown(v: Option<&str>) -> String {
    v.unwrap_or("null").to_string()
}

/// An event's `allocated_to` as `namespace/pod/container/resource`, or `none` when left out.
fn allocation(a: Option<&Allocation>) -> String {
    a.map_or_else(
        || "none".to_string(),
        |a| format!("{}/{}/{}/{}", a.namespace, a.pod, a.container, a.resource),
    )
}

/// `n` and what, plural unless `n` is 1: "2 `veto` events".
fn counted(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

impl<'c, T: Copy + Brief + 'c> Query<'c, T> {
    pub(super) fn new(checker: &'c Checker, what: String, all: Vec<T>) -> Self {
        Query {
            checker,
            what,
            all,
            filters: Vec::new(),
            note: None,
        }
    }

    fn filter(
        mut self,
        field: &'static str,
        want: String,
        holds: impl Fn(T) -> bool + 'c,
        got: impl Fn(T) -> String + 'c,
    ) -> Self {
        self.filters.push(Filter {
            field,
            want,
            holds: Box::new(holds),
            got: Box::new(got),
        });
        self
    }

    /// Said after a failed expectation's message: why the count matters.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    fn matches(&self, item: T) -> bool {
        self.filters.iter().all(|f| (f.holds)(item))
    }

    /// The items every filter accepts, in the order the agent printed them.
    pub fn list(&self) -> Vec<T> {
        self.all
            .iter()
            .copied()
            .filter(|i| self.matches(*i))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.all.iter().filter(|i| self.matches(**i)).count()
    }

    /// Exactly `n` items match; 0 says "no".
    pub fn expect(&self, n: usize) {
        let got = self.count();
        if got != n {
            let want = if n == 0 {
                "no".to_string()
            } else {
                n.to_string()
            };
            self.fail(&want, n, got);
        }
    }

    pub fn expect_at_least(&self, n: usize) {
        let got = self.count();
        if got < n {
            self.fail(&format!("at least {n}"), n, got);
        }
    }

    pub fn expect_none(&self) {
        self.expect(0);
    }

    /// The message of a failed expectation of `want` (`n`) items, `got` matching.
    fn fail(&self, want: &str, n: usize, got: usize) {
        let plural = if n > 1 { "s" } else { "" };
        let mut msg = format!("expected {want} {}{plural}", self.what);
        if !self.filters.is_empty() {
            let filters: Vec<String> = self
                .filters
                .iter()
                .map(|f| format!("{}={}", f.field, f.want))
                .collect();
            msg += &format!(" with {}", filters.join(", "));
        }
        msg += &format!(", got {got}");
        if got > n {
            // Too many: which ones.
            msg += &format!(": {}", self.shown(self.list(), true));
        } else if self.all.is_empty() {
            msg += &format!(" (no {} at all)", self.what);
        } else if !self.filters.is_empty() {
            // Too few: the lines of the kind that came closest, by how many filters they pass.
            let mut near: Vec<(usize, T)> = self
                .all
                .iter()
                .copied()
                .filter(|i| !self.matches(*i))
                .map(|i| (self.filters.iter().filter(|f| (f.holds)(i)).count(), i))
                .collect();
            near.sort_by_key(|(passed, _)| std::cmp::Reverse(*passed));
            let near: Vec<T> = near.into_iter().map(|(_, i)| i).collect();
            msg += &format!(
                " (seen: {}; closest: {})",
                counted(self.all.len(), &self.what),
                self.shown(near, false)
            );
        }
        if let Some(note) = &self.note {
            msg += &format!("; {note}");
        }
        self.checker.problem(msg);
    }

    /// Up to SHOWN items, and how many more there are: each as its brief (`whole`, or when no
    /// filter says which fields matter) or as the values of the filtered fields.
    fn shown(&self, items: Vec<T>, whole: bool) -> String {
        let mut parts: Vec<String> = items
            .iter()
            .take(SHOWN)
            .map(|i| {
                if whole || self.filters.is_empty() {
                    format!("{{{}}}", i.brief())
                } else {
                    let fields: Vec<String> = self
                        .filters
                        .iter()
                        .map(|f| format!("{}={}", f.field, (f.got)(*i)))
                        .collect();
                    format!("{{{}}}", fields.join(", "))
                }
            })
            .collect();
        if items.len() > SHOWN {
            parts.push(format!("and {} more", items.len() - SHOWN));
        }
        parts.join(", ")
    }
}

impl<'c> Events<'c> {
    pub(super) fn of_kind(checker: &'c Checker, kind: Kind) -> Self {
        let all = checker.every_event().filter(|e| e.kind == kind).collect();
        Query::new(checker, format!("`{kind}` event"), all)
    }

    /// A string field equal to `want` (`None`: null).
    fn text(
        self,
        field: &'static str,
        want: Option<&str>,
        read: fn(&Event) -> Option<&str>,
    ) -> Self {
        let want = want.map(str::to_string);
        let said = shown(want.as_deref());
        self.filter(
            field,
            said,
            move |e| read(e) == want.as_deref(),
            move |e| shown(read(e)),
        )
    }

    /// A field of a plain value type equal to `want` (`read` gives `None` where the line has none).
    fn value<V: Copy + PartialEq + Display + 'static>(
        self,
        field: &'static str,
        want: V,
        read: fn(&Event) -> Option<V>,
    ) -> Self {
        self.filter(
            field,
            want.to_string(),
            move |e| read(e) == Some(want),
            move |e| read(e).map_or_else(|| "null".to_string(), |v| v.to_string()),
        )
    }

    pub fn device(self, device: &str) -> Self {
        self.text("device", Some(device), |e| e.device.as_deref())
    }

    pub fn driver(self, driver: &str) -> Self {
        self.text("driver", Some(driver), |e| e.driver.as_deref())
    }

    pub fn group(self, group: &str) -> Self {
        self.text("group", Some(group), |e| e.group.as_deref())
    }

    pub fn errno(self, errno: &str) -> Self {
        self.text("errno", Some(errno), |e| e.errno.as_deref())
    }

    pub fn path(self, path: &str) -> Self {
        self.text("path", Some(path), |e| e.path.as_deref())
    }

    pub fn result(self, result: Outcome) -> Self {
        self.value("result", result, |e| Some(e.result))
    }

    pub fn ret(self, ret: i32) -> Self {
        self.value("ret", ret, |e| Some(e.ret))
    }

    pub fn tgid(self, tgid: u32) -> Self {
        self.value("tgid", tgid, |e| Some(e.tgid))
    }

    pub fn rule(self, rule: Rule) -> Self {
        self.value("rule", rule, |e| e.rule)
    }

    pub fn action(self, action: Action) -> Self {
        self.value("action", action, |e| e.action)
    }

    pub fn scope(self, scope: Scope) -> Self {
        self.value("scope", scope, |e| e.scope)
    }

    /// Events whose `allocated_to` (the pod-resources allocation) is `want`; `None`: left out.
    pub fn allocated_to(self, want: Option<&Allocation>) -> Self {
        let want = want.cloned();
        let said = allocation(want.as_ref());
        self.filter(
            "allocated_to",
            said,
            move |e| e.allocated_to == want,
            |e| allocation(e.allocated_to.as_ref()),
        )
    }

    /// Vetoes whose hook failed closed.
    pub fn fail_closed(self) -> Self {
        self.value("fail_closed", true, |e| Some(e.fail_closed))
    }

    /// Vetoes whose `why` lists `why`.
    pub fn why(self, why: Why) -> Self {
        self.filter(
            "why",
            format!("[{why}, ..]"),
            move |e| e.why.contains(&why),
            |e| {
                let all: Vec<&str> = e.why.iter().map(|w| w.as_str()).collect();
                format!("[{}]", all.join(", "))
            },
        )
    }
}

impl<'c> Verdicts<'c> {
    pub(super) fn of_group(checker: &'c Checker, group: &str) -> Self {
        let group = group.to_string();
        let said = group.clone();
        Query::new(
            checker,
            "`verdict` line".to_string(),
            checker.every_verdict(),
        )
        .filter(
            "group",
            said,
            move |v| v.group == group,
            |v| v.group.to_string(),
        )
    }

    pub fn owner(self, owner: Owner) -> Self {
        self.filter(
            "owner",
            owner.to_string(),
            move |v| v.owner == owner,
            |v| v.owner.to_string(),
        )
    }

    /// The last matching verdict: the group's state when the agent stopped.
    pub fn last(&self) -> Option<Verdict<'c>> {
        self.list().last().copied()
    }
}

#[cfg(test)]
mod tests {
    use iommu_enforcer_schema::Line;

    use super::*;
    use crate::qemu::Channel;

    const FN0: &str = "0000:05:00.0";
    const FN1: &str = "0000:05:00.1";

    fn veto(device: &str, rule: Rule, action: Action) -> Line {
        let mut e = Event::new(Kind::Veto, Outcome::Error);
        e.device = Some(device.into());
        e.group = Some("7".into());
        e.rule = Some(rule);
        e.action = Some(action);
        e.errno = Some("EPERM".into());
        Line::Event(Box::new(e))
    }

    fn bind(device: &str, driver: &str, result: Outcome) -> Line {
        let mut e = Event::new(Kind::Bind, result);
        e.device = Some(device.into());
        e.driver = Some(driver.into());
        Line::Event(Box::new(e))
    }

    /// A checker over `lines` as the agent prints them (with its `time` field).
    fn checker(lines: &[Line]) -> Checker {
        let events = lines
            .iter()
            .map(|l| {
                let json = serde_json::to_string(l).unwrap();
                json.replacen('{', r#"{"time":"2026-12-02T09:30:05.123456Z","#, 1)
            })
            .collect();
        let ch = Channel {
            events,
            ..Channel::default()
        };
        Checker::new("6.12", None, &ch)
    }

    fn sample() -> Checker {
        checker(&[
            Line::Ready { groups: 3 },
            veto(FN1, Rule::ProtectedBind, Action::Vetoed),
            veto(FN1, Rule::ProtectedBind, Action::WouldVeto),
            veto(FN0, Rule::ProtectedUnbind, Action::Vetoed),
            bind(FN0, "vfio-pci", Outcome::Ok),
            Line::Verdict {
                group: "7".into(),
                owner: Owner::Kernel,
                viable: false,
                reasons: vec![],
            },
            Line::Verdict {
                group: "7".into(),
                owner: Owner::User,
                viable: true,
                reasons: vec![],
            },
        ])
    }

    #[test]
    fn filters_narrow_the_events_of_a_kind() {
        let c = sample();
        assert_eq!(c.lines.len(), 7);
        assert_eq!(c.events(Kind::Veto).count(), 3);
        assert_eq!(c.events(Kind::Veto).device(FN1).count(), 2);
        let q = c
            .events(Kind::Veto)
            .rule(Rule::ProtectedBind)
            .action(Action::Vetoed);
        assert_eq!(q.count(), 1);
        assert_eq!(q.list()[0].device.as_deref(), Some(FN1));
        assert_eq!(c.events(Kind::Bind).result(Outcome::Ok).count(), 1);
        assert_eq!(c.events(Kind::Bind).driver("e1000").count(), 0);
        assert_eq!(c.events(Kind::Claim).count(), 0);
        q.expect(1);
        c.events(Kind::Veto).expect_at_least(3);
        c.events(Kind::Claim).expect_none();
        assert_eq!(c.verdicts("7").count(), 2);
        assert_eq!(c.verdicts("7").last().map(|v| v.owner), Some(Owner::User));
        c.verdicts("7").owner(Owner::Kernel).expect(1);
        c.verdicts("8").expect_none();
        drop(q);
        assert!(c.into_problems().is_empty());
    }

    #[test]
    fn a_failed_expectation_names_kind_filters_count_and_the_closest_lines() {
        let c = sample();
        c.events(Kind::Veto)
            .rule(Rule::ProtectedBind)
            .action(Action::Vetoed)
            .device(FN0)
            .expect(1);
        c.events(Kind::Veto).rule(Rule::ProtectedBind).expect_none();
        c.events(Kind::Claim)
            .result(Outcome::Ok)
            .note("the open should have claimed it")
            .expect_at_least(1);
        c.verdicts("7").owner(Owner::Conflict).expect(1);
        let problems = c.into_problems();
        assert_eq!(
            problems,
            [
                "expected 1 `veto` event with rule=protected_bind, action=vetoed, \
                 device=0000:05:00.0, got 0 (seen: 3 `veto` events; closest: \
                 {rule=protected_bind, action=vetoed, device=0000:05:00.1}, \
                 {rule=protected_unbind, action=vetoed, device=0000:05:00.0}, \
                 {rule=protected_bind, action=would_veto, device=0000:05:00.1})",
                "expected no `veto` event with rule=protected_bind, got 2: \
                 {device=0000:05:00.1, driver=null, result=error, rule=protected_bind, \
                 action=vetoed, errno=EPERM}, {device=0000:05:00.1, driver=null, \
                 result=error, rule=protected_bind, action=would_veto, errno=EPERM}",
                "expected at least 1 `claim` event with result=ok, got 0 \
                 (no `claim` event at all); the open should have claimed it",
                "expected 1 `verdict` line with group=7, owner=conflict, got 0 (seen: 2 \
                 `verdict` lines; closest: {group=7, owner=kernel}, {group=7, owner=user})",
            ]
        );
    }

    #[test]
    fn a_line_that_does_not_parse_is_a_problem_naming_it() {
        let ch = Channel {
            events: vec![
                r#"{"type":"ready","groups":1}"#.into(),
                "not json".into(),
                r#"{"type":"event","kind":"no_such_kind"}"#.into(),
            ],
            ..Channel::default()
        };
        let c = Checker::new("6.12", None, &ch);
        assert_eq!(c.lines, [Line::Ready { groups: 1 }]);
        let problems = c.into_problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("agent stdout line 2 does not parse")
                && problems[0].ends_with(": not json"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with("agent stdout line 3 does not parse")
                && problems[1].contains("no_such_kind"),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn allocated_to_reads_the_pod_resources_allocation_back() {
        let a = Allocation {
            namespace: "vms".into(),
            pod: "virt-launcher-vm-a".into(),
            container: "compute".into(),
            resource: "devices.kubevirt.io/e1000".into(),
        };
        let Line::Event(mut e) = bind(FN0, "vfio-pci", Outcome::Ok) else {
            unreachable!()
        };
        e.allocated_to = Some(a.clone());
        let c = checker(&[Line::Event(e), bind(FN1, "vfio-pci", Outcome::Ok)]);
        let q = c.events(Kind::Bind).allocated_to(Some(&a));
        assert_eq!(q.list()[0].device.as_deref(), Some(FN0));
        q.expect(1);
        drop(q);
        c.events(Kind::Bind)
            .allocated_to(None)
            .device(FN1)
            .expect(1);
        c.events(Kind::Bind)
            .device(FN1)
            .allocated_to(Some(&a))
            .expect(1);
        let problems = c.into_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("allocated_to=none"), "{}", problems[0]);
    }
}
