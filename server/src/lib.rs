//! The TCP server behind `servidor`: a listener that accepts within a
//! connection limit, and one task per client that answers every read in
//! uppercase.
//!
//! Unlike the tutorial's server it serves many clients at once, never cuts a
//! message, and keeps the memory of each connection bounded: a connection
//! holds no buffer while idle, reads at most [`Config::read_size`] bytes at a
//! time, and does not read again until the answer to the last read is sent,
//! so a client that does not read its answers stops being read (backpressure)
//! without slowing anyone else.
//!
//! What it counts for `--metrics` is in [`ServerMetrics`].

mod metrics;

use std::cell::RefCell;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, timeout, timeout_at, Instant, Sleep};
use tokio_util::io::poll_read_buf;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use console::{describe_io, preview, Seconds};
use netkit::accept::Acceptor;
use netkit::per_client::{Held, PerClient};
use netkit::proxy_protocol::{
    client_address, ClientAddress, Presence, TrustedProxies, HEADER_DEADLINE,
};
use upcase::Upcase;

use self::metrics::OpenConnection;
pub use self::metrics::ServerMetrics;

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct Config {
    /// Clients served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A connection whose answer cannot be sent for this long (the client
    /// does not read) is closed.
    pub write_timeout: Duration,
    /// On shutdown, how long the connections may take to send what is
    /// already transformed and close, counted once for all of them from the
    /// moment the shutdown starts. A connection closing for another reason
    /// gets as long to close.
    pub shutdown_grace: Duration,
    /// The most bytes read from a client at once. A busy connection holds
    /// an answer of at most [`upcase::MAX_GROWTH`] times (this + 3),
    /// as a read may complete a character held from the one before (and
    /// its worker thread one read buffer of this size).
    pub read_size: usize,
    /// Connections one client address may hold at once (the address a
    /// trusted proxy's PROXY header announced, else the peer's); past it, a
    /// new one is told so in one line and closed. 0 (the default): no
    /// limit, since behind a bridge that sends no PROXY header every
    /// session comes from the bridge's one address.
    pub max_connections_per_client: usize,
    /// Characters of each message shown in the log.
    pub log_preview: usize,
    /// A connection is announced in the log («Conexión desde: …») at its
    /// first byte, or once it has stayed open this long. One that closes
    /// sooner having sent nothing is a health check (HAProxy's, or a
    /// bridge's `/healthz`): it is logged at `debug` only, so that checks
    /// every second do not flood the transcript. Zero announces every
    /// connection at once.
    pub announce_after: Duration,
    /// Load balancers whose PROXY header (required from them) names the
    /// real client.
    pub trusted_proxies: TrustedProxies,
    /// How long a trusted proxy may take to send its whole PROXY header.
    pub proxy_header_deadline: Duration,
    /// What is counted for `--metrics` (no-ops by default).
    pub metrics: ServerMetrics,
}

impl Config {
    /// The tutorial's host: loopback only.
    pub const HOST: &'static str = "127.0.0.1";
    /// The tutorial's port.
    pub const PORT: u16 = 5000;
    /// Default clients served at once.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// Default seconds of silence before a connection is closed.
    pub const IDLE_TIMEOUT_SECS: u64 = 600;
    /// Default seconds an answer may wait for a client that does not read.
    pub const WRITE_TIMEOUT_SECS: u64 = 30;
    /// Default characters of each message shown in the log.
    pub const LOG_PREVIEW: usize = 200;
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_connections: Self::MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(Self::IDLE_TIMEOUT_SECS),
            write_timeout: Duration::from_secs(Self::WRITE_TIMEOUT_SECS),
            shutdown_grace: Duration::from_millis(500),
            read_size: 64 * 1024,
            max_connections_per_client: 0,
            log_preview: Self::LOG_PREVIEW,
            announce_after: Duration::from_millis(200),
            trusted_proxies: TrustedProxies::default(),
            proxy_header_deadline: HEADER_DEADLINE,
            metrics: ServerMetrics::default(),
        }
    }
}

