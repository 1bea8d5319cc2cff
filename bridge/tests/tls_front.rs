//! TLS ended in front of the bridge: a balancer that speaks plain HTTP to
//! the bridge says with `X-Forwarded-Proto`/`Forwarded` that the browser
//! used https, so the page's own origin `https://name` is let in, from a
//! trusted proxy only. The bridge runs in this process (`bridge::serve` on
//! a port of its own); the "proxy" is a client bound to 127.0.0.1 (trusted)
//! and the stranger one bound to 127.0.0.2 (not trusted). The binary runs
//! only for its log: the hint when an https page meets a plain bridge.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use netkit::proxy_protocol::TrustedProxies;
use testkit::{within, PATIENCE};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// A `servidor` running in this process on a free port, quiet.
async fn servidor_in_process() -> SocketAddr {
    let listener = netkit::listen::bind("127.0.0.1", 0).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = servidor::Config::default();
    tokio::spawn(servidor::serve(listener, config, CancellationToken::new()));
    addr
}

/// A plain-HTTP bridge in this process trusting 127.0.0.1 as a proxy; its
/// address. It stops when the test's runtime ends.
async fn bridge_behind_a_proxy() -> SocketAddr {
    let target = servidor_in_process().await;
    let listener = netkit::listen::bind("127.0.0.1", 0).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = bridge::Config::for_target(target.to_string());
    config.trusted_proxies = TrustedProxies::new(["127.0.0.1"]).unwrap();
    tokio::spawn(bridge::serve(listener, config, CancellationToken::new()));
    addr
}

/// An upgrade to `bridge` from the loopback address `from`, with these
/// headers (`Host` among them replaces the URL's).
async fn upgrade_from(
    from: &str,
    bridge: SocketAddr,
    headers: &[(&'static str, &str)],
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let stream = within(PATIENCE, "connecting", socket.connect(bridge))
        .await
        .unwrap();
    let mut request = format!("ws://{bridge}/ws").into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("a header value"));
    }
    testkit::websocket_over(request, stream).await
}

/// The HTTP status an upgrade was refused with.
fn refused_status(result: Result<WebSocketStream<TcpStream>, WsError>) -> u16 {
    match result {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("not an HTTP refusal: {other}"),
    }
}

async fn answers_hola(mut ws: WebSocketStream<TcpStream>) {
    ws.send(Message::text("hola\n")).await.unwrap();
    let answer = within(PATIENCE, "the answer", ws.next()).await;
    match answer {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "HOLA\n"),
        other => panic!("{other:?} instead of HOLA"),
    }
}

#[tokio::test]
async fn an_https_page_is_let_in_through_a_trusted_proxy_that_says_so() {
    let bridge = bridge_behind_a_proxy().await;
    // nginx's way: the Host passed on, X-Forwarded-Proto added.
    let ws = upgrade_from(
        "127.0.0.1",
        bridge,
        &[
            ("host", "demo.example.org"),
            ("origin", "https://demo.example.org"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await
    .expect("the page's own origin is let in");
    answers_hola(ws).await;
    // RFC 7239's way, from a proxy that also rewrote the Host.
    let ws = upgrade_from(
        "127.0.0.1",
        bridge,
        &[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://demo.example.org:8443"),
            (
                "forwarded",
                "for=203.0.113.7;proto=https;host=\"demo.example.org:8443\"",
            ),
        ],
    )
    .await
    .expect("the page's own origin is let in");
    answers_hola(ws).await;
    // X-Forwarded-Host, from a proxy that rewrote the Host.
    let ws = upgrade_from(
        "127.0.0.1",
        bridge,
        &[
            ("host", "bridge.internal:8080"),
            ("origin", "https://demo.example.org"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "demo.example.org"),
        ],
    )
    .await
    .expect("the page's own origin is let in");
    answers_hola(ws).await;
}

#[tokio::test]
async fn a_foreign_origin_is_still_refused_through_the_trusted_proxy() {
    let bridge = bridge_behind_a_proxy().await;
    for origin in [
        "https://evil.example",
        "http://demo.example.org",
        "https://demo.example.org:444",
    ] {
        let refused = upgrade_from(
            "127.0.0.1",
            bridge,
            &[
                ("host", "demo.example.org"),
                ("origin", origin),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
        assert_eq!(refused_status(refused), 403, "{origin}");
    }
}

#[tokio::test]
async fn forged_forwarding_headers_from_an_untrusted_peer_change_nothing() {
    let bridge = bridge_behind_a_proxy().await;
    // Without the headers the https page is not the bridge's own (plain
    // HTTP here), and with forged ones it still is not.
    for forged in [
        &[][..],
        &[("x-forwarded-proto", "https")][..],
        &[("forwarded", "proto=https;host=demo.example.org")][..],
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "demo.example.org"),
        ][..],
    ] {
        let mut headers = vec![
            ("host", "demo.example.org"),
            ("origin", "https://demo.example.org"),
        ];
        headers.extend_from_slice(forged);
        let refused = upgrade_from("127.0.0.2", bridge, &headers).await;
        assert_eq!(refused_status(refused), 403, "{forged:?}");
    }
    // Nor can they turn the bridge's real plain-HTTP origin away.
    let ws = upgrade_from(
        "127.0.0.2",
        bridge,
        &[
            ("host", "demo.example.org"),
            ("origin", "http://demo.example.org"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "elsewhere.example"),
        ],
    )
    .await
    .expect("the plain page is the bridge's own");
    answers_hola(ws).await;
}

#[tokio::test]
async fn an_https_page_refused_by_a_plain_bridge_gets_a_hint_in_the_log() {
    // The mistake the hint is for: TLS ended in front, and no proxy said
    // so. The log line belongs to the process, so the binary runs here.
    let target = servidor_in_process().await;
    let bridge = testkit::bridge_at(env!("CARGO_BIN_EXE_bridge"), target, &[]).await;
    let page = format!("https://{}", bridge.addr);
    let refused = testkit::websocket_from(bridge.addr, Some(&page)).await;
    assert!(
        matches!(&refused, Err(WsError::Http(response)) if response.status() == 403),
        "{refused:?}"
    );
    bridge
        .wait_for_log(&format!("origen rechazado: {page} (desde 127.0.0.1:"))
        .await;
    bridge
        .wait_for_log(
            "si un proxy termina TLS delante del puente, que envíe X-Forwarded-Proto y confíe en él con --trusted-proxy",
        )
        .await;
}
