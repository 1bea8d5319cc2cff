//! `bridge`: WebSocket ⇄ TCP bridge that also serves the page, so a browser
//! can be a client of `servidor`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bridge::access::AccessCode;
use bridge::acme::{self, Acme, AcmeConfig};
use bridge::addresses;
use bridge::metrics::{BridgeMetrics, CONNECT_BUCKETS, CONNECT_SECONDS};
use bridge::origin::{AllowedOrigin, Origin, OriginPolicy};
use bridge::session::SessionConfig;
use bridge::tls::reload::{ReloadTrigger, WatchedPair};
use bridge::Config;
use clap::Parser;
use console::args::{HostPort, Network, PositiveDuration, DURATION_FORMS};
use console::{announce, exit_code, init_logging, parse_args, HelpFlags, HELP_TEMPLATE};
use netkit::metrics::{self, Exporter};
use netkit::proxy_protocol::TrustedProxies;
use netkit::{listen, shutdown};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Past the drain, how long the process may take to exit.
const EXIT_MARGIN: Duration = Duration::from_secs(1);

/// Puente WebSocket ⇄ TCP del Tema 12: deja que una página web sea cliente
/// del servidor.
///
/// En un solo puerto: GET /ws abre una sesión WebSocket, cada una con su
/// propia conexión TCP al servidor fijado con --target; GET /healthz dice si
/// el servidor acepta conexiones; el resto son los ficheros de la página
/// (--web). Solo se admiten las páginas del propio puente, los clientes que
/// no son navegadores y los orígenes de --allow-origin.
#[derive(Debug, Parser)]
#[command(
    name = "bridge",
    version,
    help_template = HELP_TEMPLATE,
    override_usage = "bridge [OPCIONES]",
    after_help = DURATION_FORMS,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Args {
    /// Dirección y puerto en los que escuchar; puerto 0 elige uno libre.
    #[arg(
        long,
        value_name = "MÁQUINA:PUERTO",
        default_value = Config::LISTEN
    )]
    listen: HostPort,

    /// Servidor TCP al que conecta cada sesión.
    #[arg(
        long,
        value_name = "MÁQUINA:PUERTO",
        default_value = SessionConfig::TARGET
    )]
    target: HostPort,

    /// Carpeta de la página construida (p. ej. dist); sin ella no se sirve
    /// ninguna página.
    #[arg(long, value_name = "DIR")]
    web: Option<PathBuf>,

    /// Origen de páginas admitido además del propio (repetible; «*» admite
    /// cualquiera, con el riesgo que eso supone).
    #[arg(long = "allow-origin", value_name = "ORIGEN")]
    allow_origins: Vec<AllowedOrigin>,

    /// Único sitio (un origen, p. ej. el aula virtual del curso) que puede
    /// mostrar la página dentro de un marco; sin él, ninguno.
    #[arg(long = "allow-frame-from", value_name = "ORIGEN")]
    allow_frame_from: Option<Origin>,

    /// Certificado PEM para servir https y wss (con --tls-key).
    #[arg(long, value_name = "FICHERO", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// Clave privada PEM del certificado (con --tls-cert).
    #[arg(long, value_name = "FICHERO", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Cada cuántos segundos se mira si --tls-cert y --tls-key han
    /// cambiado (también con SIGHUP): un par renovado y válido se usa sin
    /// reiniciar ni cortar sesiones.
    #[arg(long, value_name = "DURACIÓN", default_value_t = PositiveDuration::from_duration(WatchedPair::CHECK_INTERVAL), requires = "tls_cert")]
    tls_check_interval: PositiveDuration,

    /// Sesiones abiertas a la vez; más allá, HTTP 503.
    #[arg(long, value_name = "N", default_value_t = Config::MAX_SESSIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions: u32,

    /// Sesiones abiertas a la vez desde una misma dirección de cliente
    /// (la que anuncia un proxy de confianza, si no la del par); más allá,
    /// HTTP 429. 0: sin límite.
    #[arg(long, value_name = "N", default_value_t = Config::MAX_SESSIONS_PER_CLIENT as u32)]
    max_sessions_per_client: u32,

    /// Conexiones WebSocket nuevas por segundo desde una misma dirección
    /// de cliente, con ráfagas de tres segundos; más allá, HTTP 429 con
    /// Retry-After. 0: sin límite.
    #[arg(long, value_name = "N", default_value_t = Config::UPGRADES_PER_CLIENT)]
    upgrades_per_client: u32,

    /// Conexiones HTTP abiertas a la vez desde una misma dirección (páginas,
    /// saludos en curso, conexiones en espera), contadas antes de leer nada;
    /// los proxies de confianza no cuentan. 0: sin límite.
    #[arg(long, value_name = "N", default_value_t = Config::MAX_CONNECTIONS_PER_CLIENT as u32)]
    max_connections_per_client: u32,

    /// Tamaño máximo de un mensaje del cliente en bytes; más grande, se
    /// cierra con 1009.
    #[arg(long, value_name = "BYTES", default_value_t = SessionConfig::MAX_MESSAGE as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_message: u32,

    /// Tiempo para completar el saludo TLS y HTTP.
    #[arg(long, value_name = "DURACIÓN",
          default_value_t = PositiveDuration::from_secs(Config::HANDSHAKE_TIMEOUT_SECS))]
    handshake_timeout: PositiveDuration,

    /// Tiempo de silencio tras el que se hace ping al cliente; sin
    /// respuesta en otro tanto, se le da por perdido.
    #[arg(long, value_name = "DURACIÓN",
          default_value_t = PositiveDuration::from_secs(SessionConfig::PING_INTERVAL_SECS))]
    ping_interval: PositiveDuration,

    /// Tiempo que, cerrado un lado, se sigue entregando lo que envía el
    /// otro.
    #[arg(long, value_name = "DURACIÓN",
          default_value_t = PositiveDuration::from_secs(SessionConfig::CLOSE_GRACE_SECS))]
    close_grace: PositiveDuration,

    /// Tiempo que puede esperar un envío a un cliente que no lee; pasado
    /// ese tiempo se le da por perdido.
    #[arg(long, value_name = "DURACIÓN",
          default_value_t = PositiveDuration::from_secs(SessionConfig::WRITE_TIMEOUT_SECS))]
    write_timeout: PositiveDuration,

    /// Tiempo de espera al conectar con el servidor.
    #[arg(long, value_name = "DURACIÓN",
          default_value_t = PositiveDuration::from_secs(SessionConfig::CONNECT_TIMEOUT_SECS))]
    connect_timeout: PositiveDuration,

    /// Tiempo que, al detenerse, tienen las sesiones para cerrarse (con
    /// 1001) antes de cortarlas.
    #[arg(long, value_name = "DURACIÓN",
          default_value_t = PositiveDuration::from_secs(Config::DRAIN_SECS))]
    drain: PositiveDuration,

    /// Balanceador de confianza (red como 10.0.0.0/8, o una dirección;
    /// repetible): de sus conexiones se toma la cabecera PROXY si la hay, y
    /// X-Forwarded-For o Forwarded, para saber quién es el cliente. Por
    /// defecto, ninguno.
    #[arg(long = "trusted-proxy", value_name = "RED")]
    trusted_proxies: Vec<Network>,

    /// Empieza cada conexión con el servidor con una cabecera PROXY v2 que
    /// dice quién es el cliente (el servidor debe confiar en el puente con
    /// --trusted-proxy).
    #[arg(long)]
    send_proxy: bool,

    /// Sirve las métricas de Prometheus en http://MÁQUINA:PUERTO/metrics,
    /// un puerto aparte del del puente (p. ej. 127.0.0.1:9101; puerto 0
    /// elige uno libre); sin esta opción no se sirven.
    #[arg(long, value_name = "MÁQUINA:PUERTO")]
    metrics: Option<HostPort>,

    /// Clave de la demo: sin ella no se abre ninguna sesión (HTTP 401). Se
    /// da en el enlace para unirse (/?clave=…), que el puente escribe al
    /// arrancar, o en ws://…/ws?clave=…. «auto» elige una al azar (128
    /// bits). Por defecto, ninguna si se escucha en loopback; en cualquier
    /// otra dirección el puente elige una, salvo con --public.
    #[arg(long, value_name = "CLAVE", conflicts_with = "public")]
    access_code: Option<String>,

    /// La demo es para cualquiera: sin clave aunque se escuche fuera de
    /// loopback.
    #[arg(long)]
    public: bool,

    // --- Automatic HTTPS (ACME): a separate block, see `AcmeArgs`. ---
    #[command(flatten)]
    acme: AcmeArgs,

    #[command(flatten)]
    flags: HelpFlags,
}

