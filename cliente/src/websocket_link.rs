//! `cliente --url`: the same conversation over WebSocket, through `bridge`
//! (`ws://`, or `wss://` for a bridge with TLS).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http as tungstenite_http;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::wss::{self, CertificateProblem};
use crate::{ClientError, Link};

/// A WebSocket session with the bridge.
pub struct WebSocketLink {
    ws: WebSocketStream<MaybeTlsStream<FirstByte<TcpStream>>>,
}

impl Link for WebSocketLink {
    /// A line that is valid UTF-8 goes as a text message, as a browser
    /// sends it; anything else as binary.
    async fn send(&mut self, line: &[u8]) -> Result<(), ClientError> {
        let message = match std::str::from_utf8(line) {
            Ok(text) => Message::text(text),
            Err(_) => Message::binary(line.to_vec()),
        };
        self.ws.send(message).await.map_err(session_error)
    }

    async fn receive(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            let message = match self.ws.next().await {
                None => return Ok(Vec::new()),
                Some(Err(error)) => return Err(session_error(error)),
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) if !text.is_empty() => return Ok(text.as_bytes().to_vec()),
                Message::Binary(bytes) if !bytes.is_empty() => return Ok(bytes.to_vec()),
                Message::Close(Some(frame)) if frame.code != CloseCode::Normal => {
                    return Err(ClientError::Closed {
                        code: frame.code.into(),
                        reason: frame.reason.to_string(),
                    });
                }
                Message::Close(_) => return Ok(Vec::new()),
                _ => continue,
            }
        }
    }

    /// Sends the close and waits, briefly, for the bridge's answer.
    async fn close(&mut self) {
        let goodbye = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if self.ws.close(Some(goodbye)).await.is_err() {
            return;
        }
        let answered = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = timeout(CLOSE_WAIT, answered).await;
    }
}

/// How long to wait for the bridge to answer our close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Opens a WebSocket session at `url` (`ws://` or `wss://`), waiting at most
/// `within`. For `wss://`, the usual public roots are trusted, plus the PEM
/// certificates in `ca_cert` (a demo's self-signed certificate, say), which
/// are also accepted as they are when the bridge presents one of them.
pub async fn connect_url(
    url: &str,
    ca_cert: Option<&Path>,
    within: Duration,
) -> Result<WebSocketLink, ClientError> {
    let bad_url = || ClientError::BadUrl(url.to_string());
    let secure = url.starts_with("wss://");
    if !(secure || url.starts_with("ws://")) {
        return Err(bad_url());
    }
    let request = url.into_client_request().map_err(|_| bad_url())?;
    // rustls wants an IPv6 address without the URL's brackets.
    let host = request
        .uri()
        .host()
        .map(|host| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
        .ok_or_else(bad_url)?;
    let port = request
        .uri()
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let path = request.uri().path().to_string();
    let connector = Connector::Rustls(wss::client_config(ca_cert)?);
    let connecting = async {
        let socket = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|error| ClientError::Connect {
                addr: url.to_string(),
                error,
            })?;
        // Each message is one small write; do not let Nagle hold it.
        socket.set_nodelay(true).map_err(ClientError::Connection)?;
        let first_byte = Arc::new(OnceLock::new());
        let socket = FirstByte {
            inner: socket,
            seen: Arc::clone(&first_byte),
        };
        let opened =
            tokio_tungstenite::client_async_tls_with_config(request, socket, None, Some(connector))
                .await;
        match opened {
            Ok((ws, _response)) => Ok(WebSocketLink { ws }),
            Err(error) => Err(handshake_error(
                url,
                &path,
                (&host, port),
                ca_cert,
                first_byte.get().copied(),
                error,
            )),
        }
    };
    match timeout(within, connecting).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => Err(ClientError::ConnectTimeout {
            addr: url.to_string(),
            after: within,
        }),
    }
}