/// Serves clients from `listener` until `shutdown` is cancelled, then stops
/// accepting and reading, and returns once every connection has closed:
/// within [`Config::shutdown_grace`] of the cancellation, which the
/// connections have to deliver what they have transformed.
///
/// Errors never end the server: a failed `accept` is logged and retried (see
/// [`Acceptor`]), and a connection's error ends only that connection.
pub async fn serve(listener: TcpListener, config: Config, shutdown: CancellationToken) {
    let config = Arc::new(config);
    let connections = TaskTracker::new();
    let metrics = &config.metrics;
    metrics.max.set(config.max_connections as f64);
    let mut acceptor =
        Acceptor::new(listener, config.max_connections).with_metrics(metrics.accept.clone());
    let mut next_id: u64 = 1;
    let stop = Arc::new(StopDeadline::new(config.shutdown_grace));
    let per_client = PerClient::new(config.max_connections_per_client);

    while let Some(accepted) = acceptor.next(&shutdown).await {
        metrics.accepted.increment(1);
        let open = OpenConnection::new(&metrics.open);
        let connection = Connection {
            peer: accepted.peer,
            client: ClientAddress::direct(accepted.peer),
            announced: false,
            stream: accepted.stream,
            config: Arc::clone(&config),
            // Its own node: waiting on it, as every read does, takes no
            // lock that other connections take too.
            shutdown: shutdown.child_token(),
            stop: Arc::clone(&stop),
            traffic: Traffic::default(),
            per_client: per_client.clone(),
        };
        // Every line of the connection carries its id: the transcript
        // writes it as `[#7]` (see `console::transcript_subscriber`).
        let span = info_span!("conn", id = next_id);
        next_id += 1;
        let permit = accepted.permit;
        connections.spawn(
            async move {
                connection.run().await;
                drop(open);
                drop(permit);
            }
            .instrument(span),
        );
    }

    // Unless a connection saw the stop first and fixed it already.
    stop.deadline();
    drop(acceptor);
    connections.close();
    connections.wait().await;
}

/// When a stopping server's connections must all have closed: one grace
/// from the moment the stop is first seen, by the accept loop or by a
/// connection, the same instant for every connection however many phases
/// (delivering, shutting the write side, draining) its closing goes through.
#[derive(Debug)]
struct StopDeadline {
    grace: Duration,
    at: OnceLock<Instant>,
}

impl StopDeadline {
    fn new(grace: Duration) -> Self {
        Self {
            grace,
            at: OnceLock::new(),
        }
    }

    /// The deadline, fixed now if the stop was not seen before: call it
    /// only once the server is stopping.
    fn deadline(&self) -> Instant {
        *self.at.get_or_init(|| Instant::now() + self.grace)
    }

    /// The deadline, if the server is known to be stopping.
    fn fixed(&self) -> Option<Instant> {
        self.at.get().copied()
    }
}

/// Bytes counted on one connection, for the closing log line.
#[derive(Debug, Default)]
struct Traffic {
    received: u64,
    sent: u64,
}

/// Why a connection ended.
#[derive(Debug)]
enum Ending {
    ClientClosed,
    Shutdown,
    IdleTimeout(Duration),
    WriteTimeout(Duration),
    Failed(io::Error),
}

impl Ending {
    /// The `cause` label of each ending, for the metrics.
    const CAUSES: [&'static str; 5] = [
        "client_closed",
        "shutdown",
        "idle_timeout",
        "write_timeout",
        "failed",
    ];

    /// Where this ending's cause is in [`Ending::CAUSES`].
    fn cause(&self) -> usize {
        match self {
            Ending::ClientClosed => 0,
            Ending::Shutdown => 1,
            Ending::IdleTimeout(_) => 2,
            Ending::WriteTimeout(_) => 3,
            Ending::Failed(_) => 4,
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::ClientClosed => write!(f, "el cliente cerró la conexión"),
            Ending::Shutdown => write!(f, "el servidor se detiene"),
            Ending::IdleTimeout(after) => {
                write!(f, "sin actividad durante {}", Seconds(*after))
            }
            Ending::WriteTimeout(after) => {
                write!(f, "el cliente no leyó la respuesta en {}", Seconds(*after))
            }
            Ending::Failed(error) => write!(f, "{}", describe_io(error)),
        }
    }
}

