//! servidor behind a trusted proxy (`Config::trusted_proxies`, the
//! binary's `--trusted-proxy`), with `servidor::serve` in the test process:
//! PROXY headers (v1, v2, v2 LOCAL, with TLVs) from a trusted address name
//! the client in the log; from anyone else a header is plain data; bad,
//! truncated or slow headers are refused with a log line and the server
//! goes on. The slow header's deadline passes under paused time.

mod in_process;

use std::net::SocketAddr;

use in_process::Served;
use netkit::proxy_protocol::{v2_header, TrustedProxies};
use servidor::Config;
use testkit::{capture_log, read_line, read_to_end, round_trip, within, CapturedLog, PATIENCE};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// servidor trusting 127.0.0.1 only, with its log captured.
async fn servidor_behind_a_proxy() -> (Served, CapturedLog) {
    let log = capture_log();
    let config = Config {
        trusted_proxies: TrustedProxies::new(["127.0.0.1/32"]).unwrap(),
        ..Config::default()
    };
    (Served::start(config).await, log)
}

/// A connection to `server` from the loopback address `from`.
async fn connect_from(from: &str, server: &Served) -> TcpStream {
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
    let (server, log) = servidor_behind_a_proxy().await;
    let mut proxy = connect_from("127.0.0.1", &server).await;
    let local = proxy.local_addr().unwrap();
    // The header and the first message in one write.
    let answer = round_trip(
        &mut proxy,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 5000\r\nhola\n",
    )
    .await;
    assert_eq!(answer, b"HOLA\n");
    log.book()
        .wait_for(&format!("Conexión desde: 203.0.113.7:51234 (vía {local})"))
        .await;
}

#[tokio::test]
async fn a_v2_header_with_tlvs_and_a_v2_local_one() {
    let (server, log) = servidor_behind_a_proxy().await;
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
    log.book()
        .wait_for("Conexión desde: [2001:db8::7]:40000 (vía 127.0.0.1:")
        .await;

    // LOCAL, as HAProxy's health checks send: the proxy speaks for itself.
    let mut check = connect_from("127.0.0.1", &server).await;
    let local = check.local_addr().unwrap();
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0, 0]);
    check.write_all(&header).await.unwrap();
    assert_eq!(round_trip(&mut check, b"ok\n").await, b"OK\n");
    log.book()
        .wait_for(&format!("Conexión desde: {local}\n"))
        .await;
}

#[tokio::test]
async fn from_an_untrusted_address_a_header_is_plain_data() {
    let (server, log) = servidor_behind_a_proxy().await;
    let mut stranger = connect_from("127.0.0.2", &server).await;
    let local = stranger.local_addr().unwrap();
    let answer = round_trip(&mut stranger, b"PROXY TCP4 6.6.6.6 127.0.0.1 1 5000\r\n").await;
    assert_eq!(answer, b"PROXY TCP4 6.6.6.6 127.0.0.1 1 5000\r\n");
    log.book()
        .wait_for(&format!("Conexión desde: {local}\n"))
        .await;
    assert!(!log.text().contains("6.6.6.6 (vía"), "{}", log.text());
}

/// Sends `bytes` from the trusted address, then maybe closes its side;
/// waits for the refusal in the log and for the server to close.
async fn refused(server: &Served, log: &CapturedLog, bytes: &[u8], then_close: bool, reason: &str) {
    let mut proxy = connect_from("127.0.0.1", server).await;
    let local = proxy.local_addr().unwrap();
    proxy.write_all(bytes).await.unwrap();
    if then_close {
        proxy.shutdown().await.unwrap();
    }
    log.book()
        .wait_for(&format!("Conexión rechazada desde {local}: {reason}"))
        .await;
    let rest = read_to_end(&mut proxy).await.unwrap_or_default();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(start_paused = true)]
async fn missing_garbage_truncated_overlong_and_slow_headers_are_refused() {
    let (server, log) = servidor_behind_a_proxy().await;
    refused(&server, &log, b"hola\n", false, "falta la cabecera PROXY").await;
    refused(
        &server,
        &log,
        b"PROXY TCP4 nope 127.0.0.1 1 2\r\n",
        false,
        "cabecera PROXY no válida",
    )
    .await;
    refused(
        &server,
        &log,
        b"PROXY TCP4 203.0.11",
        true,
        "la conexión terminó a mitad de la cabecera PROXY",
    )
    .await;
    refused(
        &server,
        &log,
        &[b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat(),
        false,
        "cabecera PROXY demasiado larga",
    )
    .await;
    // Slow: half a header, then nothing (3 s of paused time).
    let asked = tokio::time::Instant::now();
    refused(
        &server,
        &log,
        b"\r\n\r\n\0\r\nQU",
        false,
        "la cabecera PROXY no llegó completa en 3 s",
    )
    .await;
    assert!(asked.elapsed() >= std::time::Duration::from_secs(3));

    // The server is unharmed, and a header may come apart from the data.
    let mut proxy = connect_from("127.0.0.1", &server).await;
    proxy
        .write_all(b"PROXY TCP4 203.0.113.8 127.0.0.1 1 2\r\n")
        .await
        .unwrap();
    // The server has taken the header (it names the client) and waits
    // for data.
    log.book()
        .wait_for("Conexión desde: 203.0.113.8:1 (vía")
        .await;
    proxy.write_all(b"sigo\n").await.unwrap();
    assert_eq!(read_line(&mut proxy).await, b"SIGO\n");
}

#[tokio::test(start_paused = true)]
async fn a_header_in_pieces_is_read_whole_and_what_follows_is_kept() {
    let (server, log) = servidor_behind_a_proxy().await;
    let mut proxy = connect_from("127.0.0.1", &server).await;
    for piece in b"PROXY TCP4 203.0.113.9 127.0.0.1 4 5\r\n".chunks(7) {
        proxy.write_all(piece).await.unwrap();
        // A slow proxy (the behaviour under test, on paused time): the
        // server looks at each piece before the next one comes.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(round_trip(&mut proxy, b"trozos\n").await, b"TROZOS\n");
    log.book()
        .wait_for("Conexión desde: 203.0.113.9:4 (vía")
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_proxy_that_ends_while_the_server_waits_for_the_rest_is_refused_at_once() {
    let (server, log) = servidor_behind_a_proxy().await;
    // The end comes after the server has looked at the half header and is
    // waiting for more: the end itself must wake it, well before the
    // header's deadline. Repeated, as the end races the server's look.
    for round in 0..20 {
        let mut proxy = connect_from("127.0.0.1", &server).await;
        let local = proxy.local_addr().unwrap();
        proxy.write_all(b"PROXY TCP4 203.0.11").await.unwrap();
        // On paused time: the server looks at the half header meanwhile.
        tokio::time::sleep(std::time::Duration::from_millis(round % 3)).await;
        let ended = tokio::time::Instant::now();
        proxy.shutdown().await.unwrap();
        log.book()
            .wait_for(&format!(
                "Conexión rechazada desde {local}: la conexión terminó a mitad de la cabecera PROXY"
            ))
            .await;
        assert!(
            ended.elapsed() < std::time::Duration::from_secs(3),
            "round {round}: waited for the deadline"
        );
    }
}
