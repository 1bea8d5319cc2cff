//! servidor's promise about stopping: once the stop is asked for, `serve`
//! returns within `shutdown_grace`, whatever its clients are doing (not
//! reading their answers, holding the start of a character and never
//! closing, never sending the PROXY header they owe, or sending without a
//! pause). One deadline for all of the closing, not one per phase.
//!
//! Timed with tokio's paused clock where the wait is a timer: the clock
//! moves only when every task waits, so a test's timeout elapses only once
//! the server has nothing left to do but wait for its own deadlines.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use netkit::proxy_protocol::TrustedProxies;
use servidor::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

/// Shorter than the PROXY header's own deadline (3 s), which must not
/// outlast it.
const GRACE: Duration = Duration::from_millis(500);

/// Far beyond the grace: only the grace may end the waits under test.
const LONG: Duration = Duration::from_secs(3600);

fn config() -> Config {
    Config {
        shutdown_grace: GRACE,
        idle_timeout: LONG,
        write_timeout: LONG,
        ..Config::default()
    }
}

/// `servidor::serve` running in the test's runtime.
struct Running {
    address: SocketAddr,
    stop: CancellationToken,
    serving: JoinHandle<()>,
}

async fn start(config: Config) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(servidor::serve(listener, config, stop.clone()));
    Running {
        address,
        stop,
        serving,
    }
}

impl Running {
    /// Asks the server to stop; how long `serve` took to return.
    async fn stop(self) -> Duration {
        let asked = Instant::now();
        self.stop.cancel();
        timeout(LONG, self.serving)
            .await
            .expect("serve never returned")
            .expect("serve panicked");
        asked.elapsed()
    }
}

/// Within one tick of the timer wheel.
fn within_the_grace(took: Duration) -> bool {
    took <= GRACE + Duration::from_millis(1)
}

/// Writes until the server stops taking bytes: the client's writes stay
/// pending while every task waits (only then does the paused clock move
/// and the timeout elapse). The server then waits to deliver an answer.
async fn fill_until_the_server_stops_reading(client: &mut TcpStream) {
    let chunk = vec![b'a'; 64 * 1024];
    loop {
        match client.try_write(&chunk) {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if timeout(Duration::from_secs(1), client.writable())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => panic!("the server stopped the client: {error}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_its_answers_is_given_up_within_the_grace() {
    let server = start(config()).await;
    let mut client = TcpStream::connect(server.address).await.unwrap();
    fill_until_the_server_stops_reading(&mut client).await;
    let took = server.stop().await;
    assert!(within_the_grace(took), "stopping took {took:?}");
}

/// Closing goes through delivering the held bytes, shutting the write side
/// and waiting for the client to close too: all of it within one grace.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_closes_gets_its_last_byte_within_the_grace() {
    let server = start(config()).await;
    let mut client = TcpStream::connect(server.address).await.unwrap();
    // "hola á" cut inside the «á»: the server holds its first byte.
    let sent = "hola á".as_bytes();
    client.write_all(&sent[..sent.len() - 1]).await.unwrap();
    let mut answer = [0; 5];
    timeout(LONG, client.read_exact(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    assert_eq!(&answer, b"HOLA ");

    let took = server.stop().await;
    assert!(within_the_grace(took), "stopping took {took:?}");
    // It did wait for the client to close, as long as the grace let it.
    assert!(took >= GRACE, "stopping took {took:?}");
    let mut rest = Vec::new();
    timeout(LONG, client.read_to_end(&mut rest))
        .await
        .expect("the server never closed")
        .unwrap();
    assert_eq!(rest, [0xC3], "the held byte goes out unchanged");
}

/// A trusted proxy owes a PROXY header, and the wait for it has a deadline
/// of its own, longer than the grace: stopping does not wait it out.
#[tokio::test(start_paused = true)]
async fn a_proxy_that_never_sends_its_header_does_not_hold_the_stop() {
    let server = start(Config {
        trusted_proxies: TrustedProxies::new(["127.0.0.2"]).unwrap(),
        ..config()
    })
    .await;
    let proxy = TcpSocket::new_v4().unwrap();
    proxy.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let _proxy = proxy.connect(server.address).await.unwrap();
    // A direct client, accepted after the proxy: once it is answered, the
    // proxy's connection waits for its header.
    let mut probe = TcpStream::connect(server.address).await.unwrap();
    probe.write_all(b"x").await.unwrap();
    let mut answer = [0; 1];
    timeout(LONG, probe.read_exact(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    assert_eq!(&answer, b"X");
    drop(probe);

    let took = server.stop().await;
    assert!(within_the_grace(took), "stopping took {took:?}");
}

/// A client that sends without a pause and reads every answer: the server
/// stops reading it and closes by the deadline, though the client may never
/// let it wait for input. Real time (a busy connection never lets a paused
/// clock move), so the bound has room for a loaded machine; the client
/// gives up after 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_pauses_is_closed_within_the_grace() {
    const ROOM: Duration = Duration::from_secs(3);
    let server = start(config()).await;
    let client = TcpStream::connect(server.address).await.unwrap();
    let (mut from_server, mut to_server) = client.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'a'; 16 * 1024];
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if to_server.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let (busy_tx, busy_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let mut busy = Some(busy_tx);
        let mut received = 0usize;
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read @ 1..) = from_server.read(&mut buffer).await {
            received += read;
            if received >= 1024 * 1024 {
                if let Some(busy) = busy.take() {
                    let _ = busy.send(());
                }
            }
        }
    });
    timeout(Duration::from_secs(20), busy_rx)
        .await
        .expect("the conversation never got going")
        .unwrap();

    let took = server.stop().await;
    assert!(took <= GRACE + ROOM, "stopping took {took:?}");
    timeout(Duration::from_secs(30), async {
        writer.await.unwrap();
        reader.await.unwrap();
    })
    .await
    .expect("the client never saw the end");
}
