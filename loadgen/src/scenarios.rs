//! What is measured, with every reply checked, and the report.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::peers::Peer;

/// The longest any one reply may take before the run fails.
const PATIENCE: Duration = Duration::from_secs(30);
/// The request/response line: 63 bytes and its newline.
const LINE: &[u8; 64] = b"hola, servidor: 0123456789 abcdefghijklmnopqrstuvwxyz ~ tema 12\n";

/// How a client reaches the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Raw TCP.
    Tcp,
    /// A WebSocket to the bridge's `/ws`, text messages.
    WebSocket,
}

/// Prints `label: n/total` to stderr about once a second until dropped.
struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(label: String, done: Arc<AtomicU64>, total: Option<u64>, unit: &'static str) -> Self {
        let task = tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let done = done.load(Ordering::Relaxed);
                let total = total.map(|t| format!("/{t}")).unwrap_or_default();
                eprint!(
                    "\r  {label}: {done}{total} {unit} ({:.0} s)   ",
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
            }
        });
        Self { task }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        eprint!("\r\x1b[2K");
    }
}

/// What one stream measured.
pub struct Streamed {
    /// Throughput.
    pub mib_per_second: f64,
    /// CPU seconds the server process used per GiB passed through it: the
    /// figure that moves least with the machine's load.
    pub cpu_per_gib: f64,
}

/// Streams `total` bytes over one connection while reading the answer,
/// checking every byte.
pub async fn stream(peer: &Peer, total: u64, uppercase: bool) -> anyhow::Result<Streamed> {
    // A 64-byte period of lowercase letters: cheap to check at any offset.
    let period: Vec<u8> = (0..64u8).map(|i| b'a' + i % 26).collect();
    let expected: Vec<u8> = period
        .iter()
        .map(|b| {
            if uppercase {
                b.to_ascii_uppercase()
            } else {
                *b
            }
        })
        .collect();
    let chunk: Vec<u8> = period.iter().copied().cycle().take(64 * 1024).collect();
    let expected_run: Vec<u8> = expected.iter().copied().cycle().take(128 * 1024).collect();

    let stream = TcpStream::connect(peer.addr).await?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let cpu_before = peer.cpu_seconds()?;
    let started = Instant::now();
    let writing = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            let part = (total - sent).min(chunk.len() as u64) as usize;
            writer.write_all(&chunk[..part]).await?;
            sent += part as u64;
        }
        writer.shutdown().await?;
        anyhow::Ok(())
    });

    let received = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("stream {}", peer.name),
        Arc::clone(&received),
        Some(total >> 20),
        "MiB",
    );
    let mut buffer = vec![0u8; 64 * 1024];
    let mut offset: u64 = 0;
    while offset < total {
        let read = timeout(PATIENCE, reader.read(&mut buffer))
            .await
            .context("no answer in time")??;
        ensure!(read > 0, "{} closed after {offset} bytes", peer.name);
        let start = (offset % 64) as usize;
        ensure!(
            buffer[..read] == expected_run[start..start + read],
            "{}: wrong bytes after {offset}",
            peer.name
        );
        offset += read as u64;
        received.store(offset >> 20, Ordering::Relaxed);
    }
    let elapsed = started.elapsed();
    let cpu = peer.cpu_seconds()? - cpu_before;
    drop(progress);
    writing.await??;
    Ok(Streamed {
        mib_per_second: total as f64 / (1 << 20) as f64 / elapsed.as_secs_f64(),
        cpu_per_gib: cpu / (total as f64 / (1u64 << 30) as f64),
    })
}

/// Requests/s and the latency histogram (µs) of a request/response run.
pub struct Requests {
    /// Completed round trips per second.
    pub per_second: f64,
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
    /// CPU microseconds the server process used per round trip: like the
    /// stream's CPU per GiB, it moves less with the machine's load than
    /// the rate does.
    pub cpu_micros: f64,
}

/// One client that sends a line and waits for its answer, over and over.
enum Client {
    Tcp(TcpStream, Vec<u8>),
    WebSocket(
        Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>,
    ),
}

