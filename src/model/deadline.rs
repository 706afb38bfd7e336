//! The deadline of the query running on this task: the API scopes one around every read
//! ([`Deadline::scope`]), and the loops of matching and merging check it every few hundred
//! series or rows, so a query past `api.query_timeout` (or whose client is gone) stops
//! spending CPU instead of running to its end unseen.
//!
//! It lives in `model` because stages below the query check it too (a selector of thousands
//! of regexes stops compiling at the deadline). Loops only stop early ([`Deadline::expired`]);
//! the function that ran them then returns [`DeadlinePassed`] via [`Deadline::check`] (the
//! query's `DeadlineExceeded`). Expiry is sticky (time only moves
//! on, and a cancelled query stays cancelled), so a loop that stopped early always ends in
//! that error, never in a partial answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The current query's deadline passed (or the query was cancelled).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the query ran longer than its timeout ({timeout:?})")]
pub struct DeadlinePassed {
    pub timeout: Duration,
}

/// How many rows (or series) a loop handles between two deadline checks.
pub const CHECK_EVERY: usize = 1024;

tokio::task_local! {
    static CURRENT: Deadline;
}

/// When the current query must stop; cloned handles share the cancellation.
#[derive(Debug, Clone)]
pub struct Deadline {
    at: Instant,
    timeout: Duration,
    cancelled: Arc<AtomicBool>,
}

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
            timeout,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Stops the query at its next check (its client is gone, or it was answered already).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn is_past(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || Instant::now() >= self.at
    }

    /// Runs `future` with this deadline as the current one.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// The current query's deadline, to carry onto the threads that merge its partitions.
    pub fn current() -> Option<Deadline> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `work` on this thread with this deadline as the current one.
    pub fn sync_scope<R>(self, work: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, work)
    }

    /// Whether the current query's deadline passed (never, outside a [`Deadline::scope`]).
    pub fn expired() -> bool {
        CURRENT.try_with(Deadline::is_past).unwrap_or(false)
    }

    /// [`DeadlinePassed`] once the current deadline passed.
    pub fn check() -> Result<(), DeadlinePassed> {
        match CURRENT.try_with(|deadline| deadline.is_past().then_some(deadline.timeout)) {
            Ok(Some(timeout)) => Err(DeadlinePassed { timeout }),
            _ => Ok(()),
        }
    }
}

/// Asks [`Deadline::expired`] once per [`CHECK_EVERY`] units of work, a unit being about a
/// row or one matcher against one series.
#[derive(Debug, Default)]
pub struct Ticker {
    done: usize,
    next_check: usize,
}

impl Ticker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `cost` units; whether the deadline passed, when it is time to look.
    pub fn expired(&mut self, cost: usize) -> bool {
        self.done = self.done.saturating_add(cost);
        if self.done < self.next_check {
            return false;
        }
        self.next_check = self.done.saturating_add(CHECK_EVERY);
        Deadline::expired()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scoped_deadline_expires_and_stays_expired() {
        assert!(!Deadline::expired());
        assert!(Deadline::check().is_ok());
        let deadline = Deadline::after(Duration::from_millis(20));
        deadline
            .clone()
            .scope(async {
                assert!(!Deadline::expired());
                tokio::time::sleep(Duration::from_millis(30)).await;
                assert!(Deadline::expired());
                assert!(Deadline::check().is_err());
            })
            .await;
        let cancelled = Deadline::after(Duration::from_secs(60));
        cancelled.cancel();
        cancelled.scope(async { assert!(Ticker::new().expired(1)) }).await;
    }
}
