//! The echo subcommands scripts/autobahn starts: each prints its address
//! first and echoes what it is sent.

use futures_util::{SinkExt, StreamExt};
use testkit::{round_trip, within, Running, PATIENCE};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

#[tokio::test]
async fn echo_tcp_sends_every_byte_back() {
    let echo = Running::start(LOADGEN, &["echo-tcp", "--listen", "127.0.0.1:0"], &[]).await;
    let mut stream = TcpStream::connect(echo.addr).await.unwrap();
    assert_eq!(
        round_trip(&mut stream, b"hola \xff\n").await,
        b"hola \xff\n"
    );
}

#[tokio::test]
async fn echo_ws_sends_every_message_back_as_it_came() {
    let echo = Running::start(LOADGEN, &["echo-ws", "--listen", "127.0.0.1:0"], &[]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", echo.addr))
        .await
        .unwrap();
    for message in [
        Message::text("hola, ñandú"),
        Message::binary(vec![0u8, 255, 10]),
        Message::text(""),
    ] {
        ws.send(message.clone()).await.unwrap();
        let answer = within(PATIENCE, "the echo", ws.next()).await;
        assert_eq!(answer.unwrap().unwrap(), message);
    }
    ws.close(None).await.unwrap();
}
