//! Closing, in the interleavings where it races: the real `bridge` binary
//! on a free port, stand-in targets, and a tokio-tungstenite client that
//! reports any frame after the bridge's Close (RFC 6455 §5.5.1: after
//! sending a Close an endpoint sends no more data). The racy cases run
//! [`REPEAT`] times each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use testkit::{bridge_at, within, Running, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How many times each racy case runs.
const REPEAT: usize = 20;

/// The bridge binary of this package on a free port in front of `target`.
async fn bridge_to(target: SocketAddr, extra: &[&str]) -> Running {
    bridge_at(env!("CARGO_BIN_EXE_bridge"), target, extra).await
}

async fn connect(bridge: &Running) -> Ws {
    testkit::websocket(bridge.addr).await
}

/// A stand-in target that floods every connection.
struct Flood {
    addr: SocketAddr,
    /// What each connection received, once it ended.
    received: mpsc::UnboundedReceiver<Vec<u8>>,
    /// For each new connection: notify it to shut its side at once.
    shut: mpsc::UnboundedReceiver<Arc<Notify>>,
}

/// A target that, on every connection, writes up to `limit` bytes as fast
/// as the bridge takes them, then shuts its side (at once if
/// `shut_when_done`, otherwise once its input ends), or as soon as it is
/// told to.
async fn flooding_target(limit: usize, shut_when_done: bool) -> Flood {
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
                let told_to_shut = tokio::select! {
                    () = flooding => false,
                    () = told.notified() => true,
                };
                if told_to_shut || shut_when_done {
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

/// Everything the client read up to and including the bridge's Close, and
/// how the connection ended after it.
struct Read {
    data: usize,
    close: Option<CloseFrame>,
}

/// Reads to the bridge's Close, then to the end of the connection, and
/// fails the test on any frame after the Close.
async fn read_to_the_end(ws: &mut Ws) -> Read {
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

fn code_of(read: &Read) -> Option<CloseCode> {
    read.close.as_ref().map(|frame| frame.code)
}

/// The client, having read nothing while the bridge filled the socket
/// (so the bridge is blocked mid-send), sends its Close with code 4000.
async fn close_while_blocked(ws: &mut Ws) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Library(4000),
        reason: "adiós".into(),
    })))
    .await
    .unwrap();
}

