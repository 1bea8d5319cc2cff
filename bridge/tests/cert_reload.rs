//! A renewed `--tls-cert/--tls-key` pair is taken without a restart: new
//! handshakes get it, open sessions go on, a bad pair keeps the old one.
//!
//! The bridge runs in this process (`bridge::serve` with the files watched
//! every 50 ms) for the behaviour; the binary only for what belongs to the
//! process: SIGHUP reloads, and no longer stops it. Clients are rustls
//! clients pinned to one certificate: the handshake succeeds only if that
//! certificate is served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bridge::tls::reload::{ReloadTrigger, Reloads, WatchedPair};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use testkit::{bridge_at, metrics_addr, scrape, scrape_until, within, PATIENCE};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often the in-process bridges read their files.
const POLL: Duration = Duration::from_millis(50);

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A self-signed certificate for `localhost` and its key, as PEM, and the
/// certificate as DER to pin clients to.
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pair {
    fn new() -> Pair {
        let made = rcgen::generate_simple_self_signed(vec![String::from("localhost")]).unwrap();
        Pair {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
            der: made.cert.der().clone(),
        }
    }
}

/// A test's own folder holding `cert.pem` and `key.pem`, removed when
/// dropped.
struct Folder(PathBuf);

impl Folder {
    fn new(test: &str) -> Folder {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tema12-reload-{}-{test}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Folder(path)
    }

    fn cert(&self) -> PathBuf {
        self.0.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.0.join("key.pem")
    }

    /// Rewrites both files in place, the key first (as a tool that
    /// renews in place may).
    fn write(&self, cert: &str, key: &str) {
        std::fs::write(self.key(), key).unwrap();
        std::fs::write(self.cert(), cert).unwrap();
    }

