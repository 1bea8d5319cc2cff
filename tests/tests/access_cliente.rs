//! `cliente --url` with the demo's code on the WebSocket URL, through the
//! real `bridge --access-code` and `servidor`: the query passes through,
//! and a wrong code is a clear Spanish error.

use testkit::*;

const CODE: &str = "clave-de-prueba_1";

#[tokio::test]
async fn cliente_url_with_the_code_talks_and_a_wrong_one_is_told() {
    let server = servidor(&[], &[]).await;
    let bridge = bridge_to(server.addr, &["--access-code", CODE]).await;

    let url = format!("ws://{}/ws?clave={CODE}", bridge.addr);
    let run = run_with_input(cliente_exe(), &["--url", &url], b"Hola\nq\n").await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, " -> Recibido del servidor: HOLA\n -> ");

    for url in [
        format!("ws://{}/ws?clave=otra", bridge.addr),
        format!("ws://{}/ws", bridge.addr),
    ] {
        let run = run_with_input(cliente_exe(), &["--url", &url], b"Hola\nq\n").await;
        assert_eq!(run.status.code(), Some(1), "{}", run.stdout);
        assert!(
            run.stderr.contains("el puente rechazó la conexión a ws://")
                && run.stderr.contains("HTTP 401: falta la clave de la demo"),
            "{}",
            run.stderr
        );
    }
}
