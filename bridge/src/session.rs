//! One WebSocket session: one browser (or other client) ⇄ one new TCP
//! connection to the bridge's fixed target.
//!
//! The two directions run concurrently, each with its own backpressure: a
//! slow browser stops reads from the target, a slow target stops reads from
//! the browser, and neither blocks the other direction (which would deadlock
//! with a server that, like `servidor`, answers before it reads again).
//!
//! - *upstream*: client messages → their payloads written verbatim to the
//!   target; it also pings an idle client and reports a dead one;
//! - *downstream*: target bytes → messages of the type the client last used
//!   (see [`crate::framing`]); it alone writes data to the WebSocket.
//!
//! Closing loses nothing: when the target closes, everything it sent is
//! delivered before close 1000; when the client closes, the target's write
//! half is shut and what the target still sends within the grace period is
//! delivered before the close handshake is answered.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use mayusculas::console::describe_io;

use crate::framing::{Framer, Kind, Payload};

/// How sessions behave; shared by all of them.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `host:port` of the TCP server every session connects to.
    pub target: String,
    /// How long connecting to the target may take.
    pub connect_timeout: Duration,
    /// A client silent this long is pinged; silent as long again, dropped.
    pub ping_interval: Duration,
    /// After one side closes, how long the other may still deliver.
    pub close_grace: Duration,
    /// A client that takes nothing for this long while answers wait for it
    /// is dropped.
    pub write_timeout: Duration,
    /// The most bytes read from the target at once (one message at most).
    pub read_size: usize,
    /// The largest message a client may send, for the close reason.
    pub max_message: usize,
}

/// Bytes and the close, for the session's closing log line.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes from the client to the target.
    pub up: AtomicU64,
    /// Bytes from the target to the client.
    pub down: AtomicU64,
}

/// How a session ended, as the log tells it.
#[derive(Debug)]
pub struct Ending {
    /// The close code sent to the client, if one was.
    pub code: Option<u16>,
    /// Why, in words.
    pub reason: String,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{code} «{}»", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

/// Messages from upstream to downstream, which owns the sending side.
enum Control<S> {
    /// Ping the client: it has been silent.
    Ping,
    /// Close with this code and reason.
    Close(CloseCode, String),
    /// The client sent its close; here is the receiving half back, so the
    /// remaining output can still be delivered before the handshake ends.
    ClientClosed(SplitStream<WebSocketStream<S>>, Option<u16>),
}

/// Runs one session to its end over an accepted WebSocket.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    id: u64,
    peer: SocketAddr,
    config: Arc<SessionConfig>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    info!(
        "[ws#{id}] sesión abierta desde {peer} hacia {}",
        config.target
    );
    let traffic = Traffic::default();
    let ending = bridge(ws, &config, &traffic, &shutdown).await;
    info!(
        "[ws#{id}] sesión cerrada: {ending} ({} bytes hacia el servidor, {} hacia el cliente)",
        traffic.up.load(Ordering::Relaxed),
        traffic.down.load(Ordering::Relaxed)
    );
}

async fn bridge<S>(
    mut ws: WebSocketStream<S>,
    config: &SessionConfig,
    traffic: &Traffic,
    shutdown: &CancellationToken,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let target = match timeout(config.connect_timeout, TcpStream::connect(&config.target)).await {
        Ok(Ok(target)) => target,
        Ok(Err(error)) => {
            let reason = format!(
                "no se pudo conectar con el servidor {}: {}",
                config.target,
                describe_io(&error)
            );
            return close_now(&mut ws, CloseCode::Error, reason).await;
        }
        Err(_elapsed) => {
            let reason = format!(
                "el servidor {} no respondió en {} s",
                config.target,
                config.connect_timeout.as_secs()
            );
            return close_now(&mut ws, CloseCode::Error, reason).await;
        }
    };
    // Answers are small writes; do not let Nagle hold them.
    let _ = target.set_nodelay(true);
    let (from_target, to_target) = target.into_split();
    let (sink, stream) = ws.split();
    let (control, controls) = mpsc::channel(4);
    let binary = AtomicBool::new(false);
    let downstream_done = CancellationToken::new();

    let upstream = Upstream {
        stream,
        to_target,
        control,
        binary: &binary,
        traffic,
        config,
    };
    let downstream = Downstream {
        sink,
        from_target,
        controls,
        binary: &binary,
        traffic,
        config,
        framer: Framer::new(),
    };
    let up = upstream.run(shutdown, &downstream_done);
    let down = async {
        let ending = downstream.run().await;
        downstream_done.cancel();
        ending
    };
    tokio::pin!(up, down);
    let (up, down) = tokio::select! {
        up = &mut up => match up {
            // Upstream decided (a dead or failed client): downstream may be
            // stuck sending to it, so it is dropped, not awaited.
            Some(ending) => return ending,
            None => (None, down.await),
        },
        down = &mut down => (up.await, down),
    };
    down.or(up).unwrap_or(Ending {
        code: None,
        reason: String::from("el cliente se desconectó"),
    })
}

