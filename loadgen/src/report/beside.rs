//! The tables of the bridge beside its peers (websocat, websockify and the
//! minimal relay, all in front of the same servidor): each figure with its
//! median and range over the rounds, and the bridge's figure divided by the
//! peer's, taken within each round.

use std::fmt::Write as _;

use super::{distinct, median, merged, per_round, quantile, spread, Report};

/// Whose figures are compared with the peers'.
const BRIDGE: &str = "bridge";
/// Direct TCP to servidor: what the added round trip is measured over.
const DIRECT: &str = "servidor";
/// Everything in front of servidor, in the order of the tables.
const PEERS: [&str; 4] = ["relay", "bridge", "websocat", "websockify"];

/// How loadgen's client reaches each peer.
fn link(name: &str) -> &'static str {
    match name {
        "relay" => "TCP",
        "websockify" => "WebSocket, binary",
        _ => "WebSocket, text",
    }
}

/// A ratio, `—` where it could not be taken.
fn times(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.2}×")
    } else {
        String::from("—")
    }
}

/// `median (lowest–highest)` of per-round values.
fn median_and_range(values: &[f64], show: impl Fn(f64) -> String) -> String {
    let range = spread(values, &show);
    if range == "—" {
        show(median(values))
    } else {
        format!("{} ({range})", show(median(values)))
    }
}

/// A ratio with the bridge itself is 1 by definition: left out.
fn versus(name: &str, ratios: &[f64]) -> String {
    if name == BRIDGE {
        String::from("—")
    } else {
        median_and_range(ratios, times)
    }
}

fn whole(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.0}")
    } else {
        String::from("—")
    }
}

