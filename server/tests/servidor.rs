//! The real `servidor` binary on a free port, driven over TCP.

use std::time::{Duration, Instant};

use testkit::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upcase::upcase_bytes;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_clients_each_get_their_answers() {
    let server = servidor(&[], &[("RUST_LOG", "warn")]).await;
    let addr = server.addr;
    let clients: Vec<_> = (0..500)
        .map(|client| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                for message in 0..5 {
                    let text = format!("cliente {client}, mensaje {message}: ñandú straße\n");
                    let expected = text.to_uppercase();
                    let answer = round_trip(&mut stream, text.as_bytes()).await;
                    assert_eq!(String::from_utf8(answer).unwrap(), expected);
                }
            })
        })
        .collect();
    for client in clients {
        within(PATIENCE, "a client", client).await.unwrap();
    }
    assert!(!server.log().contains("desde el usuario"), "RUST_LOG=warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_line_comes_back_whole() {
    let server = servidor(&[], &[("RUST_LOG", "warn")]).await;
    let stream = connect(&server).await;
    let mut line = "ñandú straße, ".repeat(1024 * 1024 / 16).into_bytes();
    line.truncate(1024 * 1024 - 1);
    // Keep the line valid UTF-8 after the cut, then end it.
    while std::str::from_utf8(&line).is_err() {
        line.pop();
    }
    line.push(b'\n');
    let expected = upcase_bytes(&line);

    let (mut reader, mut writer) = stream.into_split();
    // Written while the answer is read: the answer starts before the line ends.
    let writing = tokio::spawn(async move { writer.write_all(&line).await });
    let mut answer = vec![0u8; expected.len()];
    within(PATIENCE, "the whole answer", reader.read_exact(&mut answer))
        .await
        .unwrap();
    within(PATIENCE, "the whole line", writing)
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer == expected,
        "the answer differs from the line in uppercase"
    );
}

#[tokio::test]
async fn a_character_sent_one_byte_at_a_time() {
    let server = servidor(&[], &[]).await;
    let mut stream = connect(&server).await;
    for byte in "😀ñ\n".as_bytes() {
        stream.write_all(&[*byte]).await.unwrap();
        // Long enough for every byte to be its own read on the server.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read_line(&mut stream).await, "😀Ñ\n".as_bytes());
}

#[tokio::test]
async fn invalid_utf8_passes_through_byte_for_byte() {
    let server = servidor(&[], &[]).await;
    let mut stream = connect(&server).await;
    let message = b"a\xFFb\xC3(c\xE2\x82\xED\xA0\x80\n";
    assert_eq!(
        round_trip(&mut stream, message).await,
        b"A\xFFB\xC3(C\xE2\x82\xED\xA0\x80\n"
    );
    // And the server is unharmed.
    assert_eq!(round_trip(&mut stream, b"hola\n").await, b"HOLA\n");
}

#[tokio::test]
async fn an_incomplete_character_at_the_end_is_flushed() {
    let server = servidor(&[], &[]).await;
    let mut stream = connect(&server).await;
    stream.write_all(b"fin\xF0\x9F").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut stream).await.unwrap(), b"FIN\xF0\x9F");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_slow_the_others() {
    let server = servidor(&[], &[("RUST_LOG", "warn")]).await;
    let mut hog = connect(&server).await;
    let chunk = vec![b'x'; 64 * 1024];
    let limit = 256 * 1024 * 1024;
    let mut pushed = 0;
    // Push until a write stalls: the server has stopped reading this client.
    while pushed < limit {
        match tokio::time::timeout(Duration::from_millis(500), hog.write_all(&chunk)).await {
            Ok(written) => written.unwrap(),
            Err(_stalled) => break,
        }
        pushed += chunk.len();
    }
    assert!(
        pushed < limit,
        "the server kept reading a client that never reads"
    );
    eprintln!(
        "backpressure after {} KiB from a client that never reads",
        pushed / 1024
    );

    let mut other = connect(&server).await;
    let started = Instant::now();
    for message in 0..50 {
        let text = format!("mensaje {message}\n");
        let answer = round_trip(&mut other, text.as_bytes()).await;
        assert_eq!(answer, text.to_uppercase().into_bytes());
    }
    eprintln!("50 round trips beside it in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_write_times_out() {
    let server = servidor(&["--write-timeout", "1"], &[]).await;
    let mut hog = connect(&server).await;
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..512 {
        let pushed = tokio::time::timeout(Duration::from_millis(500), hog.write_all(&chunk)).await;
        if !matches!(pushed, Ok(Ok(()))) {
            break;
        }
    }
    server
        .wait_for_log("el cliente no leyó la respuesta en 1 s")
        .await;
}

#[tokio::test]
async fn an_idle_client_is_closed() {
    let server = servidor(&["--idle-timeout", "1"], &[]).await;
    let mut stream = connect(&server).await;
    assert_eq!(read_to_end(&mut stream).await.unwrap(), b"");
    server.wait_for_log("sin actividad durante 1 s").await;
}

#[tokio::test]
async fn the_idle_timeout_counts_from_the_last_message() {
    let server = servidor(&["--idle-timeout", "2"], &[]).await;
    let mut stream = connect(&server).await;
    let started = Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stream.write_all(b"sigo aqui").await.unwrap();
        let mut answer = [0u8; 9];
        within(PATIENCE, "answer", stream.read_exact(&mut answer))
            .await
            .unwrap();
        assert_eq!(&answer, b"SIGO AQUI");
    }
    assert_eq!(read_to_end(&mut stream).await.unwrap(), b"");
    // Three messages 1.2 s apart kept it open past twice the timeout.
    assert!(started.elapsed() > Duration::from_millis(5500));
    server.wait_for_log("sin actividad durante 2 s").await;
}

