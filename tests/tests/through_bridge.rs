//! The whole chain with the real binaries: `cliente --url` → `bridge` →
//! `servidor`, over ws:// and wss://.

use std::path::PathBuf;

use harness::*;

#[tokio::test]
async fn cliente_url_talks_through_the_bridge() {
    let server = servidor(&[], &[]).await;
    let bridge = bridge_to(server.addr, &[]).await;
    let url = format!("ws://{}/ws", bridge.addr);
    let run = run_with_input(
        cliente_exe(),
        &["--url", &url],
        "Hola\nñandú straße\nq\n".as_bytes(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        " -> Recibido del servidor: HOLA\n -> Recibido del servidor: ÑANDÚ STRASSE\n -> "
    );
    server.wait_for_log("enviando: ÑANDÚ STRASSE").await;
    bridge.wait_for_log("sesión cerrada").await;
}

#[tokio::test]
async fn cliente_url_reports_the_bridges_reason_when_the_server_is_down() {
    // A servidor that is stopped before the bridge is used.
    let mut server = servidor(&[], &[]).await;
    let bridge = bridge_to(server.addr, &[]).await;
    server.signal("TERM");
    server.wait_exit(PATIENCE).await;

    let url = format!("ws://{}/ws", bridge.addr);
    let run = run_with_input(cliente_exe(), &["--url", &url], b"Hola\nq\n").await;
    assert_eq!(run.status.code(), Some(1), "{}", run.stdout);
    let expected = format!(
        "error: el puente cerró la sesión: 1011 no se pudo conectar con el servidor {}",
        server.addr
    );
    assert!(run.stderr.starts_with(&expected), "{}", run.stderr);
}

/// A self-signed certificate for `localhost`, written to a fresh folder.
fn self_signed_localhost() -> (PathBuf, PathBuf) {
    let folder = std::env::temp_dir().join(format!("tema12-tls-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec![String::from("localhost")]).unwrap();
    let cert = folder.join("cert.pem");
    let key = folder.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[tokio::test]
async fn cliente_url_talks_through_a_tls_bridge() {
    let (cert, key) = self_signed_localhost();
    let server = servidor(&[], &[]).await;
    let bridge = bridge_to(
        server.addr,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let url = format!("wss://localhost:{}/ws", bridge.addr.port());

    // Without trusting the certificate: a clear refusal.
    let run = run_with_input(cliente_exe(), &["--url", &url], b"Hola\nq\n").await;
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr
            .starts_with("error: no se pudo abrir el WebSocket wss://"),
        "{}",
        run.stderr
    );

    let run = run_with_input(
        cliente_exe(),
        &["--url", &url, "--ca-cert", cert.to_str().unwrap()],
        b"Hola\nq\n",
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, " -> Recibido del servidor: HOLA\n -> ");
    std::fs::remove_dir_all(cert.parent().unwrap()).unwrap();
}
