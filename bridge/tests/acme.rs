//! Automatic HTTPS against a real ACME CA on loopback: Debian's `pebble`
//! (see [`pebble`]). The bridge runs in process on a listener bound first,
//! whose port is the one pebble validates TLS-ALPN-01 on.

mod pebble;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bridge::acme::{Acme, AcmeConfig, AcmePhase, AcmeStatus};
use bridge::metrics::{BridgeMetrics, CONNECT_BUCKETS, CONNECT_SECONDS};
use bridge::Config;
use futures_util::{SinkExt, StreamExt};
use netkit::metrics::Exporter;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use testkit::within;
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use pebble::{Folder, Pebble};

/// The name the certificate is for (challtestsrv resolves it to 127.0.0.1).
const DOMAIN: &str = "demo.example.org";

/// The longest an order may take against pebble (it validates at once
/// with `PEBBLE_VA_NOSLEEP`).
const ORDER_PATIENCE: Duration = Duration::from_secs(60);

/// The longest any other step may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// A TLS connection to the bridge for `DOMAIN`, trusting only `root`:
/// it succeeds only if the chain served verifies for the name.
async fn tls_to(addr: SocketAddr, root: &CertificateDer<'static>) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    within(PATIENCE, "a TLS handshake with the bridge", async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connector
            .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
            .await
            .expect("the served chain verifies against pebble's root for the name")
    })
    .await
}

