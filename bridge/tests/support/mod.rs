//! What the bridge's protocol tests share, in mini-redis's shape: a bridge
//! running in the test process (`bridge::serve` on 127.0.0.1 port 0, with
//! millisecond budgets), its log captured as events, an in-process
//! `servidor`, stand-in targets that misbehave on purpose, WebSocket
//! clients, and a client stream that reports when the bridge's send to it
//! is blocked.
//!
//! Each test file uses part of this module.
#![allow(dead_code)]

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::Layer;

use bridge::metrics::{BridgeMetrics, CONNECT_BUCKETS, CONNECT_SECONDS};
use bridge::session::{self, SessionConfig};
use bridge::Config;
use netkit::metrics::Exporter;
use netkit::proxy_protocol::ClientAddress;

pub use testkit::{within, Ws, PATIENCE};

/// A bridge's configuration for tests: `target`, and budgets in
/// milliseconds where a test waits for them to run out. Timers a test does
/// not exercise stay long, so that a loaded machine cannot trip them.
pub fn fast_config(target: SocketAddr) -> Config {
    let mut config = Config::for_target(target.to_string());
    config.session.close_grace = Duration::from_millis(500);
    config.session.connect_timeout = Duration::from_secs(2);
    config.handshake_timeout = Duration::from_secs(2);
    config.drain = Duration::from_millis(500);
    config
}

/// The log lines written in this test's thread, as they come: a test
/// waits for a line as an event, with a deadline, instead of polling.
///
/// One subscriber serves the whole test binary (a per-thread default
/// subscriber races with tracing's per-callsite interest cache when tests
/// run in parallel) and hands each line to the [`Log`] of the thread that
/// wrote it; threads without one format nothing. So a [`Log`] sees what
/// runs on its test's thread: use it from `#[tokio::test]`'s current-thread
/// runtime, where the bridge's tasks all run on the test's thread.
#[derive(Clone)]
pub struct Log {
    text: watch::Sender<String>,
}

thread_local! {
    /// This thread's [`Log`], while it captures one.
    static CAPTURED: RefCell<Option<Log>> = const { RefCell::new(None) };
}

/// While alive, this thread's log goes to its [`Log`].
pub struct Capturing(());

impl Drop for Capturing {
    fn drop(&mut self) {
        CAPTURED.with(|captured| captured.borrow_mut().take());
    }
}

impl Log {
    /// Starts capturing this thread's `info` log (and above).
    pub fn capture() -> (Log, Capturing) {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let captured = tracing_subscriber::filter::dynamic_filter_fn(|metadata, _| {
                *metadata.level() <= tracing::Level::INFO
                    && CAPTURED.with(|captured| captured.borrow().is_some())
            });
            let lines = tracing_subscriber::fmt::layer()
                .with_writer(|| LogLine { line: Vec::new() })
                .with_ansi(false)
                .without_time()
                .with_filter(captured);
            let subscriber = tracing_subscriber::registry().with(lines);
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        let log = Log {
            text: watch::Sender::new(String::new()),
        };
        CAPTURED.with(|captured| *captured.borrow_mut() = Some(log.clone()));
        (log, Capturing(()))
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.text.borrow().clone()
    }

    /// Waits until the log holds `needle`.
    pub async fn wait_for(&self, needle: &str) {
        let mut changes = self.text.subscribe();
        let found = tokio::time::timeout(PATIENCE, changes.wait_for(|text| text.contains(needle)));
        if !matches!(found.await, Ok(Ok(_))) {
            panic!(
                "the log never showed {needle:?}; it holds:\n{}",
                self.text()
            );
        }
    }
}

/// One event being written; handed whole, when dropped, to the [`Log`] of
/// the thread that wrote it.
struct LogLine {
    line: Vec<u8>,
}

impl io::Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.line);
        CAPTURED.with(|captured| {
            if let Some(log) = captured.borrow().as_ref() {
                log.text.send_modify(|text| text.push_str(&line));
            }
        });
    }
}

/// A bridge served in this process until it is dropped or stopped.
pub struct Bridge {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
    serving: Option<JoinHandle<()>>,
}