/// The `--acme-*` flags.
#[derive(Debug, clap::Args)]
struct AcmeArgs {
    /// Nombre DNS para el que el puente obtiene solo su certificado de una
    /// CA ACME (Let's Encrypt por defecto) y lo renueva sin reiniciar
    /// (repetible); no con --tls-cert. La CA comprueba el puerto 443: el puente debe escuchar
    /// en él o recibirlo reenviado.
    #[arg(
        long = "acme-domain",
        value_name = "NOMBRE",
        conflicts_with = "tls_cert"
    )]
    domains: Vec<String>,

    /// Correo de contacto para los avisos de la CA.
    #[arg(long = "acme-email", value_name = "CORREO", requires = "domains")]
    email: Option<String>,

    /// URL del directorio ACME de la CA.
    #[arg(long = "acme-directory", value_name = "URL", default_value = acme::LETS_ENCRYPT)]
    directory: String,

    /// Raíz PEM más en la que confiar al hablar con la CA (una CA privada
    /// o de pruebas).
    #[arg(long = "acme-ca-cert", value_name = "FICHERO", requires = "domains")]
    ca_cert: Option<PathBuf>,

    /// Carpeta donde se guardan la cuenta y el certificado [por defecto:
    /// $XDG_DATA_HOME/sockets-tema12/acme, o ~/.local/share/sockets-tema12/acme].
    #[arg(long = "acme-cache", value_name = "DIR", requires = "domains")]
    cache: Option<PathBuf>,

    /// Renueva el certificado cuando le queden estos días; por defecto, a
    /// los dos tercios de su vida.
    #[arg(long = "acme-renew-within", value_name = "DÍAS", requires = "domains",
          value_parser = clap::value_parser!(u32).range(1..))]
    renew_within: Option<u32>,
}

