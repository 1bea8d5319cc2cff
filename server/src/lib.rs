//! The tutorial's uppercase sockets system ("Tema 12. Sockets"), in Rust.
//!
//! - [`upcase`]: the pure stream transform every message goes through;
//! - [`utf8_stream`]: cutting a byte stream into characters and stray bytes;
//! - [`tcp`]: the TCP server behind the `servidor` binary;
//! - [`accept`]: accepting within a limit, retrying on errors;
//! - [`proxy_protocol`]: the client's real address behind a load balancer;
//! - [`client`]: the line-based conversation behind the `cliente` binary;
//! - [`websocket_link`]: the same conversation through the bridge;
//! - [`wss`]: which bridge certificates `wss://` accepts, and why not;
//! - [`console`]: how the binaries speak to the terminal (logs, previews);
//! - [`metrics`]: the Prometheus metrics both binaries serve on `--metrics`.

pub mod accept;
pub mod client;
pub mod console;
pub mod metrics;
pub mod proxy_protocol;
pub mod shutdown;
pub mod tcp;
pub mod upcase;
pub mod utf8_stream;
pub mod websocket_link;
pub mod wss;
