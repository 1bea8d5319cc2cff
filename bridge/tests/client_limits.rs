//! Per-client limits, with raw WebSocket clients from several loopback
//! addresses (127.0.0.0/8 is all local): `--max-sessions-per-client`,
//! `--upgrades-per-client` and `--max-connections-per-client` limit each
//! address on its own, count a trusted proxy's clients one by one and
//! never the proxy itself, and refuse before the 101, so that the target
//! never sees a refused client (nor one refused for its code or because
//! the bridge is full). The bridge runs in the test process.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use netkit::proxy_protocol::TrustedProxies;
use testkit::refusal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use support::*;

type RawWs = WebSocketStream<TcpStream>;

/// A target that reports each connection it accepts, and holds it open
/// until the bridge lets go.
async fn counting_target() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = seen_tx.send(());
            tokio::spawn(async move {
                let _ = stream.read_to_end(&mut Vec::new()).await;
            });
        }
    });
    (addr, seen)
}

/// A bridge to `target` with these per-client limits (0: off), trusting
/// 127.0.0.1 as a proxy.
async fn limited_bridge(
    target: SocketAddr,
    sessions: usize,
    upgrades: u32,
    connections: usize,
) -> (Bridge, Metrics) {
    let mut config = fast_config(target);
    config.max_sessions_per_client = sessions;
    config.upgrades_per_client = upgrades;
    config.max_connections_per_client = connections;
    config.trusted_proxies = TrustedProxies::new(["127.0.0.1"]).unwrap();
    let metrics = Metrics::serve_for(&mut config).await;
    (Bridge::start(config).await, metrics)
}

/// A TCP connection to `bridge` from the loopback address `from`.
async fn tcp_from(from: &str, bridge: &Bridge) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    within(PATIENCE, "the TCP connection", socket.connect(bridge.addr))
        .await
        .unwrap()
}

/// An upgrade from the loopback address `from`, after `preamble` (a PROXY
/// header, say).
async fn ws_from(from: &str, bridge: &Bridge, preamble: &[u8]) -> Result<RawWs, WsError> {
    ws_with_query(from, bridge, preamble, "").await
}

/// As [`ws_from`], to `/ws{query}` (`?clave=…`).
async fn ws_with_query(
    from: &str,
    bridge: &Bridge,
    preamble: &[u8],
    query: &str,
) -> Result<RawWs, WsError> {
    let mut stream = tcp_from(from, bridge).await;
    stream.write_all(preamble).await.unwrap();
    testkit::websocket_over(format!("ws://{}/ws{query}", bridge.addr), stream).await
}

/// Waits for the target to see one more connection.
async fn target_connected(seen: &mut mpsc::UnboundedReceiver<()>) {
    within(PATIENCE, "the target's connection", seen.recv())
        .await
        .unwrap();
}

#[tokio::test]
async fn each_address_has_its_own_session_cap_and_a_refusal_costs_no_target_connection() {
    let (target, mut seen) = counting_target().await;
    let (bridge, metrics) = limited_bridge(target, 2, 0, 0).await;
    let mut held = Vec::new();
    for from in ["127.0.0.3", "127.0.0.3", "127.0.0.4", "127.0.0.4"] {
        held.push(ws_from(from, &bridge, b"").await.expect("admitted"));
        target_connected(&mut seen).await;
    }
    for from in ["127.0.0.3", "127.0.0.4"] {
        let (status, retry_after, body) = refusal(ws_from(from, &bridge, b"").await);
        assert_eq!(status, 429);
        assert_eq!(retry_after, None);
        assert_eq!(body, "demasiadas sesiones desde esta dirección\n");
    }
    // A third address is not held back by the other two.
    held.push(ws_from("127.0.0.5", &bridge, b"").await.expect("admitted"));
    target_connected(&mut seen).await;
    assert!(
        seen.try_recv().is_err(),
        "a refused client reached the target"
    );
    metrics
        .until("two refusals by client_sessions", |scrape| {
            scrape.value(
                "bridge_upgrades_refused_total",
                &[("reason", "client_sessions")],
            ) == 2.0
        })
        .await;

    // The place is held for the session's life: once one of 127.0.0.3's
    // sessions ends, it may open another.
    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    while first.next_message().await.is_ok() {}
    metrics
        .until("the session closed", |scrape| {
            scrape.value("bridge_sessions_open", &[]) == 4.0
        })
        .await;
    held.push(
        ws_from("127.0.0.3", &bridge, b"")
            .await
            .expect("admitted again"),
    );
    target_connected(&mut seen).await;
}

trait NextMessage {
    async fn next_message(&mut self) -> Result<(), ()>;
}

impl NextMessage for RawWs {
    async fn next_message(&mut self) -> Result<(), ()> {
        use futures_util::StreamExt;
        match within(PATIENCE, "the close", self.next()).await {
            Some(Ok(_)) => Ok(()),
            _ => Err(()),
        }
    }
}

