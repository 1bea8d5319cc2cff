//! Automatic HTTPS (`--acme-domain`): the bridge gets its certificate from
//! an ACME CA (RFC 8555; Let's Encrypt by default) by itself, answers the
//! CA's TLS-ALPN-01 challenge (RFC 8737) on its own TLS port, keeps
//! account and certificate in a cache, and renews at about two thirds of
//! the certificate's life without a restart: new handshakes get the new
//! certificate, open sessions keep going.
//!
//! The protocol is instant-acme's (bad-nonce retries, tested against
//! pebble, on hyper and tokio like the rest of the bridge); the challenge
//! answer ([`resolver`]), the cache ([`cache`]), the pace of retries
//! ([`pacing`]) and the HTTPS client ([`client`]) are here.
//!
//! A failure never stops the bridge: it keeps serving what it has (a
//! cached certificate, `/healthz`, the metrics), says in the log what
//! failed and what to check, and tries again later.

pub mod cache;
pub mod client;
pub mod pacing;
pub mod resolver;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    Problem, RetryPolicy,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::metrics::{AcmeOrder, BridgeMetrics};
use cache::{Cache, Certificate};
use client::CaClient;
use pacing::Pacing;
use resolver::AcmeResolver;

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The folder under the user's data folder where the cache goes.
pub const PROJECT_FOLDER: &str = "sockets-tema12";

/// After a certificate is obtained, no new order for this long, whatever
/// `--acme-renew-within` says: a renewal window longer than the CA's
/// certificates must not become an order loop.
pub const MIN_RENEWAL_GAP: Duration = Duration::from_secs(60 * 60);

/// Sleeps are cut into pieces this long, so that a clock that jumps (a
/// suspended machine) is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60 * 60);

/// Bound on one whole order, validation included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How long the CA may take to validate, and to issue once validated.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(90);

/// What `--acme-*` set.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The names to get a certificate for (one certificate for all).
    pub domains: Vec<String>,
    /// A contact for the CA's notices, if any.
    pub email: Option<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// One more root (PEM) to trust when talking to the CA.
    pub ca_cert: Option<PathBuf>,
    /// Where account and certificate are kept.
    pub cache: PathBuf,
    /// Renew this long before expiry; `None`: at two thirds of the life.
    pub renew_within: Option<Duration>,
}

impl AcmeConfig {
    /// The default cache folder: `$XDG_DATA_HOME/sockets-tema12/acme`,
    /// else `~/.local/share/sockets-tema12/acme`; `None` without either.
    pub fn default_cache() -> Option<PathBuf> {
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .filter(|path| path.is_absolute())
                    .map(|home| home.join(".local").join("share"))
            })?;
        Some(data.join(PROJECT_FOLDER).join("acme"))
    }
}

