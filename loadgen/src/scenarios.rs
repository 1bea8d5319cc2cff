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
pub const PATIENCE: Duration = Duration::from_secs(30);
/// The request/response line: 63 bytes and its newline.
pub const LINE: &[u8; 64] = b"hola, servidor: 0123456789 abcdefghijklmnopqrstuvwxyz ~ tema 12\n";

/// How a client reaches the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Raw TCP.
    Tcp,
    /// A WebSocket to the bridge's `/ws`, text messages.
    WebSocket,
    /// A WebSocket, binary messages: websockify closes on a text message.
    WebSocketBinary,
}

/// Prints `label: n/total` to stderr about once a second until dropped.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts printing.
    pub fn start(
        label: String,
        done: Arc<AtomicU64>,
        total: Option<u64>,
        unit: &'static str,
    ) -> Self {
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
    /// CPU seconds the server process (and its children) used while the
    /// clients were sending, connections and handshakes left out.
    pub cpu_seconds: f64,
}

/// One client that sends a line and waits for its answer, over and over.
pub enum Client {
    /// The connection and its read buffer.
    Tcp(TcpStream, Vec<u8>),
    /// The session and whether it sends binary messages.
    WebSocket(
        Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>,
        bool,
    ),
}

impl Client {
    /// Connects (and completes the WebSocket handshake).
    pub async fn connect(peer: &Peer, link: Link) -> anyhow::Result<Client> {
        Ok(match link {
            Link::Tcp => {
                let stream = TcpStream::connect(peer.addr).await?;
                stream.set_nodelay(true)?;
                Client::Tcp(stream, Vec::with_capacity(256))
            }
            Link::WebSocket | Link::WebSocketBinary => {
                let url = format!("ws://{}/ws", peer.addr);
                let (ws, _) = tokio_tungstenite::connect_async(url).await?;
                Client::WebSocket(Box::new(ws), link == Link::WebSocketBinary)
            }
        })
    }

    /// Sends `line` and reads up to the answer's newline.
    pub async fn round_trip(&mut self, line: &[u8], answer: &mut Vec<u8>) -> anyhow::Result<()> {
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
            Client::WebSocket(ws, binary) => {
                let message = if *binary {
                    Message::binary(line.to_vec())
                } else {
                    Message::text(std::str::from_utf8(line)?)
                };
                ws.send(message).await?;
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
    let mut results = request_response_together(&[peer], link, connections, duration).await?;
    results.pop().context("no result")
}

/// `connections` clients on each of `peers`, all doing round trips at the
/// same time for `duration`: one result per peer. Peers measured together
/// share whatever else the machine does, second by second, so their ratio
/// holds still where figures taken one after the other move by ±30 %.
pub async fn request_response_together(
    peers: &[&Peer],
    link: Link,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Vec<Requests>> {
    let mut clients = Vec::with_capacity(peers.len());
    for peer in peers {
        let mut own = Vec::with_capacity(connections);
        for _ in 0..connections {
            own.push(Client::connect(peer, link).await?);
        }
        clients.push(own);
    }
    let names: Vec<&str> = peers.iter().map(|peer| peer.name.as_str()).collect();
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("{} × {connections} {}", names.join(" ‖ "), link_name(link)),
        Arc::clone(&done),
        None,
        "round trips",
    );
    let mut cpu_before = Vec::with_capacity(peers.len());
    for peer in peers {
        cpu_before.push(peer.cpu_seconds()?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let running: Vec<Vec<_>> = peers
        .iter()
        .zip(clients)
        .map(|(peer, clients)| {
            let expected = Arc::new(if peer.name == "echo" {
                LINE.to_vec()
            } else {
                LINE.to_ascii_uppercase()
            });
            clients
                .into_iter()
                .map(|client| {
                    tokio::spawn(round_trips(
                        client,
                        Arc::clone(&expected),
                        deadline,
                        Arc::clone(&done),
                    ))
                })
                .collect()
        })
        .collect();
    let mut latencies = Vec::with_capacity(peers.len());
    // Handed back open: a server that forks per connection (websockify)
    // must not lose children while its CPU is read.
    let mut open = Vec::new();
    for tasks in running {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for task in tasks {
            let (mine, client) = task.await??;
            latency.add(mine)?;
            open.push(client);
        }
        latencies.push(latency);
    }
    let elapsed = started.elapsed();
    let mut results = Vec::with_capacity(peers.len());
    for ((peer, latency), before) in peers.iter().zip(latencies).zip(cpu_before) {
        let cpu_seconds = peer.cpu_seconds()? - before;
        results.push(Requests {
            per_second: latency.len() as f64 / elapsed.as_secs_f64(),
            latency,
            cpu_seconds,
        });
    }
    drop(open);
    drop(progress);
    Ok(results)
}

/// One client's round trips until `deadline`, each answer checked: their
/// latencies, and the client, still open.
async fn round_trips(
    mut client: Client,
    expected: Arc<Vec<u8>>,
    deadline: Instant,
    done: Arc<AtomicU64>,
) -> anyhow::Result<(Histogram<u64>, Client)> {
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
    Ok((latency, client))
}

/// The pause, once every idle client has answered, before the peer's memory
/// is read: its tasks go idle.
pub const IDLE_SETTLE: Duration = Duration::from_millis(500);

/// Holds `count` idle clients (each answered once, then silent) and returns
/// the peer's resident memory then, and before, in bytes. The memory is
/// read `settle` after the last answer ([`IDLE_SETTLE`], or none in a quick
/// run, whose figures are not kept).
pub async fn idle(
    peer: &Peer,
    link: Link,
    count: usize,
    settle: Duration,
) -> anyhow::Result<(u64, u64)> {
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
    tokio::time::sleep(settle).await;
    let after = peer.resident_bytes()?;
    drop(progress);
    drop(clients);
    Ok((before, after))
}

pub fn link_name(link: Link) -> &'static str {
    match link {
        Link::Tcp => "TCP",
        Link::WebSocket => "WebSocket",
        Link::WebSocketBinary => "WebSocket (binary)",
    }
}
