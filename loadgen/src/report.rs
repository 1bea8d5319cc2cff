//! The results of every round, rendered as Markdown tables with ratios
//! against the ceiling.
//!
//! The machines this runs on are shared, and their speed drifts within a
//! run. So each round measures the ceiling and the servers one right after
//! the other, a ratio is taken within each round, and the table shows the
//! median of those ratios with their spread.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::peers::WITH_METRICS;
use crate::scenarios::{Requests, Streamed};

/// The name of the ceiling's results.
const CEILING: &str = "echo";

/// Everything measured, in the order it was measured.
#[derive(Default)]
pub struct Report {
    streams: Vec<(String, u64, Streamed)>,
    requests: Vec<(String, usize, Requests)>,
    idles: Vec<(String, usize, (u64, u64))>,
}

impl Report {
    /// Notes one round's stream result.
    pub fn stream(&mut self, name: &str, bytes: u64, streamed: Streamed) {
        eprintln!(
            "  stream {name}: {:.0} MiB/s, {:.3} CPU s/GiB",
            streamed.mib_per_second, streamed.cpu_per_gib
        );
        self.streams.push((name.to_string(), bytes, streamed));
    }

    /// Notes one round's request/response result.
    pub fn requests(&mut self, name: &str, connections: usize, result: Requests) {
        eprintln!(
            "  {name} × {connections}: {:.0} req/s, p50 {} µs",
            result.per_second,
            result.latency.value_at_quantile(0.5)
        );
        self.requests.push((name.to_string(), connections, result));
    }

    /// Notes an idle-memory result.
    pub fn idle(&mut self, name: &str, count: usize, before_after: (u64, u64)) {
        self.idles.push((name.to_string(), count, before_after));
    }

