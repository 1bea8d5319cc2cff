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
use testkit::*;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use pebble::{Folder, Pebble};

mod chromium;
use chromium::{Browser, Options};

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

    // Trusts pebble's root through HOME's NSS database, and finds the
    // demo's name at 127.0.0.1.
    let browser = Browser::launch_with(
        1000,
        800,
        Options {
            extra_args: vec![format!("--host-resolver-rules=MAP {DOMAIN} 127.0.0.1")],
            home: Some(home.clone()),
        },
    )
    .await;
    browser.goto(&format!("https://{DOMAIN}:{port}/")).await;
    let connected = browser.wait_connected().await;
    assert_eq!(connected, format!("Conectado a wss://{DOMAIN}:{port}/ws"));
    browser.type_message("Hola").await;
    browser.click("enviar").await;
    browser.wait_answer("HOLA").await;
    browser.close().await;
    stop.cancel();
    pebble.stop().await;
}
