//! `--max-connections-per-client` (`Config::max_connections_per_client`),
//! with `servidor::serve` in the test process and clients from several
//! loopback addresses: each address (the one a trusted proxy's PROXY header
//! announced, else the peer's) holds at most N connections, a connection
//! past it is told so in one line and closed, and the trusted proxy's own
//! connections are never capped as one client's.

mod in_process;

use std::net::SocketAddr;

use in_process::Served;
use netkit::proxy_protocol::{v2_local_header, TrustedProxies};
use servidor::{Config, TOO_MANY_CONNECTIONS};
use testkit::{read_to_end, round_trip, within, PATIENCE};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `server` from the loopback address `from`, having sent
/// `preamble` (a PROXY header, say).
async fn connect_from(from: &str, server: &Served, preamble: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut stream = within(PATIENCE, "connect", socket.connect(server.addr))
        .await
        .unwrap();
    stream.write_all(preamble).await.unwrap();
    stream
}

/// A client that was served: its line comes back in uppercase.
async fn served(stream: &mut TcpStream) {
    assert_eq!(round_trip(stream, b"hola\n").await, b"HOLA\n");
}

/// A client that was refused: one line, then the end.
async fn refused(mut stream: TcpStream) {
    let said = read_to_end(&mut stream).await.unwrap();
    assert_eq!(String::from_utf8(said).unwrap(), TOO_MANY_CONNECTIONS);
}

fn proxy_header(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 5000\r\n").into_bytes()
}

#[tokio::test]
async fn each_client_address_holds_at_most_n_connections() {
    let server = Served::with_metrics(Config {
        max_connections_per_client: 2,
        trusted_proxies: TrustedProxies::new(["127.0.0.1/32"]).unwrap(),
        ..Config::default()
    })
    .await;
    let mut held = Vec::new();
    for from in ["127.0.0.3", "127.0.0.3", "127.0.0.4", "127.0.0.4"] {
        let mut stream = connect_from(from, &server, b"").await;
        served(&mut stream).await;
        held.push(stream);
    }
    refused(connect_from("127.0.0.3", &server, b"").await).await;
    refused(connect_from("127.0.0.4", &server, b"").await).await;

    // Behind the trusted proxy, each announced client on its own.
    for client in ["203.0.113.1", "203.0.113.1", "203.0.113.2"] {
        let mut stream = connect_from("127.0.0.1", &server, &proxy_header(client)).await;
        served(&mut stream).await;
        held.push(stream);
    }
    refused(connect_from("127.0.0.1", &server, &proxy_header("203.0.113.1")).await).await;
    // The proxy's own connections (its checks) are not one client's.
    for _ in 0..4 {
        let mut stream = connect_from("127.0.0.1", &server, &v2_local_header()).await;
        served(&mut stream).await;
        held.push(stream);
    }
    assert_eq!(
        server.scrape().value(
            "servidor_connections_refused_total",
            &[("reason", "client_connections")]
        ),
        3.0
    );
}

#[tokio::test]
async fn off_by_default() {
    let server = Served::start(Config::default()).await;
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut stream = connect_from("127.0.0.5", &server, b"").await;
        served(&mut stream).await;
        held.push(stream);
    }
}
