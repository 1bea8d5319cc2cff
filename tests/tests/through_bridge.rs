//! The whole chain with the real binaries: `cliente --url` → `bridge` →
//! `servidor`, over ws:// and wss://.

use std::path::PathBuf;

use testkit::*;

#[tokio::test]
async fn cliente_url_talks_through_the_bridge() {
    let server = servidor(&[], &[]).await;
    let bridge = bridge_to(server.addr, &[]).await;
    let url = format!("ws://{}/ws", bridge.addr);
    let run = run_with_input(
        cliente_exe(),
        &["--url", &url],
        "Hola\nñandú straße\nq\n".as_bytes(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        " -> Recibido del servidor: HOLA\n -> Recibido del servidor: ÑANDÚ STRASSE\n -> "
    );
    server.wait_for_log("enviando: ÑANDÚ STRASSE").await;
    bridge.wait_for_log("sesión cerrada").await;
}

#[tokio::test]
async fn cliente_url_reports_the_bridges_reason_when_the_server_is_down() {
    // servidor is down: its port is held, refusing connections.
    let server = HeldPort::new();
    let bridge = bridge_to(server.addr(), &[]).await;

    let url = format!("ws://{}/ws", bridge.addr);
    let run = run_with_input(cliente_exe(), &["--url", &url], b"Hola\nq\n").await;
    assert_eq!(run.status.code(), Some(1), "{}", run.stdout);
    let expected = format!(
        "error: el puente cerró la sesión: 1011 no se pudo conectar con el servidor {}",
        server.addr()
    );
    assert!(run.stderr.starts_with(&expected), "{}", run.stderr);
}

/// A folder of one test's own for its certificates (tests run at once),
/// removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new(test: &str) -> Folder {
        let path = std::env::temp_dir().join(format!("tema12-tls-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Folder(path)
    }

    /// Writes `file` and returns its path, as an argument.
    fn write(&self, file: &str, contents: &str) -> String {
        let path = self.0.join(file);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate for `localhost` as the usual one-liner makes it,
/// `openssl req -x509 -newkey rsa:2048 -nodes … -subj /CN=localhost -addext
/// subjectAltName=DNS:localhost`: self-signed, and (OpenSSL 3) marked
/// `CA:TRUE`, which is what webpki refuses on a server.
///
/// Made with rcgen rather than by running openssl: the property under test
/// (`CA:TRUE` on the bridge's own certificate) is then stated here instead
/// of coming from whichever openssl and openssl.cnf the machine has (older
/// OpenSSL, LibreSSL on macOS, or none at all on a CI image).
fn one_liner_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(vec![String::from("localhost")]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
}

/// Whether a certificate says basicConstraints `CA:TRUE`, critical, in the
/// bytes the one-liner's has (OID 2.5.29.19, critical, `cA TRUE`): without
/// it the test below would pass through the plain webpki path, proving
/// nothing about pinning.
fn marked_ca(der: &[u8]) -> bool {
    const CA_TRUE: [u8; 15] = [
        0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x05, 0x30, 0x03, 0x01, 0x01, 0xff,
    ];
    der.windows(CA_TRUE.len()).any(|window| window == CA_TRUE)
}

/// `params` signed by their own new key: the certificate's and the key's
/// PEM files, written to `folder` as `{name}.pem` and `{name}.key`.
fn self_signed(folder: &Folder, name: &str, params: &rcgen::CertificateParams) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (
        folder.write(&format!("{name}.pem"), &cert.pem()),
        folder.write(&format!("{name}.key"), &key.serialize_pem()),
    )
}

/// A servidor, and a bridge in front of it serving TLS with `cert`/`key`.
async fn tls_bridge(cert: &str, key: &str) -> (Running, Running) {
    let server = servidor(&[], &[]).await;
    let bridge = bridge_to(server.addr, &["--tls-cert", cert, "--tls-key", key]).await;
    (server, bridge)
}

/// What `cliente --url url extra…` printed on standard error, having failed.
async fn cliente_fails(url: &str, extra: &[&str]) -> String {
    let mut args = vec!["--url", url];
    args.extend_from_slice(extra);
    let run = run_with_input(cliente_exe(), &args, b"Hola\nq\n").await;
    assert_eq!(run.status.code(), Some(1), "{}", run.stdout);
    run.stderr
}

#[tokio::test]
async fn cliente_url_talks_through_a_tls_bridge() {
    let folder = Folder::new("simple");
    let certified = rcgen::generate_simple_self_signed(vec![String::from("localhost")]).unwrap();
    let cert = folder.write("cert.pem", &certified.cert.pem());
    let key = folder.write("key.pem", &certified.signing_key.serialize_pem());
    let (_server, bridge) = tls_bridge(&cert, &key).await;
    let url = format!("wss://localhost:{}/ws", bridge.addr.port());

    // Without trusting the certificate: a clear refusal.
    assert_eq!(cliente_fails(&url, &[]).await, untrusted(&url));

    cliente_says_hola(&url, &cert).await;
}

/// What `cliente` says of `url` when it does not trust the certificate.
fn untrusted(url: &str) -> String {
    format!(
        "error: no se pudo abrir el WebSocket {url}: el certificado del puente no es de \
         confianza (no lo firma ninguna autoridad conocida); si es un certificado propio, \
         páselo con --ca-cert FICHERO\n"
    )
}

/// `cliente --url URL --ca-cert CERT` has the tutorial's conversation.
async fn cliente_says_hola(url: &str, cert: &str) {
    let run = run_with_input(
        cliente_exe(),
        &["--url", url, "--ca-cert", cert],
        b"Hola\nq\n",
    )
    .await;
    assert!(run.status.success(), "{url}: {}", run.stderr);
    assert_eq!(run.stdout, " -> Recibido del servidor: HOLA\n -> ");
}

#[tokio::test]
async fn the_one_liners_ca_certificate_is_accepted_as_pinned() {
    let folder = Folder::new("one-liner");
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = one_liner_params().self_signed(&key).unwrap();
    assert!(marked_ca(certificate.der()), "not the one-liner's kind");
    let cert = folder.write("cert.pem", &certificate.pem());
    let key = folder.write("key.pem", &key.serialize_pem());
    let (_server, bridge) = tls_bridge(&cert, &key).await;
    let port = bridge.addr.port();

    // The very certificate, by the name it gives and by address: the pin
    // is the identity, whatever names it lists.
    for url in [
        format!("wss://localhost:{port}/ws"),
        format!("wss://127.0.0.1:{port}/ws"),
    ] {
        cliente_says_hola(&url, &cert).await;
    }

    let url = format!("wss://localhost:{port}/ws");
    assert_eq!(cliente_fails(&url, &[]).await, untrusted(&url));

    // Another certificate just like it (the one from before the bridge got
    // a new one, say) is neither the bridge's nor its issuer.
    let (other, _) = self_signed(&folder, "other", &one_liner_params());
    assert_eq!(
        cliente_fails(&url, &["--ca-cert", &other]).await,
        format!(
            "error: no se pudo abrir el WebSocket {url}: el certificado del puente no es el de \
             {other} ni lo firma ninguno de sus certificados (¿usa el puente otro \
             certificado?)\n"
        )
    );
}

#[tokio::test]
async fn an_expired_pinned_certificate_is_refused_with_its_date() {
    let folder = Folder::new("expired");
    let mut params = one_liner_params();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 2);
    let (cert, key) = self_signed(&folder, "cert", &params);
    let (_server, bridge) = tls_bridge(&cert, &key).await;
    let url = format!("wss://localhost:{}/ws", bridge.addr.port());
    assert_eq!(
        cliente_fails(&url, &["--ca-cert", &cert]).await,
        format!(
            "error: no se pudo abrir el WebSocket {url}: el certificado del puente caducó el \
             2020-01-02 00:00 UTC: el puente necesita uno nuevo\n"
        )
    );
}

#[tokio::test]
async fn a_certificate_for_another_host_says_whose_it_is() {
    // An authority of our own, and a server certificate it signed for
    // another name: trusted, but not for this URL's host.
    let folder = Folder::new("other-host");
    let mut authority = rcgen::CertificateParams::new(Vec::new()).unwrap();
    authority
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Autoridad del Tema 12");
    authority.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let authority_key = rcgen::KeyPair::generate().unwrap();
    let authority_cert = authority.self_signed(&authority_key).unwrap();
    let ca = folder.write("ca.pem", &authority_cert.pem());
    let issuer = rcgen::Issuer::new(authority, authority_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![String::from("otra.example")])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let cert = folder.write("cert.pem", &leaf.pem());
    let key = folder.write("key.pem", &key.serialize_pem());

    let (_server, bridge) = tls_bridge(&cert, &key).await;
    let url = format!("wss://localhost:{}/ws", bridge.addr.port());
    assert_eq!(
        cliente_fails(&url, &["--ca-cert", &ca]).await,
        format!(
            "error: no se pudo abrir el WebSocket {url}: el certificado del puente es para \
             otra.example y no para localhost: use ese nombre en la URL o un certificado con \
             subjectAltName=DNS:localhost\n"
        )
    );
}

#[tokio::test]
async fn the_wrong_scheme_is_named_with_the_right_one() {
    let folder = Folder::new("scheme");
    let (cert, key) = self_signed(&folder, "cert", &one_liner_params());
    let (server, tls) = tls_bridge(&cert, &key).await;
    let plain = bridge_to(server.addr, &[]).await;

    let ws = format!("ws://{}/ws", tls.addr);
    assert_eq!(
        cliente_fails(&ws, &[]).await,
        format!(
            "error: el puente respondió con TLS: use wss://{}/ws en lugar de {ws}\n",
            tls.addr
        )
    );
    let wss = format!("wss://{}/ws", plain.addr);
    assert_eq!(
        cliente_fails(&wss, &["--ca-cert", &cert]).await,
        format!(
            "error: el puente respondió sin TLS: use ws://{}/ws en lugar de {wss}\n",
            plain.addr
        )
    );
}
