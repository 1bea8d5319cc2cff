//! The WebSocket ⇄ TCP bridge: lets a browser page be a client of
//! `servidor`, and is what a remote demo exposes.
//!
//! [`serve`] runs a bridge on a listener with a [`Config`] until its
//! shutdown token is cancelled, then drains its sessions.
//!
//! - [`config`]: what the command line sets, and `host:port` parsing;
//! - [`listener`]: HTTP(S) connections, with handshake deadlines, and the
//!   drain at shutdown;
//! - [`routes`]: `/ws`, `/healthz` and the page's files;
//! - [`page`]: the headers every answer carries (CSP, caching, HSTS);
//! - [`origin`]: which pages may connect;
//! - [`forwarded`]: the client's address, and the scheme and host the
//!   browser used, from a trusted proxy's headers;
//! - [`session`]: one WebSocket ⇄ one TCP connection to the fixed target,
//!   and how it ends;
//! - [`framing`]: target bytes → WebSocket messages, whole characters only;
//! - [`read_ahead`]: the client's connection, read in big chunks only while
//!   a burst lasts;
//! - [`metrics`]: what is counted for `--metrics`;
//! - [`tls`]: https/wss from PEM files, and a renewed pair taken live;
//! - [`cert_store`]: the certificate served, swappable while serving;
//! - [`plain_http`]: `http://` to the TLS port, answered and logged with
//!   the fix;
//! - [`acme`]: https/wss with a certificate the bridge gets and renews
//!   itself from an ACME CA (`--acme-domain`).

pub mod access;
pub mod acme;
pub mod addresses;
pub mod cert_store;
pub mod config;
pub mod forwarded;
pub mod framing;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod origin;
pub mod page;
pub mod plain_http;
pub mod read_ahead;
pub mod routes;
pub mod session;
pub mod tls;

pub use config::Config;
pub use listener::serve;
