//! servidor's transcript, read in-process: each connection's lines carry
//! its id from its `conn` span, and health checks (a connection that closes
//! having sent nothing) stay out of the `info` transcript.

use std::time::Duration;

use netkit::proxy_protocol::TrustedProxies;
use servidor::{serve, Config};
use testkit::{capture_transcript, CapturedLog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// A server on a loopback port, logging into a captured transcript under
/// `filter` while the returned guard lives (the test's runtime has one
/// thread: every connection's task logs there).
struct Server {
    address: std::net::SocketAddr,
    transcript: CapturedLog,
    shutdown: CancellationToken,
}

async fn start(filter: &str, config: Config) -> Server {
    let transcript = capture_transcript(filter);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, config, shutdown.clone()));
    Server {
        address,
        transcript,
        shutdown,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Sends `message`, reads its whole answer, and closes.
async fn converse(address: std::net::SocketAddr, message: &[u8]) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let local = stream.local_addr().unwrap().to_string();
    stream.write_all(message).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    (local, answer)
}

/// A PROXY v2 LOCAL header: a proxy's health check, speaking for itself.
const LOCAL: [u8; 16] = *b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

#[tokio::test]
async fn a_conversation_reads_as_the_tutorials_transcript() {
    let server = start("info", Config::default()).await;
    let (client, answer) = converse(server.address, b"Hola\n").await;
    assert_eq!(answer, b"HOLA\n");
    let text = server.transcript.wait_for("Conexión cerrada").await;
    assert_eq!(
        text,
        format!(
            "[#1] Conexión desde: {client}\n\
             [#1] desde el usuario conectado: Hola\n\
             [#1] enviando: HOLA\n\
             [#1] Conexión cerrada: el cliente cerró la conexión (5 bytes recibidos, 5 enviados)\n"
        )
    );
}

#[tokio::test]
async fn health_checks_are_logged_at_debug_only() {
    let config = Config {
        // Far longer than a check takes, however slow the machine.
        announce_after: PATIENCE,
        trusted_proxies: TrustedProxies::new(["127.0.0.1"]).unwrap(),
        ..Config::default()
    };
    let server = start("servidor=debug", config).await;
    for round in 1..=20_u64 {
        // HAProxy's check of a servidor: a LOCAL header, then closed; a
        // bridge's /healthz sends the same with --send-proxy.
        let mut check = TcpStream::connect(server.address).await.unwrap();
        let from = check.local_addr().unwrap();
        check.write_all(&LOCAL).await.unwrap();
        drop(check);
        server
            .transcript
            .wait_for(&format!(
                "depuración: [#{round}] Conexión desde {from} cerrada sin datos: el cliente cerró la conexión\n"
            ))
            .await;
    }
    let text = server.transcript.text();
    assert_eq!(text.lines().count(), 20, "{text}");
    assert!(
        text.lines().all(|line| line.starts_with("depuración: ")),
        "{text}"
    );
}

#[tokio::test]
async fn a_check_without_proxy_header_is_quiet_too() {
    let config = Config {
        announce_after: PATIENCE,
        ..Config::default()
    };
    let server = start("info", config).await;
    drop(TcpStream::connect(server.address).await.unwrap());
    // A conversation after it: once it is logged, the check was handled
    // (connections are served in the order they came).
    let (client, _) = converse(server.address, b"hola\n").await;
    let text = server.transcript.wait_for("Conexión cerrada").await;
    assert!(
        text.starts_with(&format!("[#2] Conexión desde: {client}\n")),
        "{text}"
    );
    assert!(!text.contains("[#1]"), "{text}");
}

#[tokio::test]
async fn a_silent_client_is_announced_once_it_stays() {
    let config = Config {
        announce_after: Duration::from_millis(20),
        ..Config::default()
    };
    let server = start("info", config).await;
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    let from = silent.local_addr().unwrap();
    server
        .transcript
        .wait_for(&format!("[#1] Conexión desde: {from}\n"))
        .await;
    silent.shutdown().await.unwrap();
    let text = server
        .transcript
        .wait_for(
            "[#1] Conexión cerrada: el cliente cerró la conexión (0 bytes recibidos, 0 enviados)\n",
        )
        .await;
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[tokio::test]
async fn one_connection_can_be_followed_by_its_span() {
    let config = Config {
        announce_after: PATIENCE,
        ..Config::default()
    };
    // Connection 2 in detail, connection 4 as usual, the rest warnings only.
    let server = start("warn,[conn{id=2}]=debug,[conn{id=4}]=info", config).await;
    for _ in 0..3 {
        drop(TcpStream::connect(server.address).await.unwrap());
    }
    let (client, answer) = converse(server.address, b"fin\n").await;
    assert_eq!(answer, b"FIN\n");
    server.transcript.wait_for("[#2] Conexión desde").await;
    let text = server.transcript.wait_for("[#4] Conexión cerrada").await;
    assert!(
        text.contains("depuración: [#2] Conexión desde 127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "[#4] Conexión desde: {client}\n[#4] desde el usuario conectado: fin\n"
        )),
        "{text}"
    );
    assert!(!text.contains("[#1]") && !text.contains("[#3]"), "{text}");
    assert_eq!(text.lines().count(), 5, "{text}");
}
