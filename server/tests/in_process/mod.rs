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
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Lets every task run until none can: under paused time, a sleep returns
/// only once the runtime has nothing else to do (the clock advances only
/// then), so what the server does with what it was sent is done.
///
/// A paused clock moves on as soon as the runtime is idle, which can come
/// before the kernel has handed over what a write or a close on a real
/// socket sent (it did, on a loaded machine). So each round also blocks
/// this thread for a moment of real time, in which the kernel delivers:
/// nothing else runs on a test's current-thread runtime meanwhile.
pub async fn settle() {
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
}
