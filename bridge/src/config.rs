//! What one bridge serves and how, as the command line gives it: the
//! [`Config`] that [`crate::serve`] runs on. (`host:port` is parsed by
//! `console::args::HostPort`.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use netkit::proxy_protocol::TrustedProxies;
use tokio_rustls::TlsAcceptor;

use crate::access::AccessCode;
use crate::metrics::BridgeMetrics;
use crate::origin::OriginPolicy;
use crate::session::SessionConfig;

/// Everything a running bridge needs besides its listener.
#[derive(Clone)]
pub struct Config {
    /// How each session behaves; its WebSocket settings (the largest
    /// message included) are derived from it.
    pub session: SessionConfig,
    /// Which pages may connect.
    pub origins: OriginPolicy,
    /// Sessions open at once; past that, new upgrades get HTTP 503.
    pub max_sessions: usize,
    /// Sessions one client address may have open at once (0: no limit).
    pub max_sessions_per_client: usize,
    /// New upgrades per second one client address may make, with a burst
    /// of [`crate::limits::BURST_SECONDS`]' worth (0: no limit).
    pub upgrades_per_client: u32,
    /// HTTP connections one peer address may hold at once (page requests,
    /// handshakes in progress, idle keep-alives), counted before any byte
    /// is read; trusted proxies are exempt (0: no limit).
    pub max_connections_per_client: usize,
    /// The built page to serve, if any.
    pub web: Option<PathBuf>,
    /// The one site (an origin) that may show the page in a frame; none
    /// by default.
    pub frame_from: Option<String>,
    /// TLS for https and wss, if given.
    pub tls: Option<TlsAcceptor>,
    /// Bound on the TLS handshake, each request's headers and an idle
    /// keep-alive connection.
    pub handshake_timeout: Duration,
    /// After the stop is asked for, how long sessions have to close before
    /// [`crate::serve`] returns anyway.
    pub drain: Duration,
    /// Load balancers whose PROXY header (taken when present) and
    /// forwarding headers name the real client.
    pub trusted_proxies: TrustedProxies,
    /// What is counted for `--metrics` (no-ops by default).
    pub metrics: Arc<BridgeMetrics>,
    /// The join code sessions need (`--access-code`); none by default.
    pub access_code: Option<AccessCode>,
}

impl Config {
    /// Default address and port to listen on.
    pub const LISTEN: &'static str = "127.0.0.1:8080";
    /// Default sessions open at once.
    pub const MAX_SESSIONS: usize = 5000;
    /// Default sessions per client address: a class behind one NAT.
    pub const MAX_SESSIONS_PER_CLIENT: usize = 100;
    /// Default new upgrades per second per client address.
    pub const UPGRADES_PER_CLIENT: u32 = 10;
    /// Default HTTP connections per peer address: a class of about forty
    /// browsers behind one NAT, six connections each while the page loads.
    pub const MAX_CONNECTIONS_PER_CLIENT: usize = 256;
    /// Default seconds for the TLS and HTTP handshakes.
    pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;
    /// Default seconds to drain sessions when stopping.
    pub const DRAIN_SECS: u64 = 5;

    /// A bridge to `target` with every other setting at its default.
    pub fn for_target(target: impl Into<String>) -> Self {
        Self {
            session: SessionConfig::for_target(target),
            origins: OriginPolicy::default(),
            max_sessions: Self::MAX_SESSIONS,
            max_sessions_per_client: Self::MAX_SESSIONS_PER_CLIENT,
            upgrades_per_client: Self::UPGRADES_PER_CLIENT,
            max_connections_per_client: Self::MAX_CONNECTIONS_PER_CLIENT,
            web: None,
            frame_from: None,
            tls: None,
            handshake_timeout: Duration::from_secs(Self::HANDSHAKE_TIMEOUT_SECS),
            drain: Duration::from_secs(Self::DRAIN_SECS),
            trusted_proxies: TrustedProxies::default(),
            metrics: Arc::default(),
            access_code: None,
        }
    }
}
