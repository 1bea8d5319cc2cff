//! The bridge's logs in-process: a session's lines carry `[ws#id]` from its
//! span, and its `/healthz` probes of the target leave no line in
//! servidor's transcript at `info` (with `--send-proxy`, a probe says it is
//! one with a PROXY `LOCAL` header).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use netkit::proxy_protocol::{v2_local_header, TrustedProxies};
use testkit::capture_transcript;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take.
const PATIENCE: Duration = Duration::from_secs(10);

// Every test here captures its transcript (`testkit::capture_transcript`):
// tracing caches per call site whether anyone listens, and tests logging
// with no subscriber of their own, in parallel threads, make that cache
// race with the capturing ones.

/// Runs `serve` on a loopback port until the token is cancelled (on drop).
struct Running {
    address: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn bridge(config: bridge::Config) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(bridge::serve(listener, config, shutdown.clone()));
    Running { address, shutdown }
}

async fn servidor(config: servidor::Config) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(servidor::serve(listener, config, shutdown.clone()));
    Running { address, shutdown }
}

/// The whole answer to `GET path` on a new connection.
async fn get(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// What a probe sends the target: accepts one connection on `target` and
/// reads it to its end.
async fn probed_with(send_proxy: bool) -> Vec<u8> {
    // Captured though unread: see the note at the top.
    let _logging = capture_transcript("bridge=info");
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = bridge::Config::for_target(target.local_addr().unwrap().to_string());
    config.session.send_proxy = send_proxy;
    let bridge = bridge(config).await;
    let answer = tokio::spawn(get(bridge.address, "/healthz"));
    let (mut probe, _) = timeout(PATIENCE, target.accept()).await.unwrap().unwrap();
    let mut sent = Vec::new();
    timeout(PATIENCE, probe.read_to_end(&mut sent))
        .await
        .unwrap()
        .unwrap();
    let answer = answer.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    sent
}

#[tokio::test]
async fn with_send_proxy_a_probe_sends_a_local_header_and_nothing_else() {
    assert_eq!(probed_with(true).await, v2_local_header());
    assert_eq!(v2_local_header().len(), 16);
}

#[tokio::test]
async fn without_send_proxy_a_probe_sends_nothing() {
    assert_eq!(probed_with(false).await, b"");
}

/// 20 probes of a servidor; its transcript (at `debug`, so that each probe's
/// end can be waited for) holds only their `debug` lines.
async fn probes_leave_no_info_line(send_proxy: bool, trusted_proxies: TrustedProxies) {
    let transcript = capture_transcript("servidor=debug");
    let servidor = servidor(servidor::Config {
        // Far longer than a probe takes, however slow the machine.
        announce_after: PATIENCE,
        trusted_proxies,
        ..servidor::Config::default()
    })
    .await;
    let mut config = bridge::Config::for_target(servidor.address.to_string());
    config.session.send_proxy = send_proxy;
    let bridge = bridge(config).await;
    for round in 1..=20 {
        let answer = get(bridge.address, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        transcript
            .wait_for(&format!("depuración: [#{round}] Conexión desde 127.0.0.1:"))
            .await;
    }
    transcript.wait_for("[#20] Conexión desde").await;
    let text = transcript.text();
    assert_eq!(text.lines().count(), 20, "{text}");
    assert!(
        text.lines()
            .all(|line| line.starts_with("depuración: ") && line.contains("cerrada sin datos")),
        "{text}"
    );
}

#[tokio::test]
async fn probes_through_send_proxy_to_a_servidor_that_trusts_the_bridge_are_quiet() {
    // Without the LOCAL header, each probe would be refused with a warning
    // (a trusted proxy's connection without its header).
    let trusted = TrustedProxies::new(["127.0.0.1"]).unwrap();
    probes_leave_no_info_line(true, trusted).await;
}

#[tokio::test]
async fn probes_straight_to_servidor_are_quiet() {
    probes_leave_no_info_line(false, TrustedProxies::default()).await;
}

#[tokio::test]
async fn a_sessions_lines_carry_its_id() {
    let transcript = capture_transcript("bridge=info");
    let servidor = servidor(servidor::Config::default()).await;
    let bridge = bridge(bridge::Config::for_target(servidor.address.to_string())).await;
    let stream = TcpStream::connect(bridge.address).await.unwrap();
    let own = stream.local_addr().unwrap();
    let url = format!("ws://{}/ws", bridge.address);
    let mut ws = testkit::websocket_over(url, stream).await.unwrap();
    ws.send(Message::text("Hola")).await.unwrap();
    let answer = timeout(PATIENCE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer, Message::text("HOLA"));
    ws.close(None).await.unwrap();
    let text = transcript.wait_for("[ws#1] sesión cerrada").await;
    assert_eq!(
        text,
        format!(
            "[ws#1] sesión abierta desde {own} hacia {}\n\
             [ws#1] sesión cerrada: el cliente cerró la sesión (4 bytes hacia el servidor, 4 hacia el cliente)\n",
            servidor.address
        )
    );
}
