//! `loadgen`: measures `servidor` and `bridge` against a bare tokio echo
//! server (the ceiling) started in the same run, checking every reply, and
//! the bridge beside its peers (websocat, websockify, a minimal relay).
//!
//! Numbers move on shared machines, so every figure is printed beside its
//! ceiling and as a ratio. See BENCHMARKS.md for the command and results.

mod beside;
mod echo;
mod outside;
mod peers;
mod relay;
mod report;
mod scenarios;
mod tree;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::beside::{Beside, IdleCounts};
use crate::peers::Peer;
use crate::report::Report;
use crate::scenarios::Link;

/// Load generator for the Tema 12 sockets system.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// One round of a few seconds, small sizes: correctness only (CI's smoke run).
    #[arg(long)]
    quick: bool,

    /// MiB streamed over one connection.
    #[arg(long, default_value_t = 1024)]
    stream_mib: u64,

    /// Seconds each request/response measurement runs (in each round).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,

    /// Rounds of the stream and request/response measurements. Each round
    /// measures the ceiling and the servers one after the other, so a ratio
    /// compares figures taken under the same machine load; the report shows
    /// the median round and the spread.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,

    /// Idle TCP clients held on servidor.
    #[arg(long, default_value_t = 10_000)]
    idle_tcp: usize,

    /// Idle WebSocket sessions held on the bridge.
    #[arg(long, default_value_t = 5_000)]
    idle_ws: usize,

    /// Idle WebSocket sessions held on websockify, which forks a process
    /// for each (the bridge, websocat and the relay hold --idle-ws).
    #[arg(long, default_value_t = 500)]
    idle_websockify: usize,

    /// Folder holding the release binaries servidor and bridge (default:
    /// beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// websocat, to measure beside the bridge (scripts/bench installs it);
    /// without it websocat is reported as not measured.
    #[arg(long, value_name = "PATH")]
    websocat: Option<PathBuf>,

    /// websockify, to measure beside the bridge (scripts/bench installs it);
    /// without it websockify is reported as not measured.
    #[arg(long, value_name = "PATH")]
    websockify: Option<PathBuf>,

    /// Also measure request/response through servidor and bridge started
    /// with `--metrics`, loaded at the same time as the same programs
    /// without it: what counting costs (rows `servidor+metrics` beside
    /// `servidor (beside +metrics)`, the same for the bridge).
    #[arg(long)]
    with_metrics: bool,

    /// Measure only these parts (comma-separated; default: all), e.g.
    /// `--only requests --sessions 50` to compare the bridge with its peers
    /// at 50 sessions in a minute.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PART")]
    only: Vec<Part>,

    /// Sessions (and TCP clients) of the request/response measurements.
    #[arg(long, value_delimiter = ',', value_name = "N,...", default_values_t = [1, 50, 1000],
          value_parser = clap::value_parser!(u32).range(1..))]
    sessions: Vec<u32>,
}

