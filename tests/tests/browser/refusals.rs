//! The join code and the refusals in a real headless Chromium: the join
//! link gives a cookie and HOLA, the form asks for the code, a refusal
//! shows its sentence (code, origin, per-address cap, full, stopping), and
//! a permanent one does not reconnect in a loop.
//! Needs scripts/setup --browser.

use futures_util::{SinkExt, StreamExt};
use testkit::*;
use tokio_tungstenite::tungstenite::Message;

use crate::chromium::*;
use tokio_util::sync::DropGuard;

const CODE: &str = "clave-del-aula_7";

/// servidor and a bridge serving the page that asks for [`CODE`].
async fn coded_system(extra: &[&str]) -> (DropGuard, Running) {
    let mut args = vec!["--access-code", CODE];
    args.extend_from_slice(extra);
    let System { server, bridge, .. } = system_with(&args).await;
    (server, bridge)
}

#[tokio::test]
async fn the_join_link_leaves_a_cookie_and_the_page_says_hola() {
    let (_server, bridge) = coded_system(&[]).await;
    let browser = Browser::start(1000, 800).await;
    browser
        .goto(&format!("http://{}/?clave={CODE}", bridge.addr))
        .await;
    browser.wait_connected().await;
    // Redirected: the code left the address bar.
    let url = browser.current_url().await;
    assert_eq!(url, page_url(bridge.addr));
    browser.type_message("Hola\u{E007}").await;
    browser.wait_answer("HOLA").await;
    browser.close().await;
}

#[tokio::test]
async fn without_the_code_the_page_asks_for_it_and_does_not_retry_in_a_loop() {
    let (_server, bridge) = coded_system(&[]).await;
    let browser = Browser::start(360, 740).await;
    browser.goto(&page_url(bridge.addr)).await;
    let status = browser.wait_refusal("falta la clave de la demo").await;
    assert!(status.contains("escriba la clave"), "{status}");
    // The form, keyboard only: typed into the focused field, then Enter,
    // which loads the page again with the code's cookie.
    browser
        .submit_with_enter("clave", &format!("{CODE}\u{E007}"))
        .await;
    browser.wait_connected().await;
    // One refused WebSocket before the code, one after: no storm while
    // the person was typing.
    assert_eq!(browser.websockets_created().await, 2);
    browser.type_message("Hola\u{E007}").await;
    browser.wait_answer("HOLA").await;
    browser.close().await;
}

#[tokio::test]
async fn a_full_bridge_is_named_on_the_page() {
    let (_server, bridge) = coded_system(&["--max-sessions", "1"]).await;
    let _held = websocket_at(&format!("ws://{}/ws?clave={CODE}", bridge.addr)).await;
    let browser = Browser::start(1000, 800).await;
    browser
        .goto(&format!("http://{}/?clave={CODE}", bridge.addr))
        .await;
    let status = browser.wait_refusal("el puente está lleno").await;
    assert!(status.contains("nuevo intento en"), "{status}");
    browser.close().await;
}

#[tokio::test]
async fn a_page_from_another_origin_is_told_so_and_waits_for_the_person() {
    let System {
        server: _server,
        target,
        bridge,
    } = system_with(&[]).await;
    // A bridge that admits only its own pages (no --allow-origin).
    let other = bridge_to(target, &[]).await;
    let browser = Browser::start(1000, 800).await;
    let url = format!("{}?ws=ws://{}/ws", page_url(bridge.addr), other.addr);
    browser.goto(&url).await;
    // The sentence comes from the other bridge: the page's policy lets it
    // fetch there, and the refusal is readable across origins.
    let status = browser.wait_refusal("la página no es de este puente").await;
    assert!(status.contains("pulse Conectar"), "{status}");
    // No retry is scheduled: the page offers «Conectar» to the person
    // instead of announcing a pause (the retry path keeps «Desconectar»).
    assert_eq!(browser.text_of("conexion").await, "Conectar");
    assert_eq!(browser.websockets_created().await, 1);
    // The person acts: one more attempt, refused the same way.
    let attempting = browser.click_then_change("conexion", "estado").await;
    assert!(attempting.starts_with("Conectando"), "{attempting}");
    let again = browser.wait_refusal("la página no es de este puente").await;
    assert!(again.contains("pulse Conectar"), "{again}");
    // Since the first count: the person's attempt alone.
    assert_eq!(browser.websockets_created().await, 1);
    browser.close().await;
}

#[tokio::test]
async fn too_many_sessions_from_one_address_are_named_and_retried_later() {
    let system = system_with(&["--max-sessions-per-client", "1"]).await;
    let bridge = &system.bridge;
    let _held = websocket(bridge.addr).await;
    let browser = Browser::start(1000, 800).await;
    browser.goto(&page_url(bridge.addr)).await;
    let status = browser
        .wait_refusal("demasiadas sesiones desde esta dirección")
        .await;
    assert!(status.contains("nuevo intento en"), "{status}");
    browser.close().await;
}

#[tokio::test]
async fn a_stopping_bridge_is_named_on_the_page() {
    let system = system_with(&["--drain", "30", "--close-grace", "30"]).await;
    let bridge = &system.bridge;
    let browser = Browser::start(1000, 800).await;
    browser.goto(&page_url(bridge.addr)).await;
    browser.wait_connected().await;
    // A session that uppercases once and is then never read again: it
    // answers no Close, so the drain lasts while the page retries.
    let mut held = websocket(bridge.addr).await;
    held.send(Message::text("hola\n")).await.unwrap();
    within(PATIENCE, "HOLA", held.next())
        .await
        .unwrap()
        .unwrap();
    bridge.signal("TERM");
    let status = browser.wait_refusal("el puente se está deteniendo").await;
    assert!(status.contains("nuevo intento en"), "{status}");
    browser.close().await;
}