    /// The tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_streams(&mut out);
        self.render_requests(&mut out);
        self.render_metrics_cost(&mut out);
        self.render_idles(&mut out);
        out
    }

    /// Each server with `--metrics` against itself without, within each
    /// round (only if measured: `--with-metrics`).
    fn render_metrics_cost(&self, out: &mut String) {
        let groups = distinct(
            self.requests
                .iter()
                .map(|(name, connections, _)| (name.as_str(), *connections)),
        );
        let measured: Vec<(&str, &str, usize)> = groups
            .iter()
            .filter_map(|&(name, connections)| {
                Some((name.strip_suffix(WITH_METRICS)?, name, connections))
            })
            .collect();
        if measured.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n### With --metrics against without\n");
        let _ = writeln!(
            out,
            "| connections | server | req/s without (median) | req/s with (median) \
             | with / without (median) | with / without (range) | p99 with / without (median) \
             | CPU µs per round trip without / with (median) | with / without (median) | with / without (range) |"
        );
        let _ = writeln!(
            out,
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for (off_name, on_name, connections) in measured {
            let off = self.rounds_of(off_name, connections);
            let on = self.rounds_of(on_name, connections);
            let rates = |rounds: &[&Requests]| -> Vec<f64> {
                rounds.iter().map(|r| r.per_second).collect()
            };
            let p99s = |rounds: &[&Requests]| -> Vec<f64> {
                rounds.iter().map(|r| quantile(&r.latency, 0.99)).collect()
            };
            let cpus = |rounds: &[&Requests]| -> Vec<f64> {
                rounds.iter().map(|r| r.cpu_micros).collect()
            };
            let ratios = per_round(&rates(&on), &rates(&off), |on, off| on / off);
            let p99_ratios = per_round(&p99s(&on), &p99s(&off), |on, off| on / off);
            // Above 100 %: counting costs CPU. Zero where a short run used
            // less than the kernel's 10 ms tick.
            let cpu_ratios = per_round(&cpus(&on), &cpus(&off), |on, off| {
                if on > 0.0 && off > 0.0 {
                    on / off
                } else {
                    f64::NAN
                }
            });
            let _ = writeln!(
                out,
                "| {connections} | {off_name} | {:.0} | {:.0} | {} | {} | {:.2}× | {:.1} / {:.1} | {} | {} |",
                median(&rates(&off)),
                median(&rates(&on)),
                percent(median(&ratios)),
                spread(&ratios, percent),
                median(&p99_ratios),
                median(&cpus(&off)),
                median(&cpus(&on)),
                percent(median(&cpu_ratios)),
                spread(&cpu_ratios, percent),
            );
        }
        let streamed = |name: &str, figure: fn(&Streamed) -> f64| -> Vec<f64> {
            self.streams
                .iter()
                .filter(|(n, _, _)| n == name)
                .map(|(_, _, streamed)| figure(streamed))
                .collect()
        };
        for name in distinct(self.streams.iter().map(|(n, _, _)| n.as_str())) {
            let Some(off_name) = name.strip_suffix(WITH_METRICS) else {
                continue;
            };
            let speed = |streamed: &Streamed| streamed.mib_per_second;
            let cpu = |streamed: &Streamed| streamed.cpu_per_gib;
            let speeds = per_round(
                &streamed(name, speed),
                &streamed(off_name, speed),
                |on, off| on / off,
            );
            let cpus = per_round(&streamed(name, cpu), &streamed(off_name, cpu), |on, off| {
                if on > 0.0 && off > 0.0 {
                    on / off
                } else {
                    f64::NAN
                }
            });
            let _ = writeln!(
                out,
                "\nStreaming through {off_name}: with --metrics at {} of the MiB/s without \
                 (rounds {}), using {} of the CPU per GiB (rounds {}).",
                percent(median(&speeds)),
                spread(&speeds, percent),
                percent(median(&cpus)),
                spread(&cpus, percent),
            );
        }
    }

    fn render_streams(&self, out: &mut String) {
        let rounds = |name: &str, figure: fn(&Streamed) -> f64| -> Vec<f64> {
            self.streams
                .iter()
                .filter(|(n, _, _)| n == name)
                .map(|(_, _, streamed)| figure(streamed))
                .collect()
        };
        let speed = |streamed: &Streamed| streamed.mib_per_second;
        let cpu = |streamed: &Streamed| streamed.cpu_per_gib;
        let ceiling_speed = rounds(CEILING, speed);
        let ceiling_cpu = rounds(CEILING, cpu);
        let _ = writeln!(out, "\n### One connection streaming\n");
        let _ = writeln!(
            out,
            "| server | MiB | MiB/s (median) | vs echo (median) | vs echo (range) \
             | server CPU s/GiB (median) | echo's CPU / this (median) | rounds |"
        );
        let _ = writeln!(
            out,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for name in distinct(self.streams.iter().map(|(n, _, _)| n.as_str())) {
            let speeds = rounds(name, speed);
            let cpus = rounds(name, cpu);
            let bytes = self
                .streams
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or(0, |(_, bytes, _)| *bytes);
            let speed_ratios = per_round(&speeds, &ceiling_speed, |mine, ceiling| mine / ceiling);
            // As a speed: above 100 % would mean cheaper than echo.
            let cpu_ratios = per_round(&cpus, &ceiling_cpu, |mine, ceiling| {
                // Short runs can use less than the kernel's 10 ms tick.
                if mine > 0.0 && ceiling > 0.0 {
                    ceiling / mine
                } else {
                    f64::NAN
                }
            });
            let _ = writeln!(
                out,
                "| {name} | {:.0} | {:.0} | {} | {} | {:.3} | {} | {} |",
                bytes as f64 / (1 << 20) as f64,
                median(&speeds),
                percent(median(&speed_ratios)),
                spread(&speed_ratios, percent),
                median(&cpus),
                percent(median(&cpu_ratios)),
                speeds.len()
            );
        }
    }

    fn rounds_of(&self, name: &str, connections: usize) -> Vec<&Requests> {
        self.requests
            .iter()
            .filter(|(n, c, _)| n == name && *c == connections)
            .map(|(_, _, result)| result)
            .collect()
    }

    fn render_requests(&self, out: &mut String) {
        let _ = writeln!(out, "\n### Request/response, 64-byte lines\n");
        let _ = writeln!(
            out,
            "| connections | server | req/s (median) | vs echo (median) | vs echo (range) \
             | p50 µs | p99 µs | p99.9 µs | p99 vs echo (median) |"
        );
        let _ = writeln!(
            out,
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let groups = distinct(
            self.requests
                .iter()
                .map(|(name, connections, _)| (name.as_str(), *connections)),
        );
        for &(name, connections) in &groups {
            let mine = self.rounds_of(name, connections);
            let ceiling = self.rounds_of(CEILING, connections);
            let rates: Vec<f64> = mine.iter().map(|r| r.per_second).collect();
            let ceiling_rates: Vec<f64> = ceiling.iter().map(|r| r.per_second).collect();
            let rate_ratios = per_round(&rates, &ceiling_rates, |mine, ceiling| mine / ceiling);
            let p99s: Vec<f64> = mine.iter().map(|r| quantile(&r.latency, 0.99)).collect();
            let ceiling_p99s: Vec<f64> =
                ceiling.iter().map(|r| quantile(&r.latency, 0.99)).collect();
            let p99_ratios = per_round(&p99s, &ceiling_p99s, |mine, ceiling| mine / ceiling);
            // Latencies of all rounds together: the tail needs every sample.
            let Some(latency) = merged(&mine) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {connections} | {name} | {:.0} | {} | {} | {} | {} | {} | {:.2}× |",
                median(&rates),
                percent(median(&rate_ratios)),
                spread(&rate_ratios, percent),
                latency.value_at_quantile(0.5),
                latency.value_at_quantile(0.99),
                latency.value_at_quantile(0.999),
                median(&p99_ratios),
            );
        }
        let _ = writeln!(
            out,
            "\nWhat the bridge adds per round trip (p50 over direct TCP to servidor, \
             median of the rounds):\n"
        );
        for &(name, connections) in &groups {
            if name != "bridge" {
                continue;
            }
            let p50s = |name: &str| -> Vec<f64> {
                self.rounds_of(name, connections)
                    .iter()
                    .map(|r| quantile(&r.latency, 0.5))
                    .collect()
            };
            let added = per_round(&p50s("bridge"), &p50s("servidor"), |bridge, direct| {
                bridge - direct
            });
            let _ = writeln!(
                out,
                "- {connections} connection(s): {:.0} µs (rounds: {})",
                median(&added),
                spread(&added, |added| format!("{added:.0}"))
            );
        }
    }

    fn render_idles(&self, out: &mut String) {
        if self.idles.is_empty() {
            return;
        }
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let _ = writeln!(out, "\n### Idle clients: resident memory\n");
        let _ = writeln!(
            out,
            "| server | clients | RSS before | RSS with them | per client |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
        for (name, count, (before, after)) in &self.idles {
            let _ = writeln!(
                out,
                "| {name} | {count} | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
                mib(*before),
                mib(*after),
                after.saturating_sub(*before) as f64 / 1024.0 / *count as f64
            );
        }
    }
}

/// The distinct items, in the order they first appear.
fn distinct<T: PartialEq>(all: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = Vec::new();
    for item in all {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// `compare` applied to the results of the same round.
fn per_round(mine: &[f64], other: &[f64], compare: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    mine.iter()
        .zip(other)
        .map(|(&mine, &other)| compare(mine, other))
        .collect()
}

/// The median of the values that are numbers (the upper one of an even
/// count); NaN if there are none.
fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `lowest–highest`, or `—` with fewer than two values.
fn spread(values: &[f64], show: impl Fn(f64) -> String) -> String {
    let numbers = || values.iter().copied().filter(|v| v.is_finite());
    let lowest = numbers().min_by(f64::total_cmp);
    let highest = numbers().max_by(f64::total_cmp);
    match (lowest, highest) {
        (Some(lowest), Some(highest)) if numbers().count() > 1 => {
            format!("{}–{}", show(lowest), show(highest))
        }
        _ => String::from("—"),
    }
}

/// A ratio as a percentage; `—` where it could not be taken (a CPU time
/// below the 10 ms the kernel counts in, on a short run).
fn percent(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{:.0} %", 100.0 * ratio)
    } else {
        String::from("—")
    }
}

fn quantile(latency: &Histogram<u64>, quantile: f64) -> f64 {
    latency.value_at_quantile(quantile) as f64
}

/// All rounds' latencies in one histogram; `None` for no rounds.
fn merged(rounds: &[&Requests]) -> Option<Histogram<u64>> {
    let (first, others) = rounds.split_first()?;
    let mut all = first.latency.clone();
    for round in others {
        // Every round's histogram has the same bounds, so this cannot fail.
        let _ = all.add(&round.latency);
    }
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 3.0, 1.0]), 3.0);
        assert_eq!(spread(&[0.5, 0.9, 0.7], percent), "50 %–90 %");
        assert_eq!(spread(&[0.5], percent), "—");
        assert_eq!(percent(0.39 / 0.0), "—");
    }

    #[test]
    fn ratios_pair_the_same_round() {
        assert_eq!(
            per_round(&[2.0, 9.0], &[4.0, 10.0], |a, b| a / b),
            [0.5, 0.9]
        );
    }
}
