//! `servidor --trusted-proxy`: PROXY headers (v1, v2, v2 LOCAL, with TLVs)
//! from a trusted address name the client in the log; from anyone else a
//! header is plain data; bad, truncated or slow headers are refused with a
//! log line and the server goes on.

use std::net::SocketAddr;
use std::time::Duration;

use netkit::proxy_protocol::v2_header;
use testkit::{read_line, read_to_end, round_trip, within, Running, PATIENCE};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// `servidor` trusting 127.0.0.1 only, on a free port.
async fn servidor_behind_a_proxy() -> Running {
    Running::start(
        env!("CARGO_BIN_EXE_servidor"),
        &["--port", "0", "--trusted-proxy", "127.0.0.1/32"],
        &[("RUST_LOG", "info")],
    )
    .await
}

/// A connection to `server` from the loopback address `from`.
async fn connect_from(from: &str, server: &Running) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    within(PATIENCE, "connect", socket.connect(server.addr))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_v1_header_from_a_trusted_proxy_names_the_client() {
    let server = servidor_behind_a_proxy().await;
    let mut proxy = connect_from("127.0.0.1", &server).await;
    let local = proxy.local_addr().unwrap();
    // The header and the first message in one write.
    let answer = round_trip(
        &mut proxy,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 5000\r\nhola\n",
    )
    .await;
    assert_eq!(answer, b"HOLA\n");
    server
        .wait_for_log(&format!("Conexión desde: 203.0.113.7:51234 (vía {local})"))
        .await;
}

#[tokio::test]
async fn a_v2_header_with_tlvs_and_a_v2_local_one() {
    let server = servidor_behind_a_proxy().await;
    let mut proxy = connect_from("127.0.0.1", &server).await;
    let mut header = v2_header(
        "[2001:db8::7]:40000".parse().unwrap(),
        "[::1]:5000".parse().unwrap(),
    );
    // A TLV (type 0x05, unique id "abc"), as HAProxy adds: the length field
    // (bytes 14–15) grows by its 6 bytes.
    let len = u16::from_be_bytes([header[14], header[15]]) + 6;
    header[14..16].copy_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0x05, 0, 3, b'a', b'b', b'c']);
    proxy.write_all(&header).await.unwrap();
    assert_eq!(
        round_trip(&mut proxy, b"adi\xC3\xB3s\n").await,
        "ADIÓS\n".as_bytes()
    );
    server
        .wait_for_log("Conexión desde: [2001:db8::7]:40000 (vía 127.0.0.1:")
        .await;

    // LOCAL, as HAProxy's health checks send: the proxy speaks for itself.
    let mut check = connect_from("127.0.0.1", &server).await;
    let local = check.local_addr().unwrap();
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0, 0]);
    check.write_all(&header).await.unwrap();
    assert_eq!(round_trip(&mut check, b"ok\n").await, b"OK\n");
    server
        .wait_for_log(&format!("Conexión desde: {local}\n"))
        .await;
}

#[tokio::test]
async fn from_an_untrusted_address_a_header_is_plain_data() {
    let server = servidor_behind_a_proxy().await;
    let mut stranger = connect_from("127.0.0.2", &server).await;
    let local = stranger.local_addr().unwrap();
    let answer = round_trip(&mut stranger, b"PROXY TCP4 6.6.6.6 127.0.0.1 1 5000\r\n").await;
    assert_eq!(answer, b"PROXY TCP4 6.6.6.6 127.0.0.1 1 5000\r\n");
    server
        .wait_for_log(&format!("Conexión desde: {local}\n"))
        .await;
    assert!(!server.log().contains("6.6.6.6 (vía"), "{}", server.log());
}

/// Sends `bytes` from the trusted address, then maybe closes its side;
/// waits for the refusal in the log and for the server to close.
async fn refused(server: &Running, bytes: &[u8], then_close: bool, reason: &str) {
    let mut proxy = connect_from("127.0.0.1", server).await;
    let local = proxy.local_addr().unwrap();
    proxy.write_all(bytes).await.unwrap();
    if then_close {
        proxy.shutdown().await.unwrap();
    }
    server
        .wait_for_log(&format!("Conexión rechazada desde {local}: {reason}"))
        .await;
    let rest = read_to_end(&mut proxy).await.unwrap_or_default();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn missing_garbage_truncated_overlong_and_slow_headers_are_refused() {
    let server = servidor_behind_a_proxy().await;
    refused(&server, b"hola\n", false, "falta la cabecera PROXY").await;
    refused(
        &server,
        b"PROXY TCP4 nope 127.0.0.1 1 2\r\n",
        false,
        "cabecera PROXY no válida",
    )
    .await;
    refused(
        &server,
        b"PROXY TCP4 203.0.11",
        true,
        "la conexión terminó a mitad de la cabecera PROXY",
    )
    .await;
    refused(
        &server,
        &[b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat(),
        false,
        "cabecera PROXY demasiado larga",
    )
    .await;
    // Slow: half a header, then nothing.
    refused(
        &server,
        b"\r\n\r\n\0\r\nQU",
        false,
        "la cabecera PROXY no llegó completa en 3 s",
    )
    .await;

    // The server is unharmed.
    let mut proxy = connect_from("127.0.0.1", &server).await;
    proxy
        .write_all(b"PROXY TCP4 203.0.113.8 127.0.0.1 1 2\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.write_all(b"sigo\n").await.unwrap();
    assert_eq!(read_line(&mut proxy).await, b"SIGO\n");
}
