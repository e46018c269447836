//! The agent's output, typed (docs/events.md is its wire format). The agent builds these values
//! and hands them to its sinks: stdout prints them as JSON (serde), the metrics and NFD's node
//! labels read them as they are. The test node's checks (xtask) read the printed JSON back into
//! the same types, so a renamed field or kind breaks the build or the parse, never a metric
//! silently. No aya here: xtask builds it on any host.
mod event;
mod line;
mod states;
mod text_enum;

pub use event::{Action, Allocation, Body, Event, Kind, Outcome, Rule, Scope, Why};
pub use line::Line;
pub use states::{HookState, Mechanism, MechanismState, Owner, ProgramState};
