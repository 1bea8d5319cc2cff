//! One WebSocket session: one browser (or other client) ⇄ one new TCP
//! connection to the bridge's fixed target.
//!
//! Two pumps run side by side in the session's task, each with its own
//! backpressure, and neither blocks the other (which would deadlock with a
//! server that, like `servidor`, answers before it reads again):
//!
//! - `client_to_target`: message payloads, written verbatim to the target;
//! - `target_to_client`: target bytes, framed into messages, pings, and the
//!   empty answer to an empty message (which has no bytes for the target).
//!
//! They share what `shared` holds (the client's last kind of message, when
//! it was last heard, the empty message waiting for its answer), each side
//! with a waker of its own. [`ending`] says how a session ends, with its
//! close code and reason.
//!
//! Whichever stops first decides the [`Ending`]. The other is then dropped
//! where it stands (a frame already handed to tungstenite still goes out
//! whole), and only then does the session send its Close, so the Close is
//! always the last frame on the wire (RFC 6455 §5.5.1). The one exception to
//! "stop at once" is a client that breaks the protocol: what it sent before
//! the bad frame is already with the target, so the target's answers are
//! delivered first. Either way, one close grace counted from the moment the
//! ending is decided bounds all of the closing: the last answers, the Close
//! and the client's answer to it.
//!
//! When the client sends its Close, tungstenite queues the answer and
//! refuses data from then on, so output the target sends after the client's
//! Close is not delivered: the answer goes out at once.

mod client_to_target;
pub mod ending;
mod shared;
mod target_to_client;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, Instrument};

use netkit::proxy_protocol::{self, ClientAddress};

use self::client_to_target::Stop;
pub use self::ending::{fit_close_reason, Ending};
use self::shared::Shared;
use crate::framing::Kind;
use crate::metrics::BridgeMetrics;

/// How sessions behave; shared by all of them.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `host:port` of the TCP server every session connects to.
    pub target: String,
    /// How long connecting to the target may take.
    pub connect_timeout: Duration,
    /// A client silent this long is pinged; silent as long again, dropped.
    pub ping_interval: Duration,
    /// How long closing may take, counted from the moment the session's
    /// ending is decided: the target's last answers after a protocol error,
    /// then the bridge's Close and the client's answer, all within it.
    pub close_grace: Duration,
    /// A client that takes nothing for this long while answers wait for it
    /// is dropped.
    pub write_timeout: Duration,
    /// The most bytes read from the target at once (one message at most).
    pub read_size: usize,
    /// The largest message a client may send, for the close reason.
    pub max_message: usize,
    /// Whether each target connection starts with a PROXY v2 header naming
    /// the client, so that a target trusting the bridge logs the browser.
    pub send_proxy: bool,
}

impl SessionConfig {
    /// Default target: `servidor` where the tutorial puts it.
    pub const TARGET: &'static str = "127.0.0.1:5000";
    /// Default seconds to connect to the target.
    pub const CONNECT_TIMEOUT_SECS: u64 = 5;
    /// Default seconds of silence before a ping.
    pub const PING_INTERVAL_SECS: u64 = 30;
    /// Default seconds closing may take.
    pub const CLOSE_GRACE_SECS: u64 = 2;
    /// Default seconds a client may take nothing.
    pub const WRITE_TIMEOUT_SECS: u64 = 30;
    /// The most bytes read from the target at once: one message at most.
    pub const READ_SIZE: usize = 16 * 1024;
    /// Default largest client message, in bytes.
    pub const MAX_MESSAGE: usize = 1024 * 1024;
    /// The WebSocket read buffer a session starts with, and the most
    /// tungstenite reads at once: big enough for a browser's line, small
    /// enough for thousands of idle sessions. A bigger message is read
    /// ahead in big chunks by [`crate::read_ahead`]. tungstenite grows the
    /// buffer to hold a bigger frame and keeps it grown for the session's
    /// life (at most `--max-message`). See BENCHMARKS.md.
    pub const READ_BUFFER: usize = 256;

    /// Sessions to `target` with every other setting at its default.
    pub fn for_target(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            connect_timeout: Duration::from_secs(Self::CONNECT_TIMEOUT_SECS),
            ping_interval: Duration::from_secs(Self::PING_INTERVAL_SECS),
            close_grace: Duration::from_secs(Self::CLOSE_GRACE_SECS),
            write_timeout: Duration::from_secs(Self::WRITE_TIMEOUT_SECS),
            read_size: Self::READ_SIZE,
            max_message: Self::MAX_MESSAGE,
            send_proxy: false,
        }
    }

    /// The WebSocket settings of these sessions, derived from this config
    /// so that the limit tungstenite enforces is the one the close reason
    /// names: messages and frames of at most `max_message` bytes, a small
    /// read buffer, and writes not buffered beyond one message.
    pub fn websocket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(Self::READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(256 * 1024)
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message))
    }
}

