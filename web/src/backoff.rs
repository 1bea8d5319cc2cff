//! How long to wait before reconnecting: short after a first failure, longer
//! while the bridge or the server stays away, never more than a few seconds.

/// The first pause, in milliseconds.
const FIRST_MS: u32 = 500;
/// The longest pause, in milliseconds.
const MAX_MS: u32 = 8_000;

/// Pauses that double after each failed attempt, up to a ceiling.
#[derive(Debug, Clone)]
pub struct Backoff {
    next_ms: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next_ms: FIRST_MS }
    }
}

impl Backoff {
    /// The pause before the next attempt; the one after will be longer.
    pub fn next_delay_ms(&mut self) -> u32 {
        let delay = self.next_ms;
        self.next_ms = (self.next_ms * 2).min(MAX_MS);
        delay
    }

    /// Back to the first pause, after a connection that worked.
    pub fn reset(&mut self) {
        self.next_ms = FIRST_MS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u32> = (0..7).map(|_| backoff.next_delay_ms()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        backoff.reset();
        assert_eq!(backoff.next_delay_ms(), 500);
    }
}
