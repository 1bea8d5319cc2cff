//! `http://` (or `ws://`) to the bridge's TLS port: a request that would
//! otherwise end in a failed TLS handshake, unseen in the log and an empty
//! answer in the browser. It is told apart by its first bytes, answered over
//! plain HTTP (hyper's) with 426 and `Upgrade: TLS/1.2` (RFC 2817: switch
//! to TLS; `cliente` reads it as "use wss://") and the address to use, and
//! logged at `info` with the fix, at most once a minute per client address,
//! in a table of bounded size.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

/// How long a client's plain-HTTP request is not logged again.
pub const QUIET_FOR: Duration = Duration::from_secs(60);
/// Clients remembered at once. Past this (a flood from many addresses),
/// new ones are answered but not logged until older entries expire.
pub const REMEMBERED: usize = 1024;

/// Whether a connection's first bytes are a plain HTTP request (a method
/// such as `GET`, then a space) rather than a TLS record (which starts with
/// byte 0x16). Waits for the first bytes to arrive.
pub async fn is_plain_http(stream: &TcpStream) -> bool {
    let mut start = [0; 8];
    match stream.peek(&mut start).await {
        Ok(seen) => looks_like_a_request(&start[..seen]),
        Err(_) => false,
    }
}

fn looks_like_a_request(start: &[u8]) -> bool {
    let method_len = start.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method_len > 0 && start.get(method_len) == Some(&b' ')
}

/// When each client's plain-HTTP request was last logged.
#[derive(Debug, Default)]
pub struct Notices {
    logged: Mutex<HashMap<IpAddr, Instant>>,
}

impl Notices {
    /// Whether a plain-HTTP request from `client` at `now` is to be logged:
    /// not if one was in the last [`QUIET_FOR`], nor when the table is full
    /// of clients seen in that time.
    pub fn should_log(&self, client: IpAddr, now: Instant) -> bool {
        let Ok(mut logged) = self.logged.lock() else {
            return false;
        };
        let recent = |at: &Instant| now.saturating_duration_since(*at) < QUIET_FOR;
        if logged.get(&client).is_some_and(recent) {
            return false;
        }
        if logged.len() >= REMEMBERED && !logged.contains_key(&client) {
            logged.retain(|_, at| recent(at));
            if logged.len() >= REMEMBERED {
                return false;
            }
        }
        logged.insert(client, now);
        true
    }

    /// How many clients are remembered.
    pub fn len(&self) -> usize {
        self.logged.lock().map_or(0, |logged| logged.len())
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Answers the plain-HTTP request on `stream` (from `client`, reaching
/// the bridge at `local`) with 426 and the https (or wss) address to use,
/// logging it as [`Notices`] allows; within `handshake_timeout`.
pub async fn answer(
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    notices: &Notices,
    handshake_timeout: Duration,
) {
    let service = hyper::service::service_fn(|request: Request<Incoming>| {
        let host = request
            .headers()
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .map_or_else(|| local.to_string(), str::to_string);
        let websocket = request
            .headers()
            .get(UPGRADE)
            .and_then(|upgrade| upgrade.to_str().ok())
            .is_some_and(|upgrade| upgrade.eq_ignore_ascii_case("websocket"));
        let scheme = if websocket { "wss" } else { "https" };
        let fixed = format!("{scheme}://{host}{}", request.uri().path());
        if notices.should_log(client.ip(), Instant::now()) {
            info!(
                "petición HTTP sin TLS desde {client} al puerto de HTTPS: \
                 use {fixed} (en este puerto el puente solo habla TLS)"
            );
        }
        let text = format!("este puerto habla HTTPS: use {fixed}\n");
        let response = Response::builder()
            .status(StatusCode::UPGRADE_REQUIRED)
            .header(UPGRADE, "TLS/1.2, HTTP/1.1")
            .header(CONNECTION, "Upgrade, close")
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(text));
        async move { Ok::<_, Infallible>(response.unwrap_or_default()) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        debug!("petición HTTP sin TLS de {client} terminada: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_from_tls_records() {
        for request in [&b"GET / HTTP/1.1\r\n"[..], b"POST /ws", b"HEAD / ", b"GET "] {
            assert!(looks_like_a_request(request), "{request:?}");
        }
        let client_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01];
        for other in [&client_hello[..], b"GET", b"", b"get / HTTP/1.1", b" GET /"] {
            assert!(!looks_like_a_request(other), "{other:?}");
        }
    }

    #[test]
    fn a_client_is_logged_at_most_once_a_minute() {
        let notices = Notices::default();
        let start = Instant::now();
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(notices.should_log(one, start));
        assert!(!notices.should_log(one, start + Duration::from_secs(59)));
        assert!(notices.should_log(two, start + Duration::from_secs(59)));
        assert!(notices.should_log(one, start + QUIET_FOR));
        assert!(!notices.should_log(one, start + QUIET_FOR + Duration::from_secs(1)));
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_addresses() {
        let notices = Notices::default();
        let start = Instant::now();
        let address = |n: usize| IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        for n in 0..REMEMBERED {
            assert!(notices.should_log(address(n), start));
        }
        // Full of clients seen within the minute: newcomers are not logged.
        for n in REMEMBERED..3 * REMEMBERED {
            assert!(!notices.should_log(address(n), start + Duration::from_secs(1)));
        }
        assert_eq!(notices.len(), REMEMBERED);
        // A minute later the old entries make room again.
        let later = start + QUIET_FOR;
        assert!(notices.should_log(address(5 * REMEMBERED), later));
        assert_eq!(notices.len(), 1);
    }
}
