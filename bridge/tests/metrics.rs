//! `bridge --metrics`: after a known sequence of sessions, refusals and
//! failures every counter has its exact value, the open-sessions gauge
//! follows the live sessions, and the endpoint passes `promtool check
//! metrics`. The real binary on free ports, in front of a stand-in target
//! this test can take down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use testkit::{
    bridge_at, http_get, metrics_addr, promtool_check, refuses, scrape, scrape_until,
    silent_websocket, websocket_from, within, Running, Scrape, PATIENCE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Every `code` a session's ending can be counted with, by side (see
/// `bridge::metrics`).
const CLIENT_CODES: [&str; 11] = [
    "1000", "1001", "1002", "1003", "1007", "1008", "1009", "1010", "1011", "other", "none",
];
const REFUSALS: [&str; 5] = [
    "origin",
    "limit",
    "stopping",
    "handshake_timeout",
    "bad_request",
];

/// A stand-in for servidor: answers each read in ASCII uppercase, closes
/// after answering `cierra\n`, and closes when its client does. Dropping
/// (aborting) it stops accepting: connections are then refused.
async fn target() -> (SocketAddr, JoinHandle<()>) {
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

async fn bridge(target: SocketAddr, extra: &[&str]) -> (Running, SocketAddr) {
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let running = bridge_at(env!("CARGO_BIN_EXE_bridge"), target, &args).await;
    let metrics = metrics_addr(&running).await;
    (running, metrics)
}

async fn connect(bridge: &Running) -> Ws {
    testkit::websocket(bridge.addr).await
}

/// The next data message, skipping pings.
async fn next_data(ws: &mut Ws) -> Message {
    loop {
        match within(PATIENCE, "a message", ws.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("no message but {other:?}"),
        }
    }
}

/// Reads up to the bridge's Close and returns its code.
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    match next_data(ws).await {
        Message::Close(frame) => frame.map(|frame| frame.code),
        other => panic!("a close, not {other:?}"),
    }
}

/// Reads to the end of the connection, so that the client's answer to a
/// Close goes out (tungstenite sends it on the next read).
async fn finish(ws: &mut Ws) {
    while let Some(Ok(_)) = within(PATIENCE, "the end", ws.next()).await {}
}

/// The HTTP status of an upgrade the bridge refuses.
async fn refused_status(bridge: &Running, origin: Option<&str>) -> u16 {
    match websocket_from(bridge.addr, origin).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        other => panic!("an HTTP refusal, not {other:?}"),
    }
}

fn ended(scrape: &Scrape, code: &str, side: &str) -> f64 {
    scrape.value(
        "bridge_sessions_ended_total",
        &[("code", code), ("side", side)],
    )
}

fn refused(scrape: &Scrape, reason: &str) -> f64 {
    scrape.value("bridge_upgrades_refused_total", &[("reason", reason)])
}

/// Every `bridge_sessions_ended_total` series, with `expected` ones at
/// their value and every other at 0.
fn assert_endings(scrape: &Scrape, expected: &[(&str, &str, f64)]) {
    let series = CLIENT_CODES.iter().map(|&code| (code, "client")).chain([
        ("1000", "target"),
        ("1011", "target"),
        ("1001", "bridge"),
    ]);
    for (code, side) in series {
        let value = expected
            .iter()
            .find(|(c, s, _)| (*c, *s) == (code, side))
            .map_or(0.0, |(_, _, value)| *value);
        assert_eq!(ended(scrape, code, side), value, "code {code}, side {side}");
    }
}

/// A folder with the page's index, for the static-file count.
fn page() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bridge-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>t</title>\n").unwrap();
    dir
}