/// One client, served by its own task, inside its `conn` span.
struct Connection {
    peer: SocketAddr,
    /// Who the connection is for: `peer`, or the client its PROXY header
    /// announced.
    client: ClientAddress,
    /// Whether «Conexión desde» was logged (see [`Config::announce_after`]).
    announced: bool,
    stream: TcpStream,
    config: Arc<Config>,
    shutdown: CancellationToken,
    stop: Arc<StopDeadline>,
    traffic: Traffic,
    /// Connections per client address (`--max-connections-per-client`).
    per_client: PerClient,
}

/// What a client past `--max-connections-per-client` is told before the
/// connection closes.
pub const TOO_MANY_CONNECTIONS: &str = "demasiadas conexiones desde esta dirección\n";

impl Connection {
    async fn run(mut self) {
        let trusted = &self.config.trusted_proxies;
        // The header's own deadline may be longer than the shutdown grace.
        // (Matched in place: bound to a variable first, the result took 64
        // more bytes of every connection's future, in a debug build.)
        let header = client_address(
            &mut self.stream,
            self.peer,
            trusted,
            Presence::Required,
            self.config.proxy_header_deadline,
        );
        let client = match tokio::select! {
            biased;
            header = header => header,
            () = self.shutdown.cancelled() => {
                debug!("el servidor se detiene antes de la cabecera PROXY");
                return;
            }
        } {
            Ok(client) => client,
            Err(refused) => {
                warn!("Conexión rechazada desde {}: {refused}", self.peer);
                return;
            }
        };
        self.client = client;
        // A trusted proxy's own connection (a PROXY LOCAL check) is not
        // one client among others.
        let ip = client.client.ip();
        let place = if trusted.trusts(ip) {
            Some(Held::uncounted())
        } else {
            self.per_client.try_hold(ip)
        };
        let Some(_place) = place else {
            self.config.metrics.refused_client_connections.increment(1);
            debug!(
                "Conexión rechazada desde {client}: esa dirección tiene {} conexiones abiertas",
                self.per_client.max()
            );
            let within = self.config.write_timeout;
            let _ = timeout(
                within,
                self.stream.write_all(TOO_MANY_CONNECTIONS.as_bytes()),
            )
            .await;
            let _ = timeout(within, self.stream.shutdown()).await;
            return;
        };
        if self.config.announce_after.is_zero() {
            self.announce();
        }
        // Answers are written as soon as they are ready; Nagle would hold a
        // small one back while an earlier segment awaits its ACK.
        let _ = self.stream.set_nodelay(true);
        let ending = self.converse().await;
        self.config.metrics.ended(&ending);
        if self.announced {
            info!(
                "Conexión cerrada: {} ({} bytes recibidos, {} enviados)",
                ending, self.traffic.received, self.traffic.sent
            );
        } else {
            debug!("Conexión desde {} cerrada sin datos: {ending}", self.client);
        }
    }

    /// Logs the connection's opening, once: at its first byte, or when
    /// [`Config::announce_after`] has passed.
    fn announce(&mut self) {
        if !self.announced {
            self.announced = true;
            info!("Conexión desde: {}", self.client);
        }
    }

