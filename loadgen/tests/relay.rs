//! The relay subcommand the main run puts in front of servidor (the floor of
//! one user-space hop): it prints its address first and passes every byte,
//! and the end of the stream, both ways.

use testkit::{read_to_end, round_trip, within, Running, PATIENCE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

#[tokio::test]
async fn relay_tcp_passes_every_byte_and_the_end_of_the_stream() {
    let echo = Running::start(LOADGEN, &["echo-tcp", "--listen", "127.0.0.1:0"], &[]).await;
    let target = echo.addr.to_string();
    let relay = Running::start(
        LOADGEN,
        &["relay-tcp", "--listen", "127.0.0.1:0", "--target", &target],
        &[],
    )
    .await;
    let mut stream = TcpStream::connect(relay.addr).await.unwrap();
    assert_eq!(
        round_trip(&mut stream, b"hola \xff\n").await,
        b"hola \xff\n"
    );
    // A client that stops sending still gets the rest, then the end: the
    // relay passes the half-close on and the echo's close back.
    let tail = vec![b'x'; 100_000];
    stream.write_all(&tail).await.unwrap();
    stream.shutdown().await.unwrap();
    let rest = within(PATIENCE, "the relay's end", read_to_end(&mut stream)).await;
    assert_eq!(rest.unwrap(), tail);
}
