//! Per-client limits on upgrades, so that no single address takes the
//! demo from everyone: sessions open at once (`--max-sessions-per-client`)
//! and new upgrades per second (`--upgrades-per-client`, a GCRA limiter
//! from `governor` with a burst of [`BURST_SECONDS`]' worth).
//!
//! The client is the one the bridge already knows (PROXY header or
//! forwarding headers from trusted proxies, else the peer), so behind
//! HAProxy or nginx each browser counts on its own; a trusted proxy's own
//! address is never limited as one client. Both decisions are taken before
//! the 101, so a refused upgrade costs no session and no target connection.
//!
//! Memory is bounded: the session table holds only addresses with a
//! session open (at most `--max-sessions`); the rate table is swept every
//! [`SWEEP_EVERY`] of addresses whose burst has refilled, and holds at most
//! [`MAX_RATE_KEYS`] addresses. Past that (a flood of that many distinct
//! addresses within a few seconds) upgrades are not rate limited until a
//! sweep frees room; the session caps still apply.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use netkit::per_client::{client_key, Held, PerClient};
use netkit::proxy_protocol::TrustedProxies;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::metrics::{BridgeMetrics, Refusal};

/// The burst, in seconds' worth of `--upgrades-per-client`: a page that
/// reconnects a few times, or a class behind one NAT arriving together,
/// is not refused.
pub const BURST_SECONDS: u32 = 3;
/// Addresses the rate table holds at most.
pub const MAX_RATE_KEYS: usize = 65_536;
/// How often the rate table forgets addresses whose burst has refilled.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The per-client limits of one bridge, shared by its handlers.
#[derive(Clone)]
pub struct ClientLimits {
    sessions: PerClient,
    rate: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    trusted: TrustedProxies,
}

/// Why an upgrade was refused by a per-client limit; its answer via
/// [`IntoResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Past `--upgrades-per-client`: try again in this many seconds.
    Rate { retry_after_secs: u64 },
    /// The address holds `--max-sessions-per-client` sessions already.
    Sessions,
}

impl ClientLimits {
    /// `max_sessions` open sessions and `upgrades_per_second` new upgrades
    /// per address (0 turns either off); `trusted` proxies are never
    /// limited as one client.
    pub fn new(max_sessions: usize, upgrades_per_second: u32, trusted: TrustedProxies) -> Self {
        let rate = NonZeroU32::new(upgrades_per_second).map(|per_second| {
            let burst = per_second
                .saturating_mul(NonZeroU32::new(BURST_SECONDS).unwrap_or(NonZeroU32::MIN));
            Arc::new(RateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ))
        });
        Self {
            sessions: PerClient::new(max_sessions),
            rate,
            trusted,
        }
    }

    /// Admits an upgrade from `client`: a place among its sessions, held
    /// for the session's life, or why not (counted in `metrics`).
    pub fn admit(&self, client: IpAddr, metrics: &BridgeMetrics) -> Result<Held, Refused> {
        if self.trusted.trusts(client) {
            // A trusted proxy that named no client (a check, say) is not
            // one client among others.
            return Ok(Held::uncounted());
        }
        if let Some(rate) = &self.rate {
            let key = client_key(client);
            // Full: no room to remember new addresses, so none is rate
            // limited until the next sweep (within a second) makes room.
            // Sweeping here instead would walk the whole table at every
            // upgrade, just when a flood of addresses comes.
            if rate.len() < MAX_RATE_KEYS {
                if let Err(not_until) = rate.check_key(&key) {
                    let wait = not_until.wait_time_from(rate.clock().now());
                    let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    metrics.refused(Refusal::ClientRate);
                    debug!("upgrade rechazado desde {client}: demasiadas conexiones nuevas");
                    return Err(Refused::Rate {
                        retry_after_secs: retry_after_secs.max(1),
                    });
                }
            }
        }
        self.sessions.try_hold(client).ok_or_else(|| {
            metrics.refused(Refusal::ClientSessions);
            debug!("upgrade rechazado desde {client}: demasiadas sesiones desde esa dirección");
            Refused::Sessions
        })
    }

    /// Sessions `client` has open, as counted here.
    pub fn sessions_of(&self, client: IpAddr) -> usize {
        self.sessions.held_by(client)
    }

    /// Starts forgetting, every [`SWEEP_EVERY`], the addresses whose burst
    /// has refilled; the task ends when the handle is aborted.
    pub fn sweep(&self) -> Option<JoinHandle<()>> {
        let rate = Arc::clone(self.rate.as_ref()?);
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                rate.retain_recent();
                rate.shrink_to_fit();
            }
        }))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let plain = [(CONTENT_TYPE, "text/plain; charset=utf-8")];
        match self {
            Refused::Rate { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                plain,
                [(RETRY_AFTER, retry_after_secs.to_string())],
                format!(
                    "demasiadas conexiones nuevas desde esta dirección; espere {retry_after_secs} s\n"
                ),
            )
                .into_response(),
            Refused::Sessions => (
                StatusCode::TOO_MANY_REQUESTS,
                plain,
                "demasiadas sesiones desde esta dirección\n",
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn a_flood_of_addresses_fills_the_rate_table_to_its_bound_and_no_further() {
        let limits = ClientLimits::new(0, 1, TrustedProxies::default());
        let metrics = BridgeMetrics::default();
        let flood = MAX_RATE_KEYS as u32 + 1_000;
        for n in 0..flood {
            let client = IpAddr::from(Ipv4Addr::from(0x0a00_0000 + n));
            assert!(limits.admit(client, &metrics).is_ok(), "{client}");
        }
        let rate = limits.rate.as_ref().expect("a rate limit");
        assert_eq!(rate.len(), MAX_RATE_KEYS);
    }

    #[test]
    fn an_address_past_its_burst_waits_and_another_does_not() {
        let limits = ClientLimits::new(0, 1, TrustedProxies::default());
        let metrics = BridgeMetrics::default();
        let one = IpAddr::from(Ipv4Addr::new(127, 0, 0, 3));
        for _ in 0..BURST_SECONDS {
            assert!(limits.admit(one, &metrics).is_ok());
        }
        assert_eq!(
            limits.admit(one, &metrics).err(),
            Some(Refused::Rate {
                retry_after_secs: 1
            })
        );
        let other = IpAddr::from(Ipv4Addr::new(127, 0, 0, 4));
        assert!(limits.admit(other, &metrics).is_ok());
    }
}
