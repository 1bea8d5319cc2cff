//! The bridge's metrics: after a known sequence of sessions, refusals and
//! failures every counter has its exact value, the open-sessions gauge
//! follows the live sessions, and the endpoint passes `promtool check
//! metrics`. The bridge and its metrics endpoint run in the test process
//! (as `--metrics` wires them), in front of a stand-in target this test can
//! take down.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::SinkExt;
use testkit::{promtool_check, Scrape};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use support::*;

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
    use futures_util::StreamExt;
    while let Some(Ok(_)) = within(PATIENCE, "the end", ws.next()).await {}
}

/// The HTTP status of an upgrade the bridge refuses.
async fn refused_status(bridge: &Bridge, origin: Option<&str>) -> u16 {
    match bridge.connect_from(origin).await {
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
    let (target_addr, target) = uppercase_target().await;
    let web = page();
    let mut config = fast_config(target_addr);
    config.session.max_message = 64;
    config.web = Some(web.clone());
    let metrics = Metrics::serve_for(&mut config).await;
    let bridge = Bridge::start(config).await;
    let before = metrics.scrape().await;
    assert_eq!(before.value("bridge_sessions_started_total", &[]), 0.0);
    assert_eq!(before.value("bridge_sessions_open", &[]), 0.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        before.value("bridge_build_info", &[("version", version)]),
        1.0
    );
    assert!(before.value("process_resident_memory_bytes", &[]) > 0.0);

    let index = testkit::http_get(bridge.addr, "/").await;
    assert_eq!(index.status, 200, "{index:?}");

    // Two sessions open at once: text and binary both ways.
    let mut first = bridge.connect().await;
    first.send(Message::text("hola\n")).await.unwrap();
    assert_eq!(next_data(&mut first).await, Message::text("HOLA\n"));
    first.send(Message::binary(&b"bin\n"[..])).await.unwrap();
    assert_eq!(next_data(&mut first).await, Message::binary(&b"BIN\n"[..]));
    let mut second = bridge.connect().await;
    second.send(Message::text("b\n")).await.unwrap();
    assert_eq!(next_data(&mut second).await, Message::text("B\n"));
    let live = metrics.scrape().await;
    assert_eq!(live.value("bridge_sessions_open", &[]), 2.0);
    assert_eq!(live.value("bridge_sessions_started_total", &[]), 2.0);

    // The second sends a message over the maximum: 1009.
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
    let mut third = bridge.connect().await;
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
    let mut fourth = bridge.connect().await;
    assert_eq!(close_code(&mut fourth).await, Some(CloseCode::Error));
    finish(&mut fourth).await;

    metrics
        .until("four sessions ended, none open", |scrape| {
            scrape.value("bridge_sessions_open", &[]) == 0.0
                && ended(scrape, "1011", "target") == 1.0
                && ended(scrape, "1000", "client") == 1.0
        })
        .await;
    let after = metrics.scrape().await;
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
    let (target_addr, _target) = uppercase_target().await;
    let mut config = fast_config(target_addr);
    config.max_sessions = 1;
    config.handshake_timeout = Duration::from_millis(100);
    config.session.ping_interval = Duration::from_millis(200);
    config.session.close_grace = Duration::from_secs(3);
    config.drain = Duration::from_millis(100);
    let metrics = Metrics::serve_for(&mut config).await;
    let mut bridge = Bridge::start(config).await;

    // Not an upgrade: 426.
    let plain = testkit::http_get(bridge.addr, "/ws").await;
    assert_eq!(plain.status, 426, "{plain:?}");
    // Nothing sent at all: dropped after the handshake timeout.
    let mut mute = TcpStream::connect(bridge.addr).await.unwrap();
    let mut scrap = [0u8; 16];
    let read = within(PATIENCE, "the drop", mute.read(&mut scrap)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // A silent session takes the only place: the next upgrade gets 503.
    let _silent = silent_websocket(bridge.addr).await;
    metrics
        .until("the silent session open", |scrape| {
            scrape.value("bridge_sessions_open", &[]) == 1.0
        })
        .await;
    assert_eq!(refused_status(&bridge, None).await, 503);
    // It answers no ping: dropped within two intervals.
    let dropped = metrics
        .until("the silent client dropped", |scrape| {
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
    // going, and meanwhile upgrades get 503.
    let _lingering = silent_websocket(bridge.addr).await;
    metrics
        .until("the lingering session open", |scrape| {
            scrape.value("bridge_sessions_open", &[]) == 1.0
        })
        .await;
    bridge.stop();
    assert_eq!(refused_status(&bridge, None).await, 503);
    let stopping = metrics.scrape().await;
    assert_eq!(refused(&stopping, "stopping"), 1.0);
    assert_eq!(refused(&stopping, "limit"), 1.0);
    promtool_check(&stopping.text);
    bridge.stopped(PATIENCE).await;
}
