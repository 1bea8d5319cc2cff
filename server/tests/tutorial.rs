//! Interoperability with the tutorial's own Python programs, both ways.

use testkit::*;

/// This package's own binaries, as cargo built them for these tests.
const SERVIDOR: &str = env!("CARGO_BIN_EXE_servidor");

async fn servidor(args: &[&str], env: &[(&str, &str)]) -> Running {
    servidor_at(SERVIDOR, args, env).await
}

const PYTHON: &str = "python3";

#[tokio::test]
async fn cliente_talks_to_the_tutorial_servidor_py() {
    let script = tutorial_program("servidor.py");
    let server = Running::start(PYTHON, &["-u", script.to_str().unwrap(), "0"], &[]).await;
    let port = server.addr.port().to_string();
    let run = run_with_input(cliente_exe(), &["--port", &port], b"Hola\nq\n").await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout, " -> Recibido del servidor: HOLA\n -> ");

    server.wait_for_log("enviando: HOLA").await;
    let log = server.log();
    assert!(log.contains("Conexión desde: ('127.0.0.1', "), "{log}");
    assert!(log.contains("desde el usuario conectado: Hola"), "{log}");
}

#[tokio::test]
async fn the_tutorial_cliente_py_talks_to_servidor() {
    let server = servidor(&[], &[]).await;
    let script = tutorial_program("cliente.py");
    let port = server.addr.port().to_string();
    let run = run_with_input(
        PYTHON,
        &["-u", script.to_str().unwrap(), &port],
        "Hola\nñandú\nq\n".as_bytes(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    // The tutorial's client sends no newline and reads once: each read is
    // answered at once, so it works unchanged.
    assert_eq!(
        run.stdout,
        " -> Recibido del servidor: HOLA\n -> Recibido del servidor: ÑANDÚ\n -> "
    );
    server.wait_for_log("[#1] enviando: ÑANDÚ").await;
    assert!(server
        .log()
        .contains("[#1] desde el usuario conectado: Hola\n"));
}
