//! The browser page end to end, in a real headless Chromium driven through
//! its DevTools protocol (one Chromium, a fresh browser context per test):
//! `servidor::serve` in the test process and `bridge --web dist` in front
//! of it, each on a port the kernel chose, the page built with trunk.
//! Needs `scripts/setup --browser`.
//!
//! - `backoff`: with servidor down, the page's pauses grow, and it comes
//!   back within the pause it announced;
//! - `page`: the conversation, reconnecting, the toggle, a phone's width,
//!   the page's size and its content security policy;
//! - `refusals`: the join code, and the sentence each refusal shows.
//!
//! One binary, so that its tests share the two cores: libtest starts them
//! in the order of their names, and `backoff`'s, which spends most of its
//! seconds waiting out the page's pauses, comes first, with the others
//! beside it. (Lighthouse runs alone, in `page_served.rs`: beside these
//! tests its performance score moves with the load.)
//!
//! The page's text is waited on through a `MutationObserver` in the page,
//! not polled.

#[path = "../chromium/mod.rs"]
mod chromium;

mod backoff;
mod page;
mod refusals;
