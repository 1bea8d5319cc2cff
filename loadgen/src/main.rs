//! `loadgen`: measures `servidor` and `bridge` against a bare tokio echo
//! server (the ceiling) started in the same run, checking every reply.
//!
//! Numbers move on shared machines, so every figure is printed beside its
//! ceiling and as a ratio. See BENCHMARKS.md for the command and results.

mod peers;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::peers::Peer;
use crate::report::Report;
use crate::scenarios::Link;

/// Load generator for the Tema 12 sockets system.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// A few seconds in all, small sizes: correctness only (CI's smoke run).
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

    /// Clients of the request/response measurements, each count measured
    /// in turn (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 50, 1000])]
    connections: Vec<usize>,

    /// Idle TCP clients held on servidor (0: not measured).
    #[arg(long, default_value_t = 10_000)]
    idle_tcp: usize,

    /// Idle WebSocket sessions held on the bridge (0: not measured).
    #[arg(long, default_value_t = 5_000)]
    idle_ws: usize,

    /// Folder holding the release binaries servidor and bridge (default:
    /// beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// Also measure servidor and bridge started with `--metrics` (and
    /// scraped every second) beside the same programs without it, in turn
    /// within each round: what counting costs.
    #[arg(long)]
    with_metrics: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The ceiling: a bare tokio echo server (started by the main run).
    Echo {
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        Some(Command::Echo { port }) => runtime.block_on(peers::echo_server(port)),
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
    let (stream_bytes, seconds, rounds, idle_tcp, idle_ws, counts): (
        u64,
        f64,
        u32,
        usize,
        usize,
        &[usize],
    ) = if args.quick {
        (16 << 20, 0.3, 2, 100, 50, &[1, 10])
    } else {
        (
            args.stream_mib << 20,
            args.seconds,
            args.rounds,
            args.idle_tcp,
            args.idle_ws,
            &args.connections,
        )
    };
    let duration = Duration::from_secs_f64(seconds);
    let mut report = Report::default();

    let echo = Peer::start_echo().await?;
    let servidor = Peer::start(&bin_dir, "servidor", &["--port", "0"]).await?;
    let target = servidor.addr.to_string();
    let bridge_args = ["--listen", "127.0.0.1:0", "--target", &target];
    let bridge = Peer::start(&bin_dir, "bridge", &bridge_args).await?;
    // With --metrics, in front of the same servidor as the bridge without.
    let (servidor_metrics, bridge_metrics) = if args.with_metrics {
        (
            Some(Peer::start_with_metrics(&bin_dir, "servidor", &["--port", "0"]).await?),
            Some(Peer::start_with_metrics(&bin_dir, "bridge", &bridge_args).await?),
        )
    } else {
        (None, None)
    };

    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        // 1. One connection streaming.
        let mut streamed_peers = vec![&echo];
        streamed_peers.extend(in_turn(round, &servidor, servidor_metrics.as_ref()));
        for peer in streamed_peers {
            let upper = peer.name != "echo";
            let streamed = scenarios::stream(peer, stream_bytes, upper).await?;
            report.stream(&peer.name, stream_bytes, streamed);
        }

        // 2. Request/response, 64-byte lines, direct TCP and through the
        // bridge.
        for &connections in counts {
            let mut peers = vec![(&echo, Link::Tcp)];
            for peer in in_turn(round, &servidor, servidor_metrics.as_ref()) {
                peers.push((peer, Link::Tcp));
            }
            for peer in in_turn(round, &bridge, bridge_metrics.as_ref()) {
                peers.push((peer, Link::WebSocket));
            }
            for (peer, link) in peers {
                let result = scenarios::request_response(peer, link, connections, duration).await?;
                report.requests(&peer.name, connections, result);
            }
        }
    }

    // The metrics were counted, and served, all along.
    for (peer, counter) in [
        (&servidor_metrics, "servidor_connections_accepted_total"),
        (&bridge_metrics, "bridge_sessions_started_total"),
    ] {
        let Some(peer) = peer else { continue };
        let Some(scraped) = peer.scrape_now().await else {
            continue;
        };
        let text = scraped.with_context(|| format!("scraping {}", peer.name))?;
        let counted = counter_value(&text, counter)
            .with_context(|| format!("no {counter} in the metrics of {}", peer.name))?;
        anyhow::ensure!(counted > 0.0, "{}: {counter} is 0", peer.name);
        eprintln!("{}: {counter} {counted}", peer.name);
    }

    // 3. Memory of idle clients.
    if idle_tcp > 0 {
        let per_tcp = scenarios::idle(&servidor, Link::Tcp, idle_tcp).await?;
        report.idle(&servidor.name, idle_tcp, per_tcp);
    }
    if idle_ws > 0 {
        let per_ws = scenarios::idle(&bridge, Link::WebSocket, idle_ws).await?;
        report.idle(&bridge.name, idle_ws, per_ws);
    }

    print!("{}", report.render());
    Ok(())
}

/// A server without metrics and, if measured, the same with them, one right
/// after the other: the order is swapped every other round, so that neither
/// always runs first.
fn in_turn<'a>(round: u32, off: &'a Peer, on: Option<&'a Peer>) -> Vec<&'a Peer> {
    match on {
        None => vec![off],
        Some(on) if round.is_multiple_of(2) => vec![on, off],
        Some(on) => vec![off, on],
    }
}

/// The value of an unlabelled sample in the Prometheus text format.
fn counter_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
