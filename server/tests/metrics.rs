//! servidor's metrics: after a known sequence of clients every counter has
//! its exact value and the gauges follow the live connections (with
//! `servidor::serve` in the test process, read from its exporter once
//! `serve` has returned or the server has nothing left to do), the text
//! passes `promtool check metrics`, the metrics port answers nothing but
//! `GET /metrics`; and, with the binary, `--metrics` and its refusal.

mod in_process;

use std::sync::Arc;

use in_process::Served;
use netkit::metrics::Exporter;
use servidor::{Config, ServerMetrics};
use testkit::{
    http_exchange, http_get, metrics_addr, promtool_check, read_line, read_to_end, round_trip,
    scrape, Running, Scrape,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every cause a connection can end with.
const CAUSES: [&str; 5] = [
    "client_closed",
    "shutdown",
    "idle_timeout",
    "write_timeout",
    "failed",
];

fn ended(scrape: &Scrape, cause: &str) -> f64 {
    scrape.value("servidor_connections_ended_total", &[("cause", cause)])
}

#[tokio::test]
async fn two_clients_one_invalid_byte_counted_exactly() {
    let mut served = Served::with_metrics(Config::default()).await;
    let before = served.scrape();
    assert_eq!(
        before.value("servidor_connections_accepted_total", &[]),
        0.0
    );
    assert_eq!(before.value("servidor_connections_open", &[]), 0.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        before.value("servidor_build_info", &[("version", version)]),
        1.0
    );
    assert!(before.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(before.value("process_open_fds", &[]) > 0.0);

    let mut first = served.connect().await;
    assert_eq!(round_trip(&mut first, b"hola\n").await, b"HOLA\n");
    let mut second = served.connect().await;
    assert_eq!(round_trip(&mut second, b"a\xFFb\n").await, b"A\xFFB\n");

    // Both answered, so both were accepted and counted before the answer.
    let live = served.scrape();
    assert_eq!(live.value("servidor_connections_max", &[]), 10_000.0);
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
        // The server's end of the answers: it has decided the ending.
        assert_eq!(read_to_end(&mut client).await.unwrap(), b"");
    }
    // `serve` returns once every connection's task has ended: the counts
    // are final.
    served.stop().await;
    let after = served.scrape();
    for (name, expected) in [
        ("servidor_connections_open", 0.0),
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
    assert_eq!(ended(&after, "client_closed"), 2.0);
    for cause in CAUSES.into_iter().filter(|&cause| cause != "client_closed") {
        assert_eq!(ended(&after, cause), 0.0, "{cause}");
    }
    promtool_check(&after.text);
}

#[tokio::test(start_paused = true)]
async fn each_ending_is_counted_by_its_cause() {
    let config = Config {
        idle_timeout: std::time::Duration::from_secs(1),
        ..Config::default()
    };
    let mut served = Served::with_metrics(config).await;
    // idle_timeout: silent until closed.
    let mut idle = served.connect().await;
    assert_eq!(read_to_end(&mut idle).await.unwrap(), b"");
    // The client closes too, which the server waits for (it drains what
    // the client may still send) before it counts the ending.
    drop(idle);
    // client_closed: the client ends its side.
    let mut closing = served.connect().await;
    assert_eq!(round_trip(&mut closing, b"x\n").await, b"X\n");
    closing.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut closing).await.unwrap(), b"");
    // shutdown: open when the server stops.
    let mut open = served.connect().await;
    assert_eq!(round_trip(&mut open, b"y\n").await, b"Y\n");
    // The first two endings are counted before the stop, so that the stop
    // cannot claim either.
    served
        .scrape_until("the idle and the closed ending", |s| {
            ended(s, "idle_timeout") == 1.0 && ended(s, "client_closed") == 1.0
        })
        .await;
    served.signal_stop();
    assert_eq!(read_to_end(&mut open).await.unwrap(), b"");
    drop(open);
    served.stop().await;
    let after = served.scrape();
    assert_eq!(ended(&after, "idle_timeout"), 1.0, "{}", after.text);
    assert_eq!(ended(&after, "shutdown"), 1.0, "{}", after.text);
    assert_eq!(ended(&after, "client_closed"), 1.0, "{}", after.text);
    assert_eq!(ended(&after, "failed"), 0.0, "{}", after.text);
}

