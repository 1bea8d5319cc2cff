//! TLS for `cliente --url wss://…`: which bridge certificates are accepted,
//! and why one was refused, in words a student can act on.
//!
//! Trusted are the usual public roots and the certificates in the
//! `--ca-cert` file. A certificate from that file is also accepted as the
//! bridge's own when the bridge presents exactly it (pinned): the usual
//! self-signed one-liner (`openssl req -x509 …`) makes a certificate marked
//! `CA:TRUE`, which webpki refuses as a server's own certificate even when
//! it is trusted as a root.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::ClientError;

/// The TLS settings for `wss://`: the public roots, plus the PEM
/// certificates in `ca_cert`, each both trusted as a root and pinned.
pub fn client_config(ca_cert: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut pinned = Vec::new();
    if let Some(path) = ca_cert {
        let unusable = |reason: String| ClientError::Certificate {
            path: path.to_path_buf(),
            reason,
        };
        let certificates = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| unusable(error.to_string()))?;
        if certificates.is_empty() {
            return Err(unusable(String::from("no contiene ningún certificado PEM")));
        }
        for certificate in certificates {
            roots
                .add(certificate.clone())
                .map_err(|error| unusable(error.to_string()))?;
            pinned.push(certificate);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|error| ClientError::Tls(error.to_string()))?;
    let verifier = PinnedOrWebPki {
        webpki,
        pinned,
        provider: Arc::clone(&provider),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls(error.to_string()))?
        .dangerous() // only to plug in the verifier below, which still verifies
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// webpki's verdict first; failing that, a certificate the user pinned.
#[derive(Debug)]
struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of `--ca-cert`, as DER.
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(refused) => refused,
        };
        // The very certificate the user handed us identifies the bridge by
        // itself (the handshake's signature proves the bridge holds its
        // key), so who issued it, whether it is marked CA and which names it
        // lists no longer matter. Everything else still does: an expired
        // pinned certificate is reported as expired (webpki checks the
        // dates before anything else, so that is the error it gives).
        if self.pinned.iter().any(|pin| pin == end_entity) && only_about_identity(&refused) {
            return Ok(ServerCertVerified::assertion());
        }
        Err(refused)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether webpki refused the certificate only for who vouches for it or
/// whom it names, which pinning answers.
fn only_about_identity(refused: &rustls::Error) -> bool {
    match refused {
        rustls::Error::InvalidCertificate(problem) => {
            matches!(
                problem,
                CertificateError::UnknownIssuer
                    | CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. }
            ) || is_ca_used_as_end_entity(problem)
        }
        _ => false,
    }
}

/// webpki's `CaUsedAsEndEntity`, which rustls passes on as an opaque
/// `Other`.
fn is_ca_used_as_end_entity(problem: &CertificateError) -> bool {
    match problem {
        CertificateError::Other(other) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

/// Why the bridge's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateProblem {
    /// No trusted authority signed it, and it is not pinned.
    Untrusted {
        /// The `--ca-cert` file, if one was given.
        ca_cert: Option<PathBuf>,
    },
    /// It is for other names than the URL's host.
    WrongName {
        /// The URL's host.
        host: String,
        /// The names it is for.
        names: Vec<String>,
    },
    /// Its time is over.
    Expired {
        /// Its last valid moment, if known.
        not_after: Option<UnixTime>,
    },
    /// Its time has not come.
    NotYetValid {
        /// Its first valid moment, if known.
        not_before: Option<UnixTime>,
    },
    /// Anything else, in words.
    Invalid(String),
}

impl CertificateProblem {
    /// What rustls's refusal means, for a connection to `host` with the
    /// `ca_cert` file (if any) trusted.
    pub fn from_rustls(problem: &CertificateError, host: &str, ca_cert: Option<&Path>) -> Self {
        let reason = |words: &str| CertificateProblem::Invalid(words.to_string());
        match problem {
            // webpki says CaUsedAsEndEntity before it looks for an issuer:
            // for a self-signed certificate that nobody pinned, the issue
            // that matters is that it is unknown.
            CertificateError::UnknownIssuer => Self::Untrusted {
                ca_cert: ca_cert.map(Path::to_path_buf),
            },
            other if is_ca_used_as_end_entity(other) => Self::Untrusted {
                ca_cert: ca_cert.map(Path::to_path_buf),
            },
            CertificateError::NotValidForNameContext { presented, .. } => Self::WrongName {
                host: host.to_string(),
                names: presented.iter().map(|name| plain_name(name)).collect(),
            },
            CertificateError::NotValidForName => Self::WrongName {
                host: host.to_string(),
                names: Vec::new(),
            },
            CertificateError::ExpiredContext { not_after, .. } => Self::Expired {
                not_after: Some(*not_after),
            },
            CertificateError::Expired => Self::Expired { not_after: None },
            CertificateError::NotValidYetContext { not_before, .. } => Self::NotYetValid {
                not_before: Some(*not_before),
            },
            CertificateError::NotValidYet => Self::NotYetValid { not_before: None },
            CertificateError::BadEncoding => reason("está mal codificado"),
            CertificateError::BadSignature => reason("su firma no es válida"),
            CertificateError::Revoked => reason("está revocado"),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                reason("no es para servidores (su extendedKeyUsage no incluye serverAuth)")
            }
            CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                reason("está firmado con un algoritmo que no se admite")
            }
            CertificateError::Other(other) => Self::Invalid(other.0.to_string()),
            other => Self::Invalid(other.to_string()),
        }
    }
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Untrusted { ca_cert: None } => write!(
                f,
                "el certificado del puente no es de confianza (no lo firma ninguna autoridad \
                 conocida); si es un certificado propio, páselo con --ca-cert FICHERO"
            ),
            Self::Untrusted {
                ca_cert: Some(path),
            } => write!(
                f,
                "el certificado del puente no es el de {} ni lo firma ninguno de sus \
                 certificados (¿usa el puente otro certificado?)",
                path.display()
            ),
            Self::WrongName { host, names } if names.is_empty() => write!(
                f,
                "el certificado del puente no nombra ninguna máquina en subjectAltName y la URL \
                 pide {host}: hágalo con -addext subjectAltName={}",
                alt_name(host)
            ),
            Self::WrongName { host, names } => write!(
                f,
                "el certificado del puente es para {} y no para {host}: use {} en la URL o un \
                 certificado con subjectAltName={}",
                names.join(", "),
                if names.len() == 1 {
                    "ese nombre"
                } else {
                    "uno de esos nombres"
                },
                alt_name(host)
            ),
            Self::Expired {
                not_after: Some(when),
            } => write!(
                f,
                "el certificado del puente caducó el {}: el puente necesita uno nuevo",
                utc(*when)
            ),
            Self::Expired { not_after: None } => write!(
                f,
                "el certificado del puente ha caducado: el puente necesita uno nuevo"
            ),
            Self::NotYetValid {
                not_before: Some(when),
            } => write!(
                f,
                "el certificado del puente no es válido hasta el {} (¿va bien el reloj de esta \
                 máquina?)",
                utc(*when)
            ),
            Self::NotYetValid { not_before: None } => write!(
                f,
                "el certificado del puente aún no es válido (¿va bien el reloj de esta máquina?)"
            ),
            Self::Invalid(reason) => {
                write!(f, "el certificado del puente no es válido: {reason}")
            }
        }
    }
}

