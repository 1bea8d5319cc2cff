//! What `servidor` and the bridge share as daemons, and nothing else:
//!
//! - [`listen`]: opening the listening socket;
//! - [`accept`]: accepting within a limit, retrying on errors;
//! - [`proxy_protocol`]: the client's real address behind a load balancer;
//! - [`metrics`]: the Prometheus endpoint both serve on `--metrics`;
//! - [`per_client`]: what each client address holds at once;
//! - [`shutdown`]: waiting for Ctrl-C or SIGTERM.
//!
//! A change here changes both daemons; the client (`cliente`) never links it.

pub mod accept;
pub mod listen;
pub mod metrics;
pub mod per_client;
pub mod proxy_protocol;
pub mod shutdown;
