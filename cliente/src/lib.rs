//! The conversation behind `cliente`: the tutorial's ` -> ` prompt, one line
//! sent per message, and its answer printed as `Recibido del servidor: …`.
//!
//! Unlike the tutorial's client, an answer is read up to its newline however
//! long it is and however the network cuts it, and it is streamed to the
//! output as it arrives, so no answer is cut and none is held whole in memory.

use std::io;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};
use tokio::net::TcpStream;
use tokio::time::timeout;

use console::describe_io;

pub mod websocket_link;
pub mod wss;

/// Where the tutorial's server listens, and so where `cliente` connects by
/// default (the same address `servidor` listens on by default).
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The tutorial's port.
pub const DEFAULT_PORT: u16 = 5000;

/// The prompt before each message, as in the tutorial.
pub const PROMPT: &str = " -> ";
/// What precedes each answer, as in the tutorial.
pub const ANSWER_PREFIX: &str = "Recibido del servidor: ";
/// The line that ends the conversation, as in the tutorial.
pub const QUIT: &[u8] = b"q";

/// Why a conversation ended badly.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("no se pudo conectar a {addr}: {}", describe_io(.error))]
    Connect {
        /// `host:port` as given.
        addr: String,
        /// Why (said in the message, so not also a `source()`).
        error: io::Error,
    },
    /// Connecting took longer than the timeout.
    #[error("no se pudo conectar a {addr}: sin respuesta en {} s", .after.as_secs_f32())]
    ConnectTimeout {
        /// `host:port` as given.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The server closed the connection before answering in full.
    #[error("el servidor cerró la conexión")]
    ServerClosed,
    /// Sending or receiving failed.
    #[error("se perdió la conexión con el servidor: {}", describe_io(.0))]
    Connection(io::Error),
    /// The server did not answer in time.
    #[error("el servidor no respondió en {} s", .0.as_secs_f32())]
    AnswerTimeout(Duration),
    /// Standard input could not be read.
    #[error("no se pudo leer la entrada: {}", describe_io(.0))]
    Input(io::Error),
    /// `--url` is not a WebSocket URL.
    #[error("URL no válida «{0}»: debe ser ws://MÁQUINA:PUERTO/ws o wss://MÁQUINA:PUERTO/ws")]
    BadUrl(String),
    /// The bridge answered the handshake with an HTTP error.
    #[error("el puente rechazó la conexión a {url}: HTTP {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Refused {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What the bridge said.
        body: String,
    },
    /// The bridge answered over HTTP at a URL whose path is not the
    /// WebSocket's (`wss://host:8443/`, where `/ws` is meant).
    #[error(
        "el puente contestó HTTP {status} en {url}, que no es la dirección del WebSocket: \
         ¿falta /ws al final de la dirección? Pruebe {suggested}"
    )]
    MissingWsPath {
        /// The URL as given.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The URL ending in `/ws`.
        suggested: String,
    },
    /// The WebSocket handshake failed (TLS, say).
    #[error("no se pudo abrir el WebSocket {url}: {reason}")]
    Handshake {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The bridge's certificate was refused.
    #[error("no se pudo abrir el WebSocket {url}: {problem}")]
    BridgeCertificate {
        /// The URL.
        url: String,
        /// Why.
        problem: wss::CertificateProblem,
    },
    /// `ws://` to a bridge that answers with TLS, or `wss://` to one that
    /// answers without it.
    #[error("el puente respondió {}: use {suggested} en lugar de {url}", if *.bridge_tls { "con TLS" } else { "sin TLS" })]
    WrongScheme {
        /// The URL as given.
        url: String,
        /// The same URL with the other scheme.
        suggested: String,
        /// Whether the bridge spoke TLS.
        bridge_tls: bool,
    },
    /// `ws://` to something that answered, but not in HTTP: most likely
    /// `servidor` itself (which answers the request in uppercase), not the
    /// bridge.
    #[error(
        "{url} no es un puente WebSocket: contestó sin HTTP (¿es el servidor? \
         Para hablarle por TCP: cliente --host {host} --port {port})"
    )]
    NotWebSocket {
        /// The URL as given.
        url: String,
        /// The URL's host.
        host: String,
        /// The URL's port.
        port: u16,
    },
    /// The TLS settings could not be built.
    #[error("no se pudo preparar TLS: {0}")]
    Tls(String),
    /// A certificate given with `--ca-cert` could not be used.
    #[error("no se pudo usar el certificado {}: {reason}", .path.display())]
    Certificate {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The bridge ended the session with an error code.
    #[error("el puente cerró la sesión: {code} {reason}")]
    Closed {
        /// The WebSocket close code.
        code: u16,
        /// The reason it gave.
        reason: String,
    },
    /// The WebSocket protocol was broken.
    #[error("error de protocolo WebSocket: {0}")]
    Protocol(String),
    /// Standard output could not be written.
    #[error("no se pudo escribir la salida: {}", describe_io(.0))]
    Output(io::Error),
}

