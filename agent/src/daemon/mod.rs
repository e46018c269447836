//! The node agent.
use crate::cli::{CommonArgs, DaemonArgs};

pub fn run(_common: &CommonArgs, _args: &DaemonArgs) -> u8 {
    todo!("issue 3: daemon")
}
