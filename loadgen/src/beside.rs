//! The bridge beside its peers: websocat and websockify (other WebSocket →
//! TCP bridges) and a minimal TCP relay (the floor of one user-space hop),
//! all in front of the same `servidor`, measured in the same rounds and with
//! the same client as the bridge.
//!
//! A peer that is not installed (or does not start) is noted as not
//! measured, and the run goes on without it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

use crate::outside;
use crate::peers::Peer;
use crate::report::Report;
use crate::scenarios::{self, Client, Link, Progress, Streamed, LINE, PATIENCE};
use crate::tree;

/// Bytes per WebSocket message of a stream: the chunk the TCP stream writes.
const MESSAGE: usize = 64 * 1024;

/// What websockify 0.13 holds at once in its default mode. Each session's
/// process waits with `select`, which takes no descriptor above 1023, and
/// the listening process keeps two pipes for every live child
/// (`multiprocessing`'s), which the next child inherits: past about 510
/// sessions a new one's sockets are above 1023, it fails with "filedescriptor
/// out of range in select()" in its log, and the client sees a reset.
const WEBSOCKIFY_MAX_SESSIONS: usize = 500;

/// How to start one of the peers (the idle-memory measurement starts each
/// afresh, so that its baseline is a process that has served no one yet).
#[derive(Debug, Clone)]
enum Recipe {
    Relay,
    /// `bridge` from this folder.
    Bridge(PathBuf),
    Websocat(PathBuf),
    Websockify(PathBuf),
}

impl Recipe {
    fn name(&self) -> &'static str {
        match self {
            Recipe::Relay => "relay",
            Recipe::Bridge(_) => "bridge",
            Recipe::Websocat(_) => "websocat",
            Recipe::Websockify(_) => "websockify",
        }
    }

    /// The most sessions it can hold at once, if it has a limit.
    fn max_sessions(&self) -> Option<usize> {
        match self {
            Recipe::Websockify(_) => Some(WEBSOCKIFY_MAX_SESSIONS),
            _ => None,
        }
    }

    /// How loadgen's client reaches it.
    fn link(&self) -> Link {
        match self {
            Recipe::Relay => Link::Tcp,
            Recipe::Bridge(_) | Recipe::Websocat(_) => Link::WebSocket,
            Recipe::Websockify(_) => Link::WebSocketBinary,
        }
    }

    async fn start(&self, target: SocketAddr) -> anyhow::Result<Running> {
        let target_text = target.to_string();
        Ok(match self {
            Recipe::Relay => Running::one(Peer::start_relay(&target_text).await?),
            Recipe::Bridge(dir) => {
                Running::one(Peer::start(dir, "bridge", &crate::bridge_args(&target_text)).await?)
            }
            Recipe::Websocat(program) => {
                Running::one(outside::start_websocat(program, target).await?)
            }
            Recipe::Websockify(program) => Running {
                peer: outside::start_websockify(program, target).await?,
                forks: true,
            },
        })
    }
}

/// A started peer; a forking one's children end with it.
struct Running {
    peer: Peer,
    forks: bool,
}

impl Running {
    fn one(peer: Peer) -> Running {
        Running { peer, forks: false }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.forks {
            outside::stop_tree(&self.peer);
        }
    }
}

/// How many idle sessions each peer is made to hold.
#[derive(Debug, Clone, Copy)]
pub struct IdleCounts {
    /// Bridge, websocat and relay.
    pub sessions: usize,
    /// websockify: a process per session.
    pub websockify: usize,
    /// The pause before the memory is read, once every session has
    /// answered: [`IDLE_SETTLE`], or none in a quick run.
    pub settle: Duration,
}

/// The pause, once every idle session has answered, before the memory is
/// read: the peers' tasks go idle. smaps_rollup walks the page tables, so it
/// needs no time to catch up.
pub const IDLE_SETTLE: Duration = Duration::from_millis(200);

/// The peers, started once for the rounds.
pub struct Beside {
    target: SocketAddr,
    bin_dir: PathBuf,
    peers: Vec<(Recipe, Running)>,
}