#[tokio::test]
async fn three_sessions_an_oversize_message_a_foreign_origin_and_a_target_down() {
    let (target_addr, target) = target().await;
    let web = page();
    let (bridge, metrics) = bridge(
        target_addr,
        &["--max-message", "64", "--web", web.to_str().unwrap()],
    )
    .await;
    let before = scrape(metrics).await;
    assert_eq!(before.value("bridge_sessions_started_total", &[]), 0.0);
    assert_eq!(before.value("bridge_sessions_open", &[]), 0.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        before.value("bridge_build_info", &[("version", version)]),
        1.0
    );
    assert!(before.value("process_resident_memory_bytes", &[]) > 0.0);

    let index = http_get(bridge.addr, "/").await;
    assert_eq!(index.status, 200, "{index:?}");

    // Two sessions open at once: text and binary both ways.
    let mut first = connect(&bridge).await;
    first.send(Message::text("hola\n")).await.unwrap();
    assert_eq!(next_data(&mut first).await, Message::text("HOLA\n"));
    first.send(Message::binary(&b"bin\n"[..])).await.unwrap();
    assert_eq!(next_data(&mut first).await, Message::binary(&b"BIN\n"[..]));
    let mut second = connect(&bridge).await;
    second.send(Message::text("b\n")).await.unwrap();
    assert_eq!(next_data(&mut second).await, Message::text("B\n"));
    let live = scrape(metrics).await;
    assert_eq!(live.value("bridge_sessions_open", &[]), 2.0);
    assert_eq!(live.value("bridge_sessions_started_total", &[]), 2.0);

    // The second sends a message over --max-message: 1009.
    second.send(Message::text("x".repeat(100))).await.unwrap();
    assert_eq!(close_code(&mut second).await, Some(CloseCode::Size));
    finish(&mut second).await;
    // The first closes with 1000.
    first
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await
        .unwrap();
    finish(&mut first).await;
    // A third: the target closes it after answering.
    let mut third = connect(&bridge).await;
    third.send(Message::text("cierra\n")).await.unwrap();
    assert_eq!(next_data(&mut third).await, Message::text("CIERRA\n"));
    assert_eq!(close_code(&mut third).await, Some(CloseCode::Normal));
    finish(&mut third).await;

    // A page of another origin is refused: no session.
    assert_eq!(
        refused_status(&bridge, Some("http://ajeno.example")).await,
        403
    );

    // The target goes down: the upgrade succeeds, then 1011.
    target.abort();
    let _ = target.await;
    let mut fourth = connect(&bridge).await;
    assert_eq!(close_code(&mut fourth).await, Some(CloseCode::Error));
    finish(&mut fourth).await;

    let after = scrape_until(metrics, "four sessions ended, none open", |scrape| {
        scrape.value("bridge_sessions_open", &[]) == 0.0
            && ended(scrape, "1011", "target") == 1.0
            && ended(scrape, "1000", "client") == 1.0
    })
    .await;
    assert_eq!(after.value("bridge_sessions_started_total", &[]), 4.0);
    assert_endings(
        &after,
        &[
            ("1000", "client", 1.0),
            ("1009", "client", 1.0),
            ("1000", "target", 1.0),
            ("1011", "target", 1.0),
        ],
    );
    for reason in REFUSALS {
        let expected = if reason == "origin" { 1.0 } else { 0.0 };
        assert_eq!(refused(&after, reason), expected, "{reason}");
    }
    let payload =
        |direction| after.value("bridge_payload_bytes_total", &[("direction", direction)]);
    // hola\n + bin\n + b\n + cierra\n; the oversize message never went.
    assert_eq!(payload("to_target"), 18.0);
    assert_eq!(payload("to_client"), 18.0);
    let messages = |direction, kind| {
        after.value(
            "bridge_messages_total",
            &[("direction", direction), ("type", kind)],
        )
    };
    assert_eq!(messages("to_target", "text"), 3.0);
    assert_eq!(messages("to_target", "binary"), 1.0);
    assert_eq!(messages("to_client", "text"), 3.0);
    assert_eq!(messages("to_client", "binary"), 1.0);
    let failures = |reason| {
        after.value(
            "bridge_target_connect_failures_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(failures("error"), 1.0);
    assert_eq!(failures("timeout"), 0.0);
    assert_eq!(
        after.value("bridge_target_connect_duration_seconds_count", &[]),
        3.0
    );
    assert_eq!(
        after.value(
            "bridge_target_connect_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        3.0
    );
    for reason in ["ping_timeout", "write_timeout"] {
        assert_eq!(
            after.value("bridge_clients_dropped_total", &[("reason", reason)]),
            0.0
        );
    }
    assert_eq!(after.value("bridge_static_files_served_total", &[]), 1.0);
    promtool_check(&after.text);
    let _ = std::fs::remove_dir_all(web);
}

#[tokio::test]
async fn bad_requests_timeouts_the_limit_and_stopping_are_counted() {
    let (target_addr, _target) = target().await;
    let (mut bridge, metrics) = bridge(
        target_addr,
        &[
            "--max-sessions",
            "1",
            "--handshake-timeout",
            "1",
            "--ping-interval",
            "1",
            "--close-grace",
            "3",
        ],
    )
    .await;

    // Not an upgrade: 426.
    let plain = http_get(bridge.addr, "/ws").await;
    assert_eq!(plain.status, 426, "{plain:?}");
    // Nothing sent at all: dropped after --handshake-timeout.
    let mut mute = TcpStream::connect(bridge.addr).await.unwrap();
    let mut scrap = [0u8; 16];
    let read = within(PATIENCE, "the drop", mute.read(&mut scrap)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // A silent session takes the only place: the next upgrade gets 503.
    let _silent = silent_websocket(bridge.addr).await;
    scrape_until(metrics, "the silent session open", |scrape| {
        scrape.value("bridge_sessions_open", &[]) == 1.0
    })
    .await;
    assert_eq!(refused_status(&bridge, None).await, 503);
    // It answers no ping: dropped within two intervals.
    let dropped = scrape_until(metrics, "the silent client dropped", |scrape| {
        scrape.value(
            "bridge_clients_dropped_total",
            &[("reason", "ping_timeout")],
        ) == 1.0
            && scrape.value("bridge_sessions_open", &[]) == 0.0
    })
    .await;
    assert_endings(&dropped, &[("none", "client", 1.0)]);
    for (reason, expected) in [
        ("origin", 0.0),
        ("limit", 1.0),
        ("stopping", 0.0),
        ("handshake_timeout", 1.0),
        ("bad_request", 1.0),
    ] {
        assert_eq!(refused(&dropped, reason), expected, "{reason}");
    }
    assert_eq!(dropped.value("bridge_sessions_started_total", &[]), 1.0);

    // Stopping: a session that does not answer the 1001 keeps the drain
    // going for --close-grace, and meanwhile upgrades get 503.
    let _lingering = silent_websocket(bridge.addr).await;
    scrape_until(metrics, "the lingering session open", |scrape| {
        scrape.value("bridge_sessions_open", &[]) == 1.0
    })
    .await;
    bridge.signal("TERM");
    bridge.wait_for_log("el puente cierra las sesiones").await;
    assert_eq!(refused_status(&bridge, None).await, 503);
    let stopping = scrape(metrics).await;
    assert_eq!(refused(&stopping, "stopping"), 1.0);
    assert_eq!(refused(&stopping, "limit"), 1.0);
    promtool_check(&stopping.text);
    let status = bridge.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn without_the_flag_nothing_is_announced_and_a_bad_address_is_refused() {
    let (target_addr, _target) = target().await;
    let target = target_addr.to_string();
    let plain = Running::start(
        env!("CARGO_BIN_EXE_bridge"),
        &["--listen", "127.0.0.1:0", "--target", &target],
        &[],
    )
    .await;
    let mut ws = connect(&plain).await;
    ws.send(Message::text("hola\n")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("HOLA\n"));
    plain.wait_for_log("WebSocket: ").await;
    assert!(!plain.log().contains("Métricas"), "{}", plain.log());

    refuses(
        env!("CARGO_BIN_EXE_bridge"),
        &["--listen", "127.0.0.1:0", "--metrics", "9101"],
        "--metrics «9101» no es MÁQUINA:PUERTO",
    )
    .await;
}