/// `localhost` for webpki's `DnsName("localhost")`, `10.0.0.1` for its
/// `IpAddress(10.0.0.1)`: it lists the names it found as Debug text. Anything
/// else is kept as it came.
fn plain_name(presented: &str) -> String {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(presented)
        .to_string()
}

/// The `subjectAltName` entry that names `host`: an address or a name.
fn alt_name(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(_) => format!("IP:{host}"),
        Err(_) => format!("DNS:{host}"),
    }
}

/// `2026-01-27 10:00 UTC`: no calendar crate for one date in a message.
fn utc(when: UnixTime) -> String {
    let seconds = when.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01 (no dates
    // before it reach here: UnixTime is unsigned).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        of_day / 3_600,
        of_day % 3_600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_a_calendar_would() {
        assert_eq!(
            utc(UnixTime::since_unix_epoch(Default::default())),
            "1970-01-01 00:00 UTC"
        );
        let at = |secs| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        assert_eq!(utc(at(951_782_400)), "2000-02-29 00:00 UTC");
        assert_eq!(utc(at(1_769_509_800)), "2026-01-27 10:30 UTC");
        assert_eq!(utc(at(4_102_444_799)), "2099-12-31 23:59 UTC");
    }

    #[test]
    fn the_fix_names_an_address_or_a_name() {
        let problem = CertificateProblem::WrongName {
            host: String::from("127.0.0.1"),
            names: vec![String::from("localhost")],
        };
        assert_eq!(
            problem.to_string(),
            "el certificado del puente es para localhost y no para 127.0.0.1: use ese nombre \
             en la URL o un certificado con subjectAltName=IP:127.0.0.1"
        );
        assert_eq!(alt_name("demo.example.org"), "DNS:demo.example.org");
        assert_eq!(alt_name("::1"), "IP:::1");
    }

    #[test]
    fn webpkis_names_lose_their_debug_dress() {
        assert_eq!(plain_name("DnsName(\"otra.example\")"), "otra.example");
        assert_eq!(plain_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(plain_name("DirectoryName"), "DirectoryName");
    }

    #[test]
    fn webpkis_ca_refusal_reads_as_untrusted() {
        let refusal = CertificateError::Other(rustls::OtherError(Arc::new(
            webpki::Error::CaUsedAsEndEntity,
        )));
        assert!(only_about_identity(&rustls::Error::InvalidCertificate(
            refusal.clone()
        )));
        assert_eq!(
            CertificateProblem::from_rustls(&refusal, "localhost", None),
            CertificateProblem::Untrusted { ca_cert: None }
        );
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert!(!only_about_identity(&expired));
    }
}
