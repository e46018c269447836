//! The states a line reports: who owns a group, how a program is attached, whether an
//! enforcement mechanism acts.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::text_enum::{serde_as_text, word_and_why};

/// Who owns a group's DMA (`verdict` lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// A member is bound to a driver that uses the kernel DMA API (not `driver_managed_dma`).
    Kernel,
    /// A process holds the group's VFIO group file or a member's cdev, or a claim was recorded.
    User,
    /// Neither.
    None,
    /// Both: the state the kernel refuses since 5.19 and BUG()s on before it.
    Conflict,
}

impl Owner {
    pub const ALL: [Owner; 4] = [Owner::Kernel, Owner::User, Owner::None, Owner::Conflict];

    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Kernel => "kernel",
            Owner::User => "user",
            Owner::None => "none",
            Owner::Conflict => "conflict",
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one eBPF program is attached (`capabilities.programs`), spelled on the wire as
/// `"attached"`, `"attached (not pinned)"`, `"absent"`, `"absent: <why>"`, `"failed: <why>"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramState {
    /// Attached, and its link pinned: it stays attached if the agent dies.
    Attached,
    /// Attached, but its link cannot be pinned on this kernel (kprobes before 5.15 are perf
    /// events, not BPF links): it lives as long as the agent.
    AttachedUnpinned,
    /// The target is not in this kernel (yet, for module functions), or (with a reason) it is
    /// but can never carry the program, decided once.
    Absent(Option<String>),
    Failed(String),
    /// Loaded, attached only while needed (the write-time check): `"standby"`.
    Standby,
    /// Not attached because another program does its work on this kernel: `"not needed: <why>"`.
    NotNeeded(String),
}

impl ProgramState {
    pub fn is_attached(&self) -> bool {
        matches!(self, Self::Attached | Self::AttachedUnpinned)
    }
}

impl fmt::Display for ProgramState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attached => f.write_str("attached"),
            Self::AttachedUnpinned => f.write_str("attached (not pinned)"),
            Self::Absent(None) => f.write_str("absent"),
            Self::Absent(Some(why)) => write!(f, "absent: {why}"),
            Self::Failed(why) => write!(f, "failed: {why}"),
            Self::Standby => f.write_str("standby"),
            Self::NotNeeded(why) => write!(f, "not needed: {why}"),
        }
    }
}

impl FromStr for ProgramState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match word_and_why(text) {
            ("attached", None) => Ok(Self::Attached),
            ("attached (not pinned)", None) => Ok(Self::AttachedUnpinned),
            ("absent", why) => Ok(Self::Absent(why.map(str::to_owned))),
            ("failed", Some(why)) => Ok(Self::Failed(why.to_owned())),
            ("standby", None) => Ok(Self::Standby),
            ("not needed", Some(why)) => Ok(Self::NotNeeded(why.to_owned())),
            _ => Err(format!("not a program state: {text:?}")),
        }
    }
}

serde_as_text!(ProgramState);

/// An enforcement mechanism (`capabilities.enforcement` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// The BPF LSM vetoes.
    Lsm,
    /// `driver_override` pins of reserved groups.
    Reservation,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Lsm, Mechanism::Reservation];

    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Lsm => "lsm",
            Mechanism::Reservation => "reservation",
        }
    }
}

/// Whether a mechanism acts: `"active"`, `"dry_run"` or `"unavailable: <why>"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MechanismState {
    Active,
    DryRun,
    Unavailable(String),
}

impl fmt::Display for MechanismState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Active => f.write_str("active"),
            Self::DryRun => f.write_str("dry_run"),
            Self::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

impl FromStr for MechanismState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match word_and_why(text) {
            ("active", None) => Ok(Self::Active),
            ("dry_run", None) => Ok(Self::DryRun),
            ("unavailable", Some(why)) => Ok(Self::Unavailable(why.to_owned())),
            _ => Err(format!("not an enforcement state: {text:?}")),
        }
    }
}

serde_as_text!(MechanismState);

/// An LSM hook's state (`lsm_hook` lines): attached, or loaded and waiting for something to
/// veto.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookState {
    Attached,
    Standby,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_states_read_back_as_printed() {
        for state in [
            ProgramState::Attached,
            ProgramState::AttachedUnpinned,
            ProgramState::Absent(None),
            ProgramState::Absent(Some("notrace: not in available_filter_functions".into())),
            ProgramState::Failed("EINVAL: the verifier said: no".into()),
            ProgramState::Standby,
            ProgramState::NotNeeded("the release kprobe uncounts".into()),
        ] {
            let json = serde_json::to_string(&state).expect("serializes");
            assert_eq!(json, serde_json::to_string(&state.to_string()).unwrap());
            let back: ProgramState = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, state);
        }
        assert!("attached: why".parse::<ProgramState>().is_err());
        assert!("failed".parse::<ProgramState>().is_err());
    }

    #[test]
    fn mechanism_states_read_back_as_printed() {
        for state in [
            MechanismState::Active,
            MechanismState::DryRun,
            MechanismState::Unavailable("bpf is not among the active LSMs".into()),
        ] {
            let back: MechanismState = state.to_string().parse().expect("parses");
            assert_eq!(back, state);
        }
        assert!("on".parse::<MechanismState>().is_err());
    }
}
