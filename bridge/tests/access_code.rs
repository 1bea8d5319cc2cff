//! The join code (`--access-code`), in-process: the join link trades the
//! code for a cookie and a 303 without it; `/ws` needs the code (query or
//! cookie) and answers 401 before any upgrade otherwise; the refusals a
//! page's plain `fetch` of `/ws` learns (code, origin, full, stopping) come
//! with their status and Spanish sentence; the code never reaches the log.

mod support;

use std::net::SocketAddr;

use futures_util::SinkExt;
use netkit::proxy_protocol::TrustedProxies;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use bridge::access::AccessCode;
use support::{fast_config, next, servidor_in_process, within, Bridge, Log, Metrics, PATIENCE};

const CODE: &str = "aula-3B_2026";

/// A bridge to an in-process servidor that asks for [`CODE`].
async fn coded_bridge() -> (Bridge, Metrics) {
    let mut config = fast_config(servidor_in_process().await);
    config.access_code = Some(AccessCode::new(CODE).unwrap());
    let metrics = Metrics::serve_for(&mut config).await;
    (Bridge::start(config).await, metrics)
}

/// One HTTP/1.1 request (`Connection: close`) and the whole answer.
async fn http(addr: SocketAddr, path: &str, extra: &str) -> String {
    within(PATIENCE, "an HTTP answer", async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    })
    .await
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Opens `/ws{query}` with `cookie`, and checks the session uppercases.
async fn says_hola(addr: SocketAddr, query: &str, cookie: Option<&str>) {
    let mut request = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .unwrap();
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", HeaderValue::from_str(cookie).unwrap());
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut ws = testkit::websocket_over(request, stream).await.unwrap();
    ws.send(Message::text("hola\n")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("HOLA\n"));
}

#[tokio::test]
async fn without_the_code_the_upgrade_gets_401_and_no_session() {
    let (log, _capturing) = Log::capture();
    let (bridge, metrics) = coded_bridge().await;
    for (path, extra) in [
        ("/ws", UPGRADE),
        ("/ws", ""),
        ("/ws?clave=aula-3b_2026", UPGRADE),
        ("/ws?clave=", UPGRADE),
    ] {
        let answer = http(bridge.addr, path, extra).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
        assert!(
            answer.ends_with("\r\n\r\nfalta la clave de la demo\n"),
            "{answer}"
        );
        assert!(answer.to_lowercase().contains("content-type: text/plain"));
    }
    let scrape = metrics
        .until("four refusals by code", |scrape| {
            scrape.value(
                "bridge_upgrades_refused_total",
                &[("reason", "access_code")],
            ) >= 4.0
        })
        .await;
    assert_eq!(scrape.value("bridge_sessions_open", &[]), 0.0);
    // A right code in the query lets it in, and the code stays out of the log.
    says_hola(bridge.addr, &format!("?clave={CODE}"), None).await;
    let text = log.text();
    assert!(!text.contains(CODE) && !text.contains("aula-3b"), "{text}");
}

