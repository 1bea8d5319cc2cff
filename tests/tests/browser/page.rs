//! The page's conversation in Chromium: HOLA, reconnecting when servidor
//! comes back, the toggle, a 360 px phone, the page's size budget, and its
//! content security policy.

use std::path::Path;

use testkit::*;

use crate::chromium::*;

/// The page, gzipped, must stay within this.
const SIZE_BUDGET: usize = 40 * 1024;

#[tokio::test]
async fn the_page_sends_hola_and_shows_hola_in_uppercase() {
    let (_server, bridge) = system().await;
    let browser = Browser::start(1000, 800).await;
    browser.goto(&page_url(bridge.addr)).await;
    let status = browser.wait_connected().await;
    assert_eq!(status, format!("Conectado a ws://{}/ws", bridge.addr));

    // Typed, then the Enviar button.
    browser.type_message("Hola").await;
    browser.click("enviar").await;
    let log = browser.wait_answer("HOLA").await;
    assert!(log.contains("-> Hola"), "{log}");
    assert!(log.contains(" ms"), "the round trip time: {log}");

    // Typed, then Enter.
    browser.type_message("ñandú straße\u{E007}").await;
    browser.wait_answer("ÑANDÚ STRASSE").await;
    browser.screenshot("pagina.png").await;
    // Read last: by now the page and everything it asks for has loaded.
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "errors in the console: {errors:#?}");
    browser.close().await;
}

#[tokio::test]
async fn the_page_reconnects_by_itself_when_servidor_comes_back() {
    let dist = built_page();
    let held = HeldPort::new();
    let server = serve(held.listen());
    let bridge = bridge_to(held.addr(), &["--web", dist.to_str().unwrap()]).await;
    let browser = Browser::start(1000, 800).await;
    browser.goto(&page_url(bridge.addr)).await;
    browser.wait_connected().await;

    // servidor stops; its port stays held, refusing connections.
    drop(server);
    let status = browser
        .wait_text("estado", "Desconectado with a reason", |t| {
            t.starts_with("Desconectado (código") && t.contains("servidor")
        })
        .await;
    eprintln!("status with servidor stopped: {status}");

    // Sending now is refused visibly, not dropped.
    browser.type_message("perdido\u{E007}").await;
    browser
        .wait_text("registro", "a notice", |t| {
            t.contains("Sin conexión: «perdido» no se ha enviado")
        })
        .await;
    browser.screenshot("pagina-desconectada.png").await;
    // …and the text stays in the field, to send once connected.
    assert_eq!(browser.field_value("mensaje").await, "perdido");
    browser.clear("mensaje").await;

    let _again = serve(held.listen());
    browser
        .wait_text("estado", "Conectado again", |t| {
            t.starts_with("Conectado a")
        })
        .await;
    browser.type_message("de nuevo\u{E007}").await;
    browser.wait_answer("DE NUEVO").await;
    browser.close().await;
}

#[tokio::test]
async fn the_toggle_disconnects_and_connects() {
    let (_server, bridge) = system().await;
    let browser = Browser::start(1000, 800).await;
    browser.goto(&page_url(bridge.addr)).await;
    browser.wait_connected().await;
    assert_eq!(browser.text_of("conexion").await, "Desconectar");
    browser.click("conexion").await;
    browser
        .wait_text("estado", "Desconectado", |t| {
            t == "Desconectado (por el usuario)"
        })
        .await;
    assert_eq!(browser.text_of("conexion").await, "Conectar");
    browser.click("conexion").await;
    browser.wait_connected().await;
    browser.close().await;
}

