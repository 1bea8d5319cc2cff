//! How long to wait before reconnecting: short after a first failure, longer
//! while the bridge or the server stays away, never more than 15 s, and a
//! little different on every page so that a class of pages does not knock
//! on a server that is down (or just back) all at the same instant.
//!
//! The pauses grow with every attempt that fails and go back to the first
//! only after a connection that proved useful: one that brought an answer,
//! or stayed open [`USEFUL_AFTER_MS`]. A socket that merely opens is no
//! proof: when `servidor` is down the bridge accepts the WebSocket and then
//! closes it (code 1011) a few milliseconds later, and resetting on that
//! open made every page retry twice a second.
//!
//! The policy is pure: the caller passes the time and a random number in
//! `[0, 1)` (`Math.random()` in the browser), so it is tested on the host.

/// The first pause, before jitter, in milliseconds.
const FIRST_MS: u32 = 500;
/// The longest pause, jitter included, in milliseconds.
pub const MAX_MS: u32 = 15_000;
/// The jitter: each pause is its nominal value times `1 ± JITTER`.
///
/// Proportional (±25 %) rather than "full jitter" (anywhere between 0 and the
/// nominal pause): full jitter spreads a herd a little better, but it may
/// retry almost at once after many failures and makes the status line's
/// "nuevo intento en …" a lottery. ±25 % keeps each pause near what the
/// page announces, guarantees the pauses really grow, and still spreads
/// pages that failed together over half a pause; as every page draws anew
/// at each attempt, they drift further apart with every round.
const JITTER: f64 = 0.25;
/// The nominal pause stops doubling here, so that with jitter it stays
/// within [`MAX_MS`].
const CEILING_MS: u32 = (MAX_MS as f64 / (1.0 + JITTER)) as u32;
/// A connection open this long counted as useful, even without an answer.
pub const USEFUL_AFTER_MS: f64 = 10_000.0;

/// Pauses that double (with jitter) while attempts fail, up to a ceiling.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// Attempts that failed since the last useful connection.
    failures: u32,
    /// When the current connection opened, if it did.
    opened_at_ms: Option<f64>,
    /// Whether the current connection brought an answer.
    answered: bool,
}

impl Backoff {
    /// The connection opened at `now_ms`.
    pub fn opened(&mut self, now_ms: f64) {
        self.opened_at_ms = Some(now_ms);
    }

    /// The connection brought data from the server: it is useful.
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// The connection closed (or never opened) at `now_ms`; returns the
    /// pause before the next attempt, in milliseconds. `random` is in
    /// `[0, 1)` and picks where the pause falls within its jitter.
    pub fn closed(&mut self, now_ms: f64, random: f64) -> u32 {
        let lasted = self
            .opened_at_ms
            .take()
            .is_some_and(|opened| now_ms - opened >= USEFUL_AFTER_MS);
        if std::mem::take(&mut self.answered) || lasted {
            self.failures = 0;
        }
        let nominal = FIRST_MS
            .checked_shl(self.failures)
            .unwrap_or(CEILING_MS)
            .min(CEILING_MS);
        // Bounded so that the shift above never overflows.
        self.failures = (self.failures + 1).min(16);
        // Anything outside [0, 1], NaN included, is brought back inside it.
        let random = if random >= 0.0 { random.min(1.0) } else { 0.0 };
        let factor = 1.0 - JITTER + 2.0 * JITTER * random;
        ((f64::from(nominal) * factor) as u32).min(MAX_MS)
    }

    /// Back to the first pause: the user asked to connect.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest `f64` below 1, the top of `Math.random()`.
    const ALMOST_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

    /// Pauses after `n` attempts that each fail before opening.
    fn failing(backoff: &mut Backoff, n: usize, random: f64) -> Vec<u32> {
        (0..n).map(|_| backoff.closed(0.0, random)).collect()
    }

    #[test]
    fn the_pause_doubles_while_attempts_fail_up_to_the_ceiling() {
        let delays = failing(&mut Backoff::default(), 9, 0.5);
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 12_000, 12_000, 12_000, 12_000]
        );
    }

    #[test]
    fn jitter_stays_within_a_quarter_either_way_and_under_the_cap() {
        let low = failing(&mut Backoff::default(), 8, 0.0);
        assert_eq!(low, [375, 750, 1500, 3000, 6000, 9000, 9000, 9000]);
        // Just under ×1.25, which the multiplication rounds up to.
        let high = failing(&mut Backoff::default(), 8, ALMOST_ONE);
        assert_eq!(
            high,
            [625, 1250, 2500, 5000, 10_000, MAX_MS, MAX_MS, MAX_MS]
        );
        // Out of range (never from Math.random()) is still bounded.
        let wild = failing(&mut Backoff::default(), 40, 7.0);
        assert!(wild.iter().all(|&delay| delay <= MAX_MS), "{wild:?}");
        assert_eq!(failing(&mut Backoff::default(), 1, f64::NAN), [375]);
    }

    #[test]
    fn many_failures_never_overflow() {
        let mut backoff = Backoff::default();
        let delays = failing(&mut backoff, 1000, 0.5);
        assert_eq!(delays.last(), Some(&12_000));
    }

    #[test]
    fn opening_then_failing_at_once_does_not_reset() {
        // servidor down: the bridge accepts the WebSocket, then closes it.
        let mut backoff = Backoff::default();
        let mut delays = Vec::new();
        let mut now = 0.0;
        for _ in 0..6 {
            backoff.opened(now);
            now += 5.0;
            let delay = backoff.closed(now, 0.5);
            delays.push(delay);
            now += f64::from(delay);
        }
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 12_000]);
    }

    #[test]
    fn an_answer_resets() {
        let mut backoff = Backoff::default();
        failing(&mut backoff, 5, 0.5);
        backoff.opened(100.0);
        backoff.answered();
        assert_eq!(backoff.closed(200.0, 0.5), 500);
        // The answer counted for that connection only.
        backoff.opened(1000.0);
        assert_eq!(backoff.closed(1001.0, 0.5), 1000);
    }

    #[test]
    fn staying_open_ten_seconds_resets() {
        let mut backoff = Backoff::default();
        failing(&mut backoff, 5, 0.5);
        backoff.opened(0.0);
        assert_eq!(backoff.closed(USEFUL_AFTER_MS - 1.0, 0.5), 12_000);
        backoff.opened(50_000.0);
        assert_eq!(backoff.closed(50_000.0 + USEFUL_AFTER_MS, 0.5), 500);
    }

    #[test]
    fn an_open_from_an_earlier_attempt_is_not_counted_later() {
        // Opened long ago, then closed; the next attempt never opens.
        let mut backoff = Backoff::default();
        backoff.opened(0.0);
        assert_eq!(backoff.closed(1.0, 0.5), 500);
        assert_eq!(backoff.closed(USEFUL_AFTER_MS * 2.0, 0.5), 1000);
    }

    #[test]
    fn the_user_asking_to_connect_resets() {
        let mut backoff = Backoff::default();
        failing(&mut backoff, 5, 0.5);
        backoff.reset();
        assert_eq!(backoff.closed(0.0, 0.5), 500);
    }
}
