//! The real `cliente` binary, against `servidor` and against stand-in
//! servers that misbehave.

use testkit::*;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// This package's own binary, as cargo built it for these tests.
const CLIENTE: &str = env!("CARGO_BIN_EXE_cliente");

#[tokio::test]
async fn piped_input_prints_the_tutorial_answer() {
    let server = servidor(&[], &[]).await;
    let port = server.addr.port().to_string();
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
    let server = servidor(&[], &[]).await;
    let port = server.addr.port().to_string();
    let run = run_with_input(CLIENTE, &["--port", &port], b"Hola").await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, " -> Recibido del servidor: HOLA\n -> \n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_answer_is_printed_whole() {
    let server = servidor(&[], &[("RUST_LOG", "warn")]).await;
    let port = server.addr.port().to_string();
    let line = "abcdefghijklmnñ".repeat(65_536);
    let input = format!("{line}\nq\n");
    let run = run_with_input(CLIENTE, &["--port", &port], input.as_bytes()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let expected = format!(" -> Recibido del servidor: {}\n -> ", line.to_uppercase());
    assert!(run.stdout == expected, "the answer was not printed whole");
}

#[tokio::test]
async fn a_websocket_url_pointed_at_servidor_names_the_mistake() {
    let server = servidor(&[], &[]).await;
    let url = format!("ws://{}/ws", server.addr);
    let run = run_with_input(CLIENTE, &["--url", &url], b"Hola\nq\n").await;
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        run.stderr,
        format!(
            "error: {url} no es un puente WebSocket: contestó sin HTTP (¿es el servidor? \
             Para hablarle por TCP: cliente --host 127.0.0.1 --port {})\n",
            server.addr.port()
        )
    );
}

#[tokio::test]
async fn no_server_is_a_clear_error() {
    // A port that was free a moment ago, with nobody listening on it now.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port().to_string()
    };
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
    let port = listener.local_addr().unwrap().port().to_string();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut line = Vec::new();
        stream.read_until(b'\n', &mut line).await.unwrap();
        stream.get_mut().write_all(b"HOLA\n").await.unwrap();
    });
    let run = run_with_input(CLIENTE, &["--port", &port], b"Hola\nadios\nq\n").await;
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run
        .stdout
        .starts_with(" -> Recibido del servidor: HOLA\n -> "));
    assert!(
        run.stderr == "error: el servidor cerró la conexión\n"
            || run
                .stderr
                .starts_with("error: se perdió la conexión con el servidor"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let _held = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(PATIENCE).await;
        drop(stream);
    });
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