#[tokio::test]
async fn the_page_is_readable_on_a_360_px_phone() {
    let (_server, bridge) = system().await;
    let browser = Browser::start(360, 740).await;
    browser.goto(&page_url(bridge.addr)).await;
    browser.wait_connected().await;
    browser.type_message("hola desde el móvil\u{E007}").await;
    browser.wait_answer("HOLA DESDE EL MÓVIL").await;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth",
            vec![],
        )
        .await;
    assert_eq!(overflow.as_i64(), Some(0), "horizontal scrolling at 360 px");
    // The label belongs to the field: a screen reader names it «Mensaje».
    let label = browser
        .execute(
            "return document.getElementById('mensaje').labels[0].textContent",
            vec![],
        )
        .await;
    assert_eq!(label.as_str(), Some("Mensaje"));
    // The history is a role=log region, named by its heading, and the
    // answers land in it.
    let log = browser
        .execute(
            "const log = document.querySelector('[role=log]');
             return [log.contains(document.getElementById('registro')),
                     document.getElementById(log.getAttribute('aria-labelledby')).textContent,
                     log.textContent.includes('HOLA DESDE EL MÓVIL')]",
            vec![],
        )
        .await;
    assert_eq!(log, serde_json::json!([true, "Registro", true]));
    browser.screenshot("pagina-360.png").await;
    browser.close().await;
}

/// Gzipped size of every file of the page, as the bridge would send it.
fn gzipped_size(dist: &Path) -> Vec<(String, usize, usize)> {
    use std::io::Write;
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(dist).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&bytes).unwrap();
        let packed = gzip.finish().unwrap().len();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        sizes.push((name, bytes.len(), packed));
    }
    sizes.sort();
    sizes
}

#[test]
fn the_release_page_fits_in_40_kib_gzipped() {
    let sizes = gzipped_size(&built_page());
    let mut total = 0;
    for (name, raw, packed) in &sizes {
        eprintln!("{name}: {raw} bytes, {packed} gzip");
        total += packed;
    }
    eprintln!(
        "page total: {total} bytes gzip ({:.1} KiB of a {} KiB budget)",
        total as f64 / 1024.0,
        SIZE_BUDGET / 1024
    );
    assert!(sizes.iter().any(|(name, _, _)| name.ends_with(".wasm")));
    assert!(total <= SIZE_BUDGET, "{total} bytes gzip is over budget");
}

#[tokio::test]
async fn with_its_csp_in_force_the_page_reaches_only_its_bridges() {
    let System {
        server,
        target,
        bridge,
    } = system_with(&[]).await;
    // A second bridge, named with ?ws=, that lets in pages from the first.
    let page_origin = format!("http://{}", bridge.addr);
    let other = bridge_to(target, &["--allow-origin", page_origin.as_str()]).await;
    let browser = Browser::start(1000, 800).await;
    let url = format!("{}?ws=ws://{}/ws", page_url(bridge.addr), other.addr);
    browser.goto(&url).await;
    let status = browser.wait_connected().await;
    assert_eq!(status, format!("Conectado a ws://{}/ws", other.addr));
    browser.type_message("Hola\u{E007}").await;
    browser.wait_answer("HOLA").await;
    // Any other address is refused by the page's own policy, before a
    // byte leaves the browser.
    let refused = browser
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             document.addEventListener('securitypolicyviolation', \
               (e) => done(e.effectiveDirective + ' ' + e.blockedURI), { once: true }); \
             new WebSocket('ws://127.0.0.1:9/ws');",
            vec![],
        )
        .await;
    assert_eq!(
        refused.as_str(),
        Some("connect-src ws://127.0.0.1:9/ws"),
        "{refused:?}"
    );
    // The refusal above is the only complaint: nothing the page itself
    // does breaks its policy. (That it is seen shows the console is read.)
    let errors = browser.console_errors().await;
    assert!(
        errors
            .iter()
            .any(|error| error.contains("ws://127.0.0.1:9/ws")),
        "the refusal is not among the console's errors: {errors:#?}"
    );
    let others: Vec<&String> = errors
        .iter()
        .filter(|error| !error.contains("ws://127.0.0.1:9/ws"))
        .collect();
    assert!(others.is_empty(), "errors in the console: {errors:#?}");
    browser.close().await;
    drop(server);
}
