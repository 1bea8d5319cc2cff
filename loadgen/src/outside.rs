//! The bridge's peers that are not ours: websocat and websockify, each as a
//! WebSocket → TCP bridge in front of the same `servidor`.
//!
//! Neither prints the port it listens on when asked for port 0 (websocat's
//! `--stdout-announce-listening-ports` says `port=0`), so each gets a port
//! found free by binding 127.0.0.1:0 and letting it go, and is ready once it
//! accepts a connection.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::peers::Peer;

/// How long a peer may take to start listening (websockify is a Python
/// program: its start takes a few hundred milliseconds).
const STARTUP: Duration = Duration::from_secs(20);

/// websocat as a WebSocket → TCP bridge to `target`.
///
/// `--text` so that it answers in text messages, as the bridge answers a
/// client that sends text (loadgen's client does); `--no-line` because with
/// `--text` websocat otherwise inserts its line mode (`--dump-spec` shows
/// `Message2Line`/`Line2Message`), which changes the bytes: a message
/// `a\nb\n` reaches the target as `a b\n`, and `abc` as `abc\n`. `-q`: no
/// diagnostics. Its other settings are its defaults (64 KiB buffers).
pub async fn start_websocat(program: &Path, target: SocketAddr) -> anyhow::Result<Peer> {
    let port = free_port()?;
    let mut command = Command::new(program);
    command.args([
        "--text",
        "--no-line",
        "-q",
        "-E",
        &format!("ws-l:127.0.0.1:{port}"),
        &format!("tcp:{target}"),
    ]);
    start("websocat", command, port).await
}

/// websockify (0.13) as a WebSocket → TCP bridge to `target`, in its default
/// process model: one process forked per connection (`multiprocessing` with
/// the fork start method), so its CPU and memory are counted over the tree
/// (see `tree`). Its `--libserver` mode (a thread per connection in one
/// process) waits with `select` too, which cannot take descriptors above
/// 1023, with two per session in one process: it holds no more sessions
/// than this mode's about 500 (see `beside::WEBSOCKIFY_MAX_SESSIONS`).
///
/// It takes clients with or without the `binary` subprotocol, but closes
/// with 1003 on a text message: loadgen's client sends it binary ones.
/// It logs each connection (on stderr), which goes to /dev/null here.
pub async fn start_websockify(program: &Path, target: SocketAddr) -> anyhow::Result<Peer> {
    let port = free_port()?;
    let mut command = Command::new(program);
    command.args([format!("127.0.0.1:{port}"), target.to_string()]);
    // It stays in loadgen's process group, so that a Ctrl-C reaches it too
    // (and it ends its children itself).
    start("websockify", command, port).await
}

/// Ends `peer` and its descendants (websockify's children do not end with
/// their parent). They are listed first: once the parent is gone they are
/// no longer its children; and it goes first, so that it forks no more.
pub fn stop_tree(peer: &Peer) {
    let Ok(pid) = peer.pid() else {
        return;
    };
    let mut pids = vec![pid];
    pids.extend(crate::tree::descendants(pid));
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// A port nothing listens on now (another program could take it before the
/// peer does; then the peer fails to start and says so).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

async fn start(name: &str, mut command: Command, port: u16) -> anyhow::Result<Peer> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{name} ended ({status}) before listening on {addr}");
        }
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(Peer::adopt(name, addr, child));
        }
        if started.elapsed() > STARTUP {
            bail!("{name} did not listen on {addr} within {STARTUP:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
