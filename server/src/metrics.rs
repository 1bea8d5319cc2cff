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
    /// Connections refused because their client address held
    /// `--max-connections-per-client` already.
    pub(super) refused_client_connections: Counter,
    pub(super) accept: AcceptMetrics,
}

impl ServerMetrics {
    /// Registers every metric with the recorder in scope (see
    /// [`crate::metrics::Exporter::register`]), so that each appears, at
    /// 0, from the first scrape.
    pub fn register() -> Self {
        describe_gauge!(
            "servidor_connections_open",
            "Conexiones de clientes atendidas ahora."
        );
        describe_counter!(
            "servidor_connections_accepted_total",
            "Conexiones de clientes aceptadas."
        );
        describe_counter!(
            "servidor_connections_ended_total",
            "Conexiones de clientes terminadas, por causa: client_closed (el cliente cerró), idle_timeout (sin actividad), write_timeout (el cliente no leía las respuestas), failed (reinicio u otro error), shutdown (el servidor se detenía)."
        );
        describe_counter!(
            "servidor_received_bytes_total",
            "Bytes recibidos de los clientes."
        );
        describe_counter!(
            "servidor_sent_bytes_total",
            "Bytes enviados a los clientes."
        );
        describe_counter!(
            "servidor_invalid_utf8_bytes_total",
            "Bytes recibidos que no eran UTF-8 válido y se devolvieron sin cambios."
        );
        describe_counter!(
            "servidor_accept_errors_total",
            "Llamadas a accept fallidas (cada una se reintenta tras una pausa)."
        );
        describe_gauge!(
            "servidor_connections_max",
            "Conexiones de clientes atendidas a la vez como máximo (--max-connections)."
        );
        describe_gauge!(
            "servidor_connection_limit_waiting",
            "1 mientras todas las plazas de conexión están ocupadas y los clientes nuevos esperan en la cola de escucha; si no, 0."
        );
        describe_counter!(
            "servidor_connection_limit_reached_total",
            "Veces que todas las plazas de conexión estaban ocupadas (los clientes nuevos esperan entonces en la cola de escucha)."
        );
        describe_counter!(
            "servidor_connections_refused_total",
            "Conexiones rechazadas, por motivo: client_connections (esa dirección de cliente ya tenía --max-connections-per-client conexiones abiertas)."
        );
        Self {
            refused_client_connections: counter!(
                "servidor_connections_refused_total",
                "reason" => "client_connections"
            ),
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