#[tokio::test(start_paused = true)]
async fn clients_past_the_limit_wait_and_the_wait_shows() {
    let config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let served = Served::with_metrics(config).await;
    let mut first = served.connect().await;
    assert_eq!(round_trip(&mut first, b"uno\n").await, b"UNO\n");
    // The one place is taken: the server waits for it before accepting.
    let full = served
        .scrape_until("the wait for a place", |s| {
            s.value("servidor_connection_limit_waiting", &[]) == 1.0
        })
        .await;
    assert_eq!(
        full.value("servidor_connection_limit_reached_total", &[]),
        1.0
    );

    // The second client waits in the backlog (ten seconds pass only while
    // the server has nothing to do), and is served once the first leaves.
    let mut second = TcpStream::connect(served.addr).await.unwrap();
    second.write_all(b"dos\n").await.unwrap();
    let mut byte = [0u8; 1];
    let early =
        tokio::time::timeout(std::time::Duration::from_secs(10), second.read(&mut byte)).await;
    assert!(early.is_err(), "served past the limit");
    let waiting = served.scrape();
    assert_eq!(
        waiting.value("servidor_connections_accepted_total", &[]),
        1.0
    );
    assert_eq!(waiting.value("servidor_connections_open", &[]), 1.0);
    // While `first`'s close is on its way the clock runs: the close reaches the server
    // through the kernel, and a paused clock would leap past the read's
    // deadline whenever that takes a moment (it did, on a loaded machine).
    tokio::time::resume();
    drop(first);
    assert_eq!(read_line(&mut second).await, b"DOS\n");
    tokio::time::pause();
    // `second` holds the place now: the server waits again.
    let served_now = served
        .scrape_until("the second accepted and a new wait", |s| {
            s.value("servidor_connections_accepted_total", &[]) == 2.0
                && s.value("servidor_connection_limit_waiting", &[]) == 1.0
        })
        .await;
    assert_eq!(
        served_now.value("servidor_connection_limit_reached_total", &[]),
        2.0
    );
    assert_eq!(
        served_now.value("servidor_connection_limit_waiting", &[]),
        1.0
    );

    drop(second);
    served
        .scrape_until("no wait and no connection", |s| {
            s.value("servidor_connection_limit_waiting", &[]) == 0.0
                && s.value("servidor_connections_open", &[]) == 0.0
        })
        .await;
}

#[tokio::test]
async fn the_metrics_port_serves_get_metrics_and_nothing_else() {
    let exporter = Exporter::new("servidor", env!("CARGO_PKG_VERSION"), &[]).unwrap();
    let _metrics = exporter.register(ServerMetrics::register);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = listener.local_addr().unwrap();
    tokio::spawn(netkit::metrics::serve(listener, Arc::new(exporter)));

    let scraped = scrape(metrics).await;
    assert_eq!(
        scraped.value("servidor_connections_accepted_total", &[]),
        0.0
    );

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
async fn the_binary_serves_its_metrics_with_the_flag_only() {
    let with = Running::start(
        env!("CARGO_BIN_EXE_servidor"),
        &["--port", "0", "--metrics", "127.0.0.1:0"],
        &[],
    )
    .await;
    let metrics = metrics_addr(&with).await;
    let mut client = TcpStream::connect(with.addr).await.unwrap();
    assert_eq!(round_trip(&mut client, b"hola\n").await, b"HOLA\n");
    // Answered, so accepted and counted before the answer.
    let scraped = scrape(metrics).await;
    assert_eq!(
        scraped.value("servidor_connections_accepted_total", &[]),
        1.0
    );
    assert_eq!(scraped.value("servidor_received_bytes_total", &[]), 5.0);
    assert!(scraped.value("process_resident_memory_bytes", &[]) > 0.0);
    promtool_check(&scraped.text);

    let plain = Running::start(env!("CARGO_BIN_EXE_servidor"), &["--port", "0"], &[]).await;
    let mut client = TcpStream::connect(plain.addr).await.unwrap();
    assert_eq!(round_trip(&mut client, b"hola\n").await, b"HOLA\n");
    // The announcements come before the first client's lines: once the
    // answer is logged, a metrics announcement would be in the log.
    plain.wait_for_log("enviando: HOLA").await;
    assert!(!plain.log().contains("Métricas"), "{}", plain.log());
}

// A bad address is a usage error: see usage.rs.
