//! Taking a renewed `--tls-cert/--tls-key` pair without a restart.
//!
//! The files' content is read again every few seconds and on request (the
//! bridge asks on SIGHUP). Content, not change notifications: certbot
//! renews by swapping symlinks, which inotify on the old files misses, and
//! other tools rewrite in place. A changed pair is checked before use
//! ([`super::pair_from_pem`]); a good one goes into the [`CertStore`] (new
//! handshakes get it, open connections keep theirs), a bad one is logged
//! and counted and the old pair stays.
//!
//! A renewal writes two files, so a poll can fall between them and see a
//! new certificate with the old key. A bad pair found by a poll is
//! therefore reported only once a second poll finds it unchanged; asked
//! for (SIGHUP), the answer is immediate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{acceptor_for, pair_from_pem, read_file, TlsError};
use crate::cert_store::CertStore;
use crate::metrics::BridgeMetrics;

/// What the watcher has done so far (for tests, and whoever wants to
/// wait for a reload).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloads {
    /// Times the files were read (polls and requests).
    pub checks: u64,
    /// Changed pairs taken.
    pub loaded: u64,
    /// Changed pairs refused (reported), the old pair kept.
    pub rejected: u64,
}

/// Asks the watcher to read the files now (what SIGHUP does).
#[derive(Debug, Clone)]
pub struct ReloadTrigger(Arc<Notify>);

impl ReloadTrigger {
    /// Reads the files as soon as the watcher can, and reports the outcome
    /// even if it is "unchanged" or a bad pair already reported. Requests
    /// made while one is under way are served by one more read.
    pub fn reload(&self) {
        self.0.notify_one();
    }
}

/// The two files' bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// What a read found, to tell whether a bad pair is still the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Snapshot {
    Files(Pem),
    Unreadable(String),
}

/// A certificate pair from files, served through a [`CertStore`] and
/// watched for renewal by [`WatchedPair::watch`].
#[derive(Debug)]
pub struct WatchedPair {
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
    store: Arc<CertStore>,
    /// What the store serves, as read.
    loaded: Pem,
    /// A bad pair a poll found once: reported if the next poll finds it too.
    unsettled: Option<Snapshot>,
    /// The bad pair last reported: polls do not report it again.
    reported: Option<Snapshot>,
    asked: Arc<Notify>,
    reloads: watch::Sender<Reloads>,
}

impl WatchedPair {
    /// Default seconds between two reads of the files.
    pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

    /// Reads and checks the pair in `cert` and `key` (PEM); [`Self::watch`]
    /// will read them again every `every`.
    pub fn load(cert: &Path, key: &Path, every: Duration) -> Result<Self, TlsError> {
        let loaded = read_pem(cert, key)?;
        let pair = pair_from_pem(&loaded.cert, &loaded.key, cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            every,
            store: Arc::new(CertStore::new(pair)),
            loaded,
            unsettled: None,
            reported: None,
            asked: Arc::new(Notify::new()),
            reloads: watch::Sender::new(Reloads::default()),
        })
    }

    /// The store the pair is served from.
    pub fn store(&self) -> Arc<CertStore> {
        Arc::clone(&self.store)
    }

    /// A TLS acceptor serving whatever pair the store holds.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        acceptor_for(self.store())
    }

    /// A handle to ask for a read now.
    pub fn trigger(&self) -> ReloadTrigger {
        ReloadTrigger(Arc::clone(&self.asked))
    }

    /// Follows what the watcher does.
    pub fn reloads(&self) -> watch::Receiver<Reloads> {
        self.reloads.subscribe()
    }

    /// Reads the files every `every` and when asked, swapping in a changed
    /// pair that is good, until `stop` is cancelled.
    pub async fn watch(mut self, metrics: Arc<BridgeMetrics>, stop: CancellationToken) {
        let mut ticks = interval_at(Instant::now() + self.every, self.every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let asked = Arc::clone(&self.asked);
        loop {
            let on_request = tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => false,
                () = asked.notified() => true,
            };
            self.check(on_request, &metrics).await;
        }
    }

    /// Reads the files once; takes a changed good pair, reports a bad one.
    async fn check(&mut self, on_request: bool, metrics: &BridgeMetrics) {
        let (cert, key) = (self.cert.clone(), self.key.clone());
        let read = tokio::task::spawn_blocking(move || read_pem(&cert, &key)).await;
        let read = match read {
            Ok(read) => read,
            // The read cannot panic; a runtime shutting down ends here.
            Err(_) => return,
        };
        self.reloads.send_modify(|reloads| reloads.checks += 1);
        if matches!(&read, Ok(pem) if *pem == self.loaded) {
            self.unsettled = None;
            if on_request {
                info!(
                    "SIGHUP: {} y {} no han cambiado; se sigue sirviendo el mismo certificado",
                    self.cert.display(),
                    self.key.display()
                );
            }
            return;
        }
        let snapshot = match &read {
            Ok(pem) => Snapshot::Files(pem.clone()),
            Err(error) => Snapshot::Unreadable(error.to_string()),
        };
        let checked = read.and_then(|pem| {
            let pair = pair_from_pem(&pem.cert, &pem.key, &self.cert, &self.key)?;
            Ok((pem, pair))
        });
        match checked {
            Ok((pem, pair)) => {
                self.store.swap(pair);
                self.loaded = pem;
                self.unsettled = None;
                self.reported = None;
                metrics.tls_certificate_reloaded(true);
                self.reloads.send_modify(|reloads| reloads.loaded += 1);
                let why = if on_request {
                    "SIGHUP"
                } else {
                    "los ficheros cambiaron"
                };
                info!(
                    "certificado nuevo de {} ({why}): lo reciben las conexiones nuevas; las abiertas siguen como estaban",
                    self.cert.display()
                );
            }
            Err(error) => {
                if !on_request {
                    if self.unsettled.as_ref() != Some(&snapshot) {
                        // Maybe half-way through a renewal: look again.
                        self.unsettled = Some(snapshot);
                        return;
                    }
                    if self.reported.as_ref() == Some(&snapshot) {
                        return;
                    }
                }
                metrics.tls_certificate_reloaded(false);
                self.reloads.send_modify(|reloads| reloads.rejected += 1);
                warn!("{error}: se sigue sirviendo el certificado anterior");
                self.reported = Some(snapshot);
            }
        }
    }
}

/// Both files' bytes.
fn read_pem(cert: &Path, key: &Path) -> Result<Pem, TlsError> {
    Ok(Pem {
        cert: read_file(cert)?,
        key: read_file(key)?,
    })
}