/// The parts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// One connection streaming.
    Stream,
    /// Request/response with many connections.
    Requests,
    /// Memory of idle connections and sessions.
    Idle,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A bare tokio TCP echo server: the ceiling (started by the main run)
    /// and the bridge's target in scripts/autobahn. Prints its address first.
    EchoTcp {
        /// Address and port to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// A bare tokio-tungstenite WebSocket echo server: the baseline of
    /// scripts/autobahn. Prints its address first.
    EchoWs {
        /// Address and port to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// A minimal TCP relay (one task per direction, 16 KiB reads): the floor
    /// of one user-space hop, which the main run puts in front of servidor.
    /// Prints its address first.
    RelayTcp {
        /// Address and port to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Where to relay every connection to.
        #[arg(long)]
        target: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        Some(Command::EchoTcp { listen }) => runtime.block_on(echo::tcp(&listen)),
        Some(Command::EchoWs { listen }) => runtime.block_on(echo::websocket(&listen)),
        Some(Command::RelayTcp { listen, target }) => {
            runtime.block_on(relay::tcp(&listen, &target))
        }
        None => runtime.block_on(run(args)),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("no folder for this binary")?
            .to_path_buf(),
    };
    let counts: Vec<usize> = args.sessions.iter().map(|&n| n as usize).collect();
    let (stream_bytes, seconds, rounds, idle_tcp, idle_ws, counts) = if args.quick {
        (4 << 20, 0.1, 1, 100, 50, vec![1, 10])
    } else {
        (
            args.stream_mib << 20,
            args.seconds,
            args.rounds,
            args.idle_tcp,
            args.idle_ws,
            counts,
        )
    };
    let measures = |part| args.only.is_empty() || args.only.contains(&part);
    let idle_beside = IdleCounts {
        sessions: idle_ws,
        websockify: if args.quick { 10 } else { args.idle_websockify },
        settle: if args.quick {
            Duration::ZERO
        } else {
            beside::IDLE_SETTLE
        },
    };
    // A quick run's figures are not kept: its memory is read at once.
    let idle_settle = if args.quick {
        Duration::ZERO
    } else {
        scenarios::IDLE_SETTLE
    };
    let duration = Duration::from_secs_f64(seconds);
    let mut report = Report::default();

    let echo = Peer::start_echo().await?;
    let servidor = Peer::start(&bin_dir, "servidor", SERVIDOR_ARGS).await?;
    let target = servidor.addr.to_string();
    let bridge_args = bridge_args(&target);
    let bridge = Peer::start(&bin_dir, "bridge", &bridge_args).await?;
    let counting = if args.with_metrics {
        vec![
            (
                Peer::start_with_metrics(&bin_dir, "servidor", SERVIDOR_ARGS).await?,
                Link::Tcp,
            ),
            (
                Peer::start_with_metrics(&bin_dir, "bridge", &bridge_args).await?,
                Link::WebSocket,
            ),
        ]
    } else {
        Vec::new()
    };
    let beside = Beside::start(
        &bin_dir,
        servidor.addr,
        args.websocat.as_deref(),
        args.websockify.as_deref(),
        &mut report,
    )
    .await?;

    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        // A quick run checks correctness only: the peers once are enough.
        let with_peers = !args.quick || round == 1;
        // 1. One connection streaming.
        if measures(Part::Stream) {
            for (peer, upper) in [(&echo, false), (&servidor, true)] {
                let streamed = scenarios::stream(peer, stream_bytes, upper).await?;
                report.stream(&peer.name, stream_bytes, streamed);
            }
            if with_peers {
                beside.streams(&mut report, &bridge, stream_bytes).await?;
            }
        }

        // 2. Request/response, 64-byte lines, direct TCP and through the
        // bridge.
        let request_counts = if measures(Part::Requests) {
            &counts[..]
        } else {
            &[]
        };
        for &connections in request_counts {
            for (peer, link) in [
                (&echo, Link::Tcp),
                (&servidor, Link::Tcp),
                (&bridge, Link::WebSocket),
            ] {
                let result = scenarios::request_response(peer, link, connections, duration).await?;
                report.requests(&peer.name, connections, result);
            }
            // With and without metrics loaded at the same time: measured in
            // turn, two figures seconds apart move far more than counting
            // costs on a shared machine.
            for (counting, link) in &counting {
                let plain = if *link == Link::Tcp {
                    &servidor
                } else {
                    &bridge
                };
                let together = [plain, counting];
                let results =
                    scenarios::request_response_together(&together, *link, connections, duration)
                        .await?;
                for (peer, result) in together.iter().zip(results) {
                    let name = if peer.name == plain.name {
                        format!("{} (beside +metrics)", peer.name)
                    } else {
                        peer.name.clone()
                    };
                    report.requests(&name, connections, result);
                }
            }
            if with_peers {
                beside.requests(&mut report, connections, duration).await?;
            }
        }

        // Idle sessions: memory on fresh processes of the bridge and its
        // peers.
        if with_peers && measures(Part::Idle) {
            beside.idle(&mut report, idle_beside).await?;
        }
    }

    // 3. Memory of idle clients.
    if !measures(Part::Idle) {
        print!("{}", report.render());
        return Ok(());
    }
    let per_tcp = scenarios::idle(&servidor, Link::Tcp, idle_tcp, idle_settle).await?;
    report.idle(&servidor.name, idle_tcp, per_tcp);
    let per_ws = scenarios::idle(&bridge, Link::WebSocket, idle_ws, idle_settle).await?;
    report.idle(&bridge.name, idle_ws, per_ws);

    print!("{}", report.render());
    Ok(())
}

/// servidor for a load test: every connection comes from 127.0.0.1, so the
/// per-client cap is off (it is by default; said here so it stays so).
const SERVIDOR_ARGS: &[&str] = &["--port", "0", "--max-connections-per-client", "0"];

/// The bridge in front of `target` for a load test: thousands of sessions
/// from the one address 127.0.0.1, so the per-client limits are off.
pub(crate) fn bridge_args(target: &str) -> Vec<&str> {
    vec![
        "--listen",
        "127.0.0.1:0",
        "--target",
        target,
        "--max-sessions-per-client",
        "0",
        "--upgrades-per-client",
        "0",
        "--max-connections-per-client",
        "0",
    ]
}