/// A connection to the server, as the conversation needs it: lines go out,
/// bytes come back in whatever pieces the network makes.
#[allow(async_fn_in_trait)] // used on one thread; no `Send` bound wanted
pub trait Link {
    /// Sends one line, `\n` included.
    async fn send(&mut self, line: &[u8]) -> Result<(), ClientError>;
    /// The next bytes from the server; empty once it has closed in order.
    async fn receive(&mut self) -> Result<Vec<u8>, ClientError>;
    /// Says goodbye in order; errors do not matter any more.
    async fn close(&mut self);
}

/// A byte stream: raw TCP, as the tutorial's client uses.
pub struct StreamLink<S> {
    stream: S,
}

impl<S> StreamLink<S> {
    /// Talks over `stream`.
    pub fn new(stream: S) -> Self {
        Self { stream }
    }
}

/// The most bytes taken from the socket at once.
const RECEIVE_SIZE: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Link for StreamLink<S> {
    async fn send(&mut self, line: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(line)
            .await
            .map_err(ClientError::Connection)
    }

    async fn receive(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut buffer = Vec::with_capacity(RECEIVE_SIZE);
        self.stream
            .read_buf(&mut buffer)
            .await
            .map_err(ClientError::Connection)?;
        Ok(buffer)
    }

    async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// Connects to `host:port` over TCP, waiting at most `within`.
pub async fn connect(
    host: &str,
    port: u16,
    within: Duration,
) -> Result<StreamLink<TcpStream>, ClientError> {
    let addr = format!("{host}:{port}");
    match timeout(within, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => {
            // Each message is one small write; do not let Nagle hold it.
            stream.set_nodelay(true).map_err(ClientError::Connection)?;
            Ok(StreamLink::new(stream))
        }
        Ok(Err(error)) => Err(ClientError::Connect { addr, error }),
        Err(_elapsed) => Err(ClientError::ConnectTimeout {
            addr,
            after: within,
        }),
    }
}

/// Runs the tutorial's conversation over `link`: prompt, read a line from
/// `input`, send it with `\n`, print the answer line, until `q` or end of
/// input. Each answer must start arriving within `answer_timeout`, and no
/// pause inside it may be longer.
pub async fn converse<L, I, O>(
    mut link: L,
    mut input: I,
    mut output: O,
    answer_timeout: Duration,
) -> Result<(), ClientError>
where
    L: Link,
    I: AsyncBufRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut line = Vec::new();
    // Bytes that came after the end of the last answer.
    let mut early = Vec::new();
    loop {
        write_out(&mut output, PROMPT.as_bytes()).await?;
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .await
            .map_err(ClientError::Input)?;
        if read == 0 {
            link.close().await;
            // End of input: finish the prompt's line, as a typed Enter would.
            return write_out(&mut output, b"\n").await;
        }
        let message = strip_line_end(&line);
        if message == QUIT {
            link.close().await;
            return Ok(());
        }

        let mut outgoing = Vec::with_capacity(message.len() + 1);
        outgoing.extend_from_slice(message);
        outgoing.push(b'\n');
        link.send(&outgoing).await?;

        copy_answer(&mut link, &mut early, &mut output, answer_timeout).await?;
    }
}

