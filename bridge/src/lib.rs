//! The WebSocket ⇄ TCP bridge: lets a browser page be a client of
//! `servidor`, and is what a remote demo exposes.
//!
//! - [`listener`]: HTTP(S) connections, with handshake deadlines;
//! - [`routes`]: `/ws`, `/healthz` and the page's files;
//! - [`origin`]: which pages may connect;
//! - [`session`]: one WebSocket ⇄ one TCP connection to the fixed target;
//! - [`framing`]: target bytes → WebSocket messages, whole characters only;
//! - [`tls`]: https/wss from PEM files.

pub mod framing;
pub mod listener;
pub mod origin;
pub mod routes;
pub mod session;
pub mod tls;