#[tokio::test]
async fn the_join_link_gives_a_cookie_and_drops_the_code_from_the_address() {
    let (log, _capturing) = Log::capture();
    let (bridge, _metrics) = coded_bridge().await;
    let answer = http(bridge.addr, &format!("/?clave={CODE}"), "").await;
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let lower = answer.to_lowercase();
    assert!(lower.contains("\r\nlocation: /\r\n"), "{answer}");
    let cookie_line = answer
        .lines()
        .find(|line| line.to_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"));
    assert!(!cookie_line.contains("Secure"), "plain http: {cookie_line}");
    // Other query parameters survive the redirect.
    let answer = http(bridge.addr, &format!("/?ws=x&clave={CODE}"), "").await;
    assert!(
        answer.contains("\r\nlocation: /?ws=x\r\n") || answer.contains("\r\nLocation: /?ws=x\r\n"),
        "{answer}"
    );
    // The cookie opens sessions.
    says_hola(bridge.addr, "", Some(&format!("otra=1; clave_demo={CODE}"))).await;
    // A wrong link is redirected too, with no cookie: the page asks.
    let answer = http(bridge.addr, "/?clave=mala", "").await;
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    assert!(!answer.to_lowercase().contains("set-cookie"), "{answer}");
    assert!(!log.text().contains(CODE));
}

#[tokio::test]
async fn the_cookie_is_secure_when_a_trusted_proxy_ended_https() {
    let mut config = fast_config(servidor_in_process().await);
    config.access_code = Some(AccessCode::new(CODE).unwrap());
    config.trusted_proxies = TrustedProxies::new(["127.0.0.1"]).unwrap();
    let bridge = Bridge::start(config).await;
    let answer = http(
        bridge.addr,
        &format!("/?clave={CODE}"),
        "X-Forwarded-Proto: https\r\n",
    )
    .await;
    let cookie_line = answer
        .lines()
        .find(|line| line.to_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(cookie_line.ends_with("; Secure"), "{cookie_line}");
}

#[tokio::test]
async fn healthz_stays_open_without_the_code() {
    let (bridge, _metrics) = coded_bridge().await;
    let answer = http(bridge.addr, "/healthz", "").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_plain_get_of_ws_learns_each_refusal() {
    // No refusal: the usual 426.
    let bridge = Bridge::to(servidor_in_process().await).await;
    let answer = http(bridge.addr, "/ws", "").await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    assert!(readable_from_any_page(&answer), "{answer}");
    // Another page's origin.
    let answer = http(bridge.addr, "/ws", "Origin: http://otra.example\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(readable_from_any_page(&answer), "{answer}");
    assert!(
        answer.contains("\r\n\r\nla página no es de este puente"),
        "{answer}"
    );
    // Full.
    let mut config = fast_config(servidor_in_process().await);
    config.max_sessions = 1;
    let full = Bridge::start(config).await;
    let _held = full.connect().await;
    let answer = http(full.addr, "/ws", "").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after: 5"), "{answer}");
    assert!(readable_from_any_page(&answer), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\nel puente está lleno\n"),
        "{answer}"
    );
}

/// Whether `answer` may be read by a page from any origin, `Retry-After`
/// included.
fn readable_from_any_page(answer: &str) -> bool {
    let head = answer.to_lowercase();
    head.contains("\r\naccess-control-allow-origin: *\r\n")
        && head.contains("\r\naccess-control-expose-headers: retry-after\r\n")
}

#[tokio::test]
async fn every_refusal_of_ws_is_readable_by_a_page_from_another_origin() {
    // A page served elsewhere (`?ws=` names this bridge) fetches /ws to
    // learn why; without CORS its fetch fails as blindly as the WebSocket.
    // (403, 426 and a full bridge's 503: a_plain_get_of_ws_learns_each_refusal.)
    let (coded, _metrics) = coded_bridge().await;
    let answer = http(coded.addr, "/ws", "Origin: http://otra.example\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(readable_from_any_page(&answer), "{answer}");

    let mut config = fast_config(servidor_in_process().await);
    config.max_sessions = 2;
    config.max_sessions_per_client = 1;
    config.session.close_grace = std::time::Duration::from_secs(5);
    config.drain = std::time::Duration::from_secs(5);
    let bridge = Bridge::start(config).await;
    // The 101 is no answer a script reads: no CORS headers on it.
    let mut held = TcpStream::connect(bridge.addr).await.unwrap();
    held.write_all(
        format!("GET /ws HTTP/1.1\r\nHost: {}\r\n{UPGRADE}\r\n", bridge.addr).as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0; 1024];
    let read = within(PATIENCE, "the 101", held.read(&mut head))
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&head[..read]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("access-control"), "{head}");
    // One session from this address is its cap: 429.
    let answer = http(bridge.addr, "/ws", UPGRADE).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(readable_from_any_page(&answer), "{answer}");
    // Stopping, while the held session (which answers no Close) keeps the
    // drain going.
    bridge.stop();
    let answer = http(bridge.addr, "/ws", "").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.ends_with("el puente se está deteniendo\n"),
        "{answer}"
    );
    assert!(readable_from_any_page(&answer), "{answer}");
}
