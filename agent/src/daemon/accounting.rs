//! Counting lost records across agents. The programs count what did not fit in the ring
//! (`LOST`, pinned); the agents keep, in the pinned `AGENT_LOG`, how much of that they have
//! reported and how many of them started. So a new agent tells what overflowed while none
//! read the ring, and every record made is either printed or counted.
use iommu_enforcer_common::agent_log;

use crate::bpf::loader::Loaded;
use iommu_enforcer_schema::Line;

/// The loss counter as reported so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    reported: u64,
}

/// What the start of an agent found in the pinned bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// Agents that ran on these pins before this one.
    pub before: u64,
    /// Records that overflowed since the last agent's last `lost` line.
    pub missed: u64,
}

impl Start {
    /// From the pinned values: the loss total now, the total the last agent reported, the
    /// agents started before. A total below the reported one (a counter reset) misses none.
    pub fn new(lost_now: u64, reported: u64, before: u64) -> Self {
        Self {
            before,
            missed: lost_now.saturating_sub(reported),
        }
    }

    /// The line a restart prints; none for the first agent on fresh pins.
    pub fn line(&self) -> Option<Line> {
        (self.before > 0).then_some(Line::Restart {
            agents_before: self.before,
            missed: self.missed,
        })
    }
}

impl Ledger {
    /// Starts counting from `total`, all of it accounted for.
    pub fn at(total: u64) -> Self {
        Self { reported: total }
    }

    /// The loss total read now: how many records to report lost (0: none since last time).
    pub fn observe(&mut self, total: u64) -> u64 {
        let new = total.saturating_sub(self.reported);
        self.reported = self.reported.max(total);
        new
    }

    pub fn reported(&self) -> u64 {
        self.reported
    }
}

/// Reads the pinned bookkeeping and counts this agent in. Without the maps (an object that
/// lacks them) it is a first start with nothing missed, and says so in the log.
pub fn begin(loaded: &mut Loaded) -> (Start, Ledger) {
    let lost_now = loaded.lost_total().unwrap_or(0);
    let read = loaded
        .agent_log(agent_log::STARTS)
        .and_then(|s| Ok((s, loaded.agent_log(agent_log::LOST_REPORTED)?)));
    let (before, reported) = match read {
        Ok(v) => v,
        Err(e) => {
            log::warn!("{e}: records made while no agent ran cannot be told");
            (0, lost_now)
        }
    };
    let start = Start::new(lost_now, reported, before);
    let ledger = Ledger::at(lost_now);
    if let Err(e) = loaded
        .set_agent_log(agent_log::STARTS, before.saturating_add(1))
        .and_then(|()| loaded.set_agent_log(agent_log::LOST_REPORTED, lost_now))
    {
        log::warn!("{e}: the next agent will not know what this one reported");
    }
    (start, ledger)
}

/// Writes what this agent has reported, for the next one.
pub fn commit(loaded: &mut Loaded, ledger: &Ledger) {
    if let Err(e) = loaded.set_agent_log(agent_log::LOST_REPORTED, ledger.reported()) {
        log::warn!("{e}: the next agent may report these losses again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_reports_what_overflowed_while_no_agent_ran() {
        let start = Start::new(130, 100, 2);
        assert_eq!(start.missed, 30);
        assert_eq!(
            start.line(),
            Some(Line::Restart {
                agents_before: 2,
                missed: 30
            })
        );
        assert_eq!(Start::new(5, 0, 0).line(), None);
        // The counter restarted (new pins under an old AGENT_LOG cannot happen, but a lower
        // total must not wrap into billions).
        assert_eq!(Start::new(3, 10, 1).missed, 0);
    }

    #[test]
    fn the_ledger_reports_each_loss_once() {
        let mut l = Ledger::at(7);
        assert_eq!(l.observe(7), 0);
        assert_eq!(l.observe(12), 5);
        assert_eq!(l.observe(12), 0);
        assert_eq!(l.observe(3), 0);
        assert_eq!(l.reported(), 12);
    }
}