/// `a / b`, or NaN where `b` is not positive (a CPU time under the
/// kernel's 10 ms tick on a short run; a relay that added nothing).
fn divide(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

impl Report {
    pub(super) fn render_beside(&self, out: &mut String) {
        let measured: Vec<&str> = PEERS
            .into_iter()
            .filter(|name| name != &BRIDGE && self.requests.iter().any(|(n, _, _)| n == name))
            .collect();
        if measured.is_empty() && self.not_measured.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n### Beside its peers\n\nwebsocat, websockify and a minimal tokio relay \
             (`loadgen relay-tcp`) stand in front of the same servidor as the bridge and \
             are measured in the same rounds with the same client. \"÷ this\" is the \
             bridge's figure divided by the peer's within each round: median (range)."
        );
        for (name, why) in &self.not_measured {
            let _ = writeln!(out, "\n- {name}: not measured: {why}");
        }
        self.beside_requests(out);
        self.beside_added(out);
        self.beside_streams(out);
        self.beside_idles(out);
    }

    /// The peers that have results under `name`s of `PEERS`.
    fn present(&self, has: impl Fn(&str) -> bool) -> Vec<&'static str> {
        PEERS.into_iter().filter(|name| has(name)).collect()
    }

    fn beside_requests(&self, out: &mut String) {
        let _ = writeln!(out, "\n#### Request/response, 64-byte lines\n");
        let _ = writeln!(
            out,
            "| sessions | peer | link | req/s | p50 µs | p99 µs | peer CPU µs per request \
             | bridge's req/s ÷ this | bridge's CPU per request ÷ this |"
        );
        let _ = writeln!(
            out,
            "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let counts = distinct(
            self.requests
                .iter()
                .filter(|(name, _, _)| name == BRIDGE)
                .map(|(_, connections, _)| *connections),
        );
        for connections in counts {
            let rates = |name: &str| -> Vec<f64> {
                self.rounds_of(name, connections)
                    .iter()
                    .map(|r| r.per_second)
                    .collect()
            };
            let cpus = |name: &str| -> Vec<f64> {
                self.rounds_of(name, connections)
                    .iter()
                    .map(|r| divide(r.cpu_seconds * 1e6, r.latency.len() as f64))
                    .collect()
            };
            let bridge_rates = rates(BRIDGE);
            let bridge_cpus = cpus(BRIDGE);
            for name in self.present(|name| !self.rounds_of(name, connections).is_empty()) {
                let Some(latency) = merged(&self.rounds_of(name, connections)) else {
                    continue;
                };
                let rate_ratios = per_round(&bridge_rates, &rates(name), divide);
                let cpu_ratios = per_round(&bridge_cpus, &cpus(name), divide);
                let _ = writeln!(
                    out,
                    "| {connections} | {name} | {} | {} | {} | {} | {} | {} | {} |",
                    link(name),
                    median_and_range(&rates(name), whole),
                    latency.value_at_quantile(0.5),
                    latency.value_at_quantile(0.99),
                    median_and_range(&cpus(name), |v| format!("{v:.1}")),
                    versus(name, &rate_ratios),
                    versus(name, &cpu_ratios),
                );
            }
        }
    }

    fn beside_added(&self, out: &mut String) {
        let p50s = |name: &str| -> Vec<f64> {
            self.rounds_of(name, 1)
                .iter()
                .map(|r| quantile(&r.latency, 0.5))
                .collect()
        };
        let direct = p50s(DIRECT);
        if direct.is_empty() {
            return;
        }
        let added = |name: &str| per_round(&p50s(name), &direct, |peer, direct| peer - direct);
        let bridge_added = added(BRIDGE);
        let _ = writeln!(
            out,
            "\n#### Round trip added over direct TCP to servidor (1 session, p50)\n\n\
             Direct TCP: p50 {} µs (median of the rounds).\n",
            median_and_range(&direct, whole)
        );
        let _ = writeln!(
            out,
            "| peer | link | p50 µs | added µs | bridge's added ÷ this |"
        );
        let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: |");
        for name in self.present(|name| !self.rounds_of(name, 1).is_empty()) {
            let ratios = per_round(&bridge_added, &added(name), divide);
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} |",
                link(name),
                median_and_range(&p50s(name), whole),
                median_and_range(&added(name), whole),
                versus(name, &ratios),
            );
        }
    }

    fn beside_streams(&self, out: &mut String) {
        let rounds = |name: &str, figure: fn(&crate::scenarios::Streamed) -> f64| -> Vec<f64> {
            self.streams
                .iter()
                .filter(|(n, _, _)| n == name)
                .map(|(_, _, streamed)| figure(streamed))
                .collect()
        };
        let speed = |s: &crate::scenarios::Streamed| s.mib_per_second;
        let cpu = |s: &crate::scenarios::Streamed| s.cpu_per_gib;
        let present = self.present(|name| !rounds(name, speed).is_empty());
        if present.is_empty() {
            return;
        }
        let mib = self
            .streams
            .iter()
            .find(|(n, _, _)| n == BRIDGE)
            .map_or(0, |(_, bytes, _)| *bytes >> 20);
        let _ = writeln!(
            out,
            "\n#### One stream of {mib} MiB (WebSocket messages of 64 KiB)\n"
        );
        let _ = writeln!(
            out,
            "| peer | link | MiB/s | peer CPU s/GiB | bridge's MiB/s ÷ this \
             | bridge's CPU per GiB ÷ this |"
        );
        let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: |");
        let bridge_speeds = rounds(BRIDGE, speed);
        let bridge_cpus = rounds(BRIDGE, cpu);
        for name in present {
            let speeds = rounds(name, speed);
            let cpus = rounds(name, cpu);
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                link(name),
                median_and_range(&speeds, whole),
                median_and_range(&cpus, |v| format!("{v:.2}")),
                versus(name, &per_round(&bridge_speeds, &speeds, divide)),
                versus(name, &per_round(&bridge_cpus, &cpus, divide)),
            );
        }
    }

    fn beside_idles(&self, out: &mut String) {
        let of = |name: &str| -> Vec<_> {
            self.tree_idles
                .iter()
                .filter(|(n, _, _, _)| n == name)
                .collect()
        };
        let present = self.present(|name| !of(name).is_empty());
        if present.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n#### Idle sessions: resident memory above a fresh process's baseline\n\n\
             For a single process RSS is the figure. websockify forks a process per \
             session, and RSS summed over them counts the interpreter's pages, which \
             the children share with their parent, once in every child: for it PSS \
             (each shared page split between the processes that map it; the sum is \
             what they hold together) is the fair figure. A single process's PSS is \
             below its RSS by the pages it shares with other processes, such as the \
             code it shares with the copy of the same program serving the rounds.\n"
        );
        let _ = writeln!(
            out,
            "| peer | sessions | processes with them | baseline RSS MiB \
             | KiB per session (RSS, summed) | KiB per session (PSS) |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
        let kib = |bytes: u64| bytes as f64 / 1024.0;
        for name in present {
            let rounds = of(name);
            let count = rounds.first().map_or(0, |(_, count, _, _)| *count);
            let per = |figure: fn(&crate::tree::Memory) -> u64| -> Vec<f64> {
                rounds
                    .iter()
                    .map(|(_, count, before, after)| {
                        kib(figure(after).saturating_sub(figure(before))) / *count as f64
                    })
                    .collect()
            };
            let processes: Vec<f64> = rounds
                .iter()
                .map(|(.., after)| after.processes as f64)
                .collect();
            let baselines: Vec<f64> = rounds
                .iter()
                .map(|(_, _, before, _)| kib(before.rss) / 1024.0)
                .collect();
            let _ = writeln!(
                out,
                "| {name} | {count} | {} | {} | {} | {} |",
                whole(median(&processes)),
                median_and_range(&baselines, |v| format!("{v:.1}")),
                median_and_range(&per(|m| m.rss), |v| format!("{v:.1}")),
                median_and_range(&per(|m| m.pss), |v| format!("{v:.1}")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_ranges_read_as_such() {
        assert_eq!(
            median_and_range(&[1.5, 2.0, 1.0], times),
            "1.50× (1.00×–2.00×)"
        );
        assert_eq!(median_and_range(&[3.0], whole), "3");
        assert_eq!(versus("bridge", &[2.0]), "—");
        assert!(divide(1.0, 0.0).is_nan());
        assert_eq!(times(f64::NAN), "—");
    }
}
