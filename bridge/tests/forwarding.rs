//! Who the bridge says a session is for, behind a trusted proxy: a PROXY
//! header or `X-Forwarded-For` from 127.0.0.1 (trusted) names the client;
//! from 127.0.0.2 (not trusted) neither does. With `send_proxy` the target
//! is told the client's address in a PROXY v2 header. The bridge runs in
//! the test process.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use netkit::proxy_protocol::TrustedProxies;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use support::*;

/// A target that reports the first bytes of each connection.
async fn recording_target() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut first = vec![0; 64];
                let read = stream.read(&mut first).await.unwrap_or(0);
                first.truncate(read);
                let _ = seen_tx.send(first);
                // Kept open until the bridge lets go.
                let _ = stream.read_to_end(&mut Vec::new()).await;
            });
        }
    });
    (addr, seen)
}

/// A bridge in this process trusting 127.0.0.1 as a proxy.
async fn bridge_to(target: SocketAddr, send_proxy: bool) -> Bridge {
    let mut config = fast_config(target);
    config.trusted_proxies = TrustedProxies::new(["127.0.0.1"]).unwrap();
    config.session.send_proxy = send_proxy;
    Bridge::start(config).await
}

/// A connection to the bridge from the loopback address `from`, having
/// sent `preamble` first.
async fn connect_from(from: &str, bridge: &Bridge, preamble: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(bridge.addr).await.unwrap();
    stream.write_all(preamble).await.unwrap();
    stream
}

/// Opens a session over `stream` with these extra request headers.
async fn upgrade(
    stream: TcpStream,
    bridge: &Bridge,
    headers: &[(&'static str, &'static str)],
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut request = format!("ws://{}/ws", bridge.addr)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    testkit::websocket_over(request, stream)
        .await
        .expect("upgraded")
}

#[tokio::test]
async fn a_trusted_proxys_header_names_the_client_and_send_proxy_passes_it_on() {
    let (log, _capturing) = Log::capture();
    let (target, mut seen) = recording_target().await;
    let bridge = bridge_to(target, true).await;
    let proxy = connect_from(
        "127.0.0.1",
        &bridge,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8080\r\n",
    )
    .await;
    let via = proxy.local_addr().unwrap();
    let _ws = upgrade(proxy, &bridge, &[]).await;
    log.wait_for(&format!(
        "sesión abierta desde 203.0.113.7:51234 (vía {via})"
    ))
    .await;
    let first = within(PATIENCE, "the target's first bytes", seen.recv())
        .await
        .unwrap();
    // PROXY v2 signature, PROXY command over TCP/IPv4, then the client's
    // address and port.
    assert_eq!(&first[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(&first[12..14], &[0x21, 0x11]);
    assert_eq!(&first[16..20], &[203, 0, 113, 7]);
    assert_eq!(&first[24..26], &51234u16.to_be_bytes());
}

#[tokio::test]
async fn forwarding_headers_count_only_from_a_trusted_proxy() {
    let (log, _capturing) = Log::capture();
    let (target, _seen) = recording_target().await;
    let bridge = bridge_to(target, false).await;
    let proxy = connect_from("127.0.0.1", &bridge, b"").await;
    let via = proxy.local_addr().unwrap();
    let _trusted = upgrade(
        proxy,
        &bridge,
        &[("x-forwarded-for", "6.6.6.6, 198.51.100.4")],
    )
    .await;
    log.wait_for(&format!("sesión abierta desde 198.51.100.4 (vía {via})"))
        .await;

    let stranger = connect_from("127.0.0.2", &bridge, b"").await;
    let own = stranger.local_addr().unwrap();
    let _untrusted = upgrade(
        stranger,
        &bridge,
        &[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")],
    )
    .await;
    log.wait_for(&format!("sesión abierta desde {own} hacia"))
        .await;
    assert!(!log.text().contains("desde 6.6.6.6"), "{}", log.text());
}

#[tokio::test]
async fn a_bad_header_from_a_trusted_proxy_is_refused_and_the_bridge_goes_on() {
    let (log, _capturing) = Log::capture();
    let (target, _seen) = recording_target().await;
    let bridge = bridge_to(target, false).await;
    let mut bad = connect_from("127.0.0.1", &bridge, b"PROXY TCP4 nope\r\n").await;
    let mut rest = Vec::new();
    let _ = within(PATIENCE, "the refusal", bad.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{rest:?}");
    log.wait_for("cabecera PROXY no válida").await;
    let fine = connect_from("127.0.0.1", &bridge, b"").await;
    let _ws = upgrade(fine, &bridge, &[]).await;
    log.wait_for("sesión abierta desde 127.0.0.1:").await;
}

#[tokio::test]
async fn a_trusted_proxy_that_sends_half_a_header_is_dropped_within_the_deadline() {
    // The PROXY header's deadline is bounded by the handshake timeout:
    // 150 ms here, where it would be 3 s by default.
    let (log, _capturing) = Log::capture();
    let (target, _seen) = recording_target().await;
    let mut config = fast_config(target);
    config.trusted_proxies = TrustedProxies::new(["127.0.0.1"]).unwrap();
    config.handshake_timeout = Duration::from_millis(150);
    let bridge = Bridge::start(config).await;
    let started = tokio::time::Instant::now();
    let mut slow = connect_from("127.0.0.1", &bridge, b"PROXY TCP4 203.0").await;
    closed_by_the_bridge(&mut slow).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(140), "{took:?}");
    log.wait_for("conexión rechazada desde 127.0.0.1").await;
}