impl Bridge {
    /// Serves `config` on a listener bound to 127.0.0.1 port 0.
    pub async fn start(config: Config) -> Bridge {
        let listener = netkit::listen::bind("127.0.0.1", 0).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let serving = tokio::spawn(bridge::serve(listener, config, stop.clone()));
        Bridge {
            addr,
            stop,
            serving: Some(serving),
        }
    }

    /// A bridge to `target` with [`fast_config`].
    pub async fn to(target: SocketAddr) -> Bridge {
        Bridge::start(fast_config(target)).await
    }

    /// Asks the bridge to stop, as a signal does in the binary: sessions
    /// get 1001 and the drain starts.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits, at most `limit`, for [`bridge::serve`] to return, and
    /// returns how long that took.
    pub async fn stopped(&mut self, limit: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        let serving = self.serving.take().expect("not yet waited for");
        within(limit, "serve() to return", serving).await.unwrap();
        started.elapsed()
    }

    /// `ws://addr/ws`, opened.
    pub async fn connect(&self) -> Ws {
        testkit::websocket(self.addr).await
    }

    /// The upgrade as a page from `origin` (or a non-browser client) asks
    /// for it.
    pub async fn connect_from(&self, origin: Option<&str>) -> Result<Ws, WsError> {
        testkit::websocket_from(self.addr, origin).await
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(serving) = &self.serving {
            serving.abort();
        }
    }
}

/// The bridge's metrics as `--metrics` gives them: the handles for its
/// [`Config`] and an endpoint on 127.0.0.1 port 0 to scrape.
pub struct Metrics {
    /// Where `/metrics` is served.
    pub addr: SocketAddr,
    exporter: Arc<Exporter>,
}

impl Metrics {
    /// Registers the bridge's metrics into `config` and serves them.
    pub async fn serve_for(config: &mut Config) -> Metrics {
        let (exporter, metrics) = registry();
        config.metrics = metrics;
        let listener = netkit::metrics::bind(&"127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(netkit::metrics::serve(listener, Arc::clone(&exporter)));
        Metrics { addr, exporter }
    }

    /// A scrape over HTTP, its status and content type checked.
    pub async fn scrape(&self) -> testkit::Scrape {
        testkit::scrape(self.addr).await
    }

    /// Waits until `ready` holds for the metrics, and returns that scrape.
    /// Nothing announces a counter's change, so this reads the registry
    /// (no HTTP) every few milliseconds, within a deadline.
    pub async fn until(
        &self,
        what: &str,
        ready: impl Fn(&testkit::Scrape) -> bool,
    ) -> testkit::Scrape {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let scraped = testkit::Scrape {
                text: self.exporter.render(),
            };
            if ready(&scraped) {
                return scraped;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the metrics never showed {what}; the last ones:\n{}",
                scraped.text
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The bridge's metrics, registered with a registry of their own as
/// `--metrics` does, and that registry.
pub fn registry() -> (Arc<Exporter>, Arc<BridgeMetrics>) {
    let exporter = Exporter::new(
        "bridge",
        env!("CARGO_PKG_VERSION"),
        &[(CONNECT_SECONDS, CONNECT_BUCKETS)],
    )
    .unwrap();
    let metrics = Arc::new(exporter.register(BridgeMetrics::register));
    (Arc::new(exporter), metrics)
}

/// A `servidor` running in this process on 127.0.0.1 port 0.
pub async fn servidor_in_process() -> SocketAddr {
    let listener = netkit::listen::bind("127.0.0.1", 0).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(servidor::serve(
        listener,
        servidor::Config::default(),
        CancellationToken::new(),
    ));
    addr
}

/// A target that serves one connection with `behaviour`.
pub async fn target_that<F, Fut>(behaviour: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        behaviour(stream).await;
    });
    addr
}

/// A loopback port where connections are refused: bound (so no one else
/// can take it while this lives) but not listening.
pub struct ClosedPort {
    /// Its address.
    pub addr: SocketAddr,
    _bound: tokio::net::TcpSocket,
}

/// A [`ClosedPort`] on 127.0.0.1.
pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    ClosedPort {
        addr,
        _bound: socket,
    }
}

/// A target that answers each connection's input in ASCII uppercase (as
/// `servidor` does for ASCII), closes after answering `cierra\n`, and
/// closes when its client does. Aborting the handle stops accepting:
/// connections are then refused.
pub async fn uppercase_target() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 4096];
                loop {
                    let read = match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => read,
                    };
                    let answer = buffer[..read].to_ascii_uppercase();
                    if stream.write_all(&answer).await.is_err() || answer.ends_with(b"CIERRA\n") {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepting)
}

