//! `cliente --url` given the wrong address: a bridge's page rather than its
//! WebSocket (`wss://host:8443/`, without `/ws`) names the missing path;
//! `ws://` to a bridge's TLS port, which answers 426 with `Upgrade: TLS`,
//! names `wss://`.

use std::time::Duration;

use cliente::websocket_link::connect_url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

const PATIENCE: Duration = Duration::from_secs(10);

/// A web server that answers every request with `status` (and the
/// `extra` header lines) and a page, as the bridge answers `/` (200 with
/// `--web`, 404 without); its address.
async fn web_server(status: &'static str, extra: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = vec![0; 4096];
            let mut read = 0;
            while !request[..read].windows(4).any(|end| end == b"\r\n\r\n") {
                match stream.read(&mut request[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(more) => read += more,
                }
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Type: text/html\r\n\
                 Content-Length: 6\r\nConnection: close\r\n\r\n<html>"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    address
}

#[tokio::test]
async fn a_url_without_ws_names_the_missing_path() {
    for status in ["200 OK", "404 Not Found"] {
        let address = web_server(status, "").await;
        for url in [format!("ws://{address}/"), format!("ws://{address}")] {
            let refused = timeout(PATIENCE, connect_url(&url, None, PATIENCE))
                .await
                .unwrap()
                .err()
                .expect("a page is not a WebSocket");
            let code = &status[..3];
            assert_eq!(
                refused.to_string(),
                format!(
                    "el puente contestó HTTP {code} en {url}, que no es la dirección del \
                     WebSocket: ¿falta /ws al final de la dirección? Pruebe ws://{address}/ws"
                )
            );
        }
    }
}

#[tokio::test]
async fn a_refusal_at_ws_is_still_the_bridges_answer() {
    let address = web_server("403 Forbidden", "").await;
    let url = format!("ws://{address}/ws");
    let refused = timeout(PATIENCE, connect_url(&url, None, PATIENCE))
        .await
        .unwrap()
        .err()
        .expect("refused");
    assert!(
        refused
            .to_string()
            .starts_with(&format!("el puente rechazó la conexión a {url}: HTTP 403")),
        "{refused}"
    );
}

#[tokio::test]
async fn plain_websocket_to_a_tls_port_names_wss() {
    let upgrade = "Upgrade: TLS/1.2, HTTP/1.1\r\n";
    let address = web_server("426 Upgrade Required", upgrade).await;
    for path in ["/ws", "/"] {
        let url = format!("ws://{address}{path}");
        let refused = timeout(PATIENCE, connect_url(&url, None, PATIENCE))
            .await
            .unwrap()
            .err()
            .expect("refused");
        assert_eq!(
            refused.to_string(),
            format!("el puente respondió con TLS: use wss://{address}{path} en lugar de {url}")
        );
    }
}
