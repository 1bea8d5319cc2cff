//! `servidor --metrics`: after a known sequence of clients every counter
//! has its exact value, the gauges follow the live connections, the
//! endpoint passes `promtool check metrics`, and the metrics port answers
//! nothing but `GET /metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use testkit::{
    http_exchange, http_get, metrics_addr, promtool_check, read_to_end, round_trip, scrape,
    scrape_until, Running, Scrape,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Every cause a connection can end with.
const CAUSES: [&str; 5] = [
    "client_closed",
    "shutdown",
    "idle_timeout",
    "write_timeout",
    "failed",
];

async fn servidor(extra: &[&str]) -> (Running, SocketAddr) {
    let mut args = vec!["--port", "0", "--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let running = Running::start(
        env!("CARGO_BIN_EXE_servidor"),
        &args,
        &[("RUST_LOG", "info")],
    )
    .await;
    let metrics = metrics_addr(&running).await;
    (running, metrics)
}

fn ended(scrape: &Scrape, cause: &str) -> f64 {
    scrape.value("servidor_connections_ended_total", &[("cause", cause)])
}

#[tokio::test]
async fn two_clients_one_invalid_byte_counted_exactly() {
    let (server, metrics) = servidor(&[]).await;
    let before = scrape(metrics).await;
    assert_eq!(
        before.value("servidor_connections_accepted_total", &[]),
        0.0
    );
    assert_eq!(before.value("servidor_connections_open", &[]), 0.0);
    assert_eq!(before.value("servidor_connections_max", &[]), 10_000.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        before.value("servidor_build_info", &[("version", version)]),
        1.0
    );
    assert!(before.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(before.value("process_open_fds", &[]) > 0.0);

    let mut first = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(round_trip(&mut first, b"hola\n").await, b"HOLA\n");
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(round_trip(&mut second, b"a\xFFb\n").await, b"A\xFFB\n");

    // Both answered, so both were accepted and counted before the answer.
    let live = scrape(metrics).await;
    assert_eq!(live.value("servidor_connections_open", &[]), 2.0);
    assert_eq!(live.value("servidor_connections_accepted_total", &[]), 2.0);
    assert_eq!(live.value("servidor_received_bytes_total", &[]), 9.0);
    assert_eq!(live.value("servidor_sent_bytes_total", &[]), 9.0);
    assert_eq!(live.value("servidor_invalid_utf8_bytes_total", &[]), 1.0);
    for cause in CAUSES {
        assert_eq!(ended(&live, cause), 0.0, "{cause}");
    }

    for mut client in [first, second] {
        client.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut client).await.unwrap(), b"");
    }
    let after = scrape_until(metrics, "both connections ended", |scrape| {
        ended(scrape, "client_closed") == 2.0
    })
    .await;
    // The gauge comes down as the connection's task ends, just after the
    // count of its ending.
    let after = if after.value("servidor_connections_open", &[]) == 0.0 {
        after
    } else {
        scrape_until(metrics, "no connection open", |scrape| {
            scrape.value("servidor_connections_open", &[]) == 0.0
        })
        .await
    };
    for (name, expected) in [
        ("servidor_connections_accepted_total", 2.0),
        ("servidor_received_bytes_total", 9.0),
        ("servidor_sent_bytes_total", 9.0),
        ("servidor_invalid_utf8_bytes_total", 1.0),
        ("servidor_accept_errors_total", 0.0),
        ("servidor_connection_limit_reached_total", 0.0),
        ("servidor_connection_limit_waiting", 0.0),
    ] {
        assert_eq!(after.value(name, &[]), expected, "{name}");
    }
    for cause in CAUSES.into_iter().filter(|&cause| cause != "client_closed") {
        assert_eq!(ended(&after, cause), 0.0, "{cause}");
    }
    promtool_check(&after.text);
}

#[tokio::test]
async fn clients_past_the_limit_wait_and_the_wait_shows() {
    let (server, metrics) = servidor(&["--max-connections", "1"]).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(round_trip(&mut first, b"uno\n").await, b"UNO\n");
    // The one place is taken: the server waits for it before accepting.
    let full = scrape_until(metrics, "the limit reached", |scrape| {
        scrape.value("servidor_connection_limit_waiting", &[]) == 1.0
    })
    .await;
    assert_eq!(
        full.value("servidor_connection_limit_reached_total", &[]),
        1.0
    );

    // The second client waits in the backlog, and is served once the
    // first leaves.
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    second.write_all(b"dos\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = scrape(metrics).await;
    assert_eq!(
        waiting.value("servidor_connections_accepted_total", &[]),
        1.0
    );
    assert_eq!(waiting.value("servidor_connections_open", &[]), 1.0);
    drop(first);
    assert_eq!(testkit::read_line(&mut second).await, b"DOS\n");
    let served = scrape_until(metrics, "the second client served", |scrape| {
        scrape.value("servidor_connections_accepted_total", &[]) == 2.0
            && scrape.value("servidor_connection_limit_reached_total", &[]) == 2.0
    })
    .await;
    assert_eq!(served.value("servidor_connection_limit_waiting", &[]), 1.0);

    drop(second);
    scrape_until(metrics, "a free place again", |scrape| {
        scrape.value("servidor_connection_limit_waiting", &[]) == 0.0
            && scrape.value("servidor_connections_open", &[]) == 0.0
    })
    .await;
}

#[tokio::test]
async fn the_metrics_port_serves_get_metrics_and_nothing_else() {
    let (_server, metrics) = servidor(&[]).await;
    let missing = http_get(metrics, "/").await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(missing.body.contains("/metrics"), "{missing:?}");

    let post = format!(
        "POST /metrics HTTP/1.1\r\nHost: {metrics}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let refused = http_exchange(metrics, post.as_bytes()).await;
    assert_eq!(refused.status, 405, "{refused:?}");
    assert_eq!(refused.header("allow"), Some("GET, HEAD"));

    let garbage = http_exchange(metrics, b"\x16\x03\x01 hola\r\n\r\n").await;
    assert_eq!(garbage.status, 400, "{garbage:?}");
}

#[tokio::test]
async fn without_the_flag_nothing_is_served_and_a_bad_address_is_refused() {
    let plain = Running::start(env!("CARGO_BIN_EXE_servidor"), &["--port", "0"], &[]).await;
    let mut client = TcpStream::connect(plain.addr).await.unwrap();
    assert_eq!(round_trip(&mut client, b"hola\n").await, b"HOLA\n");
    assert!(!plain.log().contains("Métricas"), "{}", plain.log());
    // A bad address is a usage error: see usage.rs.
}
