//! The target → client pump: bytes as the target sends them, framed into
//! messages of the type the client last used (see [`crate::framing`]), and
//! a ping for a client that has gone silent; and the answer to an empty
//! message, which is empty too.
//!
//! It is the only writer of data to the WebSocket, and it never sends a
//! Close: the session does, once both pumps have stopped, so that whatever
//! ends the session, the Close is the last frame out.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::Poll;

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::io::poll_read_buf;

use super::ending::Ending;
use super::shared::Shared;
use super::{SessionConfig, Traffic};
use crate::framing::{Framer, Kind, Payload};

type ToClient<S> = SplitSink<WebSocketStream<S>, Message>;

/// Runs until the target closes (everything it sent delivered), the target
/// connection fails, or the client stops taking messages or answering.
pub async fn pump<S>(
    to_client: &mut ToClient<S>,
    mut from_target: OwnedReadHalf,
    shared: &Shared,
    config: &SessionConfig,
    traffic: &Traffic<'_>,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framer = Framer::new();
    let mut keepalive = Keepalive::default();
    // One alarm for the session, moved only when it goes off.
    let alarm = sleep_until(Instant::now() + config.ping_interval);
    tokio::pin!(alarm);
    loop {
        tokio::select! {
            biased;
            // First: a target that never stops sending keeps `readable`
            // ready, and the client → target pump waits for this.
            kind = poll_fn(|cx| shared.poll_take_empty(cx)) => {
                let answer = match kind {
                    Kind::Text => Message::Text(Default::default()),
                    Kind::Binary => Message::Binary(Default::default()),
                };
                if let Err(ending) = send(to_client, answer, config).await {
                    return ending;
                }
                traffic.add_down(kind, 0);
            }
            ready = from_target.readable() => {
                if let Err(error) = ready {
                    return target_lost(config, error);
                }
                // Taken only once there is something to read, so an idle
                // session holds no buffer (the payloads' list included).
                let mut input = Vec::with_capacity(config.read_size);
                let mut payloads = Vec::new();
                match read_ready(&mut from_target, &mut input).await {
                    None => continue,
                    Some(Ok(0)) => {
                        framer.finish(&mut payloads);
                        if let Err(ending) = deliver(to_client, &mut payloads, config, traffic).await {
                            return ending;
                        }
                        return Ending::TargetClosed;
                    }
                    Some(Ok(_)) => framer.frame_owned(shared.kind(), input, &mut payloads),
                    Some(Err(error)) => return target_lost(config, error),
                }
                if let Err(ending) = deliver(to_client, &mut payloads, config, traffic).await {
                    return ending;
                }
            }
            () = &mut alarm => {
                let now = Instant::now();
                match keepalive.check(shared.last_heard(), now, config) {
                    Check::Heard(due) => alarm.as_mut().reset(due),
                    Check::PingNow => {
                        if let Err(ending) = send(to_client, Message::Ping(Default::default()), config).await {
                            return ending;
                        }
                        alarm.as_mut().reset(now + config.ping_interval);
                    }
                    Check::Silent => return Ending::ClientSilent(config.ping_interval),
                }
            }
        }
    }
}

/// Sends every payload in order, emptying `payloads`.
async fn deliver<S>(
    to_client: &mut ToClient<S>,
    payloads: &mut Vec<Payload>,
    config: &SessionConfig,
    traffic: &Traffic<'_>,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for payload in payloads.drain(..) {
        let size = payload.as_bytes().len();
        let (kind, message) = match payload {
            Payload::Text(text) => (Kind::Text, Message::Text(text.into())),
            Payload::Binary(bytes) => (Kind::Binary, Message::Binary(bytes.into())),
        };
        send(to_client, message, config).await?;
        traffic.add_down(kind, size);
    }
    Ok(())
}

/// Sends one message. A slow client holds this send (backpressure); one
/// that has taken nothing for the write timeout is stuck or gone.
async fn send<S>(
    to_client: &mut ToClient<S>,
    message: Message,
    config: &SessionConfig,
) -> Result<(), Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut sending = pin!(to_client.send(message));
    // Most sends finish at once. Only one that has to wait gets a timer,
    // boxed: it costs a session nothing while it is idle.
    let sent = match poll_fn(|cx| Poll::Ready(sending.as_mut().poll(cx))).await {
        Poll::Ready(sent) => sent,
        Poll::Pending => match Box::pin(timeout(config.write_timeout, sending)).await {
            Ok(sent) => sent,
            Err(_elapsed) => return Err(Ending::ClientStalled(config.write_timeout)),
        },
    };
    sent.map_err(|error| Ending::ClientFailed(error.to_string()))
}

fn target_lost(config: &SessionConfig, error: io::Error) -> Ending {
    Ending::TargetLost {
        target: config.target.clone(),
        error,
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

/// Whether a silent client is pinged, and dropped if the ping goes
/// unanswered: silent for one interval, pinged; nothing heard since the
/// ping for another interval, gone.
#[derive(Debug, Default)]
struct Keepalive {
    pinged_at: Option<Instant>,
}

/// What the keepalive alarm decided.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// The client spoke lately: look again at this instant.
    Heard(Instant),
    /// Silent for an interval: ping it.
    PingNow,
    /// Nothing heard since the ping.
    Silent,
}

impl Keepalive {
    fn check(&mut self, last_heard: Instant, now: Instant, config: &SessionConfig) -> Check {
        if let Some(pinged_at) = self.pinged_at.take() {
            if last_heard < pinged_at {
                return Check::Silent;
            }
        }
        let due = last_heard + config.ping_interval;
        if due > now {
            Check::Heard(due)
        } else {
            self.pinged_at = Some(now);
            Check::PingNow
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> SessionConfig {
        SessionConfig {
            ping_interval: Duration::from_secs(10),
            ..SessionConfig::for_target("127.0.0.1:5000")
        }
    }

    #[test]
    fn a_silent_client_is_pinged_then_given_up_and_an_answer_starts_over() {
        let config = config();
        let start = Instant::now();
        let mut keepalive = Keepalive::default();
        let later = |s| start + Duration::from_secs(s);
        assert_eq!(
            keepalive.check(later(5), later(10), &config),
            Check::Heard(later(15))
        );
        assert_eq!(
            keepalive.check(later(5), later(15), &config),
            Check::PingNow
        );
        // The client answered the ping (a pong at 16 s).
        assert_eq!(
            keepalive.check(later(16), later(25), &config),
            Check::Heard(later(26))
        );
        assert_eq!(
            keepalive.check(later(16), later(26), &config),
            Check::PingNow
        );
        assert_eq!(
            keepalive.check(later(16), later(36), &config),
            Check::Silent
        );
    }
}
