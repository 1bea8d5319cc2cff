//! servidor's protocol, with `servidor::serve` in the test process on port
//! 0: the conversation, many clients, long lines, split and invalid UTF-8,
//! backpressure, the timeouts (under tokio's paused time, so a timeout of
//! seconds takes no time), the connection limit, the log's contents, and
//! what shutdown delivers. The binary's own behaviour (flags, signals, the
//! log's format) is in `servidor.rs`.

mod in_process;

use std::time::Duration;

use in_process::Served;
use servidor::Config;
use testkit::{capture_log, read_line, read_to_end, round_trip, within, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use upcase::upcase_bytes;

/// What a log line of a message read from a client says.
const READ: &str = "desde el usuario conectado: ";

/// Writes a chunk again and again until a write stays blocked for 100 ms
/// of paused time. Under paused time the clock moves only when no
/// task can run, so that happens only once the server has stopped reading
/// this client (it waits to send answers the client does not read) and
/// every buffer on the way is full: an event, not a guess. Returns the
/// bytes written; fails if `limit` is written first.
async fn push_until_blocked(stream: &mut TcpStream, limit: usize) -> usize {
    let chunk = vec![b'x'; 64 * 1024];
    let mut pushed = 0;
    while pushed < limit {
        match tokio::time::timeout(Duration::from_millis(100), stream.write_all(&chunk)).await {
            Ok(written) => written.unwrap(),
            Err(_blocked) => return pushed,
        }
        pushed += chunk.len();
    }
    panic!("the server kept reading a client that never reads ({pushed} bytes)");
}

#[tokio::test]
async fn a_conversation_is_answered_and_logged() {
    let log = capture_log();
    let served = Served::start(Config::default()).await;
    let mut client = served.connect().await;
    assert_eq!(round_trip(&mut client, b"Hola\n").await, b"HOLA\n");
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await.unwrap(), b"");

    log.book().wait_for("Conexión cerrada").await;
    let text = log.text();
    for line in [
        "Conexión desde: 127.0.0.1:",
        "desde el usuario conectado: Hola\n",
        "enviando: HOLA\n",
        "Conexión cerrada: el cliente cerró la conexión (5 bytes recibidos, 5 enviados)\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[tokio::test]
async fn five_hundred_concurrent_clients_each_get_their_answers() {
    let served = Served::start(Config::default()).await;
    let addr = served.addr;
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
}

#[tokio::test]
async fn a_one_mib_line_comes_back_whole() {
    let served = Served::start(Config::default()).await;
    let stream = served.connect().await;
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
    let log = capture_log();
    let served = Served::start(Config::default()).await;
    let mut stream = served.connect().await;
    let message = "😀ñ\n".as_bytes();
    for (sent, byte) in message.iter().enumerate() {
        stream.write_all(&[*byte]).await.unwrap();
        // The server logs each read: the next byte goes only once this one
        // was read, so every byte is a read of its own.
        log.book().wait_for_count(READ, sent + 1).await;
        if sent < 3 {
            // The first bytes of 😀 are held until the character completes.
            assert!(!log.text().contains("enviando:"), "{}", log.text());
        }
    }
    assert_eq!(read_line(&mut stream).await, "😀Ñ\n".as_bytes());
    assert_eq!(log.book().count(READ), message.len(), "{}", log.text());
}

#[tokio::test]
async fn invalid_utf8_passes_through_byte_for_byte() {
    let served = Served::start(Config::default()).await;
    let mut stream = served.connect().await;
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
    let served = Served::start(Config::default()).await;
    let mut stream = served.connect().await;
    stream.write_all(b"fin\xF0\x9F").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut stream).await.unwrap(), b"FIN\xF0\x9F");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_does_not_slow_the_others() {
    let served = Served::start(Config::default()).await;
    let mut hog = served.connect().await;
    let pushed = push_until_blocked(&mut hog, 256 * 1024 * 1024).await;
    eprintln!(
        "backpressure after {} KiB from a client that never reads",
        pushed / 1024
    );

    let mut other = served.connect().await;
    for message in 0..50 {
        let text = format!("mensaje {message}\n");
        let answer = round_trip(&mut other, text.as_bytes()).await;
        assert_eq!(answer, text.to_uppercase().into_bytes());
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_write_times_out() {
    let log = capture_log();
    let config = Config {
        write_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let served = Served::start(config).await;
    let mut hog = served.connect().await;
    push_until_blocked(&mut hog, 256 * 1024 * 1024).await;
    // The server's send has been blocked for the 100 ms the push waited:
    // not closed yet, and closed within the rest of the timeout's second.
    let blocked = Instant::now();
    assert!(!log.text().contains("no leyó"), "{}", log.text());
    log.book()
        .wait_for("Conexión cerrada: el cliente no leyó la respuesta en 1 s")
        .await;
    assert!(blocked.elapsed() <= Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_closed() {
    let log = capture_log();
    let config = Config {
        idle_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let served = Served::start(config).await;
    let mut stream = served.connect().await;
    let connected = Instant::now();
    assert_eq!(read_to_end(&mut stream).await.unwrap(), b"");
    let closed = connected.elapsed();
    assert!(
        (Duration::from_secs(1)..Duration::from_millis(1100)).contains(&closed),
        "closed after {closed:?}"
    );
    log.book()
        .wait_for("Conexión cerrada: sin actividad durante 1 s")
        .await;
}

#[tokio::test(start_paused = true)]
async fn the_idle_timeout_counts_from_the_last_message() {
    let log = capture_log();
    let config = Config {
        idle_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let served = Served::start(config).await;
    let mut stream = served.connect().await;
    let started = Instant::now();
    let mut last = started;
    for _ in 0..3 {
        // Silent for less than the timeout (the behaviour under test).
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stream.write_all(b"sigo aqui").await.unwrap();
        let mut answer = [0u8; 9];
        within(PATIENCE, "answer", stream.read_exact(&mut answer))
            .await
            .unwrap();
        assert_eq!(&answer, b"SIGO AQUI");
        last = Instant::now();
    }
    assert_eq!(read_to_end(&mut stream).await.unwrap(), b"");
    // Three messages 1.2 s apart kept it open past twice the timeout, and
    // it closed two seconds after the last.
    assert!(started.elapsed() > Duration::from_millis(5500));
    let after_last = last.elapsed();
    assert!(
        (Duration::from_secs(2)..Duration::from_millis(2100)).contains(&after_last),
        "closed {after_last:?} after the last message"
    );
    log.book()
        .wait_for("Conexión cerrada: sin actividad durante 2 s")
        .await;
}

#[tokio::test(start_paused = true)]
async fn past_the_limit_clients_wait_their_turn() {
    let config = Config {
        max_connections: 2,
        ..Config::default()
    };
    let served = Served::start(config).await;
    let mut first = served.connect().await;
    let mut second = served.connect().await;
    assert_eq!(round_trip(&mut first, b"uno\n").await, b"UNO\n");
    assert_eq!(round_trip(&mut second, b"dos\n").await, b"DOS\n");

    // The third connection completes in the backlog, but is not served:
    // under paused time the ten seconds pass only while the server has
    // nothing left to do.
    let mut third = served.connect().await;
    third.write_all(b"tres\n").await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(10), third.read(&mut byte)).await;
    assert!(early.is_err(), "served past the limit");

    drop(first);
    assert_eq!(read_line(&mut third).await, b"TRES\n");
}

#[tokio::test]
async fn long_messages_are_cut_in_the_log() {
    let log = capture_log();
    let config = Config {
        log_preview: 50,
        ..Config::default()
    };
    let served = Served::start(config).await;
    let mut stream = served.connect().await;
    let message = format!("{}\n", "a".repeat(10_000));
    assert_eq!(
        round_trip(&mut stream, message.as_bytes()).await.len(),
        message.len()
    );
    drop(stream);
    log.book().wait_for("Conexión cerrada").await;
    let text = log.text();
    assert!(text.contains("… ("), "{text}");
    let longest = text.lines().map(|line| line.chars().count()).max().unwrap();
    assert!(longest < 200, "a log line of {longest} characters");
}

#[tokio::test]
async fn log_lines_cannot_be_forged_by_a_client() {
    let log = capture_log();
    let served = Served::start(Config::default()).await;
    let mut stream = served.connect().await;
    round_trip(&mut stream, b"hola\n[#9] Conexi\xC3\xB3n desde: falsa\n").await;
    log.book().wait_for("enviando:").await;
    let text = log.text();
    assert!(!text.contains("\n[#9]"), "{text}");
    assert!(!text.contains("\nConexión desde: falsa"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_delivers_what_is_already_transformed() {
    let log = capture_log();
    let mut served = Served::start(Config::default()).await;
    let mut stream = served.connect().await;
    // The server is blocked sending answers this client has not read when
    // it is told to stop.
    push_until_blocked(&mut stream, 256 * 1024 * 1024).await;
    served.signal_stop();

    let answer = read_to_end(&mut stream).await.expect("closed in order");
    assert!(!answer.is_empty());
    assert!(answer.iter().all(|&b| b == b'X'), "only whole answers");
    drop(stream);
    served.stop().await;
    assert!(
        log.text()
            .contains("Conexión cerrada: el servidor se detiene"),
        "{}",
        log.text()
    );
    eprintln!("{} KiB delivered after the stop", answer.len() / 1024);
}

#[tokio::test]
async fn stopping_closes_idle_connections_in_order_and_refuses_new_ones() {
    let mut served = Served::start(Config::default()).await;
    let mut stream = served.connect().await;
    assert_eq!(round_trip(&mut stream, b"hola\n").await, b"HOLA\n");
    served.signal_stop();
    // Closed in order, not reset.
    assert_eq!(read_to_end(&mut stream).await.unwrap(), b"");
    drop(stream);
    served.stop().await;
    assert!(TcpStream::connect(served.addr).await.is_err());
}