async fn close_now<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: String) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: fit_close_reason(&reason).into(),
    };
    let _ = ws.close(Some(frame)).await;
    Ending {
        code: Some(code.into()),
        reason,
    }
}

/// A close reason may be at most 123 bytes: cut on a character boundary.
pub fn fit_close_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Client → target.
struct Upstream<'a, S> {
    stream: SplitStream<WebSocketStream<S>>,
    to_target: OwnedWriteHalf,
    control: mpsc::Sender<Control<S>>,
    binary: &'a AtomicBool,
    traffic: &'a Traffic,
    config: &'a SessionConfig,
}

impl<S> Upstream<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Returns an ending only when this side decided it; otherwise
    /// downstream tells how the session closed.
    async fn run(
        mut self,
        shutdown: &CancellationToken,
        downstream_done: &CancellationToken,
    ) -> Option<Ending> {
        let mut awaiting_pong = false;
        // Set once downstream has closed: only the client's close remains.
        let mut closing_by = None;
        // Made once, not per message: each new one registers a waiter (and
        // a timer) only to drop it when the next message comes.
        let stopping = shutdown.cancelled();
        let downstream_ended = downstream_done.cancelled();
        // One alarm for the session, moved only when it goes off: when the
        // client must be pinged, dropped, or the grace period is over.
        let mut last_heard = Instant::now();
        let alarm = sleep_until(last_heard + self.config.ping_interval);
        tokio::pin!(stopping, downstream_ended, alarm);
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut stopping, if closing_by.is_none() => {
                    let reason = String::from("el puente se detiene");
                    let _ = self.control.send(Control::Close(CloseCode::Away, reason)).await;
                    let deadline = Instant::now() + self.config.close_grace;
                    closing_by = Some(deadline);
                    alarm.as_mut().reset(deadline);
                    continue;
                }
                _ = &mut downstream_ended, if closing_by.is_none() => {
                    let deadline = Instant::now() + self.config.close_grace;
                    closing_by = Some(deadline);
                    alarm.as_mut().reset(deadline);
                    continue;
                }
                next = self.stream.next() => next,
                () = &mut alarm => {
                    if closing_by.is_some() {
                        return None;
                    }
                    let now = Instant::now();
                    let due = last_heard + self.config.ping_interval;
                    if due > now {
                        // The client spoke since the alarm was set.
                        alarm.as_mut().reset(due);
                        continue;
                    }
                    if awaiting_pong {
                        let _ = self.to_target.shutdown().await;
                        return Some(Ending {
                            code: None,
                            reason: format!(
                                "el cliente no respondió al ping en {} s",
                                self.config.ping_interval.as_secs()
                            ),
                        });
                    }
                    awaiting_pong = true;
                    let _ = self.control.send(Control::Ping).await;
                    last_heard = now;
                    alarm.as_mut().reset(now + self.config.ping_interval);
                    continue;
                }
            };
            let message = match next {
                None => return None,
                Some(Err(error)) => return self.failed(error).await,
                Some(Ok(message)) => message,
            };
            last_heard = Instant::now();
            awaiting_pong = false;
            let payload = match message {
                Message::Text(text) => {
                    self.binary.store(false, Ordering::Relaxed);
                    text.into()
                }
                Message::Binary(bytes) => {
                    self.binary.store(true, Ordering::Relaxed);
                    bytes
                }
                Message::Close(frame) => {
                    // No more input for the target; let it finish answering.
                    let _ = self.to_target.shutdown().await;
                    let code = frame.map(|frame| u16::from(frame.code));
                    let _ = self
                        .control
                        .send(Control::ClientClosed(self.stream, code))
                        .await;
                    return None;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if closing_by.is_some() {
                continue;
            }
            // A target that stops reading holds this write (backpressure);
            // it must not also hold the session open once it is closing.
            let written = tokio::select! {
                biased;
                written = self.to_target.write_all(&payload) => written,
                _ = &mut downstream_ended => return None,
                _ = &mut stopping => {
                    let reason = String::from("el puente se detiene");
                    let _ = self.control.send(Control::Close(CloseCode::Away, reason)).await;
                    return None;
                }
            };
            if let Err(error) = written {
                let reason = format!(
                    "se perdió la conexión con el servidor {}: {}",
                    self.config.target,
                    describe_io(&error)
                );
                let _ = self
                    .control
                    .send(Control::Close(CloseCode::Error, reason))
                    .await;
                return None;
            }
            self.traffic
                .up
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
    }

    async fn failed(mut self, error: WsError) -> Option<Ending> {
        let _ = self.to_target.shutdown().await;
        match error {
            WsError::Capacity(_) => {
                let reason = format!(
                    "mensaje demasiado grande (máximo {} bytes)",
                    self.config.max_message
                );
                let _ = self
                    .control
                    .send(Control::Close(CloseCode::Size, reason))
                    .await;
                None
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => None,
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Some(Ending {
                code: None,
                reason: String::from("el cliente se desconectó sin cerrar la sesión"),
            }),
            WsError::Io(error) => Some(Ending {
                code: None,
                reason: format!("error con el cliente: {}", describe_io(&error)),
            }),
            WsError::Protocol(_) | WsError::Utf8(_) => {
                let reason = format!("error de protocolo WebSocket: {error}");
                let _ = self
                    .control
                    .send(Control::Close(CloseCode::Protocol, reason))
                    .await;
                None
            }
            other => Some(Ending {
                code: None,
                reason: format!("error con el cliente: {other}"),
            }),
        }
    }
}

/// Reads what the target has sent, once it is readable; `None` if the
/// readiness was spurious.
///
/// Through `poll_read`, not `try_read_buf`: a read that fills less than the
/// buffer has emptied the socket, and tokio then clears its readiness
/// itself, where `try_read_buf` needs a second read failing with
/// `WouldBlock` to learn it: one system call less per message.
async fn read_ready(
    from_target: &mut OwnedReadHalf,
    input: &mut Vec<u8>,
) -> Option<io::Result<usize>> {
    std::future::poll_fn(
        |cx| match poll_read_buf(Pin::new(&mut *from_target), cx, input) {
            Poll::Ready(read) => Poll::Ready(Some(read)),
            Poll::Pending => Poll::Ready(None),
        },
    )
    .await
}

/// Target → client.
struct Downstream<'a, S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    from_target: OwnedReadHalf,
    controls: mpsc::Receiver<Control<S>>,
    binary: &'a AtomicBool,
    traffic: &'a Traffic,
    config: &'a SessionConfig,
    framer: Framer,
}

