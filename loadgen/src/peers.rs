//! The servers under measurement, each in its own process so that its
//! resident memory can be read: the echo ceiling, `servidor`, `bridge`, and
//! the last two with `--metrics` too, scraped as Prometheus would.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The suffix of a peer measured with `--metrics`.
pub const WITH_METRICS: &str = "+metrics";
/// The line before the metrics endpoint's address.
const METRICS_LINE: &str = "Métricas: http://";
/// How often a peer with `--metrics` is scraped while it is measured.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// A server process listening on `addr`. Killed when dropped.
pub struct Peer {
    /// For the report.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    /// For a peer with `--metrics`: the scraper that reads them.
    scraper: Option<Scraper>,
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
        Self::spawn(name, Command::new(program).args(args), false).await
    }

    /// Starts `dir/name args… --metrics 127.0.0.1:0`, named `name+metrics`,
    /// and scrapes its metrics every second, as a (busy) Prometheus would.
    pub async fn start_with_metrics(dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Peer> {
        let program = dir.join(name);
        let mut command = Command::new(program);
        command.args(args).args(["--metrics", "127.0.0.1:0"]);
        Self::spawn(&format!("{name}{WITH_METRICS}"), &mut command, true).await
    }

    /// Starts this same program as the bare echo server.
    pub async fn start_echo() -> anyhow::Result<Peer> {
        let me = std::env::current_exe()?;
        Self::spawn(
            "echo",
            Command::new(me).args(["echo", "--port", "0"]),
            false,
        )
        .await
    }

    async fn spawn(name: &str, command: &mut Command, metrics: bool) -> anyhow::Result<Peer> {
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
        let scraper = if metrics {
            let metrics_addr = loop {
                let line = lines
                    .next_line()
                    .await?
                    .with_context(|| format!("{name} printed no metrics address"))?;
                if let Some(rest) = line.strip_prefix(METRICS_LINE) {
                    break rest
                        .trim_end_matches("/metrics")
                        .parse()
                        .with_context(|| format!("no metrics address in {line:?}"))?;
                }
            };
            Some(Scraper::start(metrics_addr))
        } else {
            None
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Peer {
            name: name.to_string(),
            addr,
            child,
            scraper,
        })
    }

    /// A scrape of the peer's metrics now; `None` without `--metrics`.
    pub async fn scrape_now(&self) -> Option<anyhow::Result<String>> {
        let addr = self.scraper.as_ref()?.addr;
        Some(scrape(addr).await)
    }

    /// CPU time the process has used so far, user and system, all threads,
    /// in seconds (Linux).
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.child.id().context("the process has ended")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The fields after the command name (which may hold spaces) start
        // at field 3; utime and stime are fields 14 and 15, in clock ticks
        // of 1/100 s (USER_HZ, fixed at 100 in Linux's interface).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("no command name in /proc/…/stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks = |field: usize| -> anyhow::Result<f64> {
            let value: u64 = fields
                .get(field - 3)
                .context("/proc/…/stat is too short")?
                .parse()?;
            Ok(value as f64)
        };
        Ok((ticks(14)? + ticks(15)?) / 100.0)
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

/// Scrapes `GET /metrics` every [`SCRAPE_INTERVAL`] until dropped.
struct Scraper {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Self {
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(SCRAPE_INTERVAL).await;
                // A failed scrape shows in the final check.
                let _ = timeout(SCRAPE_INTERVAL, scrape(addr)).await;
            }
        });
        Self { addr, task }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One `GET /metrics`, on a new connection: its body.
async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let (head, body) = answer.split_once("\r\n\r\n").context("no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("the scrape failed: {head}");
    }
    Ok(body.to_string())
}

/// The ceiling: echoes every byte back, one 64 KiB buffer per connection,
/// nothing else. Prints its address first, as servidor does.
pub async fn echo_server(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
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
