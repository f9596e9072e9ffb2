//! Cooperative cancellation of long loops.
//!
//! The core knows nothing of signals. A long computation takes a [`Cancel`] and calls
//! [`Cancel::check`] every so often (once per DP row, say); the check is a clock read and, at
//! most every [`POLL_INTERVAL`], a call of the caller's poll function on the thread that made the
//! [`Cancel`]. The Python bindings poll `Python::check_signals` there, so Ctrl-C stops the work
//! within a fraction of a second. Once a poll says stop, every later check on any thread fails,
//! so parallel workers wind down too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How often, at most, [`Cancel::check`] calls the poll function.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The poll function: `true` when the computation must stop.
pub type Poll<'a> = &'a (dyn Fn() -> bool + Sync);

/// A cancellation point shared by the threads of one computation.
pub struct Cancel<'a> {
    poll: Option<Poll<'a>>,
    owner: ThreadId,
    start: Instant,
    /// Microseconds after `start` of the last poll.
    last_poll_us: AtomicU64,
    stopped: AtomicBool,
    during: &'static str,
}

impl<'a> Cancel<'a> {
    /// A cancellation point that never fires (plain Rust callers, tests).
    pub fn never() -> Self {
        Self::build(None, "")
    }

    /// Polls `poll` on the calling thread (the only one Python delivers signals to) while
    /// `during` (e.g. "solving the Sequoia DP", for the error) runs.
    pub fn new(poll: Poll<'a>, during: &'static str) -> Self {
        Self::build(Some(poll), during)
    }

    fn build(poll: Option<Poll<'a>>, during: &'static str) -> Self {
        Cancel {
            poll,
            owner: std::thread::current().id(),
            start: Instant::now(),
            last_poll_us: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            during,
        }
    }

    /// Whether a poll has asked to stop.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// [`Error::Interrupted`] once the poll has asked to stop; polls when the interval has
    /// passed and this is the owner thread.
    pub fn check(&self) -> Result<()> {
        if self.stopped() {
            return Err(self.error());
        }
        let Some(poll) = self.poll else {
            return Ok(());
        };
        if std::thread::current().id() != self.owner {
            return Ok(());
        }
        let now = self.start.elapsed().as_micros() as u64;
        let last = self.last_poll_us.load(Ordering::Relaxed);
        if now.saturating_sub(last) < POLL_INTERVAL.as_micros() as u64 {
            return Ok(());
        }
        self.last_poll_us.store(now, Ordering::Relaxed);
        if poll() {
            self.stopped.store(true, Ordering::Relaxed);
            return Err(self.error());
        }
        Ok(())
    }

    fn error(&self) -> Error {
        Error::Interrupted(self.during.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn never_does_not_fire_and_a_poll_stops_every_thread() {
        let c = Cancel::never();
        assert!((0..1000).all(|_| c.check().is_ok()));
        let calls = AtomicUsize::new(0);
        let poll = || calls.fetch_add(1, Ordering::Relaxed) >= 1;
        let c = Cancel::new(&poll, "testing");
        // The first poll happens once the interval has passed, and says go on.
        std::thread::sleep(POLL_INTERVAL);
        assert!(c.check().is_ok());
        // Within the interval the poll is not called again.
        assert!(c.check().is_ok());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        std::thread::sleep(POLL_INTERVAL);
        assert_eq!(c.check().unwrap_err(), Error::Interrupted("testing".into()));
        // Other threads never poll but see the stop.
        std::thread::scope(|s| {
            s.spawn(|| assert!(c.check().is_err()));
        });
    }
}