/// Bytes each way, for the session's closing log line, and each message
/// counted in the bridge's metrics too.
#[derive(Debug)]
pub struct Traffic<'a> {
    up: AtomicU64,
    down: AtomicU64,
    metrics: &'a BridgeMetrics,
}

impl<'a> Traffic<'a> {
    fn new(metrics: &'a BridgeMetrics) -> Self {
        Self {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            metrics,
        }
    }

    fn add_up(&self, kind: Kind, bytes: usize) {
        self.up.fetch_add(bytes as u64, Ordering::Relaxed);
        self.metrics.to_target(kind, bytes);
    }

    fn add_down(&self, kind: Kind, bytes: usize) {
        self.down.fetch_add(bytes as u64, Ordering::Relaxed);
        self.metrics.to_client(kind, bytes);
    }

    /// Bytes from the client to the target.
    pub fn up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    /// Bytes from the target to the client.
    pub fn down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }
}

type ToClient<S> = SplitSink<WebSocketStream<S>, Message>;
type FromClient<S> = SplitStream<WebSocketStream<S>>;

/// Runs one session to its end over an accepted WebSocket, counting it
/// in `metrics` from its start (the upgrade succeeded) to its ending.
///
/// `client` is who the session is for (behind a trusted proxy, the real
/// client), and `local` the bridge's address it connected to: both are
/// announced to the target with `--send-proxy`.
///
/// Not an `async fn`: the WebSocket is split before the future is made, so
/// the future holds only the two halves, not the whole stream as well (an
/// async fn keeps its arguments for its whole life: 300 bytes a session).
pub fn run<'m, S>(
    ws: WebSocketStream<S>,
    id: u64,
    client: ClientAddress,
    local: SocketAddr,
    config: Arc<SessionConfig>,
    shutdown: CancellationToken,
    metrics: &'m BridgeMetrics,
) -> impl Future<Output = ()> + 'm
where
    S: AsyncRead + AsyncWrite + Unpin + 'm,
{
    let (to_client, from_client) = ws.split();
    let announce = config
        .send_proxy
        .then(|| proxy_protocol::v2_header(client.client, local));
    // Every line of the session carries its id: the transcript writes it
    // as `[ws#7]` (see `console::transcript_subscriber`).
    let span = info_span!("ws", id);
    async move {
        let _open = metrics.session_started();
        info!("sesión abierta desde {client} hacia {}", config.target);
        let traffic = Traffic::new(metrics);
        let halves = (to_client, from_client);
        let ending = bridge(halves, &config, announce, &traffic, &shutdown).await;
        metrics.session_ended(&ending);
        info!(
            "sesión cerrada: {ending} ({} bytes hacia el servidor, {} hacia el cliente)",
            traffic.up(),
            traffic.down()
        );
    }
    .instrument(span)
}

async fn bridge<S>(
    (mut to_client, mut from_client): (ToClient<S>, FromClient<S>),
    config: &SessionConfig,
    announce: Option<Vec<u8>>,
    traffic: &Traffic<'_>,
    shutdown: &CancellationToken,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connected = tokio::select! {
        biased;
        () = shutdown.cancelled() => Err(Ending::Stopping),
        connected = Box::pin(connect(config, announce, traffic.metrics)) => connected,
    };
    let (ending, close_deadline) = match connected {
        Ok(target) => {
            let pumps = Pumps {
                to_client: &mut to_client,
                from_client: &mut from_client,
                config,
                traffic,
            };
            pumps.run(target, shutdown).await
        }
        Err(ending) => (ending, Instant::now() + config.close_grace),
    };
    close(&mut to_client, &mut from_client, &ending, close_deadline).await;
    ending
}

/// Connects to the target, and sends it `announce` (a PROXY header) first.
async fn connect(
    config: &SessionConfig,
    announce: Option<Vec<u8>>,
    metrics: &BridgeMetrics,
) -> Result<TcpStream, Ending> {
    let started = Instant::now();
    match timeout(config.connect_timeout, TcpStream::connect(&config.target)).await {
        Ok(Ok(mut target)) => {
            metrics.target_connected(started.elapsed());
            // Answers are small writes: Nagle must not hold them. Failing
            // to set it costs latency only, so it is not worth a session.
            if let Err(error) = target.set_nodelay(true) {
                debug!("TCP_NODELAY no se pudo activar: {error}");
            }
            if let Some(header) = announce {
                // A fresh socket takes a header this small at once.
                if let Err(error) = target.write_all(&header).await {
                    return Err(Ending::TargetLost {
                        target: config.target.clone(),
                        error,
                    });
                }
            }
            Ok(target)
        }
        Ok(Err(error)) => Err(Ending::TargetUnreachable {
            target: config.target.clone(),
            error,
        }),
        Err(_elapsed) => Err(Ending::TargetTimedOut {
            target: config.target.clone(),
            after: config.connect_timeout,
        }),
    }
}

