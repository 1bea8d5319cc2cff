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

use metrics::{Counter, Gauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use console::describe_io;

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

/// What an [`Acceptor`] counts: no-ops unless given handles of a registry
/// (see [`crate::metrics`]).
#[derive(Debug, Clone)]
pub struct AcceptMetrics {
    /// Failed `accept` calls.
    pub errors: Counter,
    /// 1 while every place is taken (new clients wait in the listen
    /// backlog), else 0.
    pub limit_waiting: Gauge,
    /// Times every place was found taken.
    pub limit_reached: Counter,
}

impl Default for AcceptMetrics {
    fn default() -> Self {
        Self {
            errors: Counter::noop(),
            limit_waiting: Gauge::noop(),
            limit_reached: Counter::noop(),
        }
    }
}

/// Accepts from a listener, at most `limit` connections held at once.
pub struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    pause: Duration,
    metrics: AcceptMetrics,
}

impl Acceptor {
    /// Accepts from `listener`, `limit` connections at most.
    pub fn new(listener: TcpListener, limit: usize) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(limit)),
            pause: PAUSE_MIN,
            metrics: AcceptMetrics::default(),
        }
    }

    /// Counts accept errors and waits at the limit on `metrics`.
    pub fn with_metrics(mut self, metrics: AcceptMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The address listened on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, once a place is free; `None` once `shutdown`
    /// is cancelled.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<Accepted> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            // Only at the limit: the gauge is not touched on every accept.
            Err(_) => {
                self.metrics.limit_reached.increment(1);
                self.metrics.limit_waiting.set(1.0);
                let permit = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => None,
                    permit = Arc::clone(&self.permits).acquire_owned() => permit.ok(),
                };
                self.metrics.limit_waiting.set(0.0);
                permit?
            }
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
                    self.metrics.errors.increment(1);
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