#[tokio::test]
async fn a_refusal_by_code_or_by_a_full_bridge_costs_no_target_connection() {
    const CODE: &str = "aula-3B_2026";
    let (target, mut seen) = counting_target().await;
    let mut config = fast_config(target);
    config.access_code = Some(bridge::access::AccessCode::new(CODE).unwrap());
    config.max_sessions = 1;
    let metrics = Metrics::serve_for(&mut config).await;
    let bridge = Bridge::start(config).await;
    let (status, _, body) = refusal(ws_from("127.0.0.3", &bridge, b"").await);
    assert_eq!(
        (status, body.as_str()),
        (401, "falta la clave de la demo\n")
    );
    let with_code = format!("?clave={CODE}");
    let _held = ws_with_query("127.0.0.4", &bridge, b"", &with_code)
        .await
        .expect("admitted");
    target_connected(&mut seen).await;
    let (status, _, body) = refusal(ws_with_query("127.0.0.5", &bridge, b"", &with_code).await);
    assert_eq!((status, body.as_str()), (503, "el puente está lleno\n"));
    metrics
        .until("a refusal by code and one by a full bridge", |scrape| {
            let refused =
                |reason| scrape.value("bridge_upgrades_refused_total", &[("reason", reason)]);
            refused("access_code") == 1.0 && refused("limit") == 1.0
        })
        .await;
    assert!(
        seen.try_recv().is_err(),
        "a refused client reached the target"
    );
}

#[tokio::test]
async fn concurrent_upgrades_from_one_address_admit_exactly_the_cap() {
    for _round in 0..20 {
        let (target, _seen) = counting_target().await;
        let (bridge, _metrics) = limited_bridge(target, 5, 0, 0).await;
        let attempts: Vec<_> = (0..20)
            .map(|_| ws_from("127.0.0.6", &bridge, b""))
            .collect();
        let results = futures_util::future::join_all(attempts).await;
        let admitted = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(admitted, 5);
        for result in results.into_iter().filter(|result| result.is_err()) {
            assert_eq!(refusal(result).0, 429);
        }
    }
}

#[tokio::test]
async fn upgrades_past_the_rate_get_429_with_retry_after_per_address() {
    let (target, mut seen) = counting_target().await;
    // 1 a second, a burst of 3.
    let (bridge, metrics) = limited_bridge(target, 0, 1, 0).await;
    let mut admitted = 0;
    let refused = loop {
        assert!(admitted < 10, "never rate limited");
        match ws_from("127.0.0.7", &bridge, b"").await {
            Ok(_ws) => admitted += 1,
            Err(error) => break refusal::<()>(Err(error)),
        }
    };
    // The burst at least (a slow machine may refill a token meanwhile).
    assert!(admitted >= 3, "only {admitted} admitted");
    let (status, retry_after, body) = refused;
    assert_eq!(status, 429);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(
        body,
        "demasiadas conexiones nuevas desde esta dirección; espere 1 s\n"
    );
    // Another address has its own burst.
    ws_from("127.0.0.8", &bridge, b"")
        .await
        .expect("another address admitted");
    // The target saw the admitted sessions, and the refused one not.
    for _ in 0..=admitted {
        target_connected(&mut seen).await;
    }
    assert!(
        seen.try_recv().is_err(),
        "a refused client reached the target"
    );
    let scrape = metrics.scrape().await;
    assert_eq!(
        scrape.value(
            "bridge_upgrades_refused_total",
            &[("reason", "client_rate")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_trusted_proxys_clients_count_one_by_one_and_the_proxy_never() {
    let (target, mut seen) = counting_target().await;
    let (bridge, _metrics) = limited_bridge(target, 1, 0, 2).await;
    let header = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 51234 8080\r\n");
    let _one = ws_from("127.0.0.1", &bridge, header("203.0.113.1").as_bytes())
        .await
        .expect("admitted");
    target_connected(&mut seen).await;
    let (status, _, _) =
        refusal(ws_from("127.0.0.1", &bridge, header("203.0.113.1").as_bytes()).await);
    assert_eq!(status, 429);
    let _two = ws_from("127.0.0.1", &bridge, header("203.0.113.2").as_bytes())
        .await
        .expect("another client admitted");
    target_connected(&mut seen).await;
    // The proxy's own sessions (no header) and its many connections are
    // never capped as one client's.
    let mut own = Vec::new();
    for _ in 0..3 {
        own.push(ws_from("127.0.0.1", &bridge, b"").await.expect("admitted"));
        target_connected(&mut seen).await;
    }
    let idle: Vec<_> =
        futures_util::future::join_all((0..10).map(|_| tcp_from("127.0.0.1", &bridge))).await;
    let _more = ws_from("127.0.0.1", &bridge, header("203.0.113.3").as_bytes())
        .await
        .expect("admitted past the proxy's idle connections");
    drop(idle);
}

/// Whether the bridge closed `stream` (EOF or reset) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut byte = [0; 1];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn idle_connections_from_one_address_leave_room_for_everyone_else() {
    let (target, _seen) = counting_target().await;
    let mut config = fast_config(target);
    config.max_connections_per_client = 50;
    // Held connections stay held for the whole test.
    config.handshake_timeout = Duration::from_secs(60);
    let metrics = Metrics::serve_for(&mut config).await;
    let bridge = Bridge::start(config).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tcp_from("127.0.0.9", &bridge).await);
    }
    metrics
        .until("150 connections refused", |scrape| {
            scrape.value(
                "bridge_upgrades_refused_total",
                &[("reason", "client_connections")],
            ) == 150.0
        })
        .await;
    let mut closed = 0;
    for stream in &mut idle[50..] {
        closed += usize::from(closed_within(stream, PATIENCE).await);
    }
    assert_eq!(closed, 150);

    // Another address's page request is served at once.
    let mut page = tcp_from("127.0.0.2", &bridge).await;
    page.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    within(
        Duration::from_secs(2),
        "the page request",
        page.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The first fifty are still served.
    let first = &mut idle[0];
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    within(
        PATIENCE,
        "the held connection's request",
        first.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}