/// Where downstream stands after sending.
enum Sent {
    Ok,
    /// The client closed first: tungstenite refuses data after that.
    ClientClosedFirst(Message),
    Failed(WsError),
    /// The client took nothing for the write timeout.
    Stalled,
}

impl<S> Downstream<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn run(mut self) -> Option<Ending> {
        loop {
            tokio::select! {
                biased;
                control = self.controls.recv() => match control {
                    Some(Control::Ping) => match self.send(Message::Ping(Default::default())).await {
                        Sent::Failed(error) => return Some(client_lost(error)),
                        Sent::Stalled => return Some(self.stalled()),
                        Sent::Ok | Sent::ClientClosedFirst(_) => {}
                    },
                    Some(Control::Close(code, reason)) => {
                        return Some(self.close(code, reason).await);
                    }
                    Some(Control::ClientClosed(stream, code)) => {
                        return Some(self.after_client_close(stream, code, None).await);
                    }
                    // Upstream ended on its own (the client is gone).
                    None => return None,
                },
                ready = self.from_target.readable() => {
                    if let Err(error) = ready {
                        return Some(self.target_lost(error).await);
                    }
                    // The buffer is taken only once there is something to
                    // read, so an idle session holds none.
                    let mut input = Vec::with_capacity(self.config.read_size);
                    match read_ready(&mut self.from_target, &mut input).await {
                        Some(Ok(0)) => return Some(self.target_closed().await),
                        Some(Ok(_)) => {}
                        None => continue,
                        Some(Err(error)) => return Some(self.target_lost(error).await),
                    }
                    let mut payloads = Vec::new();
                    self.framer.frame(self.kind(), &input, &mut payloads);
                    for payload in payloads {
                        match self.send(message_of(payload)).await {
                            Sent::Ok => {}
                            Sent::ClientClosedFirst(unsent) => {
                                let stream = self.wait_for_returned_stream().await;
                                return Some(match stream {
                                    Some((stream, code)) => self.after_client_close(stream, code, Some(unsent)).await,
                                    None => Ending { code: None, reason: String::from("el cliente se desconectó") },
                                });
                            }
                            Sent::Failed(error) => return Some(client_lost(error)),
                            Sent::Stalled => return Some(self.stalled()),
                        }
                    }
                }
            }
        }
    }

    fn kind(&self) -> Kind {
        if self.binary.load(Ordering::Relaxed) {
            Kind::Binary
        } else {
            Kind::Text
        }
    }

    async fn send(&mut self, message: Message) -> Sent {
        let size = data_len(&message);
        let kept = message.clone();
        // A slow browser holds this send (backpressure); one that has not
        // taken anything for the write timeout is gone or stuck.
        match timeout(self.config.write_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => {
                self.traffic.down.fetch_add(size, Ordering::Relaxed);
                Sent::Ok
            }
            Ok(Err(WsError::Protocol(ProtocolError::SendAfterClosing))) => {
                Sent::ClientClosedFirst(kept)
            }
            Ok(Err(error)) => Sent::Failed(error),
            Err(_elapsed) => Sent::Stalled,
        }
    }

    fn stalled(&self) -> Ending {
        Ending {
            code: None,
            reason: format!(
                "el cliente no leyó nada en {} s",
                self.config.write_timeout.as_secs()
            ),
        }
    }

    /// The target closed: deliver what is held, then close 1000.
    async fn target_closed(mut self) -> Ending {
        let mut payloads = Vec::new();
        self.framer.finish(&mut payloads);
        for payload in payloads {
            match self.send(message_of(payload)).await {
                Sent::Ok => {}
                Sent::ClientClosedFirst(_) | Sent::Failed(_) | Sent::Stalled => break,
            }
        }
        self.close(
            CloseCode::Normal,
            String::from("el servidor cerró la conexión"),
        )
        .await
    }

    async fn target_lost(self, error: io::Error) -> Ending {
        let reason = format!(
            "se perdió la conexión con el servidor {}: {}",
            self.config.target,
            describe_io(&error)
        );
        self.close(CloseCode::Error, reason).await
    }

    async fn close(mut self, code: CloseCode, reason: String) -> Ending {
        let frame = CloseFrame {
            code,
            reason: fit_close_reason(&reason).into(),
        };
        let closing = self.sink.send(Message::Close(Some(frame)));
        let _ = timeout(self.config.close_grace, closing).await;
        Ending {
            code: Some(code.into()),
            reason,
        }
    }

    /// Upstream hands its half over right after it reads the client's close;
    /// waits for it, briefly.
    async fn wait_for_returned_stream(
        &mut self,
    ) -> Option<(SplitStream<WebSocketStream<S>>, Option<u16>)> {
        let deadline = Instant::now() + self.config.close_grace;
        loop {
            match timeout_at(deadline, self.controls.recv()).await {
                Ok(Some(Control::ClientClosed(stream, code))) => return Some((stream, code)),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The client sent its close. tungstenite has queued the answering close
    /// and refuses data from now on, so the target's remaining output (for
    /// at most the grace period) is written as frames straight to the
    /// connection, and only then is the queued close flushed.
    async fn after_client_close(
        mut self,
        stream: SplitStream<WebSocketStream<S>>,
        code: Option<u16>,
        unsent: Option<Message>,
    ) -> Ending {
        let ending = Ending {
            code,
            reason: String::from("el cliente cerró la sesión"),
        };
        let Ok(mut ws) = self.sink.reunite(stream) else {
            return ending;
        };
        let deadline = Instant::now() + self.config.close_grace;
        let mut delivered: u64 = 0;
        let mut frames = Vec::new();
        if let Some(message) = unsent {
            delivered += data_len(&message);
            push_frame(message, &mut frames);
        }
        loop {
            if !frames.is_empty() {
                let written = timeout_at(deadline, ws.get_mut().write_all(&frames)).await;
                if !matches!(written, Ok(Ok(()))) {
                    break;
                }
                frames.clear();
            }
            let mut input = Vec::with_capacity(self.config.read_size);
            let read = timeout_at(deadline, async {
                loop {
                    self.from_target.readable().await?;
                    match self.from_target.try_read_buf(&mut input) {
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                        other => return other,
                    }
                }
            })
            .await;
            let mut payloads = Vec::new();
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                    self.framer.finish(&mut payloads);
                    for payload in payloads {
                        let message = message_of(payload);
                        delivered += data_len(&message);
                        push_frame(message, &mut frames);
                    }
                    let _ = timeout_at(deadline, ws.get_mut().write_all(&frames)).await;
                    break;
                }
                Ok(Ok(_)) => {
                    let kind = if self.binary.load(Ordering::Relaxed) {
                        Kind::Binary
                    } else {
                        Kind::Text
                    };
                    self.framer.frame(kind, &input, &mut payloads);
                    for payload in payloads {
                        let message = message_of(payload);
                        delivered += data_len(&message);
                        push_frame(message, &mut frames);
                    }
                }
            }
        }
        self.traffic.down.fetch_add(delivered, Ordering::Relaxed);
        // Flushes the close answer tungstenite queued. (The inherent
        // `WebSocketStream::close` would try to send a new close frame,
        // which tungstenite refuses once the peer has closed.)
        let closed = timeout(self.config.close_grace, SinkExt::close(&mut ws)).await;
        debug!("entregados {delivered} bytes tras el cierre del cliente ({closed:?})");
        ending
    }
}