/// Why ACME cannot start at all (bad settings).
#[derive(Debug, Error)]
pub enum AcmeError {
    /// No `--acme-domain`.
    #[error("falta algún --acme-domain")]
    NoDomains,
    /// A name that is not a DNS name.
    #[error("--acme-domain «{0}» no es un nombre DNS (la CA no emite para direcciones IP ni nombres con comodín)")]
    BadDomain(String),
    /// The cache could not be read or written.
    #[error("caché ACME {}: {cause}", .path.display())]
    Cache {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        cause: String,
    },
    /// `--acme-ca-cert` could not be used.
    #[error("--acme-ca-cert {}: {cause}", .path.display())]
    CaRoot {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: String,
    },
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Why an order failed, explained with what to check.
#[derive(Debug, Error)]
pub enum OrderError {
    /// The CA could not be reached or answered nonsense.
    #[error("no se pudo hablar con la CA ({cause}). Compruebe la conexión a internet de esta máquina y --acme-directory; con una CA privada o de pruebas, --acme-ca-cert")]
    Unreachable {
        /// The error underneath, with its sources.
        cause: String,
    },
    /// The CA refused a request.
    #[error("{}", refused(.0))]
    Refused(Problem),
    /// The CA could not validate that a name points at this bridge.
    #[error("{}", invalid(.domain, .problem.as_ref()))]
    Validation {
        /// The name.
        domain: String,
        /// What the CA said, if it said.
        problem: Option<Problem>,
    },
    /// The CA offers no TLS-ALPN-01 challenge for a name.
    #[error("la CA no ofrece el reto TLS-ALPN-01 para {0}, el único que responde el puente: use otra CA")]
    NoTlsAlpn(String),
    /// The order got stuck or ended in a state it should not.
    #[error("el pedido quedó a medias ({0}); se reintentará")]
    Stuck(String),
    /// The challenge certificate could not be made.
    #[error("no se pudo crear el certificado del reto: {0}")]
    Challenge(String),
    /// The CA's certificate could not be used.
    #[error("la CA entregó un certificado que no sirve: {0}")]
    BadCertificate(String),
    /// Setting up failed (the account could not be kept).
    #[error(transparent)]
    Setup(#[from] AcmeError),
}

impl From<instant_acme::Error> for OrderError {
    fn from(error: instant_acme::Error) -> Self {
        match error {
            instant_acme::Error::Api(problem) => OrderError::Refused(problem),
            instant_acme::Error::Timeout(_) => {
                OrderError::Stuck(String::from("la CA no terminó a tiempo"))
            }
            cause => OrderError::Unreachable {
                cause: with_sources(&cause),
            },
        }
    }
}

/// `error` and what caused it, down the chain (hyper's errors say
/// "client error (Connect)" and keep the useful part in their sources).
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The ACME problem type `name` (RFC 8555 §6.7) is `problem`'s.
fn is(problem: &Problem, name: &str) -> bool {
    problem
        .r#type
        .as_deref()
        .and_then(|kind| kind.strip_prefix("urn:ietf:params:acme:error:"))
        == Some(name)
}

/// What the CA said, for the log.
fn said(problem: &Problem) -> String {
    let detail = problem.detail.as_deref().unwrap_or("sin detalle");
    match &problem.r#type {
        Some(kind) => format!("«{detail}», {kind}"),
        None => format!("«{detail}»"),
    }
}

/// A refused request, explained.
fn refused(problem: &Problem) -> String {
    let said = said(problem);
    if is(problem, "rateLimited") {
        format!("la CA limita los pedidos de estos nombres ({said}); el puente reintentará más tarde, no lo reinicie para forzarlo")
    } else if is(problem, "rejectedIdentifier") || is(problem, "caa") {
        format!("la CA se niega a emitir para estos nombres ({said}). Compruebe que son nombres públicos suyos y, si tienen registros CAA, que admiten a esta CA")
    } else if is(problem, "accountDoesNotExist") {
        format!("la CA no acepta la cuenta guardada ({said}); se creará otra")
    } else {
        format!("la CA rechazó el pedido ({said})")
    }
}

/// A failed validation of `domain`, explained.
fn invalid(domain: &str, problem: Option<&Problem>) -> String {
    let Some(problem) = problem else {
        return format!("la CA no pudo comprobar que {domain} es de este puente. Compruebe que el nombre apunta a la IP pública de esta máquina y que su puerto 443 llega al puente");
    };
    let said = said(problem);
    if is(problem, "dns") {
        format!("la CA no pudo resolver {domain} ({said}). Compruebe que el nombre existe y que su registro A (o AAAA) apunta a la IP pública de esta máquina")
    } else if is(problem, "connection") {
        format!("la CA no pudo conectar con {domain} en el puerto 443 ({said}). Compruebe que el puerto 443 es accesible desde internet (cortafuegos, router, proveedor) y que llega a este puente: que escucha en él o que se le reenvía")
    } else {
        format!("la CA no obtuvo de {domain} la respuesta de este puente ({said}). Compruebe que el nombre apunta a la IP pública de esta máquina y que su puerto 443 llega al puente, no a otro servidor ni a un balanceador que termine TLS")
    }
}

/// Where the certificate work is, for tests and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcmePhase {
    /// Nothing done yet.
    Starting,
    /// An order is under way.
    Ordering,
    /// A good certificate is served; the next order is at `until`.
    Waiting {
        /// When the renewal starts.
        until: SystemTime,
    },
    /// The last order failed; the next is at `until`.
    Retrying {
        /// When it is tried again.
        until: SystemTime,
    },
    /// The bridge is stopping.
    Stopped,
}

/// What [`Acme::run`] has done so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeStatus {
    /// Where it is.
    pub phase: AcmePhase,
    /// Certificates obtained since start.
    pub obtained: u32,
    /// Orders failed since start.
    pub failed: u32,
    /// The explanation of the last failure, as logged.
    pub last_failure: Option<String>,
}

/// The bridge's certificate from an ACME CA: what the TLS port serves
/// ([`Acme::acceptor`]), and the task that orders and renews it
/// ([`Acme::run`]).
pub struct Acme {
    config: AcmeConfig,
    cache: Cache,
    client: CaClient,
    resolver: Arc<AcmeResolver>,
    current: Option<Certificate>,
    metrics: Arc<BridgeMetrics>,
    status: watch::Sender<AcmeStatus>,
}