/// [`REPEAT`] rounds against a target that floods: the client sends
/// `hola\n` and then `more`, reads nothing until the bridge is blocked
/// sending to it, closes with 4000, then reads to the end. The bridge's
/// Close must answer the client's, with nothing after it, and the target
/// must have received the line. Returns the bridge, for its log.
async fn close_while_blocked_rounds(more: &[Message]) -> Running {
    let mut target = flooding_target(64 * 1024 * 1024, false).await;
    let bridge = bridge_to(target.addr, &[]).await;
    for round in 0..REPEAT {
        let mut ws = connect(&bridge).await;
        ws.feed(Message::text("hola\n")).await.unwrap();
        for message in more {
            ws.feed(message.clone()).await.unwrap();
        }
        ws.flush().await.unwrap();
        close_while_blocked(&mut ws).await;
        let read = read_to_the_end(&mut ws).await;
        assert_eq!(
            code_of(&read),
            Some(CloseCode::Library(4000)),
            "round {round}"
        );
        assert!(read.data > 0, "round {round}: the flood was under way");
        let got = within(PATIENCE, "the target's copy", target.received.recv()).await;
        assert_eq!(got.as_deref(), Some(&b"hola\n"[..]), "round {round}");
    }
    bridge
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_closes_while_the_bridge_is_blocked_sending_to_it() {
    let bridge = close_while_blocked_rounds(&[]).await;
    bridge
        .wait_for_log("sesión cerrada: 4000 «el cliente cerró la sesión»")
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
/// which has read nothing, sends its close; `target_first` says which of
/// the two goes first. Either side's close is a right answer; two closes,
/// or data after one, are not.
async fn both_close(target_first: bool) {
    let mut target = flooding_target(64 * 1024 * 1024, false).await;
    let bridge = bridge_to(target.addr, &[]).await;
    for round in 0..REPEAT {
        let mut ws = connect(&bridge).await;
        let shut = within(PATIENCE, "the target's connection", target.shut.recv())
            .await
            .unwrap();
        if target_first {
            tokio::time::sleep(Duration::from_millis(300)).await;
            shut.notify_one();
            close_while_blocked(&mut ws).await;
        } else {
            close_while_blocked(&mut ws).await;
            shut.notify_one();
        }
        let read = read_to_the_end(&mut ws).await;
        let code = code_of(&read);
        assert!(
            matches!(code, Some(CloseCode::Library(4000) | CloseCode::Normal)),
            "round {round}: {code:?}"
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_sends_are_blocked_sends_1001_after_the_frame_in_flight() {
    let target = flooding_target(64 * 1024 * 1024, false).await;
    for round in 0..REPEAT {
        let mut bridge = bridge_to(target.addr, &["--close-grace", "5"]).await;
        let mut ws = connect(&bridge).await;
        // Reading nothing: the bridge blocks mid-send.
        tokio::time::sleep(Duration::from_millis(200)).await;
        bridge.signal("TERM");
        // A client that takes its time: the Close must wait for it, within
        // the close grace period, right behind the frame in flight.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let read = read_to_the_end(&mut ws).await;
        assert_eq!(code_of(&read), Some(CloseCode::Away), "round {round}");
        let reason = read.close.map(|frame| frame.reason.to_string());
        assert_eq!(reason.as_deref(), Some("el puente se detiene"));
        assert!(bridge.wait_exit(Duration::from_secs(8)).await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_and_its_close_sent_at_once_reach_the_target_and_the_close_is_exact() {
    // As `printf 'hola\n' | websocat …` does: a message, its close at once,
    // then reading until the end.
    let mut target = flooding_target(0, false).await;
    let bridge = bridge_to(target.addr, &[]).await;
    for round in 0..REPEAT {
        let mut ws = connect(&bridge).await;
        ws.feed(Message::text("hola\n")).await.unwrap();
        ws.feed(Message::Close(None)).await.unwrap();
        ws.flush().await.unwrap();
        let read = read_to_the_end(&mut ws).await;
        assert!(read.close.is_none(), "round {round}: the close is echoed");
        let got = within(PATIENCE, "the target's copy", target.received.recv()).await;
        assert_eq!(got.as_deref(), Some(&b"hola\n"[..]), "round {round}");
    }
}

/// A target that answers each connection's input in uppercase (as
/// `servidor` does), then closes once its input ends.
async fn uppercase_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0; 4096];
                while let Ok(read @ 1..) = stream.read(&mut buffer).await {
                    let answer = buffer[..read].to_ascii_uppercase();
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
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
    let bridge = bridge_to(uppercase_target().await, &[]).await;
    let mut ws = connect(&bridge).await;
    send_together(&mut ws, text_frame(b"hola\n"), text_frame(b"adi\xF3s\n")).await;
    let answer = within(PATIENCE, "the answer", ws.next()).await;
    assert!(
        matches!(&answer, Some(Ok(Message::Text(text))) if text.as_str() == "HOLA\n"),
        "{answer:?}"
    );
    let read = read_to_the_end(&mut ws).await;
    assert_eq!(code_of(&read), Some(CloseCode::Invalid));
    bridge
        .wait_for_log("1007 «el texto recibido no es UTF-8 válido»")
        .await;
}

#[tokio::test]
async fn a_valid_message_before_a_protocol_error_is_still_answered_then_1002() {
    let bridge = bridge_to(uppercase_target().await, &[]).await;
    let mut ws = connect(&bridge).await;
    let mut bad = text_frame(b"reservado\n");
    bad.header_mut().rsv1 = true;
    send_together(&mut ws, text_frame(b"hola\n"), bad).await;
    let answer = within(PATIENCE, "the answer", ws.next()).await;
    assert!(
        matches!(&answer, Some(Ok(Message::Text(text))) if text.as_str() == "HOLA\n"),
        "{answer:?}"
    );
    let read = read_to_the_end(&mut ws).await;
    assert_eq!(code_of(&read), Some(CloseCode::Protocol));
}