fn client_lost(error: WsError) -> Ending {
    let reason = match error {
        WsError::Io(error) => format!("error con el cliente: {}", describe_io(&error)),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            String::from("el cliente se desconectó")
        }
        other => format!("error con el cliente: {other}"),
    };
    Ending { code: None, reason }
}

fn message_of(payload: Payload) -> Message {
    match payload {
        Payload::Text(text) => Message::Text(text.into()),
        Payload::Binary(bytes) => Message::Binary(bytes.into()),
    }
}

fn data_len(message: &Message) -> u64 {
    match message {
        Message::Text(text) => text.len() as u64,
        Message::Binary(bytes) => bytes.len() as u64,
        _ => 0,
    }
}

/// Appends `message` as one final, unmasked server frame.
fn push_frame(message: Message, out: &mut Vec<u8>) {
    let frame = match message {
        Message::Text(text) => Frame::message(text, OpCode::Data(Data::Text), true),
        Message::Binary(bytes) => Frame::message(bytes, OpCode::Data(Data::Binary), true),
        _ => return,
    };
    // Formatting into a Vec cannot fail.
    let _ = frame.format(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_in_a_control_frame() {
        let long = "ñ".repeat(100);
        let fitted = fit_close_reason(&long);
        assert!(fitted.len() <= 123);
        assert_eq!(fitted.len(), 122);
        assert_eq!(fit_close_reason("corto"), "corto");
    }
}