/// The leaf the bridge serves now (verified against `root`).
async fn served_leaf(addr: SocketAddr, root: &CertificateDer<'static>) -> Vec<u8> {
    let tls = tls_to(addr, root).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A wss session with the bridge.
async fn session(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
) -> WebSocketStream<TlsStream<TcpStream>> {
    let tls = tls_to(addr, root).await;
    testkit::websocket_over(format!("wss://{DOMAIN}/ws"), tls)
        .await
        .unwrap()
}

/// Sends `line` and expects it back uppercased.
async fn round_trip(ws: &mut WebSocketStream<TlsStream<TcpStream>>, line: &str) {
    ws.send(Message::text(line)).await.unwrap();
    let answer = within(PATIENCE, "an answer", ws.next())
        .await
        .expect("the session is open")
        .unwrap();
    assert_eq!(answer, Message::text(line.to_uppercase()));
}

/// One run of the bridge: serving on a clone of the test's listener, the
/// ACME task started apart (so a session can be opened first).
struct Bridge {
    stop: CancellationToken,
    serving: JoinHandle<()>,
    status: watch::Receiver<AcmeStatus>,
    acme: Option<Acme>,
    exporter: Exporter,
}

impl Bridge {
    /// Builds the ACME side (a good cached certificate is served at once)
    /// and serves.
    fn start(listener: &std::net::TcpListener, target: SocketAddr, acme: AcmeConfig) -> Bridge {
        let exporter =
            Exporter::new("bridge", "test", &[(CONNECT_SECONDS, CONNECT_BUCKETS)]).unwrap();
        let metrics = Arc::new(exporter.register(BridgeMetrics::register));
        let acme = Acme::new(acme, Arc::clone(&metrics)).unwrap();
        let mut config = Config::for_target(target.to_string());
        config.tls = Some(acme.acceptor().unwrap());
        config.metrics = metrics;
        config.drain = Duration::from_millis(200);
        let listener = listener.try_clone().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let stop = CancellationToken::new();
        let serving = tokio::spawn(bridge::serve(listener, config, stop.clone()));
        Bridge {
            stop,
            serving,
            status: acme.status(),
            acme: Some(acme),
            exporter,
        }
    }

    /// Starts ordering and renewing.
    fn run_acme(&mut self) {
        let acme = self.acme.take().expect("ACME runs once");
        tokio::spawn(acme.run(self.stop.clone()));
    }

    /// Waits until the status satisfies `ready`.
    async fn until(&mut self, what: &str, limit: Duration, ready: impl Fn(&AcmeStatus) -> bool) {
        let mut watched = self.status.clone();
        let waited = tokio::time::timeout(limit, watched.wait_for(|status| ready(status))).await;
        let status = self.status.borrow().clone();
        assert!(
            waited.is_ok(),
            "timed out after {limit:?}: {what}; {status:?}"
        );
        assert!(ready(&status), "{status:?}");
    }

    fn metric(&self, line_start: &str) -> String {
        let text = self.exporter.render();
        text.lines()
            .find(|line| line.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
            .to_owned()
    }

    async fn stop(self) {
        self.stop.cancel();
        within(PATIENCE, "the bridge to stop", self.serving)
            .await
            .unwrap();
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

fn acme_config(pebble: &Pebble, cache: &Path, renew_within: Option<Duration>) -> AcmeConfig {
    AcmeConfig {
        domains: vec![String::from(DOMAIN)],
        email: Some(String::from("profe@example.org")),
        directory: pebble.directory.clone(),
        ca_cert: Some(pebble.api_ca.clone()),
        cache: cache.to_path_buf(),
        renew_within,
    }
}

/// Waiting for a renewal, with nothing ordered or failed.
fn waiting_idle(status: &AcmeStatus) -> bool {
    matches!(status.phase, AcmePhase::Waiting { .. }) && status.obtained == 0 && status.failed == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_pebble_is_served_kept_renewed_under_a_session_and_served_without_the_ca(
) {
    let folder = Folder::new("lifecycle");
    let cache = folder.0.join("cache");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let target = servidor().await;
    let pebble = Pebble::start(&folder, addr.port()).await;
    let root = CertificateDer::from_pem_slice(pebble.root.as_bytes())
        .unwrap()
        .into_owned();
    let day = Duration::from_secs(86_400);

    // 1. No cache: the bridge orders, answers the challenge on its own
    // port, and serves a chain that verifies for the name.
    let mut first = Bridge::start(&listener, target, acme_config(&pebble, &cache, None));
    first.run_acme();
    first
        .until("the first certificate", ORDER_PATIENCE, |status| {
            status.obtained == 1
        })
        .await;
    let issued = served_leaf(addr, &root).await;
    assert!(first
        .metric("bridge_acme_orders_total{kind=\"issue\",result=\"ok\"}")
        .ends_with(" 1"));
    let expiry: f64 = first
        .metric("bridge_acme_certificate_expiry_timestamp_seconds")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now + 30.0 * 86_400.0, "expiry {expiry}, now {now}");
    first.stop().await;

    // 2. A restart with the cache serves the same certificate before its
    // ACME task even starts, and orders nothing.
    let mut second = Bridge::start(&listener, target, acme_config(&pebble, &cache, None));
    assert_eq!(served_leaf(addr, &root).await, issued);
    second.run_acme();
    second
        .until("waiting for the renewal", PATIENCE, waiting_idle)
        .await;
    let AcmePhase::Waiting { until } = second.status.borrow().phase.clone() else {
        unreachable!()
    };
    // Pebble's certificates last 5 years: renewal in more than 3.
    assert!(until > SystemTime::now() + day * 365 * 3, "{until:?}");

    // 2b. A name whose port 443 reaches another server (here: this bridge,
    // which holds no challenge for it): the CA's validation fails, and the
    // log says what to check; the next try is a minute away.
    let stranger = Acme::new(
        AcmeConfig {
            domains: vec![String::from("otro.example.org")],
            ..acme_config(&pebble, &folder.0.join("cache-otro"), None)
        },
        Arc::default(),
    )
    .unwrap();
    let mut status = stranger.status();
    let stopping = CancellationToken::new();
    tokio::spawn(stranger.run(stopping.clone()));
    let failed = within(ORDER_PATIENCE, "the failed validation", async {
        status
            .wait_for(|status| {
                status.failed == 1 && matches!(status.phase, AcmePhase::Retrying { .. })
            })
            .await
            .unwrap()
            .clone()
    })
    .await;
    stopping.cancel();
    let explanation = failed.last_failure.unwrap();
    assert!(
        explanation.contains("otro.example.org")
            && explanation.contains("puerto 443")
            && explanation.contains("certificado provisional autofirmado"),
        "{explanation}"
    );
    let retry = SystemTime::now() + Duration::from_secs(50);
    assert!(
        matches!(failed.phase, AcmePhase::Retrying { until } if until > retry),
        "{:?}",
        failed.phase
    );
    second.stop().await;

    // 3. A forced renewal (--acme-renew-within longer than the life) swaps
    // the certificate under an open session, which goes on.
    let mut third = Bridge::start(
        &listener,
        target,
        acme_config(&pebble, &cache, Some(day * 365 * 10)),
    );
    let mut ws = session(addr, &root).await;
    round_trip(&mut ws, "hola\n").await;
    third.run_acme();
    third
        .until("the renewal", ORDER_PATIENCE, |status| status.obtained == 1)
        .await;
    let renewed = served_leaf(addr, &root).await;
    assert_ne!(renewed, issued, "new handshakes get the new certificate");
    round_trip(&mut ws, "sigo aquí\n").await;
    assert!(third
        .metric("bridge_acme_orders_total{kind=\"renewal\",result=\"ok\"}")
        .ends_with(" 1"));
    // Renewed, it waits instead of ordering again at once.
    third
        .until("waiting after the renewal", PATIENCE, |status| {
            matches!(status.phase, AcmePhase::Waiting { .. })
        })
        .await;
    ws.close(None).await.unwrap();
    third.stop().await;

    // 4. The CA gone: a restart serves the cached certificate, and a
    // renewal that cannot reach the CA is explained, counted and retried
    // later, while the bridge keeps serving.
    let forced = acme_config(&pebble, &cache, Some(day * 365 * 10));
    pebble.stop().await;
    let mut fourth = Bridge::start(&listener, target, forced.clone());
    assert_eq!(served_leaf(addr, &root).await, renewed);
    fourth.run_acme();
    fourth
        .until("the failed renewal", ORDER_PATIENCE, |status| {
            matches!(status.phase, AcmePhase::Retrying { .. })
        })
        .await;
    let explanation = fourth.status.borrow().last_failure.clone().unwrap();
    assert!(
        explanation.contains("no se pudo hablar con la CA")
            && explanation.contains("--acme-directory")
            && explanation.contains("se sigue sirviendo el certificado actual"),
        "{explanation}"
    );
    assert!(fourth
        .metric("bridge_acme_orders_total{kind=\"renewal\",result=\"failed\"}")
        .ends_with(" 1"));
    assert_eq!(served_leaf(addr, &root).await, renewed);
    let mut ws = session(addr, &root).await;
    round_trip(&mut ws, "sin la ca\n").await;
    fourth.stop().await;

    // 5. A restart does not retry sooner: the failure is in the cache.
    let mut fifth = Bridge::start(&listener, target, forced);
    fifth.run_acme();
    fifth
        .until("waiting to retry", PATIENCE, |status| {
            matches!(status.phase, AcmePhase::Retrying { until }
                if until > SystemTime::now() + Duration::from_secs(50))
                && status.failed == 0
        })
        .await;
    assert_eq!(served_leaf(addr, &root).await, renewed);
    fifth.stop().await;
}

/// The process: `--acme-domain` with a CA that cannot be reached starts,
/// explains in Spanish what failed and what to check, counts the failed
/// order in the metrics, and keeps running.
#[tokio::test]
async fn the_bridge_explains_a_ca_it_cannot_reach_and_keeps_running() {
    let folder = Folder::new("unreachable");
    // A port with nobody listening on it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let directory = format!("https://{closed}/dir");
    let cache = folder.0.join("cache");
    let bridge = testkit::Running::start(
        env!("CARGO_BIN_EXE_bridge"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--acme-domain",
            DOMAIN,
            "--acme-directory",
            &directory,
            "--acme-cache",
            cache.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    bridge
        .wait_for_log("HTTPS automático (ACME) para demo.example.org")
        .await;
    bridge
        .wait_for_log(
            "no se pudo obtener el certificado de demo.example.org: no se pudo hablar con la CA",
        )
        .await;
    let log = bridge.log();
    assert!(
        log.contains("Compruebe la conexión a internet") && log.contains("Se reintentará el"),
        "{log}"
    );
    let metrics = testkit::metrics_addr(&bridge).await;
    let scraped = testkit::scrape_until(metrics, "the failed order", |scrape| {
        scrape.value(
            "bridge_acme_orders_total",
            &[("kind", "issue"), ("result", "failed")],
        ) == 1.0
    })
    .await;
    testkit::promtool_check(&scraped.text);
    assert_eq!(
        scraped.value("bridge_acme_certificate_expiry_timestamp_seconds", &[]),
        0.0
    );
    // Until the CA's certificate, a self-signed one: /healthz still
    // answers a client that accepts it.
    let (leaf, answer) = healthz_accepting_any_certificate(bridge.addr).await;
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    assert_eq!(leaf.issuer(), leaf.subject(), "self-signed");
    let names = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(format!("{:?}", names.value).contains(DOMAIN));
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
}

/// Accepts whatever certificate the server shows: for the placeholder.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The leaf served to `DOMAIN` at `addr`, and the answer to
/// `GET /healthz` over that connection.
async fn healthz_accepting_any_certificate(addr: SocketAddr) -> (Vec<u8>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    within(PATIENCE, "GET /healthz over TLS", async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
            .await
            .unwrap();
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let request =
            format!("GET /healthz HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        (leaf, String::from_utf8_lossy(&answer).into_owned())
    })
    .await
}

/// `--acme-domain` excludes `--tls-cert`, in Spanish, with exit code 2.
#[tokio::test]
async fn acme_and_certificate_files_exclude_each_other() {
    let finished = within(
        PATIENCE,
        "the bridge to refuse its arguments",
        Command::new(env!("CARGO_BIN_EXE_bridge"))
            .args([
                "--acme-domain",
                DOMAIN,
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
            ])
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(finished.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(
        stderr.contains("--acme-domain <NOMBRE> no se puede usar junto con --tls-cert"),
        "{stderr}"
    );
}
