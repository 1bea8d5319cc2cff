//! The real `servidor` binary on port 0, for what belongs to the process:
//! the transcript's format on standard error, signals and exit codes, a port
//! in use, accept errors under a small descriptor limit, the command line.
//! The protocol itself is tested in process (`connection.rs`).

use std::time::{Duration, Instant};

use testkit::*;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// This package's own binaries, as cargo built them for these tests.
const SERVIDOR: &str = env!("CARGO_BIN_EXE_servidor");

async fn servidor(args: &[&str], env: &[(&str, &str)]) -> Running {
    servidor_at(SERVIDOR, args, env).await
}

async fn connect(server: &Running) -> TcpStream {
    let stream = within(PATIENCE, "connect", TcpStream::connect(server.addr))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

#[tokio::test]
async fn transcript_with_cliente() {
    let server = servidor(&[], &[]).await;
    let port = server.addr.port().to_string();
    let run = run_with_input(cliente_exe(), &["--port", &port], b"Hola\nq\n").await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, " -> Recibido del servidor: HOLA\n -> ");

    server.wait_for_log("Conexión cerrada").await;
    let log = server.log();
    for line in [
        "[#1] Conexión desde: 127.0.0.1:",
        "[#1] desde el usuario conectado: Hola\n",
        "[#1] enviando: HOLA\n",
        "[#1] Conexión cerrada: el cliente cerró la conexión (5 bytes recibidos, 5 enviados)",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
}

#[tokio::test]
async fn each_log_line_names_its_client() {
    let server = servidor(&[], &[]).await;
    let mut first = connect(&server).await;
    let mut second = connect(&server).await;
    assert_eq!(round_trip(&mut first, b"uno\n").await, b"UNO\n");
    assert_eq!(round_trip(&mut second, b"dos\n").await, b"DOS\n");
    server.wait_for_log("enviando: DOS").await;
    let log = server.log();
    assert!(log.contains("[#1] enviando: UNO"), "{log}");
    assert!(log.contains("[#2] enviando: DOS"), "{log}");
}

/// The flags reach the server: the PROXY header of a trusted proxy names
/// the client, the preview is cut at `--log-preview`, an idle client is
/// closed after `--idle-timeout`, a second client is served only once the
/// one place of `--max-connections` is free, and closed after
/// `--write-timeout` when it does not read. About two seconds: the
/// shortest timeouts the flags take.
#[tokio::test]
async fn the_flags_reach_the_server() {
    let server = servidor(
        &[
            "--idle-timeout",
            "300ms",
            "--write-timeout",
            "300ms",
            "--max-connections",
            "1",
            "--log-preview",
            "5",
            "--trusted-proxy",
            "127.0.0.1/32",
        ],
        &[],
    )
    .await;
    let mut first = connect(&server).await;
    let answer = round_trip(
        &mut first,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 5000\r\nabcdefghij\n",
    )
    .await;
    assert_eq!(answer, b"ABCDEFGHIJ\n");
    let mut second = connect(&server).await;
    second
        .write_all(b"PROXY TCP4 203.0.113.8 127.0.0.1 1 2\r\ndos\n")
        .await
        .unwrap();
    assert_eq!(read_line(&mut second).await, b"DOS\n");
    // Then the second client never reads (at once: it may be idle for at
    // most 0.3 s too), and is closed after `--write-timeout`. It pushes
    // until the server closes, so no write of it is a guess.
    let pushing = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        while second.write_all(&chunk).await.is_ok() {}
    });
    // Served only after the first was closed for its silence.
    server.wait_for_log("[#2] Conexión desde").await;
    let log = server.log();
    let idle = log
        .find("[#1] Conexión cerrada: sin actividad durante 0,3 s")
        .unwrap_or_else(|| panic!("{log}"));
    let served = log
        .find("[#2] Conexión desde: 203.0.113.8:1 (vía")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(idle < served, "{log}");
    assert!(
        log.contains("[#1] Conexión desde: 203.0.113.7:51234 (vía 127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains("[#1] desde el usuario conectado: abcde… ("),
        "{log}"
    );

    server
        .wait_for_log("[#2] Conexión cerrada: el cliente no leyó la respuesta en 0,3 s")
        .await;
    within(PATIENCE, "the push to fail", pushing).await.unwrap();
}

/// SIGTERM or Ctrl-C: the process stops accepting, closes its connections
/// in order and exits 0 at once (what it delivers first is tested in
/// process, `connection.rs`).
async fn stops_on(signal: &str) {
    let mut server = servidor(&[], &[]).await;
    let mut stream = connect(&server).await;
    assert_eq!(round_trip(&mut stream, b"hola\n").await, b"HOLA\n");

    let asked = Instant::now();
    server.signal(signal);
    let status = server.wait_exit(Duration::from_secs(5)).await;
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(took < Duration::from_millis(1500), "took {took:?} to stop");
    // The connection was closed in order, not reset.
    assert_eq!(read_to_end(&mut stream).await.unwrap(), b"");
    // No new clients.
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn sigterm_stops_accepting_and_exits_0_at_once() {
    stops_on("TERM").await;
}

#[tokio::test]
async fn ctrl_c_stops_accepting_and_exits_0_at_once() {
    stops_on("INT").await;
}

#[tokio::test]
async fn accept_errors_are_retried_not_fatal() {
    // Few descriptors: accepting more clients fails with EMFILE.
    let script = format!("ulimit -n 24 && exec {} --port 0", SERVIDOR);
    let server = Running::start("bash", &["-c", &script], &[]).await;
    let mut crowd = Vec::new();
    for _ in 0..30 {
        crowd.push(connect(&server).await);
    }
    server.wait_for_log("no se pudo aceptar una conexión").await;
    drop(crowd);

    // Descriptors are back: the server serves again.
    let mut stream = connect(&server).await;
    assert_eq!(
        round_trip(&mut stream, b"sigo vivo\n").await,
        b"SIGO VIVO\n"
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let server = servidor(&[], &[]).await;
    let port = server.addr.port().to_string();
    let run = run_with_input(SERVIDOR, &["--port", &port], b"").await;
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.starts_with(&format!(
            "error: no se pudo escuchar en 127.0.0.1:{port}: la dirección ya está en uso"
        )),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn help_explains_itself_in_spanish() {
    let run = run_with_input(SERVIDOR, &["--help"], b"").await;
    assert!(run.status.success());
    for words in [
        "Uso: servidor [OPCIONES]",
        "--port <PUERTO>",
        "0 elige uno libre (por defecto 5000)",
        "--max-connections",
        "(por defecto 10000)",
    ] {
        assert!(run.stdout.contains(words), "{words:?} in {}", run.stdout);
    }
    let run = run_with_input(SERVIDOR, &["--port", "abc"], b"").await;
    assert_eq!(run.status.code(), Some(2));
    assert!(
        run.stderr.contains("valor no válido «abc»"),
        "{}",
        run.stderr
    );
}
