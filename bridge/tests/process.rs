//! What belongs to the `bridge` process rather than to its protocol, one
//! test per behaviour: the command line (a bad address is refused), the
//! signal (SIGTERM: sessions get 1001, the drain is bounded, exit code 0),
//! and the log's format (the transcript lines and what is announced at
//! start). Everything else runs the bridge in the test process.

mod support;

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use testkit::{bridge_at, Running};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use support::*;

const BRIDGE: &str = env!("CARGO_BIN_EXE_bridge");

#[tokio::test]
async fn sigterm_closes_sessions_with_1001_and_exits_0_within_the_drain() {
    let target = servidor_in_process().await;
    let mut bridge = bridge_at(BRIDGE, target, &["--drain", "1", "--close-grace", "5"]).await;
    let mut ws = testkit::websocket(bridge.addr).await;
    ws.send(Message::text("hola\n")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("HOLA\n"));
    // A client that never answers the bridge's Close keeps its session
    // past the drain.
    let _silent = silent_websocket(bridge.addr).await;
    bridge.wait_for_log("sesión abierta").await;

    bridge.signal("TERM");
    let close = loop {
        match within(PATIENCE, "the close", ws.next()).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("no close but {other:?}"),
        }
    };
    assert_eq!(close.map(|frame| frame.code), Some(CloseCode::Away));
    let started = std::time::Instant::now();
    let status = bridge.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
    // The drain (1 s) plus the exit's margin (1 s), not the close grace.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Every line it printed, none still in the pipe.
    bridge.wait_output_end().await;
    let log = bridge.log();
    assert!(
        log.contains("el puente cierra las sesiones con 1001 y se detiene"),
        "{log}"
    );
}

#[tokio::test]
async fn the_transcript_announces_the_addresses_then_one_line_per_event() {
    let target = servidor_in_process().await;
    let bridge = Running::start(
        BRIDGE,
        &["--listen", "127.0.0.1:0", "--target", &target.to_string()],
        &[],
    )
    .await;
    let mut ws = testkit::websocket(bridge.addr).await;
    ws.send(Message::text("hola\n")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("HOLA\n"));
    bridge.wait_for_log("sesión abierta").await;
    let log = bridge.log();
    // After the address line (read by the harness): the page, the
    // WebSocket, and no metrics without --metrics.
    assert!(log.contains("Sin página (use --web DIR)"), "{log}");
    assert!(
        log.contains(&format!(
            "WebSocket: ws://{}/ws → servidor {target}",
            bridge.addr
        )),
        "{log}"
    );
    assert!(!log.contains("Métricas"), "{log}");
    // An event is its text alone: no time, no level, no module.
    let opened = log
        .lines()
        .find(|line| line.contains("sesión abierta"))
        .unwrap();
    assert!(
        opened.starts_with("[ws#1] sesión abierta desde 127.0.0.1:"),
        "{opened:?}"
    );
    assert!(opened.ends_with(&format!(" hacia {target}")), "{opened:?}");
}