/// Both directions of one session, borrowing the WebSocket's halves so
/// that the session gets them back to close once the pumps are dropped.
struct Pumps<'a, S> {
    to_client: &'a mut ToClient<S>,
    from_client: &'a mut FromClient<S>,
    config: &'a SessionConfig,
    traffic: &'a Traffic<'a>,
}

impl<S> Pumps<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Runs both pumps until one decides how the session ends, and says
    /// by when the session must be closed: one close grace from that
    /// moment, for delivering the target's last answers and for the Close
    /// alike.
    async fn run(self, target: TcpStream, shutdown: &CancellationToken) -> (Ending, Instant) {
        let (from_target, to_target) = target.into_split();
        let shared = Shared::new();
        let down = target_to_client::pump(
            self.to_client,
            from_target,
            &shared,
            self.config,
            self.traffic,
        );
        let up = client_to_target::pump(
            self.from_client,
            to_target,
            &shared,
            self.config,
            self.traffic,
        );
        tokio::pin!(down, up);
        let stop = tokio::select! {
            biased;
            () = shutdown.cancelled() => Stop::Now(Ending::Stopping),
            ending = &mut down => Stop::Now(ending),
            stop = &mut up => stop,
        };
        let close_deadline = Instant::now() + self.config.close_grace;
        let ending = match stop {
            Stop::Now(ending) => ending,
            Stop::AfterTarget(ending) => {
                // Rare: boxed, so that every session's future does not
                // carry its timer.
                Box::pin(deliver_rest(down, ending, close_deadline, shutdown)).await
            }
        };
        (ending, close_deadline)
    }
}

/// Lets the target → client pump deliver the target's last answers (its
/// write half is shut, so it ends) until `close_deadline` at most, then
/// ends with `ending`, unless the client went away meanwhile. What is left
/// of the close grace is the Close's.
async fn deliver_rest(
    down: Pin<&mut impl Future<Output = Ending>>,
    ending: Ending,
    close_deadline: Instant,
    shutdown: &CancellationToken,
) -> Ending {
    let delivered = tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        down = timeout_at(close_deadline, down) => down.ok(),
    };
    match delivered {
        Some(down) if !down.client_reachable() => down,
        _ => ending,
    }
}

