//! TLS for remote demos: https and wss with rustls, from PEM files.
//!
//! The pair is read and checked here ([`pair_from_pem`]: it parses, and the
//! key is the certificate's), served through a [`CertStore`] so that it can
//! be replaced while the bridge runs, and [`reload`] watches the files for
//! a renewed pair.

pub mod reload;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use console::describe_io;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

use crate::cert_store::CertStore;

/// Why the certificate or key could not be used. Each message says its
/// cause, so no cause is also the `source()`: anyhow's `{:#}` would print
/// it twice.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("no se pudo leer {}: {}", .path.display(), describe_io(.error))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The certificate file is not PEM.
    #[error("no se pudo leer el certificado {}: {}", .path.display(), describe_pem(.error))]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        error: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{} no contiene ningún certificado PEM", .0.display())]
    NoCertificate(PathBuf),
    /// The key file holds no usable private key.
    #[error("no se pudo leer la clave privada {}: {}", .path.display(), describe_pem(.error))]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        error: rustls::pki_types::pem::Error,
    },
    /// The key is not the certificate's.
    #[error("la clave {} no es la del certificado {}", .key.display(), .cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the pair.
    #[error("el certificado y la clave no sirven juntos: {0}")]
    Config(rustls::Error),
}

impl From<rustls::Error> for TlsError {
    fn from(error: rustls::Error) -> Self {
        TlsError::Config(error)
    }
}

/// A PEM file's problem, an io error in the words of [`describe_io`].
fn describe_pem(error: &rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(error) => describe_io(error),
        other => other.to_string(),
    }
}

/// The ring provider the bridge's TLS uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The pair in the PEM texts `cert` (the chain, leaf first) and `key`,
/// checked: both parse, and the key is the leaf's. `cert_path` and
/// `key_path` only name the files in errors.
pub fn pair_from_pem(
    cert: &[u8],
    key: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Certificate {
            path: cert_path.to_path_buf(),
            error,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|error| TlsError::Key {
        path: key_path.to_path_buf(),
        error,
    })?;
    let signing_key = provider().key_provider.load_private_key(key)?;
    let pair = CertifiedKey::new(chain, signing_key);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        Err(other) => Err(other.into()),
    }
}

/// Reads the pair from the PEM files `cert` and `key`, checked as
/// [`pair_from_pem`] does.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    pair_from_pem(&read_file(cert)?, &read_file(key)?, cert, key)
}

/// The bytes of the file at `path` (following symlinks, as certbot's are).
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// A TLS acceptor speaking HTTP/1.1 with the certificate `resolver` picks
/// at each handshake (a [`CertStore`], to swap it while serving).
pub fn acceptor_for(resolver: Arc<dyn ResolvesServerCert>) -> Result<TlsAcceptor, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS acceptor serving the certificate chain in `cert` with the private
/// key in `key` (both PEM) for good, speaking HTTP/1.1.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    acceptor_for(Arc::new(CertStore::new(load_pair(cert, key)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made() -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec![String::from("localhost")]).unwrap()
    }

    fn check(cert: &str, key: &str) -> Result<CertifiedKey, TlsError> {
        pair_from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            Path::new("cert.pem"),
            Path::new("key.pem"),
        )
    }

    #[test]
    fn a_certificate_with_its_own_key_is_taken() {
        let made = made();
        let pair = check(&made.cert.pem(), &made.signing_key.serialize_pem()).unwrap();
        assert_eq!(pair.end_entity_cert().unwrap(), made.cert.der());
    }

    #[test]
    fn another_certificates_key_is_refused_by_name() {
        let (one, other) = (made(), made());
        let refused = check(&one.cert.pem(), &other.signing_key.serialize_pem()).unwrap_err();
        assert!(
            matches!(refused, TlsError::KeyMismatch { .. }),
            "{refused:?}"
        );
        assert_eq!(
            refused.to_string(),
            "la clave key.pem no es la del certificado cert.pem"
        );
    }

    #[test]
    fn files_that_are_not_a_pair_are_refused() {
        let made = made();
        let key = made.signing_key.serialize_pem();
        assert!(matches!(check("", &key), Err(TlsError::NoCertificate(_))));
        assert!(matches!(
            check("hola", &key),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(matches!(
            check(&made.cert.pem(), "hola"),
            Err(TlsError::Key { .. })
        ));
        // The certificate where the key should be.
        assert!(matches!(
            check(&made.cert.pem(), &made.cert.pem()),
            Err(TlsError::Key { .. })
        ));
    }
}
