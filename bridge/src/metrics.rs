//! What the bridge counts for `--metrics`, as handles made once at start
//! (see [`netkit::metrics`]): every label set is resolved here, so
//! counting a message, a session or a refusal is an atomic add, with no
//! lookup, lock or allocation.
//!
//! How a session ended is read off its [`Ending`], which owns its close
//! code and the side it is counted against.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram,
};

use crate::framing::Kind;
use crate::session::ending::{Ending, Side};

/// The histogram of the time it takes to connect to the target.
pub const CONNECT_SECONDS: &str = "bridge_target_connect_duration_seconds";

/// Its buckets, in seconds: from a loopback connect (~0.1 ms) to the
/// default connect timeout (5 s).
pub const CONNECT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The `code` label of an ending: the codes of RFC 6455 a session can end
/// with one by one, any other code a client sends as `other` (so a client
/// cannot make new series), and `none` where no code was sent or echoed.
const CODES: [&str; 11] = [
    "1000", "1001", "1002", "1003", "1007", "1008", "1009", "1010", "1011", "other", "none",
];

/// Where `code` is in [`CODES`].
fn code_slot(code: Option<u16>) -> usize {
    match code {
        Some(1000) => 0,
        Some(1001) => 1,
        Some(1002) => 2,
        Some(1003) => 3,
        Some(1007) => 4,
        Some(1008) => 5,
        Some(1009) => 6,
        Some(1010) => 7,
        Some(1011) => 8,
        Some(_) => 9,
        None => 10,
    }
}

/// Whether a session can end with the code in `slot` by `side`'s doing:
/// only these series are made. A client may echo any code; the target's
/// endings are 1000 (it closed) and 1011 (it failed); the bridge's is 1001.
fn possible(side: Side, slot: usize) -> bool {
    match side {
        Side::Client => true,
        Side::Target => [code_slot(Some(1000)), code_slot(Some(1011))].contains(&slot),
        Side::Bridge => slot == code_slot(Some(1001)),
    }
}

/// Why an upgrade to a session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// HTTP 401: no join code, or a wrong one (`--access-code`).
    AccessCode,
    /// HTTP 403: a page of another origin.
    Origin,
    /// HTTP 503: `--max-sessions` reached.
    Limit,
    /// HTTP 503: the bridge is stopping.
    Stopping,
    /// The TLS handshake or the first request's headers did not arrive
    /// within `--handshake-timeout`: the connection was dropped.
    HandshakeTimeout,
    /// HTTP 4xx: a request to `/ws` that is not a valid WebSocket upgrade.
    BadRequest,
    /// HTTP 429: the client's address has `--max-sessions-per-client`
    /// sessions open.
    ClientSessions,
    /// HTTP 429: the client's address is past `--upgrades-per-client`.
    ClientRate,
    /// The peer's address holds `--max-connections-per-client` HTTP
    /// connections: the new one was closed before any byte was read.
    ClientConnections,
}

impl Refusal {
    const ALL: [Refusal; 9] = [
        Refusal::AccessCode,
        Refusal::Origin,
        Refusal::Limit,
        Refusal::Stopping,
        Refusal::HandshakeTimeout,
        Refusal::BadRequest,
        Refusal::ClientSessions,
        Refusal::ClientRate,
        Refusal::ClientConnections,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::AccessCode => "access_code",
            Refusal::Origin => "origin",
            Refusal::Limit => "limit",
            Refusal::Stopping => "stopping",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::BadRequest => "bad_request",
            Refusal::ClientSessions => "client_sessions",
            Refusal::ClientRate => "client_rate",
            Refusal::ClientConnections => "client_connections",
        }
    }
}

/// Which kind of ACME order, for the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeOrder {
    /// The first certificate (none was served).
    Issue,
    /// A certificate replacing one served.
    Renewal,
}

/// The two directions of a session, for the `direction` label.
const DIRECTIONS: [&str; 2] = ["to_target", "to_client"];
const TO_TARGET: usize = 0;
const TO_CLIENT: usize = 1;

fn kind_slot(kind: Kind) -> usize {
    match kind {
        Kind::Text => 0,
        Kind::Binary => 1,
    }
}

/// Handles for every metric of the bridge.
#[derive(Debug)]
pub struct BridgeMetrics {
    sessions_open: Gauge,
    sessions_started: Counter,
    /// By [`Side::index`], then [`code_slot`]; `None` where that ending
    /// cannot happen (see [`possible`]).
    ended: [[Option<Counter>; CODES.len()]; 3],
    /// By [`Refusal::ALL`]'s order.
    refused: [Counter; Refusal::ALL.len()],
    /// By direction.
    bytes: [Counter; 2],
    /// By direction, then [`kind_slot`].
    messages: [[Counter; 2]; 2],
    /// Could not connect: an error, a timeout.
    connect_failed: [Counter; 2],
    connect_seconds: Histogram,
    /// By the ping timeout, by the write timeout.
    dropped: [Counter; 2],
    static_files: Counter,
    /// A renewed certificate pair taken, or refused (the old one kept).
    tls_reloads: [Counter; 2],
    /// The ACME certificate's `notAfter`, in Unix seconds.
    acme_expiry: Gauge,
    /// By [`AcmeOrder`], then ok / failed.
    acme_orders: [[Counter; 2]; 2],
}

