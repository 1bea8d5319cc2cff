//! `servidor::serve` run inside the test on 127.0.0.1 port 0, as the
//! protocol tests use it (mini-redis's `start_server`), with its metrics
//! in an exporter of the test's own.

#![allow(dead_code)] // each test file uses part of it

use std::net::SocketAddr;
use std::sync::Arc;

use netkit::metrics::Exporter;
use servidor::{Config, ServerMetrics};
use testkit::{within, Scrape, PATIENCE};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A server serving in the test's runtime; stopped when dropped.
pub struct Served {
    /// Where its clients connect.
    pub addr: SocketAddr,
    /// Its metrics, when asked for with [`Served::with_metrics`].
    pub exporter: Option<Arc<Exporter>>,
    stop: CancellationToken,
    serving: Option<JoinHandle<()>>,
}

impl Served {
    /// `servidor::serve` with `config`, on a port the kernel chose.
    pub async fn start(config: Config) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Served::on(listener, config, None)
    }

    /// As [`Served::start`], counting into a new exporter.
    pub async fn with_metrics(mut config: Config) -> Served {
        let exporter = Exporter::new("servidor", env!("CARGO_PKG_VERSION"), &[]).unwrap();
        config.metrics = exporter.register(ServerMetrics::register);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Served::on(listener, config, Some(Arc::new(exporter)))
    }

    fn on(listener: TcpListener, config: Config, exporter: Option<Arc<Exporter>>) -> Served {
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let serving = tokio::spawn(servidor::serve(listener, config, stop.clone()));
        Served {
            addr,
            exporter,
            stop,
            serving: Some(serving),
        }
    }

    /// A client, with Nagle off as `cliente` has it.
    pub async fn connect(&self) -> TcpStream {
        let stream = within(PATIENCE, "connect", TcpStream::connect(self.addr))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// Tells the server to stop, as SIGTERM does in the binary.
    pub fn signal_stop(&self) {
        self.stop.cancel();
    }

    /// Stops the server and waits until `serve` has returned: every
    /// connection has ended, and every count is final.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(serving) = self.serving.take() {
            within(PATIENCE, "serve to return", serving).await.unwrap();
        }
    }

    /// The metrics as a scrape would read them now.
    pub fn scrape(&self) -> Scrape {
        let exporter = self.exporter.as_ref().expect("started with_metrics");
        Scrape {
            text: exporter.render(),
        }
    }

    /// Waits until the metrics satisfy `ready`; returns that scrape.
    ///
    /// The counts change in the server's tasks, which run while this one
    /// yields; each yield also lets the runtime poll its I/O driver, so a
    /// write or a close on its way through the kernel arrives. A yield
    /// does not move a paused clock, where a sleep would let it leap past
    /// the deadlines under test.
    pub async fn scrape_until(&self, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let scraped = self.scrape();
            if ready(&scraped) {
                return scraped;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the metrics never showed {what}; the last ones:\n{}",
                scraped.text
            );
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