    /// Reads, transforms and answers until the client or the server ends
    /// the conversation.
    async fn converse(&mut self) -> Ending {
        let mut upcase = Upcase::new();
        // Kept while the client keeps sending; given back whenever it
        // pauses, so idle clients hold no buffer at all.
        let mut output = Vec::new();
        // Made once for the connection, not once per message: a new waiter
        // and a new timer for every read would each be registered and
        // removed again under a lock. The alarm moves only when it goes off.
        let stopping = self.shutdown.clone().cancelled_owned();
        let mut last_read = Instant::now();
        // First the announcement, then the idle timeout, on one timer.
        let first_alarm = self.config.announce_after.min(self.config.idle_timeout);
        let alarm = sleep_until(last_read + first_alarm);
        tokio::pin!(stopping, alarm);
        loop {
            // A client that keeps sending is never waited for, so the stop
            // must be looked for here too: stopping means reading no more.
            if self.stop.fixed().is_some() {
                return Box::pin(self.close(&mut upcase, Ending::Shutdown)).await;
            }
            // One attempt, without waiting: a busy client is read again at
            // once, with no timer or waiter involved.
            let read = poll_fn(|cx| {
                Poll::Ready(self.poll_read_and_transform(cx, &mut upcase, &mut output))
            })
            .await;
            match read {
                Poll::Ready(Ok(0)) => {
                    return Box::pin(self.close(&mut upcase, Ending::ClientClosed)).await
                }
                Poll::Ready(Ok(_)) => last_read = Instant::now(),
                Poll::Ready(Err(error)) => return Ending::Failed(error),
                Poll::Pending => {
                    output = Vec::new();
                    let waited = self
                        .wait_for_input(stopping.as_mut(), alarm.as_mut(), last_read)
                        .await;
                    match waited {
                        Ok(()) => continue,
                        Err(Ending::Failed(error)) => return Ending::Failed(error),
                        Err(ending) => return Box::pin(self.close(&mut upcase, ending)).await,
                    }
                }
            }
            if let Err(ending) = self.deliver(&output).await {
                return ending;
            }
        }
    }

