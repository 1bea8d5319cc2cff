//! What the bridge keeps between runs with ACME, in `--acme-cache`: the
//! account (so a restart does not make a new one) and the certificate
//! with its key (so a restart serves it at once and orders nothing: lost
//! certificates are the first cause of rate-limit lockouts), one folder
//! per CA directory.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::AccountCredentials;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::pacing::Pacing;
use super::AcmeError;

/// A certificate the bridge can serve, and when it is good for.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The chain and key, as rustls serves them.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's `notBefore`.
    pub not_before: SystemTime,
    /// The leaf's `notAfter`.
    pub not_after: SystemTime,
    /// The chain then the key, PEM: what the cache file holds.
    pub pem: String,
}

impl Certificate {
    /// Reads a chain and its key from PEM text (any order).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("PEM ilegible: {error}"))?;
        let Some(leaf) = chain.first() else {
            return Err(String::from("no hay ningún certificado"));
        };
        let (not_before, not_after) = validity(leaf)?;
        let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|error| format!("sin clave privada legible: {error}"))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|error| format!("el certificado y la clave no van juntos: {error}"))?;
        Ok(Self {
            certified: Arc::new(certified),
            not_before,
            not_after,
            pem: pem.to_owned(),
        })
    }

    /// When to renew it: `renew_within` before it expires if given, else
    /// at two thirds of its life (what Let's Encrypt advises).
    pub fn renew_at(&self, renew_within: Option<Duration>) -> SystemTime {
        match renew_within {
            Some(within) => self.not_after.checked_sub(within).unwrap_or(UNIX_EPOCH),
            None => {
                let life = self
                    .not_after
                    .duration_since(self.not_before)
                    .unwrap_or_default();
                self.not_before + life * 2 / 3
            }
        }
    }
}

/// The leaf's validity period.
fn validity(leaf: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|error| format!("certificado ilegible: {error}"))?;
    let at = |time: x509_parser::time::ASN1Time| {
        u64::try_from(time.timestamp())
            .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds))
            .map_err(|_| String::from("fechas de validez anteriores a 1970"))
    };
    Ok((
        at(parsed.validity().not_before)?,
        at(parsed.validity().not_after)?,
    ))
}

/// The cache folder of one CA directory, for one set of names.
#[derive(Debug, Clone)]
pub struct Cache {
    folder: PathBuf,
    certificate: PathBuf,
    failures: PathBuf,
}

impl Cache {
    /// The cache under `root` for `directory` and `domains`.
    pub fn new(root: &Path, directory: &str, domains: &[String]) -> Self {
        let folder = root.join(file_name(
            directory
                .trim_start_matches("https://")
                .trim_start_matches("http://"),
        ));
        let mut names = domains.to_vec();
        names.sort();
        names.dedup();
        let names = file_name(&names.join(","));
        let certificate = folder.join(format!("{names}.pem"));
        let failures = folder.join(format!("{names}.failures"));
        Self {
            folder,
            certificate,
            failures,
        }
    }

    /// Where the account's credentials are kept.
    pub fn account_path(&self) -> PathBuf {
        self.folder.join("account.json")
    }

    /// Where the certificate and its key are kept.
    pub fn certificate_path(&self) -> &Path {
        &self.certificate
    }