impl BridgeMetrics {
    /// Registers every metric with the recorder in scope (see
    /// [`netkit::metrics::Exporter::register`]), so that each appears,
    /// at 0, from the first scrape.
    pub fn register() -> Self {
        describe();
        let ended = Side::ALL.map(|side| {
            let mut slot = 0;
            CODES.map(|code| {
                let possible = possible(side, slot);
                slot += 1;
                possible.then(|| {
                    counter!("bridge_sessions_ended_total", "code" => code, "side" => side.label())
                })
            })
        });
        let messages = DIRECTIONS.map(|direction| {
            ["text", "binary"].map(
                |kind| counter!("bridge_messages_total", "direction" => direction, "type" => kind),
            )
        });
        Self {
            sessions_open: gauge!("bridge_sessions_open"),
            sessions_started: counter!("bridge_sessions_started_total"),
            ended,
            refused: Refusal::ALL.map(
                |refusal| counter!("bridge_upgrades_refused_total", "reason" => refusal.label()),
            ),
            bytes: DIRECTIONS
                .map(|direction| counter!("bridge_payload_bytes_total", "direction" => direction)),
            messages,
            connect_failed: ["error", "timeout"]
                .map(|reason| counter!("bridge_target_connect_failures_total", "reason" => reason)),
            connect_seconds: histogram!(CONNECT_SECONDS),
            dropped: ["ping_timeout", "write_timeout"]
                .map(|reason| counter!("bridge_clients_dropped_total", "reason" => reason)),
            static_files: counter!("bridge_static_files_served_total"),
            tls_reloads: ["loaded", "rejected"]
                .map(|result| counter!("bridge_tls_certificate_reloads_total", "result" => result)),
            acme_expiry: gauge!("bridge_acme_certificate_expiry_timestamp_seconds"),
            acme_orders: ["issue", "renewal"].map(|kind| {
                ["ok", "failed"].map(|result| {
                    counter!("bridge_acme_orders_total", "kind" => kind, "result" => result)
                })
            }),
        }
    }

    /// Counts a session that has begun (its upgrade succeeded); it counts
    /// as open until the returned guard is dropped.
    pub fn session_started(&self) -> OpenSession {
        self.sessions_started.increment(1);
        self.sessions_open.increment(1.0);
        OpenSession(self.sessions_open.clone())
    }

    /// Counts how a session ended.
    pub fn session_ended(&self, ending: &Ending) {
        let side = ending.side();
        let slot = code_slot(ending.code());
        debug_assert!(possible(side, slot), "{ending:?} has no series");
        if let Some(ended) = &self.ended[side.index()][slot] {
            ended.increment(1);
        }
        match ending {
            Ending::TargetUnreachable { .. } => self.connect_failed[0].increment(1),
            Ending::TargetTimedOut { .. } => self.connect_failed[1].increment(1),
            Ending::ClientSilent(_) => self.dropped[0].increment(1),
            Ending::ClientStalled(_) => self.dropped[1].increment(1),
            _ => {}
        }
    }

    /// Counts an upgrade refused.
    pub fn refused(&self, refusal: Refusal) {
        // Declared in the order of `Refusal::ALL`.
        self.refused[refusal as usize].increment(1);
    }

    /// Counts a message from the client; its bytes (none for an empty
    /// one) are written to the target.
    pub fn to_target(&self, kind: Kind, bytes: usize) {
        self.bytes[TO_TARGET].increment(bytes as u64);
        self.messages[TO_TARGET][kind_slot(kind)].increment(1);
    }

    /// Counts a message sent to the client.
    pub fn to_client(&self, kind: Kind, bytes: usize) {
        self.bytes[TO_CLIENT].increment(bytes as u64);
        self.messages[TO_CLIENT][kind_slot(kind)].increment(1);
    }

    /// Notes how long a successful connection to the target took.
    pub fn target_connected(&self, took: Duration) {
        self.connect_seconds.record(took.as_secs_f64());
    }

    /// Notes the expiry of the ACME certificate now served.
    pub fn acme_certificate(&self, not_after: SystemTime) {
        let seconds = not_after
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.acme_expiry.set(seconds);
    }

