//! Waiting for the operator's request to stop: Ctrl-C or SIGTERM.
//!
//! The handlers are installed by [`StopSignals::install`], before a daemon
//! announces its address: a signal sent as soon as the address is read
//! (a supervisor, a test) must stop it cleanly, not kill it with the
//! default action.

use std::io;

/// The stop signals, caught from the moment they are installed.
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Catches Ctrl-C (SIGINT) and, on Unix, SIGTERM from now on. Fails
    /// only if the handlers cannot be installed.
    pub fn install() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves on the next stop signal, with its name for the log.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "Ctrl-C",
            }
        }
        #[cfg(not(unix))]
        {
            // Without a handler Ctrl-C ends the process anyway.
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
