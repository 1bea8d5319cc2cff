//! What one bridge serves and how, as the command line gives it: the
//! [`Config`] that [`crate::serve`] runs on. (`host:port` is parsed by
//! `console::args::HostPort`.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use netkit::proxy_protocol::TrustedProxies;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::metrics::BridgeMetrics;
use crate::origin::OriginPolicy;
use crate::session::SessionConfig;

/// Everything a running bridge needs besides its listener.
#[derive(Clone)]
pub struct Config {
    /// How each session behaves.
    pub session: SessionConfig,
    /// Which pages may connect.
    pub origins: OriginPolicy,
    /// Sessions open at once; past that, new upgrades get HTTP 503.
    pub max_sessions: usize,
    /// Buffer sizes and message limits of each WebSocket.
    pub websocket: WebSocketConfig,
    /// The built page to serve, if any.
    pub web: Option<PathBuf>,
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
}

impl Config {
    /// Default address and port to listen on.
    pub const LISTEN: &'static str = "127.0.0.1:8080";
    /// Default sessions open at once.
    pub const MAX_SESSIONS: usize = 5000;
    /// Default seconds for the TLS and HTTP handshakes.
    pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;
    /// Default seconds to drain sessions when stopping.
    pub const DRAIN_SECS: u64 = 5;
    /// The WebSocket read buffer a session starts with, and the most
    /// tungstenite reads at once: big enough for a browser's line, small
    /// enough for thousands of idle sessions. A bigger message is read
    /// ahead in big chunks by [`crate::read_ahead`]. tungstenite grows the
    /// buffer to hold a bigger frame and keeps it grown for the session's
    /// life (at most `--max-message`). See BENCHMARKS.md.
    pub const READ_BUFFER: usize = 256;

    /// A bridge to `target` with every other setting at its default.
    pub fn for_target(target: impl Into<String>) -> Self {
        Self {
            session: SessionConfig::for_target(target),
            origins: OriginPolicy::default(),
            max_sessions: Self::MAX_SESSIONS,
            websocket: websocket_config(SessionConfig::MAX_MESSAGE),
            web: None,
            tls: None,
            handshake_timeout: Duration::from_secs(Self::HANDSHAKE_TIMEOUT_SECS),
            drain: Duration::from_secs(Self::DRAIN_SECS),
            trusted_proxies: TrustedProxies::default(),
            metrics: Arc::default(),
        }
    }
}

/// The WebSocket settings for clients' messages of at most `max_message`
/// bytes: a small read buffer, and writes not buffered beyond one message.
pub fn websocket_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(Config::READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}
