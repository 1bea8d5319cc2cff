//! The TLS variants of the reference deployments, `deploy/haproxy-tls.cfg`
//! and `deploy/nginx-tls.conf`, run as they are: the balancer ends TLS with
//! a self-signed certificate made here for `demo.example`, and speaks plain
//! HTTP to two bridges (serving the page) and TCP to two `servidor`s, all
//! on free loopback ports.
//!
//! The real page in headless Chromium (told to accept the certificate, and
//! to find `demo.example` at 127.0.0.1) loads from
//! `https://demo.example:PORT/`, connects over `wss://` and gets `HOLA`: the
//! bridges, trusting the balancer's `X-Forwarded-Proto`, take that https
//! origin as their own. A page of another origin still gets 403.
//!
//! As in `balancers.rs`, the balancers run unprivileged in the foreground
//! from a temporary folder holding their configuration, certificate, pid
//! and logs, and are killed at the end. Needs `scripts/setup --browser`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use testkit::*;

mod chromium;
mod loopback_recipe;
mod through_balancer;
use chromium::{Browser, Options};
use loopback_recipe::{hand_over, inherited_addresses, listening, recipe_flags, render};
use through_balancer::{scratch_dir, Balancer};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// The name the page is served under (Chromium maps it to 127.0.0.1).
const NAME: &str = "demo.example";

type Wss = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which balancer ends TLS.
#[derive(Clone, Copy)]
enum Kind {
    Haproxy,
    Nginx,
}

/// The self-signed certificate for [`NAME`] the balancer serves.
struct Certificate {
    cert_pem: String,
    key_pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl Certificate {
    fn new() -> Certificate {
        let made = rcgen::generate_simple_self_signed(vec![String::from(NAME)]).unwrap();
        Certificate {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
            der: made.cert.der().clone(),
        }
    }
}

/// The whole deployment: two servidores, two bridges serving the page, one
/// balancer ending TLS.
struct System {
    _servidores: Vec<Running>,
    bridges: Vec<Running>,
    /// Where browsers connect (https).
    web: SocketAddr,
    certificate: Certificate,
    balancer: Balancer,
}

async fn system(kind: Kind) -> System {
    let dist = built_page();
    let env = [("RUST_LOG", "info")];
    // The balancer's two sockets, bound here and handed over (fd 3 and 4).
    let (web_listener, web) = listening();
    let (tcp_listener, tcp) = listening();
    let tcp = tcp.to_string();
    let recipe = [
        ("TCP_ADDR", tcp.clone()),
        ("WEB_DIR", dist.display().to_string()),
    ];
    // The start lines of deploy/loopback.env, on port 0.
    let servidor_flags = recipe_flags(&recipe, "SERVIDOR_FLAGS");
    let mut servidores = Vec::new();
    for _ in 0..2 {
        let mut args = vec!["--port", "0"];
        args.extend(servidor_flags.iter().map(String::as_str));
        servidores.push(Running::start(servidor_exe(), &args, &env).await);
    }
    let bridge_flags = recipe_flags(&recipe, "BRIDGE_FLAGS");
    let mut bridges = Vec::new();
    for _ in 0..2 {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend(bridge_flags.iter().map(String::as_str));
        bridges.push(Running::start(bridge_exe(), &args, &env).await);
    }
    let (dir, file, program) = match kind {
        Kind::Haproxy => (scratch_dir("haproxy-tls"), "haproxy-tls.cfg", "haproxy"),
        Kind::Nginx => (scratch_dir("nginx-tls"), "nginx-tls.conf", "nginx"),
    };
    let certificate = Certificate::new();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cert = write("fullchain.pem", &certificate.cert_pem);
    let key = write("privkey.pem", &certificate.key_pem);
    // HAProxy's one file: the chain, then the key.
    let pem = write(
        "haproxy.pem",
        &format!("{}{}", certificate.cert_pem, certificate.key_pem),
    );
    let values = [
        ("WEB_ADDR", web.to_string()),
        ("TCP_ADDR", tcp.clone()),
        ("BRIDGE_1", bridges[0].addr.to_string()),
        ("BRIDGE_2", bridges[1].addr.to_string()),
        ("SERVIDOR_1", servidores[0].addr.to_string()),
        ("SERVIDOR_2", servidores[1].addr.to_string()),
        ("PREFIX", dir.display().to_string()),
        ("TLS_CERT", cert),
        ("TLS_KEY", key),
        ("TLS_PEM", pem),
    ];
    // deploy/render: the envsubst command of the recipe.
    let values: Vec<_> = values
        .into_iter()
        .chain(inherited_addresses(matches!(kind, Kind::Haproxy)))
        .collect();
    let config_path = render(file, &values);
    let args: Vec<String> = match kind {
        Kind::Haproxy => vec![String::from("-db"), String::from("-f")],
        Kind::Nginx => vec![
            String::from("-p"),
            dir.display().to_string(),
            String::from("-g"),
            String::from("daemon off;"),
            String::from("-c"),
        ],
    };
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut command = Command::new(program);
    hand_over(&mut command, &web_listener, &tcp_listener);
    let child = command
        .args(&args)
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group, so that its workers can be stopped with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
    let system = System {
        _servidores: servidores,
        bridges,
        web,
        certificate,
        balancer: Balancer { child, dir },
    };
    system.wait_until_serving().await;
    // Held until now: see hand_over.
    drop((web_listener, tcp_listener));
    system
}

impl System {
    /// The page's own origin, as the browser has it.
    fn origin(&self) -> String {
        format!("https://{NAME}:{}", self.web.port())
    }

