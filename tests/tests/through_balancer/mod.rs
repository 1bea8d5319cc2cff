//! What the balancer tests share: the balancer's process and folder, gone
//! together (`balancers.rs`, `balancers_limits.rs`, `balancers_tls.rs`);
//! and, for the plain-HTTP ones, WebSocket sessions through it from a
//! chosen loopback address (127.0.0.0/8 is all local, so each "browser"
//! has an address of its own) and the wait until it serves.

#![allow(dead_code)] // each test file uses part of it

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use testkit::{websocket_over, within, PATIENCE};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Child;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A session through the balancer, without TLS.
pub type RawWs = WebSocketStream<TcpStream>;

/// A balancer process, started in a process group of its own, and its
/// folder (configuration, pid, `stderr.log`): both gone when dropped.
pub struct Balancer {
    pub child: Child,
    pub dir: PathBuf,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // The whole process group: nginx's workers outlive a killed master.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Balancer {
    /// Waits until a session through `web` (to `/ws{query}`), from
    /// 127.0.0.`host`, gets its answer. A balancer announces nothing when it is ready (its health
    /// checks must first mark a bridge up), so this tries again every
    /// 100 ms, within [`PATIENCE`], and shows the balancer's log if it
    /// never serves.
    pub async fn wait_until_serving(&self, web: SocketAddr, host: u8, query: &str) {
        let started = Instant::now();
        loop {
            if let Ok(Ok(mut ws)) =
                tokio::time::timeout(Duration::from_secs(2), session_with(web, host, query, None))
                    .await
            {
                if let Ok(Ok(answer)) =
                    tokio::time::timeout(Duration::from_secs(2), round_trip(&mut ws, "listo")).await
                {
                    assert_eq!(answer, "LISTO\n");
                    let _ = ws.close(None).await;
                    return;
                }
            }
            let log = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
            assert!(
                started.elapsed() < PATIENCE,
                "the balancer never served; its log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A new folder for one balancer, under the system's temporary folder.
pub fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tema12-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An upgrade through `web` from the loopback address 127.0.0.`host`: the
/// session, or why not (an HTTP refusal's status and text among them).
pub async fn session_from(web: SocketAddr, host: u8) -> Result<RawWs, WsError> {
    session_with(web, host, "", None).await
}

/// As [`session_from`], to `/ws{query}` (`?clave=…`) and with `cookie`
/// (`clave_demo=…`, as the join link leaves it) if given.
pub async fn session_with(
    web: SocketAddr,
    host: u8,
    query: &str,
    cookie: Option<&str>,
) -> Result<RawWs, WsError> {
    let mut request = format!("ws://{web}/ws{query}")
        .into_client_request()
        .expect("a valid URL");
    if let Some(cookie) = cookie {
        let cookie = cookie.parse().expect("a cookie header value");
        request.headers_mut().insert("cookie", cookie);
    }
    let socket = TcpSocket::new_v4().map_err(WsError::Io)?;
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))
        .map_err(WsError::Io)?;
    let stream = within(PATIENCE, "connect", socket.connect(web))
        .await
        .map_err(WsError::Io)?;
    websocket_over(request, stream).await
}

/// Sends `text` as a line and reads its whole answer.
pub async fn round_trip(ws: &mut RawWs, text: &str) -> Result<String, String> {
    ws.send(Message::text(format!("{text}\n")))
        .await
        .map_err(|e| e.to_string())?;
    read_answer(ws).await
}

/// Reads text until a newline; pings and pongs are passed over.
pub async fn read_answer(ws: &mut RawWs) -> Result<String, String> {
    let mut answer = String::new();
    while !answer.ends_with('\n') {
        match within(PATIENCE, "an answer", ws.next()).await {
            Some(Ok(Message::Text(part))) => answer.push_str(&part),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => return Err(format!("{other:?} after {answer:?}")),
        }
    }
    Ok(answer)
}