/// Sends the session's last frame by `deadline`: the Close for `ending`,
/// or tungstenite's answer to the client's Close. Both follow at most the
/// frame that was in flight. After a Close of its own the bridge waits for
/// the client's answer (discarding data), unless the client broke the
/// protocol; then the connection is dropped.
async fn close<S>(
    to_client: &mut ToClient<S>,
    from_client: &mut FromClient<S>,
    ending: &Ending,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(frame) = ending.close_frame() else {
        if matches!(ending, Ending::ClientClosed(_)) {
            // tungstenite queued the answer when it read the client's Close.
            let flushed = timeout_at(deadline, to_client.flush()).await;
            debug!("respuesta al cierre del cliente: {flushed:?}");
        }
        return;
    };
    match timeout_at(deadline, to_client.send(Message::Close(Some(frame)))).await {
        Ok(Ok(())) => {}
        other => {
            debug!("el cierre no llegó al cliente: {other:?}");
            return;
        }
    }
    if ending.fails_the_connection() {
        return;
    }
    let answered = timeout_at(deadline, async {
        while let Some(Ok(message)) = from_client.next().await {
            if message.is_close() {
                return true;
            }
        }
        false
    })
    .await;
    debug!("respuesta del cliente al cierre: {answered:?}");
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::mem::size_of_val;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncWriteExt, DuplexStream, ReadBuf};
    use tokio::net::TcpListener;
    use tokio::sync::Notify;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    /// Every open session holds its future, whatever it is doing: see
    /// BENCHMARKS.md for where each part of a session's memory goes.
    /// Measured in a debug build: 1,760 bytes (the two wakers of `shared`
    /// cost 40, one close deadline instead of two graces saved 88).
    #[tokio::test]
    async fn a_sessions_future_stays_under_2_kib() {
        let (near, _far) = tokio::io::duplex(64);
        let config = SessionConfig::for_target("127.0.0.1:5000");
        let ws =
            WebSocketStream::from_raw_socket(near, Role::Server, Some(config.websocket())).await;
        let metrics = BridgeMetrics::default();
        let session = run(
            ws,
            1,
            ClientAddress::direct("127.0.0.1:1".parse().unwrap()),
            "127.0.0.1:2".parse().unwrap(),
            Arc::new(config),
            CancellationToken::new(),
            &metrics,
        );
        let size = size_of_val(&session);
        eprintln!("a session's future: {size} bytes");
        assert!(size <= 2048, "{size} bytes");
    }

    #[test]
    fn the_websocket_enforces_the_largest_message_the_close_reason_names() {
        let config = SessionConfig {
            max_message: 10,
            ..SessionConfig::for_target("127.0.0.1:5000")
        };
        let websocket = config.websocket();
        assert_eq!(websocket.max_message_size, Some(10));
        assert_eq!(websocket.max_frame_size, Some(10));
    }

    /// The bridge's end of a client connection that says when the bridge's
    /// writes stop going through: "the client stopped reading" is an event
    /// the test waits for, not a guess after a sleep.
    struct ReportsBlocked {
        inner: DuplexStream,
        blocked: Arc<Notify>,
    }

    impl AsyncRead for ReportsBlocked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for ReportsBlocked {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.inner).poll_write(cx, buf);
            if written.is_pending() {
                self.blocked.notify_one();
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

    const CLOSE_GRACE: Duration = Duration::from_millis(200);

    /// A target that sends far more than a client that reads nothing can
    /// take, and then stays connected.
    async fn flooding_target() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.write_all(&vec![b'a'; 1024 * 1024]).await;
            std::future::pending::<()>().await;
        });
        address
    }

    /// Runs a session to `target` for a client that never reads, until the
    /// bridge's writes block; then `end` ends it. Returns how long the
    /// session took to close after that.
    async fn closing_time<E, F>(end: E) -> Duration
    where
        E: FnOnce(DuplexStream, CancellationToken) -> F,
        F: Future<Output = DuplexStream>,
    {
        let target = flooding_target().await;
        let config = SessionConfig {
            close_grace: CLOSE_GRACE,
            // Far beyond the close grace: only the grace may end the wait.
            ping_interval: Duration::from_secs(3600),
            write_timeout: Duration::from_secs(3600),
            ..SessionConfig::for_target(target.to_string())
        };
        let (near, far) = tokio::io::duplex(1024);
        let blocked = Arc::new(Notify::new());
        let near = ReportsBlocked {
            inner: near,
            blocked: Arc::clone(&blocked),
        };
        let ws =
            WebSocketStream::from_raw_socket(near, Role::Server, Some(config.websocket())).await;
        let metrics = BridgeMetrics::default();
        let shutdown = CancellationToken::new();
        let session = run(
            ws,
            1,
            ClientAddress::direct("127.0.0.1:1".parse().unwrap()),
            "127.0.0.1:2".parse().unwrap(),
            Arc::new(config),
            shutdown.clone(),
            &metrics,
        );
        let client = async {
            blocked.notified().await;
            let far = end(far, shutdown).await;
            (Instant::now(), far)
        };
        let ((), (ended_at, _far)) = timeout(Duration::from_secs(60), async {
            tokio::join!(session, client)
        })
        .await
        .expect("the session never closed");
        ended_at.elapsed()
    }

    /// Within one tick of the timer wheel.
    fn within_the_grace(took: Duration) -> bool {
        took <= CLOSE_GRACE + Duration::from_millis(1)
    }

    /// A client that breaks the protocol while the target's answers wait
    /// for it: delivering them and sending the Close share one grace.
    #[tokio::test(start_paused = true)]
    async fn after_a_protocol_error_closing_takes_at_most_the_grace() {
        let took = closing_time(|mut far, _shutdown| async move {
            // A text frame without a mask: clients must mask theirs.
            far.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
            far
        })
        .await;
        assert!(within_the_grace(took), "closing took {took:?}");
        // The target's answers were waited for, as long as the grace let.
        assert!(took >= CLOSE_GRACE, "closing took {took:?}");
    }

    /// The bridge stops while a session is blocked sending to its client.
    #[tokio::test(start_paused = true)]
    async fn when_the_bridge_stops_closing_takes_at_most_the_grace() {
        let took = closing_time(|far, shutdown| async move {
            shutdown.cancel();
            far
        })
        .await;
        assert!(within_the_grace(took), "closing took {took:?}");
    }
}