impl Beside {
    /// Starts the relay and those of websocat and websockify that are given
    /// and start, in front of `target` (servidor); notes the others in the
    /// report as not measured, with the reason.
    pub async fn start(
        bin_dir: &Path,
        target: SocketAddr,
        websocat: Option<&Path>,
        websockify: Option<&Path>,
        report: &mut Report,
    ) -> anyhow::Result<Beside> {
        let mut peers = Vec::new();
        // The relay is ours: if it cannot start, something is broken.
        let relay = Recipe::Relay;
        peers.push((relay.clone(), relay.start(target).await?));
        for (name, flag, program) in [
            ("websocat", "--websocat", websocat),
            ("websockify", "--websockify", websockify),
        ] {
            let Some(program) = program else {
                report.not_measured(name, &format!("not installed (no {flag} PATH given)"));
                continue;
            };
            if !program.exists() {
                report.not_measured(
                    name,
                    &format!("not installed ({} missing)", program.display()),
                );
                continue;
            }
            let recipe = if name == "websocat" {
                Recipe::Websocat(program.to_path_buf())
            } else {
                Recipe::Websockify(program.to_path_buf())
            };
            match recipe.start(target).await {
                Ok(running) => peers.push((recipe, running)),
                Err(error) => report.not_measured(name, &format!("did not start: {error:#}")),
            }
        }
        Ok(Beside {
            target,
            bin_dir: bin_dir.to_path_buf(),
            peers,
        })
    }

    /// One stream of `bytes` through the bridge and through each peer, every
    /// byte checked, noted in the report under the peer's name.
    pub async fn streams(
        &self,
        report: &mut Report,
        bridge: &Peer,
        bytes: u64,
    ) -> anyhow::Result<()> {
        let streamed = websocket_stream(bridge, bytes, false).await?;
        report.stream(&bridge.name, bytes, streamed);
        for (recipe, running) in &self.peers {
            let peer = &running.peer;
            let streamed = match recipe.link() {
                Link::Tcp => scenarios::stream(peer, bytes, true).await?,
                link => websocket_stream(peer, bytes, link == Link::WebSocketBinary).await?,
            };
            report.stream(&peer.name, bytes, streamed);
        }
        Ok(())
    }

    /// Request/response through each peer with `connections` clients.
    pub async fn requests(
        &self,
        report: &mut Report,
        connections: usize,
        duration: Duration,
    ) -> anyhow::Result<()> {
        for (recipe, running) in &self.peers {
            let peer = &running.peer;
            if let Some(most) = recipe.max_sessions().filter(|&most| connections > most) {
                let why = format!(
                    "at {connections} sessions: it holds at most about {most} at once \
                     (its processes wait with select(), which takes no descriptor above 1023)"
                );
                report.not_measured(&peer.name, &why);
                continue;
            }
            let result =
                scenarios::request_response(peer, recipe.link(), connections, duration).await?;
            report.requests(&peer.name, connections, result);
        }
        Ok(())
    }

    /// Resident memory of idle sessions on a fresh process of the bridge and
    /// of each peer, above that process's own before the first session.
    pub async fn idle(&self, report: &mut Report, counts: IdleCounts) -> anyhow::Result<()> {
        let recipes = std::iter::once(Recipe::Bridge(self.bin_dir.clone()))
            .chain(self.peers.iter().map(|(recipe, _)| recipe.clone()));
        for recipe in recipes {
            let count = match recipe {
                Recipe::Websockify(_) => counts.websockify,
                _ => counts.sessions,
            };
            let count = recipe.max_sessions().map_or(count, |most| count.min(most));
            let running = recipe.start(self.target).await?;
            let (before, after) = idle(&running.peer, recipe.link(), count, counts.settle).await?;
            eprintln!(
                "  idle {} × {count}: {:.1} KiB per session (RSS summed; PSS {:.1})",
                recipe.name(),
                after.rss.saturating_sub(before.rss) as f64 / 1024.0 / count as f64,
                after.pss.saturating_sub(before.pss) as f64 / 1024.0 / count as f64,
            );
            report.idle_tree(recipe.name(), count, before, after);
        }
        Ok(())
    }
}