    fn write_pair(&self, pair: &Pair) {
        self.write(&pair.cert_pem, &pair.key_pem);
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `servidor` running in this process on a free port, quiet.
async fn servidor_in_process() -> SocketAddr {
    let listener = netkit::listen::bind("127.0.0.1", 0).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = servidor::Config::default();
    tokio::spawn(servidor::serve(listener, config, CancellationToken::new()));
    addr
}

/// A TLS bridge in this process serving the pair in `folder`, reading it
/// again every `every`. Stopped when dropped.
struct TlsBridge {
    addr: SocketAddr,
    reloads: watch::Receiver<Reloads>,
    trigger: ReloadTrigger,
    _stop: DropGuard,
}

impl TlsBridge {
    async fn start(folder: &Folder, every: Duration) -> TlsBridge {
        let target = servidor_in_process().await;
        let watched = WatchedPair::load(&folder.cert(), &folder.key(), every).unwrap();
        let reloads = watched.reloads();
        let trigger = watched.trigger();
        let mut config = bridge::Config::for_target(target.to_string());
        config.tls = Some(watched.acceptor().unwrap());
        let listener = netkit::listen::bind("127.0.0.1", 0).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(watched.watch(Arc::default(), stop.clone()));
        tokio::spawn(bridge::serve(listener, config, stop.clone()));
        TlsBridge {
            addr,
            reloads,
            trigger,
            _stop: stop.drop_guard(),
        }
    }

    /// Waits until the watcher's counts satisfy `done`.
    async fn wait_reloads(&mut self, what: &str, done: impl Fn(&Reloads) -> bool) -> Reloads {
        let waited = within(PATIENCE, what, self.reloads.wait_for(|r| done(r))).await;
        *waited.expect("the watcher is running")
    }
}

/// A TLS handshake with `addr` trusting only the certificates `pinned`.
async fn handshake(
    addr: SocketAddr,
    pinned: &[&CertificateDer<'static>],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pinned {
        roots.add((*cert).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let stream = within(PATIENCE, "connecting", TcpStream::connect(addr)).await?;
    let name = ServerName::try_from("localhost").unwrap();
    within(
        PATIENCE,
        "the TLS handshake",
        connector.connect(name, stream),
    )
    .await
}

/// Whether a handshake pinned to `pair` succeeds.
async fn serves(addr: SocketAddr, pair: &Pair) -> bool {
    handshake(addr, &[&pair.der]).await.is_ok()
}

/// A wss session over a handshake pinned to `pair`.
async fn session(addr: SocketAddr, pair: &Pair) -> Wss {
    let tls = handshake(addr, &[&pair.der]).await.expect("the handshake");
    testkit::websocket_over("wss://localhost/ws", tls)
        .await
        .expect("the upgrade")
}

/// Sends a line and reads its answer.
async fn round_trip(ws: &mut Wss, text: &str) -> String {
    ws.send(Message::text(format!("{text}\n"))).await.unwrap();
    let mut answer = String::new();
    while !answer.ends_with('\n') {
        match within(PATIENCE, "the answer", ws.next()).await {
            Some(Ok(Message::Text(part))) => answer.push_str(&part),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("{other:?} after {answer:?}"),
        }
    }
    answer
}

#[tokio::test]
async fn a_pair_rewritten_in_place_goes_to_new_handshakes_and_an_open_session_goes_on() {
    let (old, new) = (Pair::new(), Pair::new());
    let folder = Folder::new("in-place");
    folder.write_pair(&old);
    let mut bridge = TlsBridge::start(&folder, POLL).await;
    let mut open = session(bridge.addr, &old).await;
    assert_eq!(round_trip(&mut open, "hola").await, "HOLA\n");
    assert!(!serves(bridge.addr, &new).await);

    folder.write_pair(&new);
    bridge.wait_reloads("the new pair", |r| r.loaded == 1).await;
    assert!(serves(bridge.addr, &new).await);
    assert!(!serves(bridge.addr, &old).await);
    let mut fresh = session(bridge.addr, &new).await;
    assert_eq!(round_trip(&mut fresh, "nueva").await, "NUEVA\n");
    // The session opened under the old certificate is untouched.
    assert_eq!(round_trip(&mut open, "sigo").await, "SIGO\n");
}

#[tokio::test]
async fn a_certbot_style_symlink_swap_is_noticed() {
    let (old, new) = (Pair::new(), Pair::new());
    let folder = Folder::new("symlinks");
    // certbot: live/*.pem are symlinks into archive/, pointed at the new
    // files on renewal (each by an atomic rename of a new symlink).
    let archive = folder.0.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let write = |name: &str, text: &str| {
        let path = archive.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let point = |link: &Path, at: &Path| {
        let fresh = link.with_extension("new");
        std::os::unix::fs::symlink(at, &fresh).unwrap();
        std::fs::rename(&fresh, link).unwrap();
    };
    point(&folder.cert(), &write("cert1.pem", &old.cert_pem));
    point(&folder.key(), &write("privkey1.pem", &old.key_pem));
    let mut bridge = TlsBridge::start(&folder, POLL).await;
    let mut open = session(bridge.addr, &old).await;

    let cert2 = write("cert2.pem", &new.cert_pem);
    let key2 = write("privkey2.pem", &new.key_pem);
    point(&folder.cert(), &cert2);
    point(&folder.key(), &key2);
    bridge.wait_reloads("the new pair", |r| r.loaded == 1).await;
    assert!(serves(bridge.addr, &new).await);
    assert!(!serves(bridge.addr, &old).await);
    assert_eq!(round_trip(&mut open, "sigo").await, "SIGO\n");
}

#[tokio::test]
async fn a_broken_file_or_a_key_that_is_not_the_certificates_keeps_the_old_pair() {
    let (old, new) = (Pair::new(), Pair::new());
    let folder = Folder::new("broken");
    folder.write_pair(&old);
    let mut bridge = TlsBridge::start(&folder, POLL).await;
    let mut open = session(bridge.addr, &old).await;

    let bad = [
        // Not PEM at all.
        (
            String::from("esto no es un certificado"),
            old.key_pem.clone(),
        ),
        // No certificate in it.
        (String::new(), old.key_pem.clone()),
        // The new certificate with the old key.
        (new.cert_pem.clone(), old.key_pem.clone()),
        // A key that is not PEM.
        (
            new.cert_pem.clone(),
            String::from("-----BEGIN PRIVATE KEY-----\nxx"),
        ),
    ];
    for (rejected, (cert, key)) in bad.iter().enumerate() {
        folder.write(cert, key);
        let reloads = bridge
            .wait_reloads("the bad pair reported", |r| {
                r.rejected == rejected as u64 + 1
            })
            .await;
        assert_eq!(reloads.loaded, 0);
        assert!(serves(bridge.addr, &old).await, "after bad pair {rejected}");
        assert!(!serves(bridge.addr, &new).await);
    }
    // A bad pair is reported once, not at every poll.
    let seen = bridge.reloads.borrow().checks;
    bridge
        .wait_reloads("more polls", |r| r.checks >= seen + 4)
        .await;
    assert_eq!(bridge.reloads.borrow().rejected, bad.len() as u64);

    folder.write_pair(&new);
    bridge
        .wait_reloads("the good pair", |r| r.loaded == 1)
        .await;
    assert!(serves(bridge.addr, &new).await);
    assert_eq!(round_trip(&mut open, "sigo").await, "SIGO\n");
}

#[tokio::test]
async fn asked_to_reload_it_reads_the_files_at_once() {
    let (old, new) = (Pair::new(), Pair::new());
    let folder = Folder::new("asked");
    folder.write_pair(&old);
    // No poll within the test: only the request can find the new pair.
    let mut bridge = TlsBridge::start(&folder, Duration::from_secs(3600)).await;
    bridge.trigger.reload();
    let reloads = bridge.wait_reloads("a read", |r| r.checks == 1).await;
    assert_eq!((reloads.loaded, reloads.rejected), (0, 0));

    // Asked, a bad pair is reported at once, and again if asked again.
    folder.write(&new.cert_pem, &old.key_pem);
    bridge.trigger.reload();
    bridge
        .wait_reloads("the refusal", |r| r.rejected == 1)
        .await;
    bridge.trigger.reload();
    bridge
        .wait_reloads("the refusal again", |r| r.rejected == 2)
        .await;
    assert!(serves(bridge.addr, &old).await);

    folder.write_pair(&new);
    bridge.trigger.reload();
    bridge.wait_reloads("the new pair", |r| r.loaded == 1).await;
    assert!(serves(bridge.addr, &new).await);
}

/// Swaps of the pair while handshakes go on.
const ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_racing_swaps_each_get_one_whole_pair() {
    let pairs = [Pair::new(), Pair::new()];
    let folder = Folder::new("race");
    folder.write_pair(&pairs[0]);
    let mut bridge = TlsBridge::start(&folder, POLL).await;
    let mut open = session(bridge.addr, &pairs[0]).await;

    let ders: Vec<CertificateDer<'static>> = pairs.iter().map(|p| p.der.clone()).collect();
    let addr = bridge.addr;
    let stop = CancellationToken::new();
    let handshaking = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut done = 0;
            while !stop.is_cancelled() {
                let tls = handshake(addr, &[&ders[0], &ders[1]])
                    .await
                    .expect("every handshake succeeds");
                let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
                assert!(ders.contains(&served), "a certificate of neither pair");
                done += 1;
            }
            done
        }
    });
    for round in 1..=ROUNDS {
        folder.write_pair(&pairs[round % 2]);
        bridge
            .wait_reloads("the swap", |r| r.loaded == round as u64)
            .await;
        assert!(
            serves(bridge.addr, &pairs[round % 2]).await,
            "round {round}"
        );
    }
    stop.cancel();
    let done = within(PATIENCE, "the handshakes", handshaking)
        .await
        .expect("the handshakes' task");
    eprintln!("{done} handshakes during {ROUNDS} swaps");
    assert!(done >= ROUNDS, "{done} handshakes");
    assert_eq!(round_trip(&mut open, "sigo").await, "SIGO\n");
}

#[tokio::test]
async fn sighup_reloads_the_pair_and_does_not_stop_the_bridge() {
    let (old, new) = (Pair::new(), Pair::new());
    let folder = Folder::new("sighup");
    folder.write_pair(&old);
    let target = servidor_in_process().await;
    let (cert, key) = (folder.cert(), folder.key());
    let mut bridge = bridge_at(
        env!("CARGO_BIN_EXE_bridge"),
        target,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            // Only SIGHUP can find the new pair within the test.
            "--tls-check-interval",
            "3600",
            "--metrics",
            "127.0.0.1:0",
        ],
    )
    .await;
    let metrics = metrics_addr(&bridge).await;
    let mut open = session(bridge.addr, &old).await;
    assert_eq!(round_trip(&mut open, "hola").await, "HOLA\n");

    // A key that is not the certificate's: refused, logged, counted.
    folder.write(&new.cert_pem, &old.key_pem);
    bridge.signal("HUP");
    bridge
        .wait_for_log(&format!(
            "aviso: la clave {} no es la del certificado {}: se sigue sirviendo el certificado anterior",
            key.display(),
            cert.display()
        ))
        .await;
    let rejected = [("result", "rejected")];
    scrape_until(metrics, "the rejected pair", |s| {
        s.value("bridge_tls_certificate_reloads_total", &rejected) == 1.0
    })
    .await;
    assert!(serves(bridge.addr, &old).await);

    folder.write_pair(&new);
    bridge.signal("HUP");
    bridge
        .wait_for_log(&format!("certificado nuevo de {} (SIGHUP)", cert.display()))
        .await;
    assert!(serves(bridge.addr, &new).await);
    assert!(!serves(bridge.addr, &old).await);
    let scraped = scrape(metrics).await;
    let loaded = [("result", "loaded")];
    assert_eq!(
        scraped.value("bridge_tls_certificate_reloads_total", &loaded),
        1.0
    );
    assert_eq!(round_trip(&mut open, "sigo").await, "SIGO\n");
    assert!(
        bridge.child.try_wait().unwrap().is_none(),
        "the bridge exited"
    );
}

#[tokio::test]
async fn without_tls_sighup_is_noted_and_the_bridge_goes_on() {
    let target = servidor_in_process().await;
    let mut bridge = bridge_at(env!("CARGO_BIN_EXE_bridge"), target, &[]).await;
    bridge.signal("HUP");
    bridge
        .wait_for_log("SIGHUP: sin --tls-cert no hay nada que recargar; el puente sigue")
        .await;
    let mut ws = testkit::websocket(bridge.addr).await;
    ws.send(Message::text("hola\n")).await.unwrap();
    let answer = within(PATIENCE, "the answer", ws.next()).await;
    assert!(
        matches!(&answer, Some(Ok(Message::Text(text))) if text.as_str() == "HOLA\n"),
        "{answer:?}"
    );
    assert!(
        bridge.child.try_wait().unwrap().is_none(),
        "the bridge exited"
    );
}
