//! The bridge's protocol, end to end over loopback: `bridge::serve` runs
//! in the test process in front of an in-process `servidor`, stand-in
//! targets that misbehave on purpose, or the tutorial's Python server;
//! a tokio-tungstenite client drives it. Budgets are milliseconds.
//!
//! What belongs to the process (flags, signals, exit codes, the log's
//! format) is in `process.rs`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use bridge::origin::OriginPolicy;
use support::*;

/// Reads until the close frame, returning the data before it and the close.
async fn read_to_close(ws: &mut Ws) -> (Vec<u8>, Option<(CloseCode, String)>) {
    let mut data = Vec::new();
    loop {
        match within(PATIENCE, "the close", ws.next()).await {
            Some(Ok(Message::Close(frame))) => {
                return (data, frame.map(|f| (f.code, f.reason.to_string())));
            }
            Some(Ok(message)) => data.extend_from_slice(&message.into_data()),
            Some(Err(error)) => panic!("{error} after {} bytes", data.len()),
            None => return (data, None),
        }
    }
}

#[tokio::test]
async fn text_and_binary_round_trips() {
    let (log, _capturing) = Log::capture();
    let bridge = Bridge::to(servidor_in_process().await).await;
    let mut ws = bridge.connect().await;

    ws.send(Message::text("hola, ñandú\n")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("HOLA, ÑANDÚ\n"));

    ws.send(Message::binary(&b"adi\xC3\xB3s\n"[..]))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Message::binary("ADIÓS\n".as_bytes()));

    // Back to text: answers follow the type the client last used.
    ws.send(Message::text("otra vez\n")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("OTRA VEZ\n"));
    log.wait_for("sesión abierta desde 127.0.0.1:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_message_is_answered_with_an_empty_one_of_its_type() {
    let bridge = Bridge::to(servidor_in_process().await).await;
    let mut ws = bridge.connect().await;

    ws.send(Message::text("")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(""));
    ws.send(Message::binary(Vec::new())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(Vec::new()));

    // Many at once, read only afterwards, with text between them: every
    // empty one answered, and the bytes unchanged.
    const EMPTIES: usize = 1000;
    for n in 0..EMPTIES {
        ws.feed(Message::text("")).await.unwrap();
        if n % 100 == 0 {
            ws.feed(Message::text("sí\n")).await.unwrap();
        }
    }
    ws.flush().await.unwrap();
    let (mut empties, mut bytes) = (0, Vec::new());
    while empties < EMPTIES || bytes.len() < 10 * "SÍ\n".len() {
        match next(&mut ws).await {
            Message::Text(text) if text.is_empty() => empties += 1,
            Message::Text(text) => bytes.extend_from_slice(text.as_bytes()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(empties, EMPTIES);
    assert_eq!(bytes, "SÍ\n".repeat(10).into_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_message_is_answered_while_the_target_floods() {
    // A target that never stops sending keeps its socket readable: the
    // answer to the empty message must not wait behind it.
    let target = target_that(|mut stream| async move {
        let chunk = vec![b'x'; 64 * 1024];
        while stream.write_all(&chunk).await.is_ok() {}
    })
    .await;
    let bridge = Bridge::to(target).await;
    let mut ws = bridge.connect().await;
    ws.send(Message::text("")).await.unwrap();
    let mut flooded = 0;
    loop {
        match next(&mut ws).await {
            Message::Text(text) if text.is_empty() => break,
            Message::Text(text) => flooded += text.len(),
            other => panic!("{other:?}"),
        }
        assert!(flooded < 256 << 20, "no answer after {flooded} bytes");
    }
}

#[tokio::test]
async fn a_character_written_one_byte_at_a_time_arrives_whole() {
    let target = target_that(|mut stream| async move {
        for byte in "😀".as_bytes() {
            stream.write_all(&[*byte]).await.unwrap();
            // The pause is the behaviour: each byte reaches the bridge in
            // a read of its own.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Open until the bridge lets go.
        let _ = stream.read_to_end(&mut Vec::new()).await;
    })
    .await;
    let bridge = Bridge::to(target).await;
    let mut ws = bridge.connect().await;
    assert_eq!(next(&mut ws).await, Message::text("😀"));
}

#[tokio::test]
async fn invalid_utf8_arrives_intact_in_a_binary_message() {
    let target = target_that(|mut stream| async move {
        stream.write_all(b"ok \xFF\xFE fin").await.unwrap();
        let _ = stream.read_to_end(&mut Vec::new()).await;
    })
    .await;
    let bridge = Bridge::to(target).await;
    let mut ws = bridge.connect().await;
    let messages = read_bytes(&mut ws, 9).await;
    assert_eq!(bytes_of(&messages), b"ok \xFF\xFE fin");
    assert!(
        messages.contains(&Message::binary(&b"\xFF\xFE"[..])),
        "{messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_message_passes_and_a_bigger_one_is_refused_with_1009() {
    let bridge = Bridge::to(servidor_in_process().await).await;
    let mut ws = bridge.connect().await;
    let mut message = "ñandú straße ".repeat(80_660);
    message.truncate(1024 * 1024 - 1);
    message.push('\n');
    assert_eq!(message.len(), 1024 * 1024);
    let expected = message.to_uppercase();
    ws.send(Message::text(message)).await.unwrap();
    let answer = read_bytes(&mut ws, expected.len()).await;
    assert!(
        bytes_of(&answer) == expected.as_bytes(),
        "the answer differs"
    );

    ws.send(Message::binary(vec![b'x'; 1024 * 1024 + 1]))
        .await
        .unwrap();
    let (_, close) = read_to_close(&mut ws).await;
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, CloseCode::Size);
    assert!(reason.contains("demasiado grande"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_writes_1_mib_then_closes_delivers_it_all_then_1000() {
    let target = target_that(|mut stream| async move {
        stream.write_all(&vec![b'x'; 1024 * 1024]).await.unwrap();
        // Dropped here: closed at once.
    })
    .await;
    let bridge = Bridge::to(target).await;
    let mut ws = bridge.connect().await;
    let (data, close) = read_to_close(&mut ws).await;
    assert_eq!(data.len(), 1024 * 1024);
    assert!(data.iter().all(|&b| b == b'x'));
    assert_eq!(close.expect("a close frame").0, CloseCode::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_closes_while_the_target_still_writes_the_target_gets_everything() {
    // Reads until the bridge shuts its write half, then answers everything
    // it got in pieces, pausing between them (a slow server is the case
    // under test).
    let (received_tx, received_rx) = tokio::sync::oneshot::channel();
    let target = target_that(|mut stream| async move {
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        for piece in received.chunks(1000) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if stream.write_all(&piece.to_ascii_uppercase()).await.is_err() {
                break;
            }
        }
        let _ = received_tx.send(received);
    })
    .await;
    let bridge = Bridge::to(target).await;
    let mut ws = bridge.connect().await;
    let mut sent = Vec::new();
    for n in 0..20 {
        let line = format!("mensaje {n} {}\n", "abc".repeat(100));
        sent.extend_from_slice(line.as_bytes());
        ws.send(Message::text(line)).await.unwrap();
    }
    ws.close(None).await.unwrap();

    // The close is answered at once: what the target sends after the
    // client's close is not delivered (tungstenite sends no data after it).
    let (data, _close) = read_to_close(&mut ws).await;
    let received = within(PATIENCE, "the target's copy", received_rx)
        .await
        .unwrap();
    assert_eq!(received, sent, "the target got everything sent");
    assert!(sent.to_ascii_uppercase().starts_with(&data));
}

#[tokio::test]
async fn a_target_down_closes_1011_with_a_reason_naming_it() {
    let closed = closed_port();
    let target = closed.addr;
    let bridge = Bridge::to(target).await;
    let mut ws = bridge.connect().await;
    let (_, close) = read_to_close(&mut ws).await;
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, CloseCode::Error);
    assert!(reason.contains(&target.to_string()), "{reason}");
    assert!(reason.contains("no se pudo conectar"), "{reason}");

    // Everyone else is still served.
    let mut again = bridge.connect().await;
    let (_, close) = read_to_close(&mut again).await;
    assert_eq!(close.unwrap().0, CloseCode::Error);
}

#[tokio::test]
async fn a_target_reset_closes_1011() {
    let target = target_that(|stream| async move {
        // Closing with unread input makes the kernel reset the
        // connection: wait for input (peeked, so left unread), then close.
        stream.peek(&mut [0u8; 1]).await.unwrap();
        drop(stream);
    })
    .await;
    let bridge = Bridge::to(target).await;
    let mut ws = bridge.connect().await;
    ws.send(Message::text("nadie me lee\n")).await.unwrap();
    let (_, close) = read_to_close(&mut ws).await;
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, CloseCode::Error, "{reason}");
    assert!(reason.contains(&target.to_string()), "{reason}");
}

#[tokio::test]
async fn origins_foreign_refused_own_and_none_and_allowed_accepted() {
    let (log, _capturing) = Log::capture();
    let mut config = fast_config(servidor_in_process().await);
    config.origins = OriginPolicy::new(["https://clase.example"]).unwrap();
    let bridge = Bridge::start(config).await;

    match bridge.connect_from(Some("http://evil.example")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("foreign origin: {:?}", other.map(|_| ())),
    }
    let own = format!("http://{}", bridge.addr);
    for origin in [None, Some(own.as_str()), Some("https://clase.example")] {
        let mut ws = bridge.connect_from(origin).await.unwrap();
        ws.send(Message::text("hola\n")).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text("HOLA\n"), "{origin:?}");
    }
    log.wait_for("origen rechazado: http://evil.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sessions_each_get_their_answers() {
    // Clients, bridge and servidor in one process: 3 descriptors a session.
    netkit::accept::raise_descriptor_limit();
    let mut config = fast_config(servidor_in_process().await);
    // A thousand handshakes at once on a busy machine: the default budget.
    config.handshake_timeout = Duration::from_secs(bridge::Config::HANDSHAKE_TIMEOUT_SECS);
    // A load test from the one address 127.0.0.1: per-client limits off.
    config.max_sessions_per_client = 0;
    config.upgrades_per_client = 0;
    config.max_connections_per_client = 0;
    let bridge = Bridge::start(config).await;
    let addr = bridge.addr;
    let sessions: Vec<_> = (0..1000)
        .map(|n| {
            tokio::spawn(async move {
                let mut ws = testkit::websocket(addr).await;
                for round in 0..3 {
                    let text = format!("sesión {n}, ronda {round}: ñandú\n");
                    ws.send(Message::text(text.clone())).await.unwrap();
                    let mut answer = Vec::new();
                    while answer.last() != Some(&b'\n') {
                        let message = ws.next().await.unwrap().unwrap();
                        answer.extend_from_slice(&message.into_data());
                    }
                    assert_eq!(String::from_utf8(answer).unwrap(), text.to_uppercase());
                }
                ws.close(None).await.unwrap();
            })
        })
        .collect();
    for session in sessions {
        within(PATIENCE, "a session", session).await.unwrap();
    }
}

#[tokio::test]
async fn in_front_of_the_tutorial_servidor_py() {
    let script = testkit::tutorial_program("servidor.py");
    let python =
        testkit::Running::start("python3", &["-u", script.to_str().unwrap(), "0"], &[]).await;
    let bridge = Bridge::to(python.addr).await;
    let mut ws = bridge.connect().await;
    // The tutorial's own client sends no newline; neither does this.
    ws.send(Message::text("Hola")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("HOLA"));
    python.wait_for_log("enviando: HOLA").await;
}

#[tokio::test]
async fn healthz_tells_whether_the_target_accepts_connections() {
    let up = Bridge::to(servidor_in_process().await).await;
    let (status, body) = http_get(up.addr, "/healthz", &[]).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains("acepta conexiones"), "{body}");

    let closed = closed_port();
    let down = Bridge::to(closed.addr).await;
    let (status, body) = http_get(down.addr, "/healthz", &[]).await;
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    assert!(body.contains("no acepta conexiones"), "{body}");
}

#[tokio::test]
async fn past_the_session_limit_the_upgrade_gets_503() {
    let mut config = fast_config(servidor_in_process().await);
    config.max_sessions = 1;
    let bridge = Bridge::start(config).await;
    let _first = bridge.connect().await;
    match bridge.connect_from(None).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("second session: {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_half_sent_handshake_is_dropped() {
    let mut config = fast_config(servidor_in_process().await);
    config.handshake_timeout = Duration::from_millis(100);
    let bridge = Bridge::start(config).await;
    let mut stream = TcpStream::connect(bridge.addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    closed_by_the_bridge(&mut stream).await;
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_dead_client_is_pinged_then_dropped() {
    let (log, _capturing) = Log::capture();
    let mut config = fast_config(servidor_in_process().await);
    // Long enough for a live client on a loaded machine to answer in time.
    config.session.ping_interval = Duration::from_millis(300);
    let bridge = Bridge::start(config).await;
    // A live client answers pings: tungstenite does, as long as it reads.
    let live = bridge.connect().await;
    let (mut to_live, mut from_live) = live.split();
    let (messages, mut received) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(Ok(message)) = from_live.next().await {
            if messages.send(message).await.is_err() {
                return;
            }
        }
    });
    let ping = within(PATIENCE, "a ping", received.recv()).await;
    assert!(matches!(ping, Some(Message::Ping(_))), "{ping:?}");

    // A dead one: a handshake, then silence.
    let mut dead = silent_websocket(bridge.addr).await;
    log.wait_for("el cliente no respondió al ping").await;
    closed_by_the_bridge(&mut dead).await;

    // The live one, pinged all along, is still served.
    to_live.send(Message::text("sigo aquí\n")).await.unwrap();
    loop {
        match within(PATIENCE, "the answer", received.recv()).await {
            Some(Message::Ping(_)) => continue,
            answer => {
                assert_eq!(answer, Some(Message::text("SIGO AQUÍ\n")));
                break;
            }
        }
    }
    assert_eq!(log.text().matches("no respondió al ping").count(), 1);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_its_target_closed() {
    let (log, _capturing) = Log::capture();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let target = target_that(|mut stream| async move {
        // Floods until the bridge lets go of this connection.
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        while stream.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
        }
        let _ = closed_tx.send(sent);
    })
    .await;
    let mut config = fast_config(target);
    config.session.write_timeout = Duration::from_millis(200);
    let bridge = Bridge::start(config).await;
    // A handshake, then nothing read, ever.
    let _stuck = silent_websocket(bridge.addr).await;
    log.wait_for("el cliente no leyó nada en").await;
    let sent = within(PATIENCE, "the target let go", closed_rx)
        .await
        .unwrap();
    eprintln!(
        "the target got {} KiB out before the bridge let go",
        sent / 1024
    );
}

#[tokio::test]
async fn stopping_closes_sessions_with_1001_and_serve_returns() {
    let mut bridge = Bridge::to(servidor_in_process().await).await;
    let mut ws = bridge.connect().await;
    ws.send(Message::text("hola\n")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("HOLA\n"));
    bridge.stop();
    let (_, close) = read_to_close(&mut ws).await;
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, CloseCode::Away);
    assert_eq!(reason, "el puente se detiene");
    bridge.stopped(PATIENCE).await;
}

#[tokio::test]
async fn while_draining_health_and_upgrades_get_503_and_serve_returns_within_the_drain() {
    let mut config = fast_config(servidor_in_process().await);
    // A client that never answers the bridge's Close keeps its session
    // open for the close grace, longer than the drain.
    config.session.close_grace = Duration::from_secs(5);
    config.drain = Duration::from_millis(300);
    let metrics = Metrics::serve_for(&mut config).await;
    let mut bridge = Bridge::start(config).await;
    let _silent = silent_websocket(bridge.addr).await;
    metrics
        .until("the silent session open", |scrape| {
            scrape.value("bridge_sessions_open", &[]) == 1.0
        })
        .await;
    let (head, _) = http_get(bridge.addr, "/healthz", &[]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    bridge.stop();
    let (head, body) = http_get(bridge.addr, "/healthz", &[]).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(body, "el puente se detiene\n");
    let refused = bridge.connect_from(None).await;
    assert!(
        matches!(&refused, Err(WsError::Http(response)) if response.status() == 503),
        "{refused:?}"
    );
    let took = bridge.stopped(PATIENCE).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn serves_the_page_with_the_right_types_and_gzip() {
    let web = std::env::temp_dir().join(format!("bridge-web-{}", std::process::id()));
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(
        web.join("index.html"),
        "<!doctype html><title>Tema 12</title>".repeat(50),
    )
    .unwrap();
    std::fs::write(web.join("app.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(web.join("app.js"), "console.log('hola');".repeat(50)).unwrap();
    let mut config = fast_config(servidor_in_process().await);
    config.web = Some(web.clone());
    let bridge = Bridge::start(config).await;

    let (status, body) = http_get(bridge.addr, "/", &[]).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(status.contains("content-type: text/html"), "{status}");
    assert!(body.contains("Tema 12"));

    let (status, _) = http_get(bridge.addr, "/app.wasm", &[]).await;
    assert!(
        status.contains("content-type: application/wasm"),
        "{status}"
    );

    let (status, _) = http_get(bridge.addr, "/app.js", &["accept-encoding: gzip"]).await;
    assert!(status.contains("content-encoding: gzip"), "{status}");

    let (status, _) = http_get(bridge.addr, "/no-existe", &[]).await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    std::fs::remove_dir_all(&web).unwrap();
}

/// A minimal HTTP/1.1 GET: the status line and headers (lower-cased), and
/// the body as text.
async fn http_get(addr: SocketAddr, path: &str, headers: &[&str]) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within(PATIENCE, "the response", stream.read_to_end(&mut response))
        .await
        .unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header end");
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let head = head.replacen("http/1.1", "HTTP/1.1", 1);
    let body = String::from_utf8_lossy(&response[split + 4..]).into_owned();
    (head, body)
}