impl AcmeArgs {
    /// The ACME settings, if `--acme-domain` was given.
    fn config(&self) -> anyhow::Result<Option<AcmeConfig>> {
        if self.domains.is_empty() {
            return Ok(None);
        }
        let cache = match &self.cache {
            Some(cache) => cache.clone(),
            None => AcmeConfig::default_cache().context(
                "no se sabe dónde guardar el certificado: defina HOME o use --acme-cache",
            )?,
        };
        Ok(Some(AcmeConfig {
            domains: self.domains.clone(),
            email: self.email.clone(),
            directory: self.directory.clone(),
            ca_cert: self.ca_cert.clone(),
            cache,
            renew_within: self
                .renew_within
                .map(|days| Duration::from_secs(u64::from(days) * 86_400)),
        }))
    }
}

fn main() -> ExitCode {
    let args: Args = parse_args();
    init_logging("info");
    exit_code(run(args))
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    let listen = args.listen.clone();
    let metrics_address = args.metrics.clone();
    let drain_written = args.drain;
    let certificates = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(WatchedPair::load(cert, key, args.tls_check_interval.get())?)
        }
        _ => None,
    };
    let acme_config = args.acme.config()?;
    let mut config = config_of(args)?;
    config.tls = certificates
        .as_ref()
        .map(WatchedPair::acceptor)
        .transpose()?;
    netkit::accept::raise_descriptor_limit();
    let listener = listen::bind(listen.host(), listen.port()).await?;
    let scraped = match &metrics_address {
        Some(address) => Some((metrics::bind(address).await?, exporter()?)),
        None => None,
    };
    if let Some((_, exporter)) = &scraped {
        config.metrics = Arc::new(exporter.register(BridgeMetrics::register));
    }
    // Before the first line, which tells harnesses the bridge is up.
    reload_on_sighup(certificates.as_ref().map(WatchedPair::trigger))?;
    // After the metrics (it counts there), before serving (a cached
    // certificate is served from the first handshake).
    let acme = match acme_config {
        Some(acme_config) => {
            let domains = acme_config.domains.join(", ");
            let acme = Acme::new(acme_config, Arc::clone(&config.metrics))?;
            config.tls = Some(acme.acceptor()?);
            Some((acme, domains))
        }
        None => None,
    };
    let mut signals =
        shutdown::StopSignals::install().context("no se pudo instalar el manejador de señales")?;
    // The first line names the bridge's address (harnesses read it).
    announce_addresses(&listener, &config)?;
    if let Some((_, domains)) = &acme {
        announce(&format!(
            "HTTPS automático (ACME) para {domains}: la CA comprueba el puerto 443, que debe llegar a este puente"
        ));
        // People come in by the name (on 443), not by this machine's
        // addresses: that is the link to share.
        if let Some(code) = &config.access_code {
            for domain in domains.split(", ") {
                announce(&format!(
                    "Enlace con el nombre: {}",
                    code.join_link(&format!("https://{domain}"))
                ));
            }
        }
    }
    if let Some((metrics_listener, exporter)) = scraped {
        let metrics_addr = metrics_listener
            .local_addr()
            .context("no se pudo leer la dirección de las métricas")?;
        announce(&format!("Métricas: {}", metrics::url(metrics_addr)));
        tokio::spawn(metrics::serve(metrics_listener, Arc::new(exporter)));
    }

    let stop = CancellationToken::new();
    if let Some(certificates) = certificates {
        tokio::spawn(certificates.watch(Arc::clone(&config.metrics), stop.clone()));
    }
    if let Some((acme, _)) = acme {
        tokio::spawn(acme.run(stop.clone()));
    }
    let drain = config.drain;
    let serving = bridge::serve(listener, config, stop.clone());
    tokio::pin!(serving);
    tokio::select! {
        signal = signals.recv() => {
            info!("{signal}: el puente cierra las sesiones con 1001 y se detiene (como mucho {drain_written})");
        }
        () = &mut serving => return Ok(()),
    }
    stop.cancel();
    // serve() returns within the drain; this bounds the rest of the exit.
    if tokio::time::timeout(drain + EXIT_MARGIN, serving)
        .await
        .is_err()
    {
        warn!("el puente no terminó a tiempo");
    }
    Ok(())
}