    /// Counts an ACME order, by kind and result.
    pub fn acme_order(&self, kind: AcmeOrder, ok: bool) {
        let kind = match kind {
            AcmeOrder::Issue => 0,
            AcmeOrder::Renewal => 1,
        };
        self.acme_orders[kind][usize::from(!ok)].increment(1);
    }

    /// Counts a file of the page served.
    pub fn static_file_served(&self) {
        self.static_files.increment(1);
    }

    /// Counts a changed certificate pair: `loaded` if it is served from now
    /// on, otherwise rejected (the old pair is kept).
    pub fn tls_certificate_reloaded(&self, loaded: bool) {
        self.tls_reloads[usize::from(!loaded)].increment(1);
    }
}

impl Default for BridgeMetrics {
    /// Handles that count nothing: a bridge without `--metrics`.
    fn default() -> Self {
        netkit::metrics::noop(Self::register)
    }
}

/// Marks a session open for as long as it lives: the gauge comes down
/// however the session's task ends.
pub struct OpenSession(Gauge);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The `# HELP` of each metric.
fn describe() {
    describe_gauge!("bridge_sessions_open", "Sesiones WebSocket abiertas ahora.");
    describe_counter!(
        "bridge_sessions_started_total",
        "Sesiones WebSocket empezadas (el paso a WebSocket salió bien), se pudiera o no conectar con el destino."
    );
    describe_counter!(
        "bridge_sessions_ended_total",
        "Sesiones terminadas, por código de cierre enviado o devuelto (none: sin Close; other: un código del cliente fuera de los de RFC 6455) y por el lado que las terminó."
    );
    describe_counter!(
        "bridge_upgrades_refused_total",
        "Pasos a sesión rechazados, por motivo: origin (403), limit (503), stopping (503), handshake_timeout (cortado), bad_request (4xx)."
    );
    describe_counter!(
        "bridge_payload_bytes_total",
        "Bytes de carga de los mensajes, por sentido: to_target (mensajes del cliente escritos al destino) y to_client (hacia el cliente)."
    );
    describe_counter!(
        "bridge_messages_total",
        "Mensajes de datos, por sentido (to_target, to_client) y tipo (text, binary)."
    );
    describe_counter!(
        "bridge_target_connect_failures_total",
        "Sesiones cuya conexión con el destino falló, por motivo: error (rechazada, inalcanzable…) o timeout (sin respuesta a tiempo)."
    );
    describe_histogram!(
        CONNECT_SECONDS,
        "Tiempo en conectar con el destino, solo de las conexiones logradas."
    );
    describe_counter!(
        "bridge_clients_dropped_total",
        "Clientes cortados sin Close, por motivo: ping_timeout (no contestó a los pings) o write_timeout (no aceptaba mensajes)."
    );
    describe_counter!(
        "bridge_static_files_served_total",
        "Ficheros de la página servidos con éxito (2xx o 304)."
    );
    describe_counter!(
        "bridge_tls_certificate_reloads_total",
        "Changed --tls-cert/--tls-key pairs, by result: loaded (served to new handshakes) or rejected (unreadable, or the key is not the certificate's: the old pair is kept)."
    );
    describe_gauge!(
        "bridge_acme_certificate_expiry_timestamp_seconds",
        "With --acme-domain: when the certificate served expires (notAfter, Unix time); 0 before there is one."
    );
    describe_counter!(
        "bridge_acme_orders_total",
        "With --acme-domain: certificate orders to the CA, by kind (issue: none was served; renewal) and result (ok, failed)."
    );
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn every_ending_has_its_series() {
        let endings = [
            Ending::ClientClosed(Some(1000)),
            Ending::ClientClosed(Some(1001)),
            Ending::ClientClosed(Some(4000)),
            Ending::ClientClosed(None),
            Ending::TargetClosed,
            Ending::TargetUnreachable {
                target: String::from("t"),
                error: io::Error::from(io::ErrorKind::ConnectionRefused),
            },
            Ending::TargetTimedOut {
                target: String::from("t"),
                after: Duration::from_secs(1),
            },
            Ending::TargetLost {
                target: String::from("t"),
                error: io::Error::from(io::ErrorKind::ConnectionReset),
            },
            Ending::TooBig { max: 1 },
            Ending::InvalidText,
            Ending::ProtocolViolation(String::from("x")),
            Ending::Stopping,
            Ending::ClientSilent(Duration::from_secs(1)),
            Ending::ClientStalled(Duration::from_secs(1)),
            Ending::ClientVanished,
            Ending::ClientFailed(String::from("x")),
        ];
        for ending in endings {
            assert!(
                possible(ending.side(), code_slot(ending.code())),
                "{ending:?}"
            );
        }
        assert_eq!(CODES[code_slot(Some(4000))], "other");
        assert_eq!(CODES[code_slot(None)], "none");
        assert_eq!(CODES[code_slot(Some(1011))], "1011");
    }
}