/// A stand-in target that floods every connection.
pub struct Flood {
    pub addr: SocketAddr,
    /// What each connection received, once it ended.
    pub received: mpsc::UnboundedReceiver<Vec<u8>>,
    /// For each new connection: notify it to shut its side at once.
    pub shut: mpsc::UnboundedReceiver<Arc<Notify>>,
}

/// A target that, on every connection, writes up to `limit` bytes as fast
/// as the bridge takes them, then shuts its side once its input ends, or
/// at once when told to.
pub async fn flooding_target(limit: usize) -> Flood {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (received_tx, received) = mpsc::unbounded_channel();
    let (shut_tx, shut) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let received_tx = received_tx.clone();
            let told = Arc::new(Notify::new());
            let _ = shut_tx.send(Arc::clone(&told));
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.into_split();
                let reading = tokio::spawn(async move {
                    let mut got = Vec::new();
                    let _ = reader.read_to_end(&mut got).await;
                    got
                });
                let flooding = async {
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut sent = 0;
                    while sent < limit && writer.write_all(&chunk).await.is_ok() {
                        sent += chunk.len();
                    }
                };
                // Past the limit, its side stays open until its input ends.
                let told_to_shut = tokio::select! {
                    () = flooding => false,
                    () = told.notified() => true,
                };
                if told_to_shut {
                    drop(writer);
                }
                if let Ok(got) = reading.await {
                    let _ = received_tx.send(got);
                }
            });
        }
    });
    Flood {
        addr,
        received,
        shut,
    }
}

/// Reads data messages until `len` bytes arrived.
pub async fn read_bytes(ws: &mut Ws, len: usize) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut got = 0;
    while got < len {
        let message = next(ws).await;
        got += message.len();
        assert!(
            matches!(message, Message::Text(_) | Message::Binary(_)),
            "{message:?} after {got} bytes"
        );
        messages.push(message);
    }
    messages
}

/// The next message (pings included).
pub async fn next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(PATIENCE, "a message", ws.next())
        .await
        .expect("the session ended")
        .expect("a valid message")
}

/// The next message that is not a ping or pong.
pub async fn next_data<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match next(ws).await {
            Message::Ping(_) | Message::Pong(_) => continue,
            message => return message,
        }
    }
}

/// The payloads of `messages`, one after another.
pub fn bytes_of(messages: &[Message]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| m.clone().into_data().to_vec())
        .collect()
}

/// What the client read up to and including the bridge's Close.
pub struct Read {
    /// Payload bytes before the Close.
    pub data: usize,
    /// The Close's frame, if it had one.
    pub close: Option<CloseFrame>,
}

impl Read {
    /// The Close's code.
    pub fn code(
        &self,
    ) -> Option<tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode> {
        self.close.as_ref().map(|frame| frame.code)
    }
}

/// Reads to the bridge's Close, then to the end of the connection, and
/// fails the test on any frame after the Close (RFC 6455 §5.5.1: after
/// sending a Close an endpoint sends no more data).
pub async fn read_to_the_end<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Read
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut data = 0;
    let close = loop {
        match within(PATIENCE, "the close", ws.next()).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(message)) => data += message.len(),
            Some(Err(error)) => panic!("{error} after {data} bytes, before any close"),
            None => panic!("the connection ended after {data} bytes without a close"),
        }
    };
    match within(PATIENCE, "the end after the close", ws.next()).await {
        None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {}
        Some(Ok(message)) => panic!("{message:?} after the bridge's close"),
        Some(Err(error)) => panic!("{error} after the bridge's close"),
    }
    Read { data, close }
}