/// A socket that keeps the first byte the bridge sent. When the handshake
/// fails, that byte tells what the bridge speaks, which the errors do not:
/// a TLS record starts with 0x15 (alert) or 0x16 (handshake), where httparse
/// only says "invalid HTTP version"; an HTTP answer starts with `H`, where
/// rustls only says "corrupt message".
struct FirstByte<S> {
    inner: S,
    seen: Arc<OnceLock<u8>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByte<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.seen.get().is_none() {
            if let Some(&byte) = buf.filled().get(before) {
                let _ = self.seen.set(byte);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByte<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TLS alert record's first byte: rustls answers an HTTP request with one.
const TLS_ALERT: u8 = 0x15;
/// A TLS handshake record's first byte (a server's hello).
const TLS_HANDSHAKE: u8 = 0x16;

/// Why opening the session at `url` (whose path, host and port are given)
/// failed, given the first byte the bridge sent, if any.
fn handshake_error(
    url: &str,
    path: &str,
    (host, port): (&str, u16),
    ca_cert: Option<&Path>,
    first_byte: Option<u8>,
    error: WsError,
) -> ClientError {
    let wrong_scheme = |bridge_tls: bool, from: &str, to: &str| ClientError::WrongScheme {
        url: url.to_string(),
        suggested: url.replacen(from, to, 1),
        bridge_tls,
    };
    let secure = url.starts_with("wss://");
    if !secure && matches!(first_byte, Some(TLS_ALERT | TLS_HANDSHAKE)) {
        return wrong_scheme(true, "ws://", "wss://");
    }
    if !secure && matches!(error, WsError::HttpFormat(_) | WsError::Protocol(_)) {
        // An HTTP answer starts with `H` (`HTTP/1.1 …`); anything else
        // that is not TLS is some other protocol.
        if first_byte.is_some_and(|byte| byte != b'H') {
            return ClientError::NotWebSocket {
                url: url.to_string(),
                host: host.to_string(),
                port,
            };
        }
    }
    if let WsError::Http(response) = &error {
        // 426 with `Upgrade: TLS/…` (RFC 2817): the bridge answers plain
        // HTTP on its TLS port this way.
        let upgrade = response.headers().get(tungstenite_http::header::UPGRADE);
        let to_tls = upgrade
            .and_then(|upgrade| upgrade.to_str().ok())
            .is_some_and(|upgrade| upgrade.starts_with("TLS/"));
        if !secure && response.status() == tungstenite_http::StatusCode::UPGRADE_REQUIRED && to_tls
        {
            return wrong_scheme(true, "ws://", "wss://");
        }
    }
    if secure && first_byte == Some(b'H') && matches!(error, WsError::Io(_)) {
        // The answer to our TLS hello began like `HTTP/1.1 400`: the bridge
        // speaks plain HTTP, and no certificate was ever involved.
        return wrong_scheme(false, "wss://", "ws://");
    }
    match error {
        WsError::Io(source) => match tls_problem(&source) {
            Some(rustls::Error::InvalidCertificate(problem)) => ClientError::BridgeCertificate {
                url: url.to_string(),
                problem: CertificateProblem::from_rustls(problem, host, ca_cert),
            },
            Some(other) => ClientError::Handshake {
                url: url.to_string(),
                reason: format!("error de TLS: {other}"),
            },
            None => ClientError::Connect {
                addr: url.to_string(),
                error: source,
            },
        },
        WsError::Http(response) if !path.ends_with("/ws") => ClientError::MissingWsPath {
            url: url.to_string(),
            status: response.status().as_u16(),
            suggested: with_ws_path(url, path),
        },
        WsError::Http(response) => ClientError::Refused {
            url: url.to_string(),
            status: response.status().as_u16(),
            body: response
                .body()
                .as_deref()
                .map(|body| String::from_utf8_lossy(body).trim().to_string())
                .unwrap_or_default(),
        },
        WsError::Url(_) => ClientError::BadUrl(url.to_string()),
        other => ClientError::Handshake {
            url: url.to_string(),
            reason: other.to_string(),
        },
    }
}

/// `url` with its `path` (the bridge's page, not its WebSocket) made to end
/// in `/ws`: `wss://h:8443/` and `wss://h:8443` give `wss://h:8443/ws`,
/// `wss://h/demo/` gives `wss://h/demo/ws` (a bridge behind a prefix), and
/// a file's name is replaced (`ws://h/index.html` gives `ws://h/ws`).
fn with_ws_path(url: &str, path: &str) -> String {
    // The URL up to its path: scheme and authority (a query is dropped).
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    let authority_end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |at| after_scheme + at);
    let base = &url[..authority_end];
    let directory = match path.rsplit_once('/') {
        Some((directory, last)) if last.is_empty() || last.contains('.') => directory,
        _ => path,
    };
    format!("{base}{}/ws", directory.trim_end_matches('/'))
}

/// rustls reports a failed handshake as an io error wrapping its own.
fn tls_problem(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

fn session_error(error: WsError) -> ClientError {
    match error {
        WsError::Io(error) => ClientError::Connection(error),
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ClientError::ServerClosed
        }
        other => ClientError::Protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_ws_gets_it_added() {
        let cases = [
            ("wss://host:8443/", "/", "wss://host:8443/ws"),
            ("wss://host:8443", "/", "wss://host:8443/ws"),
            ("ws://host/demo/", "/demo/", "ws://host/demo/ws"),
            ("ws://host/demo", "/demo", "ws://host/demo/ws"),
            ("ws://host/index.html", "/index.html", "ws://host/ws"),
            ("ws://[::1]:8080/?x=1", "/", "ws://[::1]:8080/ws"),
        ];
        for (url, path, suggested) in cases {
            assert_eq!(with_ws_path(url, path), suggested, "{url}");
        }
    }
}
