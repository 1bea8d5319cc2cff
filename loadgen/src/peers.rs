//! The servers under measurement, each in its own process so that its
//! resident memory can be read: the echo ceiling, `servidor`, `bridge`, the
//! relay, and websocat and websockify (started by `outside`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A server process listening on `addr`. Killed when dropped.
pub struct Peer {
    /// For the report.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl Peer {
    /// Starts `dir/name args…` with a quiet log and waits for its address.
    pub async fn start(dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Peer> {
        let program = dir.join(name);
        if !program.exists() {
            bail!(
                "{} is missing: build it first (cargo build --release --bins)",
                program.display()
            );
        }
        Self::spawn(name, Command::new(program).args(args)).await
    }

    /// Starts `dir/name args… --metrics 127.0.0.1:0`, reported as
    /// `name+metrics`: the same server counting its Prometheus metrics, to
    /// measure what counting costs beside the same server without.
    pub async fn start_with_metrics(dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Peer> {
        let mut peer =
            Self::start(dir, name, &[args, &["--metrics", "127.0.0.1:0"]].concat()).await?;
        peer.name = format!("{name}+metrics");
        Ok(peer)
    }

    /// Starts this same program as the bare echo server.
    pub async fn start_echo() -> anyhow::Result<Peer> {
        let me = std::env::current_exe()?;
        Self::spawn(
            "echo",
            Command::new(me).args(["echo-tcp", "--listen", "127.0.0.1:0"]),
        )
        .await
    }

    /// Starts this same program as the minimal TCP relay in front of
    /// `target`: the cost floor of one user-space hop.
    pub async fn start_relay(target: &str) -> anyhow::Result<Peer> {
        let me = std::env::current_exe()?;
        Self::spawn(
            "relay",
            Command::new(me).args(["relay-tcp", "--listen", "127.0.0.1:0", "--target", target]),
        )
        .await
    }

    /// A peer started elsewhere (one that cannot print its address), that
    /// listens on `addr`.
    pub fn adopt(name: &str, addr: SocketAddr, child: Child) -> Peer {
        Peer {
            name: name.to_string(),
            addr,
            child,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the process has ended")
    }

    async fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Peer> {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next_line()
            .await?
            .with_context(|| format!("{name} printed no address"))?;
        let addr = first
            .split_whitespace()
            .last()
            .and_then(|word| word.parse().ok())
            .with_context(|| format!("no address in {first:?}"))?;
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Peer {
            name: name.to_string(),
            addr,
            child,
        })
    }

    /// CPU time the process and its descendants have used so far, user and
    /// system, all threads, in seconds (Linux). websockify forks a process
    /// per connection; the others have no children, so this is their own.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        crate::tree::cpu_seconds(self.pid()?)
    }

    /// Resident memory, in bytes (Linux).
    pub fn resident_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the process has ended")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")?;
        Ok(kib * 1024)
    }
}
