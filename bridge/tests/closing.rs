//! Closing, in the interleavings where it races. A tokio-tungstenite
//! client reports any frame after the bridge's Close (RFC 6455 §5.5.1:
//! after sending a Close an endpoint sends no more data). The racy cases
//! run [`REPEAT`] times each, in milliseconds.
//!
//! "The bridge is blocked mid-send to a client that stopped reading" is an
//! event here, not an assumption after a sleep: those rounds run one
//! session ([`bridge::session::run`]) over an in-memory connection
//! (`tokio::io::duplex`, a few KiB of room) whose bridge end reports the
//! first write refused for lack of room (`support::ReportsBlocking`). A real
//! socket's buffers are hundreds of KiB deep and the moment they fill
//! cannot be seen from outside; the duplex makes the moment exact. The
//! target is a real TCP stand-in, as the session always dials one.
//! The other cases run the whole bridge (`bridge::serve`) over loopback.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use bridge::session::SessionConfig;
use support::*;
use testkit::Scrape;

/// How many times each racy case runs.
const REPEAT: usize = 20;

/// A session's settings for `target`, with a close grace in milliseconds.
fn session_config(target: SocketAddr) -> SessionConfig {
    let mut config = SessionConfig::for_target(target.to_string());
    config.close_grace = Duration::from_millis(500);
    config
}

/// The client's Close with code 4000.
fn close_4000() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Library(4000),
        reason: "adiós".into(),
    }))
}

