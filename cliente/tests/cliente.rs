//! `cliente`: its conversation (`cliente::converse`) against `servidor::serve`
//! run in the test process and against stand-in servers that misbehave, the
//! silent server's timeout under paused time; and the binary, for what
//! belongs to the process: piped input to printed answers, error lines and
//! exit codes, `--timeout`, `--help`.

use std::net::SocketAddr;
use std::time::Duration;

use cliente::{converse, StreamLink};
use testkit::{run_with_input, within, HeldPort, PATIENCE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

/// This package's own binary, as cargo built it for these tests.
const CLIENTE: &str = env!("CARGO_BIN_EXE_cliente");

/// `servidor::serve` in the test's runtime on port 0; it stops when the
/// guard is dropped.
async fn servidor() -> (SocketAddr, DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(servidor::serve(
        listener,
        servidor::Config::default(),
        stop.clone(),
    ));
    (addr, stop.drop_guard())
}

/// The conversation over TCP to `addr` with `input`: what it printed, and
/// how it ended.
async fn conversation(
    addr: SocketAddr,
    input: &[u8],
    answer_timeout: Duration,
) -> (String, Result<(), String>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut output = Vec::new();
    let ended = within(
        PATIENCE,
        "the conversation",
        converse(StreamLink::new(stream), input, &mut output, answer_timeout),
    )
    .await
    .map_err(|error| error.to_string());
    (String::from_utf8(output).unwrap(), ended)
}

#[tokio::test]
async fn piped_input_prints_the_tutorial_answer() {
    let (addr, _server) = servidor().await;
    let port = addr.port().to_string();
    let run = run_with_input(
        CLIENTE,
        &["--port", &port],
        "Hola\nñandú straße\r\nq\nno se envía\n".as_bytes(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        " -> Recibido del servidor: HOLA\n -> Recibido del servidor: ÑANDÚ STRASSE\n -> "
    );
    assert_eq!(run.stderr, "");
}

#[tokio::test]
async fn end_of_input_quits_like_q() {
    let (addr, _server) = servidor().await;
    let (printed, ended) = conversation(addr, b"Hola", PATIENCE).await;
    assert_eq!(ended, Ok(()));
    assert_eq!(printed, " -> Recibido del servidor: HOLA\n -> \n");
}

#[tokio::test]
async fn a_one_mib_answer_is_printed_whole() {
    let (addr, _server) = servidor().await;
    let line = "abcdefghijklmnñ".repeat(65_536);
    let input = format!("{line}\nq\n");
    let (printed, ended) = conversation(addr, input.as_bytes(), PATIENCE).await;
    assert_eq!(ended, Ok(()));
    let expected = format!(" -> Recibido del servidor: {}\n -> ", line.to_uppercase());
    assert!(printed == expected, "the answer was not printed whole");
}

#[tokio::test]
async fn a_websocket_url_pointed_at_servidor_names_the_mistake() {
    let (addr, _server) = servidor().await;
    let url = format!("ws://{addr}/ws");
    let run = run_with_input(CLIENTE, &["--url", &url], b"Hola\nq\n").await;
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        run.stderr,
        format!(
            "error: {url} no es un puente WebSocket: contestó sin HTTP (¿es el servidor? \
             Para hablarle por TCP: cliente --host 127.0.0.1 --port {})\n",
            addr.port()
        )
    );
}

#[tokio::test]
async fn no_server_is_a_clear_error() {
    // A port held with nobody listening on it.
    let held = HeldPort::new();
    let port = held.addr().port().to_string();
    let run = run_with_input(CLIENTE, &["--port", &port], b"Hola\nq\n").await;
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.starts_with(&format!(
            "error: no se pudo conectar a 127.0.0.1:{port}: conexión rechazada"
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[tokio::test]
async fn a_server_gone_mid_conversation_is_a_clear_error() {
    // Answers the first line, then hangs up.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut line = Vec::new();
        stream.read_until(b'\n', &mut line).await.unwrap();
        stream.get_mut().write_all(b"HOLA\n").await.unwrap();
    });
    let (printed, ended) = conversation(addr, b"Hola\nadios\nq\n", PATIENCE).await;
    assert!(printed.starts_with(" -> Recibido del servidor: HOLA\n -> "));
    let error = ended.unwrap_err();
    assert!(
        error == "el servidor cerró la conexión"
            || error.starts_with("se perdió la conexión con el servidor"),
        "{error}"
    );
}

/// A stand-in that accepts one client and never answers; it keeps the
/// connection open until the test ends.
async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(stream);
    });
    addr
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_times_out() {
    let addr = silent_server().await;
    let asked = tokio::time::Instant::now();
    let (printed, ended) = conversation(addr, b"Hola\n", Duration::from_secs(3)).await;
    assert_eq!(printed, " -> ");
    assert_eq!(ended, Err(String::from("el servidor no respondió en 3 s")));
    assert!(asked.elapsed() >= Duration::from_secs(3));
}

#[tokio::test]
async fn the_timeout_flag_reaches_the_conversation() {
    // One second, the shortest the flag takes.
    let addr = silent_server().await;
    let port = addr.port().to_string();
    let run = run_with_input(CLIENTE, &["--port", &port, "--timeout", "1"], b"Hola\n").await;
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(run.stderr, "error: el servidor no respondió en 1 s\n");
}

#[tokio::test]
async fn help_explains_itself_in_spanish() {
    let run = run_with_input(CLIENTE, &["--help"], b"").await;
    assert!(run.status.success());
    for words in [
        "Uso: cliente [OPCIONES]",
        "--host <MÁQUINA>",
        "--port <PUERTO>",
        "q",
    ] {
        assert!(run.stdout.contains(words), "{words:?} in {}", run.stdout);
    }
}
