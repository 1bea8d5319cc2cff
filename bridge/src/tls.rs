//! TLS for remote demos: https and wss with rustls, from PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use console::describe_io;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key could not be used. Each message says its
/// cause, so no cause is also the `source()`: anyhow's `{:#}` would print
/// it twice.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The certificate file could not be read.
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
    /// The key file could not be read.
    #[error("no se pudo leer la clave privada {}: {}", .path.display(), describe_pem(.error))]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        error: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair.
    #[error("el certificado y la clave no sirven juntos: {0}")]
    Config(rustls::Error),
}

/// A PEM file's problem, an io error in the words of [`describe_io`].
fn describe_pem(error: &rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(error) => describe_io(error),
        other => other.to_string(),
    }
}

/// A TLS acceptor serving the certificate chain in `cert` with the private
/// key in `key` (both PEM), speaking HTTP/1.1.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::Certificate {
            path: cert.to_path_buf(),
            error,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::Key {
        path: key.to_path_buf(),
        error,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
