//! `servidor`'s command line as a process sees it: every bad value is a
//! usage error (exit 2) naming its flag in Spanish, good values of every
//! form start the server, and a port in use is said once.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use testkit::{refuses_value, run_with_input, Finished, PATIENCE};

const SERVIDOR: &str = env!("CARGO_BIN_EXE_servidor");

/// Runs `servidor args…` to its end, with nothing on its input.
async fn run(args: &[&str]) -> Finished {
    run_with_input(SERVIDOR, args, b"").await
}

#[tokio::test]
async fn a_bad_value_is_a_usage_error_naming_its_flag() {
    // (flag, value, why in Spanish)
    let cases = [
        ("--metrics", "sin-puerto", "falta el puerto"),
        ("--metrics", "9100", "falta el puerto"),
        ("--metrics", ":9100", "falta la máquina"),
        (
            "--metrics",
            "127.0.0.1:99999",
            "no es un número de 0 a 65535",
        ),
        ("--metrics", "::1:9100", "entre corchetes"),
        ("--trusted-proxy", "proxy.example", "no es una red"),
        ("--trusted-proxy", "10.0.0.0/33", "no es una red"),
        ("--idle-timeout", "0", "mayor que cero"),
        ("--idle-timeout", "0ms", "mayor que cero"),
        ("--idle-timeout", "pronto", "no es una duración"),
        ("--write-timeout", "2x", "no es una duración"),
        ("--write-timeout", "400d", "365 días"),
        ("--port", "abc", ""),
        ("--max-connections", "0", ""),
    ];
    for (flag, value, why) in cases {
        // Port 0 unless the case is about --port itself.
        let base: &[&str] = if flag == "--port" {
            &[]
        } else {
            &["--port", "0"]
        };
        refuses_value(SERVIDOR, base, flag, value, why).await;
    }
}

#[tokio::test]
async fn durations_with_units_and_whole_seconds_start_the_server() {
    for timeouts in [["200ms", "2s"], ["1m", "1h30m"], ["2", "30"]] {
        let args = [
            "--port",
            "0",
            "--idle-timeout",
            timeouts[0],
            "--write-timeout",
            timeouts[1],
            "--trusted-proxy",
            "127.0.0.1",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--metrics",
            "127.0.0.1:0",
        ];
        let mut child = Command::new(SERVIDOR)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("servidor starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("servidor announces its address in time")
            .expect("servidor's stdout");
        let first = first.unwrap_or_default();
        assert!(
            first.starts_with("Servidor escuchando en 127.0.0.1:"),
            "{timeouts:?}: {first}"
        );
        child.kill().await.expect("servidor stops");
    }
}

#[tokio::test]
async fn a_port_in_use_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("its address").port().to_string();

    let refused = run(&["--port", &port]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    let expected =
        format!("error: no se pudo escuchar en 127.0.0.1:{port}: la dirección ya está en uso");
    assert!(refused.stderr.starts_with(&expected), "{}", refused.stderr);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    assert_eq!(
        refused.stderr.matches("en uso").count(),
        1,
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("os error"), "{}", refused.stderr);

    let metrics = format!("127.0.0.1:{port}");
    let refused = run(&["--port", "0", "--metrics", &metrics]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    let expected =
        format!("error: no se pudo escuchar en --metrics {metrics}: la dirección ya está en uso");
    assert!(refused.stderr.starts_with(&expected), "{}", refused.stderr);
    assert_eq!(
        refused.stderr.matches("en uso").count(),
        1,
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("os error"), "{}", refused.stderr);
}

#[tokio::test]
async fn the_help_says_how_durations_are_written() {
    let run = run(&["--help"]).await;
    assert_eq!(run.status.code(), Some(0));
    for words in [
        "--idle-timeout <DURACIÓN>",
        "(por defecto 10m)",
        "(por defecto 30s)",
        "Las duraciones se escriben con su unidad (200ms, 2s, 1m, 1h30m)",
        "segundos sin unidad",
    ] {
        assert!(run.stdout.contains(words), "{words:?} in {}", run.stdout);
    }
}
