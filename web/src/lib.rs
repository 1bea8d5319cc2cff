//! The browser client of the Tema 12 sockets system: a small page that
//! sends each message as one line through the bridge's WebSocket and shows
//! the uppercase answer with its round-trip time.
//!
//! - [`address`]: which bridge to talk to;
//! - [`backoff`]: the pauses between reconnection attempts;
//! - [`conversation`]: pairing answers with messages;
//! - [`page`]: the elements of `index.html`;
//! - `app` (in the browser only): the page's state and its WebSocket, wired
//!   to the elements.
//!
//! The WebSocket's event handlers are made once per connection and released
//! with it; only the page's own two handlers (send, connect/disconnect) live
//! as long as the page.

pub mod address;
pub mod backoff;
pub mod conversation;
pub mod page;

#[cfg(target_arch = "wasm32")]
mod app;

#[cfg(target_arch = "wasm32")]
pub use app::start;
