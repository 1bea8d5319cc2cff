//! `bridge`'s command line as a process sees it: every bad value is a
//! usage error (exit 2) naming its flag in Spanish, good values of every
//! form start the bridge, and a port in use is said once.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use testkit::{refuses_value, run_with_input, Finished, PATIENCE};

const BRIDGE: &str = env!("CARGO_BIN_EXE_bridge");

/// Runs `bridge args…` to its end, with nothing on its input.
async fn run(args: &[&str]) -> Finished {
    run_with_input(BRIDGE, args, b"").await
}

#[tokio::test]
async fn a_bad_value_is_a_usage_error_naming_its_flag() {
    // (flag, value, why in Spanish)
    let cases = [
        ("--listen", "8080", "falta el puerto"),
        ("--listen", "[::1]", "falta el puerto"),
        ("--listen", "::1:8080", "entre corchetes"),
        ("--listen", "127.0.0.1:http", "no es un número de 0 a 65535"),
        ("--listen", "mi máquina:8080", "no es un nombre de máquina"),
        ("--target", "localhost", "falta el puerto"),
        ("--target", ":5000", "falta la máquina"),
        (
            "--target",
            "127.0.0.1:70000",
            "no es un número de 0 a 65535",
        ),
        ("--metrics", "9101", "falta el puerto"),
        (
            "--metrics",
            "http://127.0.0.1:9101",
            "no es un nombre de máquina",
        ),
        ("--trusted-proxy", "proxy.example", "no es una red"),
        ("--trusted-proxy", "10.0.0.0/33", "no es una red"),
        ("--allow-origin", "example.org", "no es un origen"),
        ("--allow-origin", "ftp://example.org", "no es un origen"),
        (
            "--allow-origin",
            "https://example.org/page",
            "no es un origen",
        ),
        ("--handshake-timeout", "0", "mayor que cero"),
        ("--ping-interval", "0s", "mayor que cero"),
        ("--close-grace", "dos", "no es una duración"),
        ("--write-timeout", "1.5", "no es una duración"),
        ("--connect-timeout", "0ms", "mayor que cero"),
        ("--drain", "400d", "365 días"),
        ("--max-sessions", "0", ""),
    ];
    for (flag, value, why) in cases {
        // Listening on port 0 unless the case is about --listen itself.
        let base: &[&str] = if flag == "--listen" {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        refuses_value(BRIDGE, base, flag, value, why).await;
    }
}

#[tokio::test]
async fn values_of_every_form_start_the_bridge() {
    let forms: [&[&str]; 3] = [
        &[
            "--close-grace",
            "200ms",
            "--ping-interval",
            "2s",
            "--drain",
            "1m",
        ],
        &[
            "--handshake-timeout",
            "2",
            "--write-timeout",
            "1h30m",
            "--connect-timeout",
            "500ms",
        ],
        &[
            "--target",
            "localhost:5000",
            "--trusted-proxy",
            "127.0.0.1",
            "--trusted-proxy",
            "fd00::/8",
            "--allow-origin",
            "HTTPS://Clase.Example:443/",
            "--allow-origin",
            "http://[::1]:8080",
            "--metrics",
            "127.0.0.1:0",
        ],
    ];
    for form in forms {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(form);
        let mut child = Command::new(BRIDGE)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("bridge starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("the bridge announces its address in time")
            .expect("the bridge's stdout")
            .unwrap_or_default();
        assert!(
            first.starts_with("Puente escuchando en 127.0.0.1:"),
            "{args:?}: {first}"
        );
        child.kill().await.expect("the bridge stops");
    }
}

#[tokio::test]
async fn a_port_in_use_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("its address").to_string();

    let refused = run(&["--listen", &address]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    let expected = format!("error: no se pudo escuchar en {address}: la dirección ya está en uso");
    assert!(refused.stderr.starts_with(&expected), "{}", refused.stderr);
    assert_eq!(
        refused.stderr.matches("en uso").count(),
        1,
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("os error"), "{}", refused.stderr);

    let refused = run(&["--listen", "127.0.0.1:0", "--metrics", &address]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    let expected =
        format!("error: no se pudo escuchar en --metrics {address}: la dirección ya está en uso");
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
        "--close-grace <DURACIÓN>",
        "(por defecto 2s)",
        "--listen <MÁQUINA:PUERTO>",
        "(por defecto 127.0.0.1:8080)",
        "Las duraciones se escriben con su unidad (200ms, 2s, 1m, 1h30m)",
        "segundos sin unidad",
    ] {
        assert!(run.stdout.contains(words), "{words:?} in {}", run.stdout);
    }
}

#[tokio::test]
async fn a_missing_certificate_is_said_once() {
    let missing = "/no-existe/cert.pem";
    let refused = run(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        missing,
        "--tls-key",
        missing,
    ])
    .await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    let expected = format!("error: no se pudo leer {missing}: no existe (error del sistema 2)");
    assert!(refused.stderr.starts_with(&expected), "{}", refused.stderr);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    assert_eq!(
        refused.stderr.matches("sistema 2").count(),
        1,
        "{}",
        refused.stderr
    );
}