    /// A wss session through the balancer (trusting only its certificate)
    /// as a page from `origin` opens it: the session, or why not.
    async fn session(&self, origin: &str) -> Result<Wss, WsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.certificate.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut request = format!("wss://{NAME}:{}/ws", self.web.port())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        let stream = TcpStream::connect(self.web).await?;
        tokio_tungstenite::client_async_tls_with_config(
            request,
            stream,
            None,
            Some(Connector::Rustls(Arc::new(tls))),
        )
        .await
        .map(|(ws, _)| ws)
    }

    /// Waits until a session from the page's origin through the balancer
    /// gets its answer.
    async fn wait_until_serving(&self) {
        let started = Instant::now();
        loop {
            let origin = self.origin();
            let attempt = tokio::time::timeout(Duration::from_secs(2), async {
                let mut ws = self.session(&origin).await.map_err(|e| e.to_string())?;
                round_trip(&mut ws, "listo").await
            })
            .await;
            match attempt {
                Ok(Ok(answer)) => {
                    assert_eq!(answer, "LISTO\n");
                    return;
                }
                Ok(Err(error)) if started.elapsed() >= PATIENCE => {
                    panic!(
                        "the balancer never served ({error}); its log:\n{}",
                        self.log()
                    )
                }
                _ => assert!(
                    started.elapsed() < PATIENCE,
                    "the balancer never served; its log:\n{}",
                    self.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The balancer's logs.
    fn log(&self) -> String {
        ["stderr.log", "error.log"]
            .iter()
            .map(|file| std::fs::read_to_string(self.balancer.dir.join(file)).unwrap_or_default())
            .collect()
    }
}

/// Sends `text` as a line and reads its whole answer.
async fn round_trip(ws: &mut Wss, text: &str) -> Result<String, String> {
    ws.send(Message::text(format!("{text}\n")))
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    while !answer.ends_with('\n') {
        match ws.next().await {
            Some(Ok(Message::Text(part))) => answer.push_str(&part),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => return Err(format!("{other:?} after {answer:?}")),
        }
    }
    Ok(answer)
}

/// The page from `https://demo.example:PORT/` through the balancer gets
/// HOLA over wss://; a foreign page's upgrade gets 403 there.
async fn the_page_says_hola_over_wss_through(kind: Kind) {
    let mut system = system(kind).await;
    // Accepts the test's certificate and finds [`NAME`] at 127.0.0.1.
    let browser = Browser::launch_with(
        1000,
        800,
        Options {
            extra_args: vec![
                "--ignore-certificate-errors".to_string(),
                format!("--host-resolver-rules=MAP {NAME} 127.0.0.1"),
            ],
            home: None,
        },
    )
    .await;
    let page = format!("{}/", system.origin());
    browser.goto(&page).await;
    let status = browser.wait_connected().await;
    assert_eq!(
        status,
        format!("Conectado a wss://{NAME}:{}/ws", system.web.port())
    );
    browser.type_message("Hola\u{E007}").await;
    browser.wait_answer("HOLA").await;
    browser.close().await;

    for foreign in [
        "https://evil.example",
        // The page's name in plain http is another origin.
        &format!("http://{NAME}:{}", system.web.port()),
    ] {
        match system.session(foreign).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 403, "{foreign}"),
            Err(other) => panic!("{foreign}: {other} instead of 403"),
            Ok(_) => panic!("{foreign}: a foreign page was let in"),
        }
    }
    // Read whole, once the bridges have stopped: no line still in a pipe.
    for bridge in &mut system.bridges {
        let _ = bridge.child.start_kill();
        bridge.wait_exit(PATIENCE).await;
        bridge.wait_output_end().await;
    }
    let logs: String = system.bridges.iter().map(Running::log).collect();
    // Through the balancer, from the browser at 127.0.0.1.
    assert!(logs.contains("sesión abierta desde 127.0.0.1"), "{logs}");
    assert!(
        logs.contains("origen rechazado: https://evil.example"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_ending_tls_the_page_gets_hola_over_wss_and_foreign_pages_403() {
    the_page_says_hola_over_wss_through(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_haproxy_ending_tls_the_page_gets_hola_over_wss_and_foreign_pages_403() {
    the_page_says_hola_over_wss_through(Kind::Haproxy).await;
}
