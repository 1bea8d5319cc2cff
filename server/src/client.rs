//! The conversation behind `cliente`: the tutorial's ` -> ` prompt, one line
//! sent per message, and its answer printed as `Recibido del servidor: …`.
//!
//! Unlike the tutorial's client, an answer is read up to its newline however
//! long it is and however the network cuts it, and it is streamed to the
//! output as it arrives, so no answer is cut and none is held whole in memory.

use std::io;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::console::describe_io;

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
    #[error("no se pudo conectar a {addr}: {}", describe_io(.source))]
    Connect {
        /// `host:port` as given.
        addr: String,
        /// Why.
        source: io::Error,
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
    Connection(#[source] io::Error),
    /// The server did not answer in time.
    #[error("el servidor no respondió en {} s", .0.as_secs_f32())]
    AnswerTimeout(Duration),
    /// Standard input could not be read.
    #[error("no se pudo leer la entrada: {}", describe_io(.0))]
    Input(#[source] io::Error),
    /// Standard output could not be written.
    #[error("no se pudo escribir la salida: {}", describe_io(.0))]
    Output(#[source] io::Error),
}

/// Connects to `host:port` over TCP, waiting at most `within`.
pub async fn connect(host: &str, port: u16, within: Duration) -> Result<TcpStream, ClientError> {
    let addr = format!("{host}:{port}");
    match timeout(within, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => {
            // Each message is one small write; do not let Nagle hold it.
            stream.set_nodelay(true).map_err(ClientError::Connection)?;
            Ok(stream)
        }
        Ok(Err(source)) => Err(ClientError::Connect { addr, source }),
        Err(_elapsed) => Err(ClientError::ConnectTimeout {
            addr,
            after: within,
        }),
    }
}

/// Runs the tutorial's conversation over `server`: prompt, read a line from
/// `input`, send it with `\n`, print the answer line, until `q` or end of
/// input. Each answer must start arriving within `answer_timeout`, and no
/// pause inside it may be longer.
pub async fn converse<S, I, O>(
    server: S,
    mut input: I,
    mut output: O,
    answer_timeout: Duration,
) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: AsyncBufRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let (from_server, mut to_server) = tokio::io::split(server);
    let mut from_server = BufReader::new(from_server);
    let mut line = Vec::new();
    loop {
        write_out(&mut output, PROMPT.as_bytes()).await?;
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .await
            .map_err(ClientError::Input)?;
        if read == 0 {
            // End of input: finish the prompt's line, as a typed Enter would.
            return write_out(&mut output, b"\n").await;
        }
        let message = strip_line_end(&line);
        if message == QUIT {
            return Ok(());
        }

        let mut outgoing = Vec::with_capacity(message.len() + 1);
        outgoing.extend_from_slice(message);
        outgoing.push(b'\n');
        to_server
            .write_all(&outgoing)
            .await
            .map_err(ClientError::Connection)?;
        to_server.flush().await.map_err(ClientError::Connection)?;

        copy_answer(&mut from_server, &mut output, answer_timeout).await?;
    }
}

/// Streams one answer line from `server` to `output`, prefixed as in the
/// tutorial. The prefix is written only once the answer starts, so a server
/// that closes instead of answering does not leave a half-printed line.
async fn copy_answer<R, O>(
    server: &mut R,
    output: &mut O,
    within: Duration,
) -> Result<(), ClientError>
where
    R: AsyncBufRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut started = false;
    loop {
        let available = match timeout(within, server.fill_buf()).await {
            Ok(Ok(available)) => available,
            Ok(Err(error)) => return Err(ClientError::Connection(error)),
            Err(_elapsed) => return Err(ClientError::AnswerTimeout(within)),
        };
        if available.is_empty() {
            if started {
                // Keep what was printed on its own line before the error.
                write_out(output, b"\n").await?;
            }
            return Err(ClientError::ServerClosed);
        }
        if !started {
            write_out(output, ANSWER_PREFIX.as_bytes()).await?;
            started = true;
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..=end], true),
            None => (available, false),
        };
        let taken = chunk.len();
        write_out(output, chunk).await?;
        server.consume(taken);
        if done {
            return Ok(());
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
            for byte in crate::upcase::upcase_bytes(&buffer[..read]) {
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
            client_end,
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
        converse(client_end, &b"hola"[..], &mut printed, PATIENCE)
            .await
            .unwrap();
        assert_eq!(printed, b" -> Recibido del servidor: HOLA\n -> \n");
    }

    #[tokio::test]
    async fn a_server_that_closes_is_an_error() {
        let (client_end, server_end) = duplex(64);
        drop(server_end);
        let mut printed = Vec::new();
        let error = converse(client_end, &b"Hola\n"[..], &mut printed, PATIENCE)
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
            client_end,
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