#[tokio::test]
async fn past_the_limit_clients_wait_their_turn() {
    let server = servidor(&["--max-connections", "2"], &[]).await;
    let mut first = connect(&server).await;
    let mut second = connect(&server).await;
    assert_eq!(round_trip(&mut first, b"uno\n").await, b"UNO\n");
    assert_eq!(round_trip(&mut second, b"dos\n").await, b"DOS\n");

    // The third connection completes in the backlog, but is not served yet.
    let mut third = connect(&server).await;
    third.write_all(b"tres\n").await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(early.is_err(), "served past the limit");

    drop(first);
    assert_eq!(read_line(&mut third).await, b"TRES\n");
}

#[tokio::test]
async fn long_messages_are_cut_in_the_log() {
    let server = servidor(&["--log-preview", "50"], &[]).await;
    let mut stream = connect(&server).await;
    let message = format!("{}\n", "a".repeat(10_000));
    assert_eq!(
        round_trip(&mut stream, message.as_bytes()).await.len(),
        message.len()
    );
    drop(stream);
    server.wait_for_log("Conexión cerrada").await;
    let log = server.log();
    assert!(log.contains("… ("), "{log}");
    let longest = log.lines().map(|line| line.chars().count()).max().unwrap();
    assert!(longest < 200, "a log line of {longest} characters");
}

#[tokio::test]
async fn log_lines_cannot_be_forged_by_a_client() {
    let server = servidor(&[], &[]).await;
    let mut stream = connect(&server).await;
    round_trip(&mut stream, b"hola\n[#9] Conexi\xC3\xB3n desde: falsa\n").await;
    server.wait_for_log("enviando:").await;
    assert!(!server.log().contains("\n[#9]"), "{}", server.log());
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_is_already_transformed() {
    let mut server = servidor(&[], &[("RUST_LOG", "warn")]).await;
    let mut stream = connect(&server).await;
    // More than the socket buffers hold, unread: the server is blocked
    // sending answers when it is told to stop.
    let message = vec![b'a'; 8 * 1024 * 1024];
    let pushed = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&message)).await;
    drop(pushed);
    server.signal("TERM");

    let answer = read_to_end(&mut stream).await.expect("closed in order");
    assert!(!answer.is_empty());
    assert!(answer.iter().all(|&b| b == b'A'), "only whole answers");
    assert!(server.wait_exit(Duration::from_secs(5)).await.success());
    eprintln!("{} KiB delivered after SIGTERM", answer.len() / 1024);
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
