//! Waiting for the operator's request to stop: Ctrl-C or SIGTERM.

use std::io;

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM. Returns the signal's
/// name for the log. Fails only if the handlers cannot be installed.
pub async fn signal() -> io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = terminate.recv() => Ok("SIGTERM"),
            _ = interrupt.recv() => Ok("Ctrl-C"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}