impl Acme {
    /// Checks `config` and serves the cached certificate at once if it is
    /// still good (an unusable cache is logged and a new order made).
    pub fn new(config: AcmeConfig, metrics: Arc<BridgeMetrics>) -> Result<Self, AcmeError> {
        if config.domains.is_empty() {
            return Err(AcmeError::NoDomains);
        }
        for domain in &config.domains {
            let dns = matches!(
                ServerName::try_from(domain.as_str()),
                Ok(ServerName::DnsName(_))
            );
            if !dns || domain.contains('*') || !domain.contains('.') {
                return Err(AcmeError::BadDomain(domain.clone()));
            }
        }
        let cache = Cache::new(&config.cache, &config.directory, &config.domains);
        let client = CaClient::new(config.ca_cert.as_deref())?;
        let resolver = Arc::new(AcmeResolver::default());
        let names = config.domains.join(", ");
        let current = match cache.certificate() {
            Ok(Some(certificate)) if certificate.not_after > SystemTime::now() => {
                info!(
                    "certificado de {names} tomado de la caché ({}), válido hasta {}",
                    cache.certificate_path().display(),
                    when(certificate.not_after)
                );
                Some(certificate)
            }
            Ok(Some(certificate)) => {
                warn!(
                    "el certificado guardado de {names} caducó el {}: se pide otro",
                    when(certificate.not_after)
                );
                None
            }
            Ok(None) => {
                info!("no hay certificado guardado de {names}: se pide uno a la CA");
                None
            }
            Err(error) => {
                warn!("{error}: se pide otro certificado");
                None
            }
        };
        match &current {
            Some(certificate) => {
                resolver.install(Arc::clone(&certificate.certified));
                metrics.acme_certificate(certificate.not_after);
            }
            // Until the CA's arrives, a self-signed one: /healthz and the
            // rest still answer clients that accept it (a balancer's
            // checks, curl -k), instead of every handshake failing.
            None => match placeholder_certificate(&config.domains) {
                Ok(placeholder) => {
                    info!("hasta tener el de la CA, https sirve un certificado provisional autofirmado (los navegadores lo rechazan)");
                    resolver.install(placeholder);
                }
                Err(error) => warn!("no se pudo crear el certificado provisional ({error}): hasta tener el de la CA, https no tiene certificado"),
            },
        }
        let (status, _) = watch::channel(AcmeStatus {
            phase: AcmePhase::Starting,
            obtained: 0,
            failed: 0,
            last_failure: None,
        });
        Ok(Self {
            config,
            cache,
            client,
            resolver,
            current,
            metrics,
            status,
        })
    }

    /// A TLS acceptor serving the certificate (once there is one) and
    /// answering the CA's validation.
    pub fn acceptor(&self) -> Result<TlsAcceptor, AcmeError> {
        self.resolver
            .acceptor()
            .map_err(|error| AcmeError::Tls(error.to_string()))
    }

    /// The certificates served, to join to another resolver.
    pub fn resolver(&self) -> Arc<AcmeResolver> {
        Arc::clone(&self.resolver)
    }

    /// Follows what [`Acme::run`] does.
    pub fn status(&self) -> watch::Receiver<AcmeStatus> {
        self.status.subscribe()
    }

