//! A session's timers at their real defaults (30 s ping interval, 2 s
//! close grace) on tokio's paused clock, so the promised times are checked
//! to the millisecond in no real time.
//!
//! The session runs by itself ([`bridge::session::run`]) over an in-memory
//! client connection. Paused time jumps to the next timer whenever the
//! runtime is idle, which would also fire timers while bytes are still in
//! flight on a real socket. So the clock is paused only once the session
//! has connected to its (real TCP) target and said all it will say to it:
//! from then on nothing the test waits for crosses a real socket.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bridge::session::SessionConfig;
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

use support::*;

/// Longer than any default budget a test here waits out, on the paused
/// clock.
const VIRTUAL_PATIENCE: Duration = Duration::from_secs(600);

/// Timers have a resolution of a millisecond, rounded up.
const TICK: Duration = Duration::from_millis(1);

/// A target that reads the PROXY v2 header the session starts with
/// (28 bytes for IPv4), reports it, then reads until the bridge lets go.
async fn target_announced_to() -> (SocketAddr, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (announced_tx, announced) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 28];
        stream.read_exact(&mut header).await.unwrap();
        let _ = announced_tx.send(());
        let _ = stream.read_to_end(&mut Vec::new()).await;
    });
    (addr, announced)
}

/// A session at the default budgets, connected, with the clock paused.
async fn connected_session() -> InMemory {
    let (target, announced) = target_announced_to().await;
    let mut config = SessionConfig::for_target(target.to_string());
    // The header is the sign that the session has connected and that
    // nothing more goes to the target unless the client sends it.
    config.send_proxy = true;
    let session = InMemory::start(config, Arc::default()).await;
    within(PATIENCE, "the session to connect", announced)
        .await
        .unwrap();
    tokio::time::pause();
    session
}

/// The next frame the bridge sends to a client that never answers: its
/// first byte (FIN and opcode), or `None` at the end of the connection.
async fn next_frame(client: &mut DuplexStream) -> Option<u8> {
    let mut head = [0u8; 2];
    match within(VIRTUAL_PATIENCE, "a frame", client.read_exact(&mut head)).await {
        Ok(_) => {}
        Err(_end) => return None,
    }
    let mut payload = vec![0u8; usize::from(head[1] & 0x7F)];
    within(
        VIRTUAL_PATIENCE,
        "its payload",
        client.read_exact(&mut payload),
    )
    .await
    .unwrap();
    Some(head[0])
}

#[tokio::test]
async fn a_silent_client_is_pinged_after_the_interval_and_dropped_after_twice_it() {
    let (log, _capturing) = Log::capture();
    let mut session = connected_session().await;
    let started = Instant::now();
    let interval = Duration::from_secs(SessionConfig::PING_INTERVAL_SECS);
    let client = session.client.get_mut();

    assert_eq!(next_frame(client).await, Some(0x89), "a ping");
    let pinged = started.elapsed();
    // The interval runs from the session's start, a few real
    // milliseconds before the clock was paused.
    assert!(
        pinged <= interval + TICK && pinged > interval - Duration::from_millis(500),
        "pinged after {pinged:?}"
    );

    // No answer: dropped one interval after the ping, without a Close (it
    // could not be read by a client that reads nothing).
    assert_eq!(next_frame(client).await, None);
    let dropped = started.elapsed();
    assert!(
        dropped <= 2 * (interval + TICK) && dropped > 2 * interval - Duration::from_millis(500),
        "dropped after {dropped:?}"
    );
    session.ended(VIRTUAL_PATIENCE).await;
    log.wait_for("sesión cerrada: el cliente no respondió al ping en 30 s")
        .await;
}

#[tokio::test]
async fn a_client_that_never_answers_the_close_is_let_go_after_the_close_grace() {
    let mut session = connected_session().await;
    let started = Instant::now();
    session.stop.cancel();
    let client = session.client.get_mut();
    // The bridge's Close (1001) arrives at once; this client never
    // answers it.
    assert_eq!(next_frame(client).await, Some(0x88), "a close");
    assert!(started.elapsed() <= TICK, "{:?}", started.elapsed());
    assert_eq!(next_frame(client).await, None);
    let grace = Duration::from_secs(SessionConfig::CLOSE_GRACE_SECS);
    let let_go = started.elapsed();
    assert!(let_go >= grace && let_go <= grace + TICK, "{let_go:?}");
    session.ended(VIRTUAL_PATIENCE).await;
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_dropped_after_the_write_timeout() {
    let (log, _capturing) = Log::capture();
    let target = flooding_target(64 * 1024 * 1024).await;
    let config = SessionConfig::for_target(target.addr.to_string());
    let session = InMemory::start(config, Arc::default()).await;
    session.blocking.wait().await;
    // Blocked mid-send, the session reads nothing more from the target:
    // all it waits for now is the client, in memory, and its timers.
    tokio::time::pause();
    let blocked = Instant::now();
    session.ended(VIRTUAL_PATIENCE).await;
    let dropped = blocked.elapsed();
    let timeout = Duration::from_secs(SessionConfig::WRITE_TIMEOUT_SECS);
    assert!(
        dropped <= timeout + TICK && dropped > timeout - Duration::from_millis(500),
        "dropped after {dropped:?}"
    );
    log.wait_for("sesión cerrada: el cliente no leyó nada en 30 s")
        .await;
}
