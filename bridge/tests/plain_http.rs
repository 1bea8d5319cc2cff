//! `http://` to the bridge's TLS port, in-process: answered with the
//! https address to use, and logged at `info` once a minute per client
//! address; TLS clients are served as before.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// What was logged, as the transcript writes it.
#[derive(Clone, Default)]
struct Transcript(Arc<Mutex<Vec<u8>>>);

impl io::Write for Transcript {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transcript {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A bridge serving TLS for `localhost` with a new self-signed
/// certificate; its address and the certificate.
async fn tls_bridge() -> (SocketAddr, CertificateDer<'static>, CancellationToken) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut config = bridge::Config::for_target("127.0.0.1:9");
    config.tls = Some(TlsAcceptor::from(Arc::new(server)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(bridge::serve(listener, config, shutdown.clone()));
    (address, cert, shutdown)
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `GET path` with `Host: host` and reads the whole answer.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, host: &str, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Captures the bridge's `info` lines while the guard lives. Every test
/// here captures: tracing caches per call site whether anyone listens, and
/// tests that log with no subscriber of their own, in parallel threads, make
/// that cache race with the capturing ones.
fn capture() -> (Transcript, tracing::subscriber::DefaultGuard) {
    let transcript = Transcript::default();
    let writer = transcript.clone();
    let subscriber = console::transcript_subscriber("bridge=info", move || writer.clone());
    (transcript, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_answered_and_logged_once_per_client() {
    let (transcript, _logging) = capture();
    let (address, _, _shutdown) = tls_bridge().await;
    let host = format!("localhost:{}", address.port());

    let mut froms = Vec::new();
    for from in [
        "127.0.0.1",
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.1",
        "127.0.0.2",
    ] {
        let stream = connect_from(from, address).await;
        froms.push(stream.local_addr().unwrap());
        let answer = get(stream, &host, "/ws").await;
        assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
        assert!(
            answer.contains("\r\nupgrade: TLS/1.2, HTTP/1.1\r\n"),
            "{answer}"
        );
        assert!(
            answer.ends_with(&format!(
                "\r\n\r\neste puerto habla HTTPS: use https://{host}/ws\n"
            )),
            "{answer}"
        );
    }
    // Each answer is sent after its line was (or was not) logged.
    let line = |from: SocketAddr| {
        format!(
            "petición HTTP sin TLS desde {from} al puerto de HTTPS: use https://{host}/ws \
             (en este puerto el puente solo habla TLS)\n"
        )
    };
    assert_eq!(
        transcript.text(),
        format!("{}{}", line(froms[0]), line(froms[2]))
    );
}

#[tokio::test]
async fn tls_clients_are_served_as_before() {
    let _logging = capture();
    let (address, cert, _shutdown) = tls_bridge().await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(client));
    let stream = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = timeout(PATIENCE, connector.connect(name, stream))
        .await
        .unwrap()
        .unwrap();
    // Nothing listens on the target: the health check says so, over TLS.
    let answer = get(tls, "localhost", "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("no acepta conexiones"), "{answer}");
}

#[tokio::test]
async fn a_plain_websocket_upgrade_is_told_to_use_wss() {
    let _logging = capture();
    let (address, _, _shutdown) = tls_bridge().await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
                   Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    assert!(
        answer.ends_with("este puerto habla HTTPS: use wss://localhost/ws\n"),
        "{answer}"
    );
}