    /// Orders a certificate when there is none, renews it when due, and
    /// retries failures at a pace the CA's limits allow, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let names = self.config.domains.join(", ");
        let mut pacing = self.cache.pacing();
        let mut quiet_until: Option<SystemTime> = None;
        let mut announced: Option<SystemTime> = None;
        loop {
            let now = SystemTime::now();
            let due = self
                .current
                .as_ref()
                .map_or(now, |certificate| {
                    certificate.renew_at(self.config.renew_within)
                })
                .max(quiet_until.unwrap_or(UNIX_EPOCH));
            let retry = pacing.next_try();
            let due = due.max(retry.unwrap_or(UNIX_EPOCH));
            if due > now {
                let retrying = retry == Some(due);
                self.status.send_modify(|status| {
                    status.phase = if retrying {
                        AcmePhase::Retrying { until: due }
                    } else {
                        AcmePhase::Waiting { until: due }
                    }
                });
                if announced != Some(due) {
                    if retrying {
                        info!(
                            "un pedido anterior del certificado de {names} falló: el siguiente será el {}, para no pasar el límite de fallos de la CA",
                            when(due)
                        );
                    } else {
                        info!("el certificado de {names} se renovará el {}", when(due));
                    }
                    announced = Some(due);
                }
                let nap = due.duration_since(now).unwrap_or_default().min(MAX_SLEEP);
                tokio::select! {
                    () = tokio::time::sleep(nap) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
            self.status
                .send_modify(|status| status.phase = AcmePhase::Ordering);
            let kind = match self.current {
                Some(_) => AcmeOrder::Renewal,
                None => AcmeOrder::Issue,
            };
            info!(
                "pidiendo a la CA ({}) un certificado de {names}",
                self.config.directory
            );
            let ordered = tokio::select! {
                ordered = tokio::time::timeout(ORDER_TIMEOUT, self.order()) => ordered,
                () = shutdown.cancelled() => break,
            };
            let ordered = ordered.unwrap_or_else(|_elapsed| {
                Err(OrderError::Stuck(format!(
                    "sin terminar en {} s",
                    ORDER_TIMEOUT.as_secs()
                )))
            });
            match ordered {
                Ok(certificate) => {
                    self.resolver.install(Arc::clone(&certificate.certified));
                    self.metrics.acme_certificate(certificate.not_after);
                    self.metrics.acme_order(kind, true);
                    info!(
                        "certificado de {names} obtenido, válido hasta {}: las conexiones nuevas ya lo usan",
                        when(certificate.not_after)
                    );
                    if let Err(error) = self.cache.keep_certificate(&certificate) {
                        error!(
                            "{error}: el certificado no se guardó y se pedirá otro al reiniciar"
                        );
                    }
                    self.current = Some(certificate);
                    pacing.succeeded();
                    self.keep(&pacing);
                    quiet_until = Some(SystemTime::now() + MIN_RENEWAL_GAP);
                    self.status.send_modify(|status| status.obtained += 1);
                }
                Err(failure) => {
                    self.metrics.acme_order(kind, false);
                    if matches!(&failure, OrderError::Refused(problem) if is(problem, "accountDoesNotExist"))
                    {
                        self.cache.forget_account();
                    }
                    let retry = pacing.failed(SystemTime::now());
                    self.keep(&pacing);
                    // The failure's own message says when.
                    announced = Some(retry);
                    let serving = match &self.current {
                        Some(certificate) => format!(
                            "se sigue sirviendo el certificado actual (válido hasta {})",
                            when(certificate.not_after)
                        ),
                        None => String::from(
                            "mientras, https sirve un certificado provisional autofirmado",
                        ),
                    };
                    let explanation = format!(
                        "no se pudo obtener el certificado de {names}: {failure}. Se reintentará el {}; {serving}",
                        when(retry)
                    );
                    error!("{explanation}");
                    self.status.send_modify(|status| {
                        status.failed += 1;
                        status.last_failure = Some(explanation);
                    });
                }
            }
        }
        self.status
            .send_modify(|status| status.phase = AcmePhase::Stopped);
    }

    /// Keeps the failures for the next run; not keeping them is logged
    /// (a restart could then retry sooner).
    fn keep(&self, pacing: &Pacing) {
        if let Err(error) = self.cache.keep_pacing(pacing) {
            warn!("{error}: un reinicio podría reintentar antes de tiempo");
        }
    }

    /// One order, from the account to the certificate.
    async fn order(&self) -> Result<Certificate, OrderError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|domain| Identifier::Dns(domain.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        // Challenge certificates are dropped however the order ends.
        let mut challenges = Challenges {
            resolver: &self.resolver,
            names: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(OrderError::Stuck(format!(
                        "autorización de {} en estado {other:?}",
                        authorization.identifier()
                    )))
                }
            }
            let domain = authorization.identifier().to_string();
            let mut challenge = authorization
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or_else(|| OrderError::NoTlsAlpn(domain.clone()))?;
            let certified = challenge_certificate(&domain, challenge.key_authorization().digest())?;
            if !self.resolver.add_challenge(&domain, certified) {
                return Err(OrderError::Challenge(String::from(
                    "demasiados retos a la vez",
                )));
            }
            challenges.names.push(domain);
            challenge.set_ready().await?;
        }
        let retries = RetryPolicy::new().timeout(VALIDATION_TIMEOUT);
        match order.poll_ready(&retries).await {
            Ok(OrderStatus::Ready) => {}
            Ok(OrderStatus::Invalid) => return Err(why_invalid(&mut order, None).await),
            // The order's own error: the authorization's, said again.
            Err(instant_acme::Error::Api(problem)) => {
                return Err(why_invalid(&mut order, Some(problem)).await)
            }
            Ok(other) => return Err(OrderError::Stuck(format!("pedido en estado {other:?}"))),
            Err(error) => return Err(error.into()),
        }
        drop(challenges);
        let key = order.finalize().await?;
        let chain = order.poll_certificate(&retries).await?;
        Certificate::from_pem(&format!("{chain}{key}")).map_err(OrderError::BadCertificate)
    }

    /// The cached account, or a new one (then cached).
    async fn account(&self) -> Result<Account, OrderError> {
        let builder = || Account::builder_with_http(Box::new(self.client.clone()));
        match self.cache.account() {
            Ok(Some(credentials)) => return Ok(builder().from_credentials(credentials).await?),
            Ok(None) => {}
            Err(error) => warn!("{error}: se crea otra cuenta"),
        }
        let contact = self
            .config
            .email
            .as_ref()
            .map(|email| format!("mailto:{email}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder()
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await?;
        info!("cuenta creada en la CA {}", self.config.directory);
        self.cache.keep_account(&credentials)?;
        Ok(account)
    }
}

/// The challenge certificates of one order, forgotten when it ends.
struct Challenges<'a> {
    resolver: &'a AcmeResolver,
    names: Vec<String>,
}