/// The bridge's configuration from the command line, checked.
fn config_of(args: Args) -> anyhow::Result<Config> {
    let origins = OriginPolicy::from_allowed(args.allow_origins);
    if origins.allows_any() {
        warn!("--allow-origin '*': cualquier página web puede usar este puente");
    }
    if let Some(web) = &args.web {
        if !web.is_dir() {
            bail!("la carpeta de la página {} no existe", web.display());
        }
        if !web.join("index.html").is_file() {
            warn!("{} no tiene index.html", web.display());
        }
    }
    let access_code = access_code_of(args.access_code.as_deref(), args.public, args.listen.host())?;
    let frame_from = args.allow_frame_from.map(|origin| origin.to_string());
    let trusted_proxies = TrustedProxies::from_networks(args.trusted_proxies);
    let max_message = args.max_message as usize;
    let session = SessionConfig {
        target: args.target.to_string(),
        connect_timeout: args.connect_timeout.get(),
        ping_interval: args.ping_interval.get(),
        close_grace: args.close_grace.get(),
        write_timeout: args.write_timeout.get(),
        read_size: SessionConfig::READ_SIZE,
        max_message,
        send_proxy: args.send_proxy,
    };
    Ok(Config {
        session,
        origins,
        max_sessions: args.max_sessions as usize,
        max_sessions_per_client: args.max_sessions_per_client as usize,
        upgrades_per_client: args.upgrades_per_client,
        max_connections_per_client: args.max_connections_per_client as usize,
        web: args.web,
        frame_from,
        // From the watched --tls-cert/--tls-key files, in run().
        tls: None,
        handshake_timeout: args.handshake_timeout.get(),
        drain: args.drain.get(),
        trusted_proxies,
        metrics: Arc::default(),
        access_code,
    })
}

/// The join code the bridge asks for: the one given, a random one for
/// `auto`, none on loopback or with `--public`, and a random one otherwise:
/// on any other address the bridge does not serve without a decision.
fn access_code_of(
    given: Option<&str>,
    public: bool,
    listen_host: &str,
) -> anyhow::Result<Option<AccessCode>> {
    let code = match given {
        Some("auto") => AccessCode::generate()?,
        Some(code) => AccessCode::new(code).context("--access-code no es válida")?,
        None if public || is_loopback(listen_host) => return Ok(None),
        None => AccessCode::generate()?,
    };
    Ok(Some(code))
}

