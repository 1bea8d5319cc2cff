//! `cliente`'s command line as a process sees it: every bad value is a
//! usage error (exit 2) naming its flag in Spanish, and `--timeout` takes
//! milliseconds as well as whole seconds.

use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::process::Command;

use testkit::{run_with_input, Finished};

const CLIENTE: &str = env!("CARGO_BIN_EXE_cliente");

/// Runs `cliente args…` to its end, with nothing on its input.
async fn run(args: &[&str]) -> Finished {
    run_with_input(CLIENTE, args, b"").await
}

#[tokio::test]
async fn a_bad_value_is_a_usage_error_naming_its_flag() {
    // (arguments, the start of the error, why in Spanish)
    let cases: [(&[&str], &str, &str); 11] = [
        (
            &["--url", "http://127.0.0.1:8080/ws"],
            "valor no válido «http://127.0.0.1:8080/ws» para --url <URL>",
            "no es una URL de WebSocket",
        ),
        (
            &["--url", "127.0.0.1:8080"],
            "valor no válido «127.0.0.1:8080» para --url <URL>",
            "no es una URL de WebSocket",
        ),
        (
            &["--url", "ws://"],
            "valor no válido «ws://» para --url <URL>",
            "no es una URL de WebSocket",
        ),
        (
            &["--timeout", "0"],
            "valor no válido «0» para --timeout <",
            "mayor que cero",
        ),
        (
            &["--timeout", "0ms"],
            "valor no válido «0ms» para --timeout <",
            "mayor que cero",
        ),
        (
            &["--timeout", "pronto"],
            "valor no válido «pronto» para --timeout <",
            "no es una duración",
        ),
        (
            &["--timeout", "400d"],
            "valor no válido «400d» para --timeout <",
            "365 días",
        ),
        (&["--timeout"], "falta el valor de --timeout <", ""),
        (
            &["--port", "abc"],
            "valor no válido «abc» para --port <",
            "",
        ),
        (&["--ca-cert", "ca.pem"], "falta --url <URL>", ""),
        (
            &["--url", "ws://h/ws", "--port", "1"],
            "--url <URL> no se puede usar junto con --port",
            "",
        ),
    ];
    for (args, start, why) in cases {
        let run = run(args).await;
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        let start = format!("error: {start}");
        assert!(run.stderr.starts_with(&start), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(why), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
}

#[tokio::test]
async fn a_timeout_in_milliseconds_is_kept() {
    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let port = silent.local_addr().expect("its address").port().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let mut child = Command::new(CLIENTE)
        .args(["--port", &port, "--timeout", "300ms"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cliente starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"Hola\n")
        .await
        .expect("the message is written");
    // Well under the 30 s default: only 300 ms can end it this soon.
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("cliente gives up after its timeout")
        .expect("cliente's output");
    hold.abort();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, "error: el servidor no respondió en 0.3 s\n");
}

#[tokio::test]
async fn the_help_says_how_durations_are_written() {
    let run = run(&["--help"]).await;
    assert_eq!(run.status.code(), Some(0));
    for words in [
        "--timeout <DURACIÓN>",
        "(por defecto 30s)",
        "Las duraciones se escriben con su unidad (200ms, 2s, 1m, 1h30m)",
        "segundos sin unidad",
    ] {
        assert!(run.stdout.contains(words), "{words:?} in {}", run.stdout);
    }
}
