//! `cliente --url`: the same conversation over WebSocket, through `bridge`
//! (`ws://`, or `wss://` for a bridge with TLS).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::client::{ClientError, Link};

/// A WebSocket session with the bridge.
pub struct WebSocketLink {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
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
/// certificates in `ca_cert` (a demo's self-signed certificate, say).
pub async fn connect_url(
    url: &str,
    ca_cert: Option<&Path>,
    within: Duration,
) -> Result<WebSocketLink, ClientError> {
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(ClientError::BadUrl(url.to_string()));
    }
    let connector = Connector::Rustls(tls_config(ca_cert)?);
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector));
    match timeout(within, connecting).await {
        Ok(Ok((ws, _response))) => Ok(WebSocketLink { ws }),
        Ok(Err(error)) => Err(handshake_error(url, error)),
        Err(_elapsed) => Err(ClientError::ConnectTimeout {
            addr: url.to_string(),
            after: within,
        }),
    }
}

fn tls_config(ca_cert: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_cert {
        let unreadable = |reason: String| ClientError::Certificate {
            path: path.to_path_buf(),
            reason,
        };
        let certificates = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| unreadable(error.to_string()))?;
        if certificates.is_empty() {
            return Err(unreadable(String::from(
                "no contiene ningún certificado PEM",
            )));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|error| unreadable(error.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Handshake {
            url: String::new(),
            reason: error.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn handshake_error(url: &str, error: WsError) -> ClientError {
    match error {
        WsError::Io(source) => match tls_problem(&source) {
            Some(reason) => ClientError::Handshake {
                url: url.to_string(),
                reason,
            },
            None => ClientError::Connect {
                addr: url.to_string(),
                source,
            },
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

/// rustls reports a refused certificate as an io error wrapping its own.
fn tls_problem(error: &std::io::Error) -> Option<String> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(problem) => format!(
            "el certificado del puente no es válido o no es de confianza ({problem:?}); \
             si es propio, indíquelo con --ca-cert FICHERO"
        ),
        other => format!("error de TLS: {other}"),
    })
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
