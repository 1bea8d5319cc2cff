//! Accepting connections within a limit, without ever giving up.
//!
//! A permit is taken before `accept`, so that past the limit new clients
//! wait in the kernel's listen backlog rather than in our memory. A failed
//! `accept` (out of descriptors, say) is logged and retried after a pause
//! that starts short, so a passing shortage costs little, and grows, so a
//! lasting one neither spins nor floods the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::console::describe_io;

const PAUSE_MIN: Duration = Duration::from_millis(10);
const PAUSE_MAX: Duration = Duration::from_secs(1);

/// Raises the soft limit on open descriptors to the hard one: ten thousand
/// clients need ten thousand descriptors, and the soft limit is often 1,024.
pub fn raise_descriptor_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!("límite de descriptores: {limit}"),
        Err(error) => warn!("no se pudo subir el límite de descriptores: {error}"),
    }
}

/// A client connection, with its place among the limited ones.
pub struct Accepted {
    /// The connection.
    pub stream: TcpStream,
    /// Who connected.
    pub peer: SocketAddr,
    /// Held for as long as the connection is served.
    pub permit: OwnedSemaphorePermit,
}

/// Accepts from a listener, at most `limit` connections held at once.
pub struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    pause: Duration,
}

impl Acceptor {
    /// Accepts from `listener`, `limit` connections at most.
    pub fn new(listener: TcpListener, limit: usize) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(limit)),
            pause: PAUSE_MIN,
        }
    }

    /// The address listened on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, once a place is free; `None` once `shutdown`
    /// is cancelled.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<Accepted> {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            permit = Arc::clone(&self.permits).acquire_owned() => permit.ok()?,
        };
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.pause = PAUSE_MIN;
                    return Some(Accepted {
                        stream,
                        peer,
                        permit,
                    });
                }
                Err(error) => {
                    warn!(
                        "no se pudo aceptar una conexión: {}; se reintenta en {} ms",
                        describe_io(&error),
                        self.pause.as_millis()
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = sleep(self.pause) => {}
                    }
                    self.pause = (self.pause * 2).min(PAUSE_MAX);
                }
            }
        }
    }
}
