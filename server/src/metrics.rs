//! What `servidor` counts, as handles made once at start (see
//! [`crate::metrics`]): counting a read, a write or a connection is an
//! atomic add, with no lookup, lock or allocation.

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge};

use super::Ending;
use netkit::accept::AcceptMetrics;

/// Handles for every metric of `servidor`.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    pub(super) open: Gauge,
    pub(super) accepted: Counter,
    /// By [`Ending::cause`].
    ended: [Counter; Ending::CAUSES.len()],
    pub(super) received: Counter,
    pub(super) sent: Counter,
    pub(super) invalid_utf8: Counter,
    pub(super) max: Gauge,
    pub(super) accept: AcceptMetrics,
}

impl ServerMetrics {
    /// Registers every metric with the recorder in scope (see
    /// [`crate::metrics::Exporter::register`]), so that each appears, at
    /// 0, from the first scrape.
    pub fn register() -> Self {
        describe_gauge!(
            "servidor_connections_open",
            "Client connections being served now."
        );
        describe_counter!(
            "servidor_connections_accepted_total",
            "Client connections accepted."
        );
        describe_counter!(
            "servidor_connections_ended_total",
            "Client connections ended, by cause: client_closed, idle_timeout, write_timeout, failed (reset or another error), shutdown."
        );
        describe_counter!(
            "servidor_received_bytes_total",
            "Bytes received from clients."
        );
        describe_counter!("servidor_sent_bytes_total", "Bytes sent to clients.");
        describe_counter!(
            "servidor_invalid_utf8_bytes_total",
            "Bytes received that were not valid UTF-8 and were passed through unchanged."
        );
        describe_counter!(
            "servidor_accept_errors_total",
            "Failed accept calls (each is retried after a pause)."
        );
        describe_gauge!(
            "servidor_connections_max",
            "Client connections served at once at most (--max-connections)."
        );
        describe_gauge!(
            "servidor_connection_limit_waiting",
            "1 while every connection place is taken and new clients wait in the listen backlog, else 0."
        );
        describe_counter!(
            "servidor_connection_limit_reached_total",
            "Times every connection place was found taken (new clients then wait in the listen backlog)."
        );
        Self {
            open: gauge!("servidor_connections_open"),
            accepted: counter!("servidor_connections_accepted_total"),
            ended: Ending::CAUSES
                .map(|cause| counter!("servidor_connections_ended_total", "cause" => cause)),
            received: counter!("servidor_received_bytes_total"),
            sent: counter!("servidor_sent_bytes_total"),
            invalid_utf8: counter!("servidor_invalid_utf8_bytes_total"),
            max: gauge!("servidor_connections_max"),
            accept: AcceptMetrics {
                errors: counter!("servidor_accept_errors_total"),
                limit_waiting: gauge!("servidor_connection_limit_waiting"),
                limit_reached: counter!("servidor_connection_limit_reached_total"),
            },
        }
    }

    /// Counts a connection's end.
    pub(super) fn ended(&self, ending: &Ending) {
        self.ended[ending.cause()].increment(1);
    }
}

impl Default for ServerMetrics {
    /// Handles that count nothing: `servidor` without `--metrics`.
    fn default() -> Self {
        netkit::metrics::noop(Self::register)
    }
}

/// Marks a connection open for as long as it lives: the gauge comes down
/// however the connection's task ends.
pub(super) struct OpenConnection(Gauge);

impl OpenConnection {
    pub(super) fn new(open: &Gauge) -> Self {
        open.increment(1.0);
        Self(open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
