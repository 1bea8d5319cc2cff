//! When to try again after a failed order: soon after the first failure
//! (a typo fixed, a port opened), then less and less often, and never more
//! than [`MAX_FAILURES_PER_WINDOW`] failures in any hour, under Let's
//! Encrypt's limit of 5 failed authorizations per name per hour (reaching
//! it locks the name out for an hour). The failures are kept in the cache
//! ([`Pacing::to_text`]), so restarting the bridge does not retry sooner.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The waits after the 1st, 2nd… consecutive failure; the last one
/// repeats.
pub const DELAYS: [Duration; 5] = [
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
];

/// The window of the CA's limit.
pub const WINDOW: Duration = Duration::from_secs(60 * 60);

/// Failures allowed in any [`WINDOW`]: one less than Let's Encrypt's 5, so
/// that a failure the bridge does not see (a restart) still fits.
pub const MAX_FAILURES_PER_WINDOW: usize = 4;

/// The failures of this run, and when the next try may be.
#[derive(Debug, Default)]
pub struct Pacing {
    /// The latest failures, oldest first, at most [`MAX_FAILURES_PER_WINDOW`].
    failures: VecDeque<SystemTime>,
    /// Failures since the last success.
    consecutive: usize,
}

impl Pacing {
    /// Notes a failure at `at`; returns when the next try may be.
    pub fn failed(&mut self, at: SystemTime) -> SystemTime {
        if self.failures.len() == MAX_FAILURES_PER_WINDOW {
            self.failures.pop_front();
        }
        self.failures.push_back(at);
        self.consecutive += 1;
        self.next_try().unwrap_or(at)
    }

    /// Notes a success: the next failure waits the shortest delay again
    /// (the window still counts the earlier failures).
    pub fn succeeded(&mut self) {
        self.consecutive = 0;
    }

    /// What the cache keeps: the consecutive failures, then the latest
    /// failures' Unix times, on one line.
    pub fn to_text(&self) -> String {
        let mut text = self.consecutive.to_string();
        for failure in &self.failures {
            let seconds = failure.duration_since(UNIX_EPOCH).unwrap_or_default();
            text.push_str(&format!(" {}", seconds.as_secs()));
        }
        text
    }

    /// Reads back [`Self::to_text`]; `None` if it is not that.
    pub fn from_text(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let consecutive = words.next()?.parse().ok()?;
        let mut failures = VecDeque::new();
        for word in words {
            failures.push_back(UNIX_EPOCH + Duration::from_secs(word.parse().ok()?));
        }
        if failures.len() > MAX_FAILURES_PER_WINDOW {
            return None;
        }
        Some(Self {
            failures,
            consecutive,
        })
    }

    /// When the next try may be; `None` if now.
    pub fn next_try(&self) -> Option<SystemTime> {
        let last = *self.failures.back()?;
        let backoff = (self.consecutive > 0)
            .then(|| last + DELAYS[(self.consecutive - 1).min(DELAYS.len() - 1)]);
        // With the budget spent, the oldest failure must leave the window
        // first, success or not.
        let window =
            (self.failures.len() == MAX_FAILURES_PER_WINDOW).then(|| self.failures[0] + WINDOW);
        backoff.max(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_at_every_chance_stays_under_the_limit_in_every_hour() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut pacing = Pacing::default();
        let mut failures = Vec::new();
        let mut now = start;
        for _ in 0..200 {
            failures.push(now);
            now = pacing.failed(now);
        }
        for (i, &first) in failures.iter().enumerate() {
            let within = failures[i..]
                .iter()
                .take_while(|&&at| at < first + WINDOW)
                .count();
            assert!(
                within <= MAX_FAILURES_PER_WINDOW,
                "{within} failures in an hour"
            );
        }
        assert_eq!(failures[1].duration_since(failures[0]).unwrap(), DELAYS[0]);
    }

    #[test]
    fn the_failures_survive_a_restart() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut pacing = Pacing::default();
        let next = pacing.failed(start);
        let retry = pacing.failed(next);
        let text = pacing.to_text();
        assert_eq!(text, "2 1000000 1000060");
        let restored = Pacing::from_text(&text).unwrap();
        assert_eq!(restored.next_try(), Some(retry));
        assert!(Pacing::from_text("x").is_none());
        assert!(Pacing::from_text("1 1 2 3 4 5").is_none());
    }

    #[test]
    fn a_success_shortens_the_wait_but_not_the_window() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut pacing = Pacing::default();
        assert_eq!(pacing.next_try(), None);
        let mut now = start;
        for _ in 0..3 {
            now = pacing.failed(now);
        }
        pacing.succeeded();
        assert_eq!(pacing.next_try(), None);
        // A fourth failure right after: the first of the four must leave
        // the hour before the fifth try.
        let retry = pacing.failed(now);
        assert_eq!(retry, start + WINDOW);
    }
}
