//! The client → target pump: the payload of every text and binary message,
//! written verbatim to the target, in order.
//!
//! An empty message has no bytes for the target: the other pump answers it
//! with an empty message of its own.
//!
//! It ends when the client closes, fails or breaks the protocol, or when the
//! target stops taking bytes. It sends nothing to the client: tungstenite
//! answers pings and the client's Close by itself, and every other Close is
//! sent by the session once both pumps have stopped.

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::ending::Ending;
use super::shared::Shared;
use super::{SessionConfig, Traffic};
use crate::framing::Kind;

/// How the client → target direction stopped.
#[derive(Debug)]
pub enum Stop {
    /// End the session now with this ending.
    Now(Ending),
    /// The client broke the protocol: what it sent before the bad frame is
    /// already with the target, so let the target's answers to it reach
    /// the client (the target's write half is shut), then end with this.
    AfterTarget(Ending),
}

/// Runs until the client → target direction stops. Dropping `to_target`
/// on the way out shuts the target's write half, so the target sees the
/// end of its input.
pub async fn pump<S>(
    from_client: &mut SplitStream<WebSocketStream<S>>,
    mut to_target: OwnedWriteHalf,
    shared: &Shared,
    config: &SessionConfig,
    traffic: &Traffic<'_>,
) -> Stop
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = match from_client.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => return stop_for(error, config),
            None => return Stop::Now(Ending::ClientVanished),
        };
        shared.heard_from_client();
        let (kind, payload) = match message {
            Message::Text(text) => (Kind::Text, text.into()),
            Message::Binary(bytes) => (Kind::Binary, bytes),
            Message::Close(frame) => {
                return Stop::Now(Ending::ClientClosed(frame.map(|frame| frame.code.into())))
            }
            // Pongs only tell the client is alive; tungstenite answers pings.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        shared.set_kind(kind);
        if payload.is_empty() {
            traffic.add_up(kind, 0);
            shared.ask_empty_answer(kind).await;
            continue;
        }
        // A target that stops reading holds this write: backpressure.
        if let Err(error) = to_target.write_all(&payload).await {
            return Stop::Now(Ending::TargetLost {
                target: config.target.clone(),
                error,
            });
        }
        traffic.add_up(kind, payload.len());
    }
}

/// How a read error from the client ends this direction.
fn stop_for(error: WsError, config: &SessionConfig) -> Stop {
    match error {
        WsError::Capacity(_) => Stop::AfterTarget(Ending::TooBig {
            max: config.max_message,
        }),
        WsError::Utf8(_) => Stop::AfterTarget(Ending::InvalidText),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed => Stop::Now(Ending::ClientVanished),
        WsError::Protocol(violation) => {
            Stop::AfterTarget(Ending::ProtocolViolation(violation.to_string()))
        }
        WsError::Io(error) => Stop::Now(Ending::ClientFailed(console::describe_io(&error))),
        other => Stop::Now(Ending::ClientFailed(other.to_string())),
    }
}