/// Whether `host` (of `--listen`) only accepts connections from this machine.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// SIGHUP, which operators send to reload daemons, reads the certificate
/// files again (with `trigger`) instead of stopping the bridge.
fn reload_on_sighup(trigger: Option<ReloadTrigger>) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups =
            signal(SignalKind::hangup()).context("no se pudo instalar el manejador de SIGHUP")?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match &trigger {
                    Some(trigger) => {
                        info!("SIGHUP: se vuelven a leer el certificado y la clave");
                        trigger.reload();
                    }
                    None => {
                        info!("SIGHUP: sin --tls-cert no hay nada que recargar; el puente sigue")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(trigger);
    Ok(())
}

/// The registry of the bridge's metrics, with its build info.
fn exporter() -> anyhow::Result<Exporter> {
    Ok(Exporter::new(
        "bridge",
        env!("CARGO_PKG_VERSION"),
        &[(CONNECT_SECONDS, CONNECT_BUCKETS)],
    )?)
}

/// The first stdout line names the bound address (useful with port 0).
/// Then the page and the WebSocket, once per address a person can type:
/// for a listener on `0.0.0.0`/`[::]`, this machine's own addresses.
fn announce_addresses(listener: &TcpListener, config: &Config) -> anyhow::Result<()> {
    let local = listener
        .local_addr()
        .context("no se pudo leer la dirección de escucha")?;
    announce(&format!("Puente escuchando en {local}"));
    let (http, ws) = if config.tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let interfaces = if local.ip().is_unspecified() {
        addresses::interface_addresses().unwrap_or_else(|error| {
            warn!("no se pudieron leer las direcciones de esta máquina: {error}");
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let mut reachable = local;
    if addresses::page_urls(local, http, &interfaces).is_empty() {
        announce(
            "Esta máquina no tiene ninguna dirección de red aparte de la local: \
             la página solo se abre desde ella",
        );
        let loopback = match local {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        reachable = SocketAddr::new(loopback, local.port());
    }
    let urls = |scheme: &str| addresses::page_urls(reachable, scheme, &interfaces);
    match &config.web {
        Some(web) => {
            announce(&format!("Página ({}), en el navegador:", web.display()));
            for url in urls(http) {
                announce(&format!("  Abra {url}"));
            }
        }
        None => announce("Sin página (use --web DIR)"),
    }
    for url in urls(ws) {
        announce(&format!(
            "WebSocket: {url}ws → servidor {}",
            config.session.target
        ));
    }
    // Printed once, on stdout: the teacher shares it. The log never has it.
    if let Some(code) = &config.access_code {
        announce("Enlace para unirse a la demo (compártalo con la clase):");
        for url in urls(http) {
            announce(&format!(
                "  Abra {}",
                code.join_link(url.trim_end_matches('/'))
            ));
        }
        for url in urls(ws) {
            announce(&format!(
                "Clientes que no son navegadores: {url}ws?{}={}",
                bridge::access::QUERY,
                code.reveal()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod access_code_default {
    use super::*;

    #[test]
    fn loopback_needs_no_code_any_other_address_gets_one_unless_public() {
        for host in ["127.0.0.1", "localhost", "::1", "[::1]", "127.9.9.9"] {
            assert!(
                access_code_of(None, false, host).unwrap().is_none(),
                "{host}"
            );
        }
        for host in ["0.0.0.0", "::", "192.168.1.10", "demo.example"] {
            let code = access_code_of(None, false, host).unwrap().expect(host);
            assert_eq!(code.reveal().len(), 22);
            assert!(access_code_of(None, true, host).unwrap().is_none());
        }
        let given = access_code_of(Some("aula"), false, "0.0.0.0")
            .unwrap()
            .unwrap();
        assert_eq!(given.reveal(), "aula");
        let auto = access_code_of(Some("auto"), false, "127.0.0.1")
            .unwrap()
            .unwrap();
        assert_ne!(auto.reveal(), "auto");
        assert!(access_code_of(Some("a b"), false, "0.0.0.0").is_err());
    }
}