/// A client of the bridge at `addr` that sends its upgrade request, then
/// nothing at all: it answers no ping and reads nothing.
pub async fn silent_websocket(addr: SocketAddr) -> TcpStream {
    testkit::silent_websocket(addr).await
}

/// Reads from `stream` until the bridge closes it.
pub async fn closed_by_the_bridge(stream: &mut TcpStream) {
    let mut scrap = vec![0u8; 64 * 1024];
    loop {
        match within(
            PATIENCE,
            "the bridge to close the connection",
            stream.read(&mut scrap),
        )
        .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Room in each direction of the in-memory client connection: a few
/// frames of the flood, so the bridge blocks at once.
const CLIENT_ROOM: usize = 16 * 1024;

/// One session run by [`session::run`] over an in-memory connection, and
/// the client's end of it: a session without the HTTP around it, whose
/// client connection is in memory, so that its timers can run on tokio's
/// paused clock and its blocked sends can be seen.
pub struct InMemory {
    /// The client's end.
    pub client: WebSocketStream<DuplexStream>,
    /// Reports the bridge blocked sending to the client.
    pub blocking: Blocking,
    /// Cancelled: the bridge stops (as at SIGTERM).
    pub stop: CancellationToken,
    session: JoinHandle<()>,
}

impl InMemory {
    /// A session with `config`, counted in `metrics`.
    pub async fn start(config: SessionConfig, metrics: Arc<BridgeMetrics>) -> InMemory {
        let (near, far) = tokio::io::duplex(CLIENT_ROOM);
        let (near, blocking) = ReportsBlocking::new(near);
        let websocket = config.websocket();
        let server = WebSocketStream::from_raw_socket(near, Role::Server, Some(websocket)).await;
        let client = WebSocketStream::from_raw_socket(far, Role::Client, None).await;
        let stop = CancellationToken::new();
        let running = {
            let stop = stop.clone();
            async move {
                let client = ClientAddress::direct("127.0.0.1:40000".parse().unwrap());
                let local = "127.0.0.1:8080".parse().unwrap();
                session::run(server, 1, client, local, Arc::new(config), stop, &metrics).await;
            }
        };
        let session = tokio::spawn(running);
        InMemory {
            client,
            blocking,
            stop,
            session,
        }
    }

    /// Waits, at most `limit`, for the session to end.
    pub async fn ended(self, limit: Duration) {
        within(limit, "the session to end", self.session)
            .await
            .unwrap();
    }
}

/// The bridge's end of an in-memory client connection, which reports the
/// moment a write to it is refused for lack of room: the bridge is then
/// blocked mid-send to a client that stopped reading. This is the event
/// the closing tests wait for, rather than assuming it after a sleep.
pub struct ReportsBlocking<S> {
    inner: S,
    blocked: Arc<watch::Sender<bool>>,
}

/// Tells when the bridge's writes to a [`ReportsBlocking`] stream block.
#[derive(Clone)]
pub struct Blocking {
    blocked: Arc<watch::Sender<bool>>,
}

impl<S> ReportsBlocking<S> {
    /// Wraps the bridge's end `inner`.
    pub fn new(inner: S) -> (Self, Blocking) {
        let blocked = Arc::new(watch::Sender::new(false));
        let blocking = Blocking {
            blocked: Arc::clone(&blocked),
        };
        (Self { inner, blocked }, blocking)
    }
}

impl Blocking {
    /// Waits until a write of the bridge's has returned `Pending`.
    pub async fn wait(&self) {
        let mut changes = self.blocked.subscribe();
        within(
            PATIENCE,
            "the bridge blocked mid-send",
            changes.wait_for(|blocked| *blocked),
        )
        .await
        .unwrap();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReportsBlocking<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReportsBlocking<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if written.is_pending() {
            self.blocked.send_replace(true);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
