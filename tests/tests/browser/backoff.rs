//! With servidor down, the page's pauses between attempts grow, and once
//! servidor is back the page returns within the pause it announced.

use std::time::{Duration, Instant};

use testkit::*;

use crate::chromium::*;

/// The pause the status line announces, from `… — nuevo intento en 2,0 s`.
fn announced_pause(status: &str) -> Option<Duration> {
    let (_, after) = status.split_once("nuevo intento en ")?;
    let seconds = after.strip_suffix(" s")?.replace(',', ".");
    seconds.parse().ok().map(Duration::from_secs_f64)
}

#[test]
fn the_announced_pause_is_read_with_its_decimal_comma() {
    let status = "Desconectado (código 1011: no se pudo) — nuevo intento en 12,5 s";
    assert_eq!(announced_pause(status), Some(Duration::from_millis(12_500)));
    assert_eq!(announced_pause("Conectando a ws://x/ws…"), None);
}

/// The pause, announced by the page, at which the backoff has clearly grown:
/// its pauses start near 0.5 s and double (±25 %), so the third failure
/// announces this much or more (1.5–2.5 s), the second never (at most
/// 1.25 s).
const GROWN: Duration = Duration::from_millis(1500);
/// The most WebSockets one page may open until it announces a pause of
/// [`GROWN`]: three with this backoff, perhaps one more made before
/// servidor was back. The old one, reset by every open, never grew its
/// pauses past 0.625 s (the wait for one of [`GROWN`] then fails).
const MOST_ATTEMPTS: usize = 4;
/// Slack on the announced pause: the page, the bridge and the test share
/// two busy cores.
const MARGIN: Duration = Duration::from_secs(4);

#[tokio::test]
async fn with_servidor_down_the_page_backs_off_then_returns_within_the_announced_pause() {
    // The bridge is up, but servidor's port is held closed until it comes back.
    let dist = built_page();
    let held = HeldPort::new();
    let bridge = bridge_to(held.addr(), &["--web", dist.to_str().unwrap()]).await;
    let browser = Browser::start(1000, 800).await;
    browser.goto(&page_url(bridge.addr)).await;

    // Each status the page shows, until it announces a grown pause.
    let mut pauses = Vec::new();
    let (announced, status) = within(PATIENCE, "a pause of 1.5 s or more", async {
        let mut status = browser.text_of("estado").await;
        loop {
            if let Some(pause) = announced_pause(&status) {
                pauses.push(pause);
                if pause >= GROWN {
                    return (Instant::now() + pause, status);
                }
            }
            status = browser.next_text("estado", &status).await;
        }
    })
    .await;
    // servidor comes back at once where the bridge looks for it, during the
    // pause: the page's next attempt, at the announced time, reaches it.
    let _server = serve(held.listen());
    let back = Instant::now();
    let attempts = browser.websockets_created().await;
    eprintln!(
        "servidor down: the page created {attempts} WebSockets (the bridge logged {} \
         sessions); pauses seen: {pauses:?}",
        bridge.log().matches("sesión abierta").count()
    );
    // Perhaps one more, made before servidor was back.
    assert!(
        (2..=MOST_ATTEMPTS).contains(&attempts),
        "{attempts} WebSockets before a pause of {GROWN:?}: {pauses:?}"
    );

    // Back within the announced pause: «Conectado» by then. If the test saw
    // the pause late and an attempt was already failing when servidor came
    // back, the pause that attempt announces counts instead (once). The
    // bridge accepts a WebSocket before it tries servidor, so «Conectado»
    // alone is no proof: the answer below, on the same session, is.
    let mut deadline = announced + MARGIN;
    let mut said = status;
    let mut renewed = false;
    while !said.starts_with("Conectado a") {
        let changed = tokio::time::timeout_at(deadline.into(), browser.next_text("estado", &said))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "servidor back for {:?}, the page still not connected; it said {said:?}",
                    back.elapsed()
                )
            });
        if let Some(pause) = announced_pause(&changed) {
            assert!(
                !renewed,
                "the page failed twice with servidor back: {changed:?}"
            );
            renewed = true;
            deadline = Instant::now() + pause + MARGIN;
        }
        said = changed;
    }
    eprintln!(
        "servidor back: the page connected after {:?}; it had said {said:?}",
        back.elapsed()
    );
    browser.type_message("de vuelta\u{E007}").await;
    browser.wait_answer("DE VUELTA").await;
    browser.close().await;
}