impl Client {
    async fn connect(peer: &Peer, link: Link) -> anyhow::Result<Client> {
        Ok(match link {
            Link::Tcp => {
                let stream = TcpStream::connect(peer.addr).await?;
                stream.set_nodelay(true)?;
                Client::Tcp(stream, Vec::with_capacity(256))
            }
            Link::WebSocket => {
                let url = format!("ws://{}/ws", peer.addr);
                let (ws, _) = tokio_tungstenite::connect_async(url).await?;
                Client::WebSocket(Box::new(ws))
            }
        })
    }

    /// Sends `line` and reads up to the answer's newline.
    async fn round_trip(&mut self, line: &[u8], answer: &mut Vec<u8>) -> anyhow::Result<()> {
        answer.clear();
        match self {
            Client::Tcp(stream, buffer) => {
                stream.write_all(line).await?;
                loop {
                    buffer.clear();
                    let read = stream.read_buf(buffer).await?;
                    ensure!(read > 0, "the server closed the connection");
                    answer.extend_from_slice(buffer);
                    if answer.last() == Some(&b'\n') {
                        return Ok(());
                    }
                }
            }
            Client::WebSocket(ws) => {
                let text = std::str::from_utf8(line)?;
                ws.send(Message::text(text)).await?;
                loop {
                    match ws.next().await.context("the bridge closed the session")?? {
                        Message::Text(text) => answer.extend_from_slice(text.as_bytes()),
                        Message::Binary(bytes) => answer.extend_from_slice(&bytes),
                        Message::Close(frame) => bail!("closed by the bridge: {frame:?}"),
                        _ => continue,
                    }
                    if answer.last() == Some(&b'\n') {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// `connections` clients doing round trips of 64-byte lines for `duration`.
pub async fn request_response(
    peer: &Peer,
    link: Link,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Requests> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(Client::connect(peer, link).await?);
    }
    let expected: Vec<u8> = if peer.name == "echo" {
        LINE.to_vec()
    } else {
        LINE.to_ascii_uppercase()
    };
    let expected = Arc::new(expected);
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("{} × {connections} {}", peer.name, link_name(link)),
        Arc::clone(&done),
        None,
        "round trips",
    );
    let cpu_before = peer.cpu_seconds()?;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let expected = Arc::clone(&expected);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut answer = Vec::with_capacity(128);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    timeout(PATIENCE, client.round_trip(LINE, &mut answer))
                        .await
                        .context("no answer in time")??;
                    let micros = sent.elapsed().as_micros().max(1) as u64;
                    ensure!(answer == *expected, "wrong answer {answer:?}");
                    latency.saturating_record(micros);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(latency)
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        latency.add(task.await??)?;
    }
    let elapsed = started.elapsed();
    let cpu = peer.cpu_seconds()? - cpu_before;
    drop(progress);
    Ok(Requests {
        per_second: latency.len() as f64 / elapsed.as_secs_f64(),
        cpu_micros: cpu * 1e6 / latency.len().max(1) as f64,
        latency,
    })
}

/// Holds `count` idle clients (each answered once, then silent) and returns
/// the peer's resident memory then, and before, in bytes.
pub async fn idle(peer: &Peer, link: Link, count: usize) -> anyhow::Result<(u64, u64)> {
    let before = peer.resident_bytes()?;
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("idle {} {}", peer.name, link_name(link)),
        Arc::clone(&done),
        Some(count as u64),
        "clients",
    );
    let mut clients = Vec::with_capacity(count);
    let mut answer = Vec::new();
    let expected = LINE.to_ascii_uppercase();
    for _ in 0..count {
        let mut client = Client::connect(peer, link).await?;
        timeout(PATIENCE, client.round_trip(LINE, &mut answer))
            .await
            .context("no answer in time")??;
        ensure!(answer == expected, "wrong answer {answer:?}");
        clients.push(client);
        done.fetch_add(1, Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = peer.resident_bytes()?;
    drop(progress);
    drop(clients);
    Ok((before, after))
}

fn link_name(link: Link) -> &'static str {
    match link {
        Link::Tcp => "TCP",
        Link::WebSocket => "WebSocket",
    }
}