impl Drop for Challenges<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            self.resolver.forget_challenge(name);
        }
    }
}

/// Which name failed validation, and what the CA said (`said`: what the
/// order itself said, if the authorization says nothing).
async fn why_invalid(order: &mut instant_acme::Order, said: Option<Problem>) -> OrderError {
    let mut authorizations = order.authorizations();
    let mut failed = None;
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        if state.status == AuthorizationStatus::Valid {
            continue;
        }
        let domain = state.identifier().to_string();
        let problem = state
            .challenges
            .iter()
            .find_map(|challenge| challenge.error.clone())
            .or_else(|| said.clone());
        failed = Some(OrderError::Validation { domain, problem });
        break;
    }
    failed.unwrap_or(OrderError::Validation {
        domain: String::from("algún nombre"),
        problem: said,
    })
}

/// The certificate answering the TLS-ALPN-01 challenge of `domain`
/// (RFC 8737 §3): self-signed, for that name only, with the critical
/// acmeIdentifier extension holding the key authorization's digest.
fn challenge_certificate(
    domain: &str,
    digest: impl AsRef<[u8]>,
) -> Result<Arc<CertifiedKey>, OrderError> {
    let failed = |error: rcgen::Error| OrderError::Challenge(error.to_string());
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(failed)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let certificate = params.self_signed(&key).map_err(failed)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its check that key and certificate go
    // together parses the certificate with webpki, which refuses the
    // critical acmeIdentifier extension it does not know.
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| OrderError::Challenge(error.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![certificate.der().clone()],
        signing,
    )))
}

/// A self-signed certificate for `domains`, served until the CA's.
fn placeholder_certificate(domains: &[String]) -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|error| error.to_string())?;
    let params =
        rcgen::CertificateParams::new(domains.to_vec()).map_err(|error| error.to_string())?;
    let certificate = params
        .self_signed(&key)
        .map_err(|error| error.to_string())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(vec![certificate.der().clone()], key, &provider)
        .map(Arc::new)
        .map_err(|error| error.to_string())
}

/// A moment, for the log: `2026-12-06 04:47:32 UTC`.
fn when(at: SystemTime) -> String {
    let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, day_seconds) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        day_seconds / 3600,
        day_seconds / 60 % 60,
        day_seconds % 60
    )
}

/// The Gregorian date `days` after 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str) -> Problem {
        serde_json::from_value(serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": "dicho por la CA",
        }))
        .unwrap()
    }

    #[test]
    fn each_failure_says_what_to_check() {
        let said = |kind: &str| invalid("demo.example.org", Some(&problem(kind)));
        assert!(said("dns").contains("registro A"), "{}", said("dns"));
        assert!(said("connection").contains("cortafuegos"));
        assert!(said("tls").contains("no a otro servidor"));
        assert!(said("unauthorized").contains("«dicho por la CA»"));
        assert!(refused(&problem("rateLimited")).contains("no lo reinicie"));
        assert!(refused(&problem("caa")).contains("CAA"));
        assert!(refused(&problem("malformed")).contains("rechazó"));
        let unreachable = OrderError::from(instant_acme::Error::Str("x")).to_string();
        assert!(unreachable.contains("--acme-ca-cert"), "{unreachable}");
    }

    #[test]
    fn moments_are_logged_as_utc_dates() {
        assert_eq!(when(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let at = UNIX_EPOCH + Duration::from_secs(1_796_532_452);
        assert_eq!(when(at), "2026-12-06 04:47:32 UTC");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(when(leap), "2000-02-29 00:00:00 UTC");
    }
}
