//! The minimal TCP relay (`loadgen relay-tcp`): the cost floor of one
//! user-space hop. Whatever a bridge adds per round trip beyond what this
//! adds is the bridge's own work, not the price of being a separate process.
//!
//! It prints `… escuchando en ADDR` first, as the echo servers do.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Bytes read at most per read, in each direction: the size the bridge reads
/// from its target, so a stream costs both the same number of reads there.
const READ_SIZE: usize = 16 * 1024;

/// Accepts connections on `listen` and relays each to `target`, one task per
/// direction, nothing else (no timeouts, no logging, no limits).
pub async fn tcp(listen: &str, target: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("Relé escuchando en {}", listener.local_addr()?);
    let target = target.to_string();
    loop {
        let (client, _) = listener.accept().await?;
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(&target).await else {
                return;
            };
            // As the bridge and servidor do: small messages go out at once.
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (upstream_read, upstream_write) = upstream.into_split();
            tokio::spawn(pump(upstream_read, client_write));
            pump(client_read, upstream_write).await;
        });
    }
}

/// Copies until end of stream or an error, then passes the end on (a
/// half-close), so that a client that stops sending still gets every answer.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if to.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}
