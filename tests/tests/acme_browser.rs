//! The remote demo with automatic HTTPS, as a visitor sees it: a bridge
//! that got its certificate from pebble (a real ACME CA on loopback) by
//! itself, and a headless Chromium that trusts pebble's root (put into
//! its NSS database with `certutil`, as an operator would) and maps the
//! demo's name to 127.0.0.1, loading the page over https and getting HOLA
//! over wss. Needs `scripts/setup --browser`.

#[path = "../../bridge/tests/pebble/mod.rs"]
mod pebble;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bridge::acme::{Acme, AcmeConfig};
use bridge::Config;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use testkit::*;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use pebble::{Folder, Pebble};

/// The demo's name.
const DOMAIN: &str = "demo.example.org";

/// Runs `program args…` to completion, failing the test if it fails.
async fn run(program: &str, args: &[&str], home: &Path) {
    let output = within(
        PATIENCE,
        program,
        Command::new(program)
            .args(args)
            .env("HOME", home)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap_or_else(|error| panic!("{program} no arranca ({error}): ¿scripts/setup --browser?"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A port free a moment ago (chromedriver cannot be told to pick one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap()
}

/// Headless Chromium under chromedriver with `home` as its HOME (so its
/// NSS database is `home/.pki/nssdb`) and `DOMAIN` mapped to 127.0.0.1.
async fn chromium(folder: &Folder, home: &Path) -> (Client, tokio::process::Child) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .env("HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver: run scripts/setup --browser first");
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic",
                format!("--host-resolver-rules=MAP {DOMAIN} 127.0.0.1"),
                format!("--user-data-dir={}", folder.0.join("chromium").display()),
            ]
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let url = format!("http://127.0.0.1:{port}");
    let client = within(PATIENCE, "chromedriver and chromium", async {
        loop {
            let attempt = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            match attempt {
                Ok(client) => return client,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    (client, driver)
}

/// Waits until element `id`'s text satisfies `test`; returns it.
async fn wait_text(client: &Client, id: &str, test: impl Fn(&str) -> bool) -> String {
    let text_of = || async {
        match client.find(Locator::Id(id)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    let waiting = async {
        loop {
            let text = text_of().await;
            if test(&text) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    match tokio::time::timeout(PATIENCE, waiting).await {
        Ok(text) => text,
        Err(_) => panic!("#{id} shows {:?}", text_of().await),
    }
}

/// A `servidor` in this process.
async fn servidor() -> SocketAddr {
    let listener = netkit::listen::bind("127.0.0.1", 0).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(servidor::serve(
        listener,
        servidor::Config::default(),
        CancellationToken::new(),
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_trusting_the_ca_loads_the_page_over_https_and_gets_hola() {
    let dist = built_page();
    let folder = Folder::new("browser");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = servidor().await;
    let pebble = Pebble::start(&folder, port).await;

    let acme = Acme::new(
        AcmeConfig {
            domains: vec![String::from(DOMAIN)],
            email: None,
            directory: pebble.directory.clone(),
            ca_cert: Some(pebble.api_ca.clone()),
            cache: folder.0.join("cache"),
            renew_within: None,
        },
        Arc::default(),
    )
    .unwrap();
    let mut status = acme.status();
    let mut config = Config::for_target(target.to_string());
    config.web = Some(dist);
    config.tls = Some(acme.acceptor().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(bridge::serve(listener, config, stop.clone()));
    tokio::spawn(acme.run(stop.clone()));
    within(
        Duration::from_secs(60),
        "the certificate",
        status.wait_for(|status| status.obtained == 1),
    )
    .await
    .unwrap();

    // The operator's step: trust the CA's root in the user's NSS database.
    let home = folder.0.join("home");
    let nssdb = home.join(".pki").join("nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let database = format!("sql:{}", nssdb.display());
    let root = folder.write("pebble-root.pem", &pebble.root);
    run(
        "certutil",
        &["-N", "-d", &database, "--empty-password"],
        &home,
    )
    .await;
    run(
        "certutil",
        &[
            "-A",
            "-d",
            &database,
            "-n",
            "pebble",
            "-t",
            "C,,",
            "-i",
            root.to_str().unwrap(),
        ],
        &home,
    )
    .await;

    let (client, _driver) = chromium(&folder, &home).await;
    client
        .goto(&format!("https://{DOMAIN}:{port}/"))
        .await
        .unwrap();
    let connected = wait_text(&client, "estado", |text| text.starts_with("Conectado a")).await;
    assert_eq!(connected, format!("Conectado a wss://{DOMAIN}:{port}/ws"));
    let input = client.find(Locator::Id("mensaje")).await.unwrap();
    input.send_keys("Hola").await.unwrap();
    client
        .find(Locator::Id("enviar"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "registro", |text| {
        text.contains("Recibido del servidor: HOLA")
    })
    .await;
    client.close().await.unwrap();
    stop.cancel();
    pebble.stop().await;
}