/// [`REPEAT`] rounds against a target that floods: the client sends
/// `hola\n` and then `more`, reads nothing until the bridge is blocked
/// sending to it, closes with 4000, then reads to the end. The bridge's
/// Close must answer the client's, with nothing after it, and the target
/// must have received the line.
async fn close_while_blocked_rounds(more: &[Message]) {
    let mut target = flooding_target(64 * 1024 * 1024).await;
    let (registry, metrics) = registry();
    for round in 0..REPEAT {
        let config = session_config(target.addr);
        let mut session = InMemory::start(config, Arc::clone(&metrics)).await;
        let ws = &mut session.client;
        ws.feed(Message::text("hola\n")).await.unwrap();
        for message in more {
            ws.feed(message.clone()).await.unwrap();
        }
        ws.flush().await.unwrap();
        session.blocking.wait().await;
        ws.send(close_4000()).await.unwrap();
        let read = read_to_the_end(ws).await;
        assert_eq!(read.code(), Some(CloseCode::Library(4000)), "round {round}");
        assert!(read.data > 0, "round {round}: the flood was under way");
        let got = within(PATIENCE, "the target's copy", target.received.recv()).await;
        assert_eq!(got.as_deref(), Some(&b"hola\n"[..]), "round {round}");
        session.ended(PATIENCE).await;
    }
    // Every round ended as the client's close (4000 is counted as
    // `other`); the log's wording of it is `Ending`'s unit test.
    let scrape = Scrape {
        text: registry.render(),
    };
    let closed = [("code", "other"), ("side", "client")];
    let ended = scrape.value("bridge_sessions_ended_total", &closed);
    assert_eq!(ended, REPEAT as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_closes_while_the_bridge_is_blocked_sending_to_it() {
    close_while_blocked_rounds(&[]).await;
}

#[tokio::test]
async fn a_client_close_is_logged_with_its_code() {
    let (log, _capturing) = Log::capture();
    let target = flooding_target(64 * 1024 * 1024).await;
    let mut session = InMemory::start(session_config(target.addr), Arc::default()).await;
    session.blocking.wait().await;
    session.client.send(close_4000()).await.unwrap();
    read_to_the_end(&mut session.client).await;
    session.ended(PATIENCE).await;
    log.wait_for("sesión cerrada: 4000 «el cliente cerró la sesión»")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_closes_while_answers_to_its_empty_messages_wait() {
    // Empty messages are answered by the bridge's target → client pump,
    // which is blocked sending the flood: the client → target pump waits
    // for it, with the client's Close behind the empty messages.
    close_while_blocked_rounds(&vec![Message::text(""); 10]).await;
}

/// Both sides close at about the same time, [`REPEAT`] times: the target
/// shuts its side with megabytes still on their way while the client,
/// blocked, sends its close; `target_first` says which of the two goes
/// first. Either side's close is a right answer; two closes, or data after
/// one, are not.
async fn both_close(target_first: bool) {
    let mut target = flooding_target(64 * 1024 * 1024).await;
    for round in 0..REPEAT {
        let mut session = InMemory::start(session_config(target.addr), Arc::default()).await;
        let shut = within(PATIENCE, "the target's connection", target.shut.recv())
            .await
            .unwrap();
        session.blocking.wait().await;
        if target_first {
            shut.notify_one();
            session.client.send(close_4000()).await.unwrap();
        } else {
            session.client.send(close_4000()).await.unwrap();
            shut.notify_one();
        }
        let read = read_to_the_end(&mut session.client).await;
        let code = read.code();
        assert!(
            matches!(code, Some(CloseCode::Library(4000) | CloseCode::Normal)),
            "round {round}: {code:?}"
        );
        session.ended(PATIENCE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_closes_while_the_target_is_closing() {
    both_close(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_closes_while_the_client_is_closing() {
    both_close(false).await;
}

#[tokio::test]
async fn stopping_while_sends_are_blocked_sends_1001_after_the_frame_in_flight() {
    let target = flooding_target(64 * 1024 * 1024).await;
    for round in 0..REPEAT {
        let mut config = session_config(target.addr);
        config.close_grace = Duration::from_secs(2);
        let mut session = InMemory::start(config, Arc::default()).await;
        session.blocking.wait().await;
        // From here the session's clock is tokio's paused one: the client
        // below takes its time (1.5 s, within the 2 s close grace) in no
        // real time. Nothing it waits for crosses a real socket: the
        // stop ends the pumps (and the target connection) at once, and the
        // client's connection is in memory.
        tokio::time::pause();
        session.stop.cancel();
        let started = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let read = read_to_the_end(&mut session.client).await;
        assert_eq!(read.code(), Some(CloseCode::Away), "round {round}");
        let reason = read.close.map(|frame| frame.reason.to_string());
        assert_eq!(reason.as_deref(), Some("el puente se detiene"));
        session.ended(PATIENCE).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        tokio::time::resume();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_and_its_close_sent_at_once_reach_the_target_and_the_close_is_exact() {
    // As `printf 'hola\n' | websocat …` does: a message, its close at once,
    // then reading until the end.
    let mut target = flooding_target(0).await;
    let bridge = Bridge::to(target.addr).await;
    for round in 0..REPEAT {
        let mut ws = bridge.connect().await;
        ws.feed(Message::text("hola\n")).await.unwrap();
        ws.feed(Message::Close(None)).await.unwrap();
        ws.flush().await.unwrap();
        let read = read_to_the_end(&mut ws).await;
        assert!(read.close.is_none(), "round {round}: the close is echoed");
        let got = within(PATIENCE, "the target's copy", target.received.recv()).await;
        assert_eq!(got.as_deref(), Some(&b"hola\n"[..]), "round {round}");
    }
}

/// Sends `first` and `second` in one write.
async fn send_together(ws: &mut Ws, first: Frame, second: Frame) {
    ws.feed(Message::Frame(first)).await.unwrap();
    ws.feed(Message::Frame(second)).await.unwrap();
    ws.flush().await.unwrap();
}

fn text_frame(payload: &[u8]) -> Frame {
    Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true)
}

#[tokio::test]
async fn invalid_utf8_in_a_text_message_closes_1007_after_the_answer_before_it() {
    let (log, _capturing) = Log::capture();
    let (target, _accepting) = uppercase_target().await;
    let bridge = Bridge::to(target).await;
    let mut ws = bridge.connect().await;
    send_together(&mut ws, text_frame(b"hola\n"), text_frame(b"adi\xF3s\n")).await;
    let answer = within(PATIENCE, "the answer", ws.next()).await;
    assert!(
        matches!(&answer, Some(Ok(Message::Text(text))) if text.as_str() == "HOLA\n"),
        "{answer:?}"
    );
    let read = read_to_the_end(&mut ws).await;
    assert_eq!(read.code(), Some(CloseCode::Invalid));
    log.wait_for("1007 «el texto recibido no es UTF-8 válido»")
        .await;
}

#[tokio::test]
async fn a_valid_message_before_a_protocol_error_is_still_answered_then_1002() {
    let (target, _accepting) = uppercase_target().await;
    let bridge = Bridge::to(target).await;
    let mut ws = bridge.connect().await;
    let mut bad = text_frame(b"reservado\n");
    bad.header_mut().rsv1 = true;
    send_together(&mut ws, text_frame(b"hola\n"), bad).await;
    let answer = within(PATIENCE, "the answer", ws.next()).await;
    assert!(
        matches!(&answer, Some(Ok(Message::Text(text))) if text.as_str() == "HOLA\n"),
        "{answer:?}"
    );
    let read = read_to_the_end(&mut ws).await;
    assert_eq!(read.code(), Some(CloseCode::Protocol));
}