/// Holds `count` idle sessions (each answered once, then silent) and returns
/// the memory of the peer's process tree before the first and with them all.
async fn idle(
    peer: &Peer,
    link: Link,
    count: usize,
    settle: Duration,
) -> anyhow::Result<(tree::Memory, tree::Memory)> {
    let pid = peer.pid()?;
    let before = tree::memory(pid)?;
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("idle {} {}", peer.name, scenarios::link_name(link)),
        Arc::clone(&done),
        Some(count as u64),
        "sessions",
    );
    let expected = LINE.to_ascii_uppercase();
    let mut clients = Vec::with_capacity(count);
    let mut answer = Vec::new();
    for _ in 0..count {
        let mut client = Client::connect(peer, link).await?;
        timeout(PATIENCE, client.round_trip(LINE, &mut answer))
            .await
            .context("no answer in time")??;
        ensure!(answer == expected, "{}: wrong answer {answer:?}", peer.name);
        clients.push(client);
        done.fetch_add(1, Ordering::Relaxed);
    }
    // Every session has answered, so every process and buffer exists.
    tokio::time::sleep(settle).await;
    let after = tree::memory(pid)?;
    drop(progress);
    drop(clients);
    Ok((before, after))
}

/// Streams `total` bytes over one WebSocket in messages of 64 KiB (text, or
/// binary if `binary`), reading the answers as they come, every byte checked
/// (the peers are in front of servidor: the answer is the text uppercased).
pub async fn websocket_stream(peer: &Peer, total: u64, binary: bool) -> anyhow::Result<Streamed> {
    // The TCP stream's text: a 64-byte period of lowercase letters.
    let period: Vec<u8> = (0..64u8).map(|i| b'a' + i % 26).collect();
    let chunk: Vec<u8> = period.iter().copied().cycle().take(MESSAGE).collect();
    let expected_run: Vec<u8> = chunk.to_ascii_uppercase().repeat(2);
    // Cloned for every message: both are reference-counted, no copy.
    let text = Utf8Bytes::from(String::from_utf8(chunk.clone())?);
    let bytes = Bytes::from(chunk);

    let url = format!("ws://{}/ws", peer.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url).await?;
    let (mut sink, mut source) = ws.split();
    let cpu_before = peer.cpu_seconds()?;
    let started = Instant::now();
    let writing = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            let part = (total - sent).min(MESSAGE as u64) as usize;
            let message = match (binary, part == MESSAGE) {
                (true, true) => Message::Binary(bytes.clone()),
                (true, false) => Message::binary(bytes.slice(..part)),
                (false, true) => Message::Text(text.clone()),
                (false, false) => Message::text(&text.as_str()[..part]),
            };
            sink.send(message).await?;
            sent += part as u64;
        }
        anyhow::Ok(sink)
    });

    let received = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("stream {}", peer.name),
        Arc::clone(&received),
        Some(total >> 20),
        "MiB",
    );
    let mut offset: u64 = 0;
    while offset < total {
        let message = timeout(PATIENCE, source.next())
            .await
            .context("no answer in time")?
            .with_context(|| format!("{} closed after {offset} bytes", peer.name))??;
        let payload: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            Message::Close(frame) => anyhow::bail!("{} closed: {frame:?}", peer.name),
            _ => continue,
        };
        // The answer at any offset is the uppercase period from there on.
        for (at, piece) in (offset..).step_by(MESSAGE).zip(payload.chunks(MESSAGE)) {
            let start = (at % 64) as usize;
            ensure!(
                piece == &expected_run[start..start + piece.len()],
                "{}: wrong bytes after {at}",
                peer.name
            );
        }
        offset += payload.len() as u64;
        received.store(offset >> 20, Ordering::Relaxed);
    }
    let elapsed = started.elapsed();
    let cpu = peer.cpu_seconds()? - cpu_before;
    drop(progress);
    let mut sink = writing.await??;
    let _ = timeout(Duration::from_secs(1), sink.close()).await;
    Ok(Streamed {
        mib_per_second: total as f64 / (1 << 20) as f64 / elapsed.as_secs_f64(),
        cpu_per_gib: cpu / (total as f64 / (1u64 << 30) as f64),
    })
}