/// Streams one answer line to `output`, prefixed as in the tutorial. The
/// prefix is written only once the answer starts, so a server that closes
/// instead of answering does not leave a half-printed line.
async fn copy_answer<L, O>(
    link: &mut L,
    early: &mut Vec<u8>,
    output: &mut O,
    within: Duration,
) -> Result<(), ClientError>
where
    L: Link,
    O: AsyncWrite + Unpin,
{
    let mut started = false;
    loop {
        let chunk = if early.is_empty() {
            match timeout(within, link.receive()).await {
                Ok(received) => received,
                Err(_elapsed) => Err(ClientError::AnswerTimeout(within)),
            }
        } else {
            Ok(std::mem::take(early))
        };
        let chunk = match chunk {
            Ok(chunk) if !chunk.is_empty() => chunk,
            ended => {
                if started {
                    // Keep what was printed on its own line before the error.
                    write_out(output, b"\n").await?;
                }
                return Err(ended.err().unwrap_or(ClientError::ServerClosed));
            }
        };
        if !started {
            write_out(output, ANSWER_PREFIX.as_bytes()).await?;
            started = true;
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(end) => {
                write_out(output, &chunk[..=end]).await?;
                early.extend_from_slice(&chunk[end + 1..]);
                return Ok(());
            }
            None => write_out(output, &chunk).await?,
        }
    }
}

async fn write_out<O: AsyncWrite + Unpin>(output: &mut O, bytes: &[u8]) -> Result<(), ClientError> {
    output.write_all(bytes).await.map_err(ClientError::Output)?;
    output.flush().await.map_err(ClientError::Output)
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    const PATIENCE: Duration = Duration::from_secs(5);

    #[test]
    fn an_os_error_is_said_once_in_the_message_and_not_as_a_source() {
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        for error in [
            ClientError::Connect {
                addr: "127.0.0.1:5000".into(),
                error: refused(),
            },
            ClientError::Connection(refused()),
            ClientError::Input(refused()),
            ClientError::Output(refused()),
        ] {
            assert!(std::error::Error::source(&error).is_none(), "{error}");
            let message = error.to_string();
            assert_eq!(
                message.matches(&describe_io(&refused())).count(),
                1,
                "{message}"
            );
        }
    }

    /// A stand-in server on the other end of an in-memory pipe that
    /// uppercases whatever arrives, in deliberately tiny pieces.
    async fn tiny_piece_server(server: tokio::io::DuplexStream) {
        let (mut reader, mut writer) = tokio::io::split(server);
        let mut buffer = [0u8; 1024];
        loop {
            let read = match tokio::io::AsyncReadExt::read(&mut reader, &mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            for byte in upcase::upcase_bytes(&buffer[..read]) {
                if writer.write_all(&[byte]).await.is_err() {
                    return;
                }
            }
        }
    }

    #[tokio::test]
    async fn prompts_sends_lines_and_prints_answers() {
        let (client_end, server_end) = duplex(64);
        tokio::spawn(tiny_piece_server(server_end));
        let mut printed = Vec::new();
        converse(
            StreamLink::new(client_end),
            &b"Hola\nadi\xc3\xb3s\r\nq\nignored\n"[..],
            &mut printed,
            PATIENCE,
        )
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8(printed).unwrap(),
            " -> Recibido del servidor: HOLA\n -> Recibido del servidor: ADIÓS\n -> "
        );
    }

    #[tokio::test]
    async fn end_of_input_quits_cleanly() {
        let (client_end, server_end) = duplex(64);
        tokio::spawn(tiny_piece_server(server_end));
        let mut printed = Vec::new();
        converse(
            StreamLink::new(client_end),
            &b"hola"[..],
            &mut printed,
            PATIENCE,
        )
        .await
        .unwrap();
        assert_eq!(printed, b" -> Recibido del servidor: HOLA\n -> \n");
    }

    #[tokio::test]
    async fn a_server_that_closes_is_an_error() {
        let (client_end, server_end) = duplex(64);
        drop(server_end);
        let mut printed = Vec::new();
        let error = converse(
            StreamLink::new(client_end),
            &b"Hola\n"[..],
            &mut printed,
            PATIENCE,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::ServerClosed | ClientError::Connection(_)
            ),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let (client_end, _server_end) = duplex(64);
        let mut printed = Vec::new();
        let error = converse(
            StreamLink::new(client_end),
            &b"Hola\n"[..],
            &mut printed,
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ClientError::AnswerTimeout(_)), "{error:?}");
        assert_eq!(error.to_string(), "el servidor no respondió en 0.05 s");
    }
}
