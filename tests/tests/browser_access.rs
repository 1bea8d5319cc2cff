//! The join code and the refusals in a real headless Chromium: the join
//! link gives a cookie and HOLA, the form asks for the code, a refusal
//! shows its sentence, and a permanent one does not reconnect in a loop.
//! Needs scripts/setup --browser.

use fantoccini::Locator;
use testkit::*;

mod chromium;
use chromium::*;
use tokio::net::TcpListener;
use tokio_util::sync::DropGuard;

const CODE: &str = "clave-del-aula_7";

/// servidor and a bridge serving the page that asks for [`CODE`].
async fn coded_system(extra: &[&str]) -> (DropGuard, Running) {
    let dist = built_page();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let server = serve(listener);
    let mut args = vec!["--web", dist.to_str().unwrap(), "--access-code", CODE];
    args.extend_from_slice(extra);
    let bridge = bridge_to(target, &args).await;
    (server, bridge)
}

#[tokio::test]
async fn the_join_link_leaves_a_cookie_and_the_page_says_hola() {
    let (_server, bridge) = coded_system(&[]).await;
    let browser = Browser::start(1000, 800).await;
    browser
        .client
        .goto(&format!("http://{}/?clave={CODE}", bridge.addr))
        .await
        .unwrap();
    browser
        .wait_text("estado", "Conectado", |t| t.starts_with("Conectado a"))
        .await;
    // Redirected: the code left the address bar.
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.as_str(), page_url(bridge.addr));
    browser.type_message("Hola\u{E007}").await;
    browser
        .wait_text("registro", "HOLA", |t| {
            t.contains("Recibido del servidor: HOLA")
        })
        .await;
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn without_the_code_the_page_asks_for_it_and_does_not_retry_in_a_loop() {
    let (_server, bridge) = coded_system(&[]).await;
    let browser = Browser::start_recording_network(360, 740).await;
    browser.client.goto(&page_url(bridge.addr)).await.unwrap();
    let status = browser
        .wait_text("estado", "the refusal", |t| {
            t.contains("falta la clave de la demo")
        })
        .await;
    assert!(status.contains("escriba la clave"), "{status}");
    // The form, keyboard only: typed into the focused field, then Enter.
    let field = browser.client.find(Locator::Id("clave")).await.unwrap();
    field.send_keys(&format!("{CODE}\u{E007}")).await.unwrap();
    browser
        .wait_text("estado", "Conectado", |t| t.starts_with("Conectado a"))
        .await;
    // One refused WebSocket before the code, one after: no storm while
    // the person was typing.
    assert_eq!(browser.websockets_created().await, 2);
    browser.type_message("Hola\u{E007}").await;
    browser
        .wait_text("registro", "HOLA", |t| {
            t.contains("Recibido del servidor: HOLA")
        })
        .await;
    browser.client.close().await.unwrap();
}

#[tokio::test]
async fn a_full_bridge_is_named_on_the_page() {
    let (_server, bridge) = coded_system(&["--max-sessions", "1"]).await;
    let url = format!("ws://{}/ws?clave={CODE}", bridge.addr);
    let (_held, _) = within(
        PATIENCE,
        "the one session",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap();
    let browser = Browser::start(1000, 800).await;
    browser
        .client
        .goto(&format!("http://{}/?clave={CODE}", bridge.addr))
        .await
        .unwrap();
    let status = browser
        .wait_text("estado", "the refusal", |t| {
            t.contains("el puente está lleno")
        })
        .await;
    assert!(status.contains("nuevo intento en"), "{status}");
    browser.client.close().await.unwrap();
}
