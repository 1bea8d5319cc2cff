//! Which certificate a TLS handshake gets when the bridge gets its own
//! from an ACME CA: the current certificate, swapped in place at renewal
//! (open sessions keep the one they started with), or, for a validation
//! hello of TLS-ALPN-01 (RFC 8737, ALPN `acme-tls/1`), the challenge
//! certificate of the name asked for.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// The ALPN protocol of TLS-ALPN-01 validation hellos.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// At most this many challenge certificates at once: one per name of an
/// order, and orders have a few names.
const MAX_CHALLENGES: usize = 100;

/// The certificates the bridge's TLS port serves with ACME.
#[derive(Default)]
pub struct AcmeResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// By the name (SNI) the CA validates.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for AcmeResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeResolver")
            .field("current", &self.current().is_some())
            .finish_non_exhaustive()
    }
}

impl AcmeResolver {
    /// Serves `certified` to every new handshake from now on; handshakes
    /// already done keep theirs.
    pub fn install(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(certified);
    }

    /// The certificate new handshakes get, if there is one yet.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Answers validation hellos for `name` with `certified` until
    /// [`Self::forget_challenge`]; `false` (and nothing kept) past
    /// [`MAX_CHALLENGES`].
    pub fn add_challenge(&self, name: &str, certified: Arc<CertifiedKey>) -> bool {
        let mut challenges = self
            .challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if challenges.len() >= MAX_CHALLENGES && !challenges.contains_key(name) {
            return false;
        }
        challenges.insert(name.to_ascii_lowercase(), certified);
        true
    }

    /// Stops answering validation hellos for `name`.
    pub fn forget_challenge(&self, name: &str) {
        self.challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name.to_ascii_lowercase());
    }

    /// A TLS acceptor serving from this resolver, speaking HTTP/1.1 and
    /// answering TLS-ALPN-01 validation hellos.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        // rustls picks the first of ours the client offers: browsers get
        // http/1.1; the CA's validator offers acme-tls/1 alone.
        config.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation = hello
            .alpn()
            .is_some_and(|mut offered| offered.all(|protocol| protocol == ACME_TLS_ALPN));
        if validation {
            // RFC 8737 §3: the validator names the domain in SNI and the
            // answer is that name's challenge certificate, never the
            // regular one.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&name)
                .cloned();
        }
        self.current()
    }
}
