//! The bare echo servers: the TCP one is the ceiling of the measurements and
//! the bridge's target in the conformance run (`scripts/autobahn`); the
//! WebSocket one is that run's baseline, a plain tokio-tungstenite server.
//!
//! Each prints `… escuchando en ADDR` as its first line, as `servidor` and
//! `bridge` do, so a script can start it on port 0 and read where it is.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Echoes every byte back, one 64 KiB buffer per connection, nothing else.
pub async fn tcp(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("Eco escuchando en {}", listener.local_addr()?);
    loop {
        let (mut stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => read,
                };
                if stream.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Echoes every text and binary message back as it came, with
/// tokio-tungstenite's default settings (as its own
/// `examples/autobahn-server.rs` does); pings are answered and closes
/// completed by tungstenite itself.
pub async fn websocket(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("Eco WebSocket escuchando en {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(websocket_session(stream));
    }
}

/// One WebSocket connection, until the client closes or breaks the protocol
/// (tungstenite has then sent the close itself).
async fn websocket_session(stream: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && ws.send(message).await.is_err()
        {
            return;
        }
    }
}