    /// The kept account, if any.
    pub fn account(&self) -> Result<Option<AccountCredentials>, AcmeError> {
        let path = self.account_path();
        match fs::read(&path) {
            Ok(json) => serde_json::from_slice(&json)
                .map(Some)
                .map_err(|error| AcmeError::Cache {
                    path,
                    cause: format!("cuenta ilegible: {error}"),
                }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(AcmeError::Cache {
                path,
                cause: error.to_string(),
            }),
        }
    }

    /// Keeps the account (only its owner may read it: it holds the key).
    pub fn keep_account(&self, credentials: &AccountCredentials) -> Result<(), AcmeError> {
        let json = serde_json::to_vec_pretty(credentials).map_err(|error| AcmeError::Cache {
            path: self.account_path(),
            cause: error.to_string(),
        })?;
        self.write(&self.account_path(), &json)
    }

    /// Forgets the account (the CA no longer knows it).
    pub fn forget_account(&self) {
        let _ = fs::remove_file(self.account_path());
    }

    /// The kept certificate, if any; `Err` says why a file that is there
    /// cannot be used.
    pub fn certificate(&self) -> Result<Option<Certificate>, AcmeError> {
        let path = self.certificate.clone();
        match fs::read_to_string(&path) {
            Ok(pem) => Certificate::from_pem(&pem)
                .map(Some)
                .map_err(|cause| AcmeError::Cache { path, cause }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(AcmeError::Cache {
                path,
                cause: error.to_string(),
            }),
        }
    }

    /// Keeps the certificate and its key.
    pub fn keep_certificate(&self, certificate: &Certificate) -> Result<(), AcmeError> {
        self.write(&self.certificate, certificate.pem.as_bytes())
    }

    /// The failed orders of earlier runs (none if unreadable).
    pub fn pacing(&self) -> Pacing {
        fs::read_to_string(&self.failures)
            .ok()
            .and_then(|text| Pacing::from_text(&text))
            .unwrap_or_default()
    }

    /// Keeps the failed orders for the next run.
    pub fn keep_pacing(&self, pacing: &Pacing) -> Result<(), AcmeError> {
        self.write(&self.failures, pacing.to_text().as_bytes())
    }

    /// Writes `path` whole or not at all (a new file renamed over the
    /// old), readable by its owner only.
    fn write(&self, path: &Path, content: &[u8]) -> Result<(), AcmeError> {
        let failed = |error: io::Error| AcmeError::Cache {
            path: path.to_path_buf(),
            cause: error.to_string(),
        };
        create_private_dir(&self.folder).map_err(failed)?;
        let partial = path.with_extension("partial");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&partial).map_err(failed)?;
        file.write_all(content).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        fs::rename(&partial, path).map_err(failed)
    }
}

/// Makes `folder` and its parents, the last one private to its owner.
fn create_private_dir(folder: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(folder)
}

/// `text` as one file name: letters, digits, `.`, `-` and `,` kept, the
/// rest `_`.
fn file_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ',') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_directory_and_name_set_has_its_own_files() {
        let root = Path::new("/cache");
        let one = Cache::new(
            root,
            "https://acme-v02.api.letsencrypt.org/directory",
            &[String::from("b.org"), String::from("a.org")],
        );
        assert_eq!(
            one.certificate_path(),
            Path::new("/cache/acme-v02.api.letsencrypt.org_directory/a.org,b.org.pem")
        );
        assert_eq!(
            one.account_path(),
            Path::new("/cache/acme-v02.api.letsencrypt.org_directory/account.json")
        );
        let other = Cache::new(
            root,
            "https://127.0.0.1:14000/dir",
            &[String::from("a.org")],
        );
        assert_eq!(
            other.certificate_path(),
            Path::new("/cache/127.0.0.1_14000_dir/a.org.pem")
        );
    }

    #[test]
    fn renewal_is_at_two_thirds_of_the_life_unless_told() {
        let pem = {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec![String::from("a.org")]).unwrap();
            params.not_before = rcgen::date_time_ymd(2030, 1, 1);
            params.not_after = rcgen::date_time_ymd(2030, 4, 1);
            let cert = params.self_signed(&key).unwrap();
            format!("{}{}", cert.pem(), key.serialize_pem())
        };
        let certificate = Certificate::from_pem(&pem).unwrap();
        let day = Duration::from_secs(86_400);
        // 90 days of life.
        assert_eq!(
            certificate.renew_at(None),
            certificate.not_before + day * 60
        );
        assert_eq!(
            certificate.renew_at(Some(day * 10)),
            certificate.not_after - day * 10
        );
        assert!(Certificate::from_pem("no").is_err());
    }
}