    /// Reads what the client has sent and transforms it into `output`;
    /// returns how many bytes were read.
    ///
    /// The read buffer belongs to the worker thread, not the connection:
    /// nothing awaits between the read and the transform, so one buffer
    /// serves every connection of the thread, and is never freed and
    /// allocated again between two reads of a busy stream.
    ///
    /// Through `poll_read`: a read that fills less than the buffer has
    /// emptied the socket, and tokio then forgets its readiness at once,
    /// where `try_read` needs one more read failing with `WouldBlock` (a
    /// system call per message) to learn it.
    fn poll_read_and_transform(
        &mut self,
        cx: &mut Context<'_>,
        upcase: &mut Upcase,
        output: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        thread_local! {
            static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        INPUT.with_borrow_mut(|input| {
            input.clear();
            input.reserve(self.config.read_size);
            let read = match poll_read_buf(Pin::new(&mut self.stream), cx, input) {
                Poll::Ready(Ok(read)) => read,
                other => return other,
            };
            if read == 0 {
                return Poll::Ready(Ok(0));
            }
            self.traffic.received += read as u64;
            let metrics = &self.config.metrics;
            metrics.received.increment(read as u64);
            output.clear();
            upcase.feed(input, output);
            let invalid = upcase.take_invalid();
            if invalid > 0 {
                metrics.invalid_utf8.increment(invalid);
            }
            self.announce();
            info!(
                "desde el usuario conectado: {}",
                preview(input, self.config.log_preview)
            );
            if !output.is_empty() {
                info!("enviando: {}", preview(output, self.config.log_preview));
            }
            Poll::Ready(Ok(read))
        })
    }

    /// Waits until the client sends something, or why not: the server
    /// stops, or nothing came for the idle timeout since `last_read`.
    async fn wait_for_input(
        &mut self,
        mut stopping: Pin<&mut WaitForCancellationFutureOwned>,
        mut alarm: Pin<&mut Sleep>,
        last_read: Instant,
    ) -> Result<(), Ending> {
        loop {
            tokio::select! {
                biased;
                () = &mut stopping => return Err(Ending::Shutdown),
                ready = self.stream.readable() => return ready.map_err(Ending::Failed),
                () = &mut alarm => {
                    // Still open and silent: a person, not a health check.
                    self.announce();
                    let due = last_read + self.config.idle_timeout;
                    if due <= Instant::now() {
                        return Err(Ending::IdleTimeout(self.config.idle_timeout));
                    }
                    // The client spoke since the alarm was set.
                    alarm.as_mut().reset(due);
                }
            }
        }
    }

    /// Sends `bytes` whole, unless the client stops reading for longer than
    /// the write timeout, or the server is stopping and its deadline passes.
    async fn deliver(&mut self, bytes: &[u8]) -> Result<(), Ending> {
        if bytes.is_empty() {
            return Ok(());
        }
        let shutdown = &self.shutdown;
        let stop = &self.stop;
        let grace_over = async {
            shutdown.cancelled().await;
            sleep_until(stop.deadline()).await;
        };
        let write_timeout = self.config.write_timeout;
        let written = tokio::select! {
            // The write first: it usually completes at once, and the other
            // branch then never registers anything.
            biased;
            written = timeout(write_timeout, self.stream.write_all(bytes)) => written,
            _ = grace_over => return Err(Ending::Shutdown),
        };
        match written {
            Ok(Ok(())) => {
                self.traffic.sent += bytes.len() as u64;
                self.config.metrics.sent.increment(bytes.len() as u64);
                Ok(())
            }
            Ok(Err(error)) => Err(Ending::Failed(error)),
            Err(_elapsed) => Err(Ending::WriteTimeout(write_timeout)),
        }
    }

    /// Ends the conversation without losing a byte: the held tail of an
    /// incomplete character goes out unchanged, then the write side is shut
    /// so the client sees the end of its answers.
    async fn close(&mut self, upcase: &mut Upcase, ending: Ending) -> Ending {
        let mut tail = Vec::new();
        upcase.finish(&mut tail);
        let invalid = upcase.take_invalid();
        if invalid > 0 {
            self.config.metrics.invalid_utf8.increment(invalid);
        }
        let deadline = self.close_deadline(&ending);
        if let Err(failed) = self.deliver(&tail).await {
            return failed;
        }
        if let Ok(Err(error)) = timeout_at(deadline, self.stream.shutdown()).await {
            return Ending::Failed(error);
        }
        if !matches!(ending, Ending::ClientClosed) {
            // The client may still be sending. Closing with unread input
            // makes the kernel send RST, which can destroy answers the client
            // has not read yet, so read and discard until it closes too.
            self.drain_until(deadline).await;
        }
        ending
    }

    /// By when a connection ending this way must be closed: the server's
    /// stop deadline if it is stopping, else one grace from now.
    fn close_deadline(&self, ending: &Ending) -> Instant {
        let own = Instant::now() + self.config.shutdown_grace;
        match (ending, self.stop.fixed()) {
            (Ending::Shutdown, _) => self.stop.deadline(),
            (_, Some(stop)) => stop.min(own),
            (_, None) => own,
        }
    }

    async fn drain_until(&mut self, deadline: Instant) {
        // On the heap: a buffer in the future would be held by every
        // connection, idle or not.
        let mut scrap = vec![0u8; 4096];
        // A client that never stops sending keeps the socket readable, and
        // a timeout looks at its clock only once the read is pending.
        while Instant::now() < deadline {
            let Ok(Ok(())) = timeout_at(deadline, self.stream.readable()).await else {
                return;
            };
            match self.stream.try_read(&mut scrap) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open connection holds its future, idle or not, and the
    /// tricks that keep it small (the thread's read buffer, boxed
    /// `close`, the header matched in place) had no guard: this is it.
    /// Measured in a debug build (as tests run): 1,248 bytes.
    const FUTURE_BUDGET: usize = 1_280;

    #[tokio::test]
    async fn a_connections_future_stays_within_its_budget() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let config = Config::default();
        let connection = Connection {
            peer,
            client: ClientAddress::direct(peer),
            announced: false,
            stream,
            stop: Arc::new(StopDeadline::new(config.shutdown_grace)),
            per_client: PerClient::new(config.max_connections_per_client),
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
            traffic: Traffic::default(),
        };
        let future = connection.run();
        let size = size_of_val(&future);
        eprintln!("a connection's future: {size} bytes");
        assert!(
            size <= FUTURE_BUDGET,
            "a connection's future is {size} bytes, over {FUTURE_BUDGET}"
        );
    }
}
