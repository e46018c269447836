//! When the write-time program (`file_permission`) is attached. No program runs on read(2)
//! or write(2) in the steady state: `file_open` decides what it can at open and counts, in the
//! kernel, the writable control-file descriptors whose writes only a write-time check can
//! judge (`WRITERS`: a bus-wide `bind`/`unbind`/`new_id`, a target not protected yet, a
//! trusted writer). The check is attached while any exists, while the policy's trusted
//! writers may hand back a reserved group, and for [`LINGER`] after anything that asked for it
//! (such a descriptor, an open refused until it was armed, a group going idle while another
//! is protected: a hand-back usually follows), so that a hand-back's few writes do not attach
//! and detach it for each. Pure: the daemon does the attaching.
use std::time::{Duration, Instant};

/// How long the check stays attached after the last thing that asked for it.
pub const LINGER: Duration = Duration::from_secs(10);

/// What the kernel and the policy say about the need for the check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Need {
    /// Descriptors counted in `WRITERS`.
    pub writers: i32,
    /// Trusted writers or containers exist and a reserved group may be handed back by them:
    /// their writes are let through only while the check would see a tracer take them over.
    pub trusted_handback: bool,
}

/// The hold that keeps the check attached after a request.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteCheck {
    hold_until: Option<Instant>,
}

impl WriteCheck {
    /// Something asked for the check at `now`: keep it for [`LINGER`].
    pub fn hold(&mut self, now: Instant) {
        self.hold_until = Some(now + LINGER);
    }

    /// Whether the check should be attached at `now`.
    pub fn wanted(&self, now: Instant, need: Need) -> bool {
        need.writers > 0 || need.trusted_handback || self.hold_until.is_some_and(|t| now < t)
    }

    /// When to look again: the hold's end. None (no timer) when nothing is held.
    pub fn next_look(&self) -> Option<Instant> {
        self.hold_until
    }

    /// Forgets a hold that has run out.
    pub fn expire(&mut self, now: Instant) {
        if self.hold_until.is_some_and(|t| t <= now) {
            self.hold_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_asked_nothing_attached_and_no_timer() {
        let w = WriteCheck::default();
        let now = Instant::now();
        assert!(!w.wanted(now, Need::default()));
        assert_eq!(w.next_look(), None);
    }

    #[test]
    fn a_counted_descriptor_or_trusted_handback_keeps_it() {
        let w = WriteCheck::default();
        let now = Instant::now();
        let need = Need {
            writers: 1,
            ..Need::default()
        };
        assert!(w.wanted(now, need));
        let trusted = Need {
            trusted_handback: true,
            ..Need::default()
        };
        assert!(w.wanted(now, trusted));
    }

    #[test]
    fn a_request_holds_it_for_the_linger_then_lets_go() {
        let mut w = WriteCheck::default();
        let now = Instant::now();
        w.hold(now);
        assert!(w.wanted(now + LINGER / 2, Need::default()));
        assert_eq!(w.next_look(), Some(now + LINGER));
        let later = now + LINGER;
        assert!(!w.wanted(later, Need::default()));
        w.expire(later);
        assert_eq!(w.next_look(), None);
        // A request during the hold extends it.
        w.hold(later);
        assert!(w.wanted(later + LINGER / 2, Need::default()));
    }
}
