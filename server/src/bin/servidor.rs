//! `servidor`: the tutorial's uppercase TCP server, for many clients at once.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use console::args::{HostPort, Network, PositiveDuration, DURATION_FORMS};
use console::{announce, exit_code, init_logging, parse_args, HelpFlags, HELP_TEMPLATE};
use netkit::metrics::{self, Exporter};
use netkit::proxy_protocol::TrustedProxies;
use netkit::shutdown;
use servidor::{Config, ServerMetrics};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long after Ctrl-C or SIGTERM the process exits, whatever is left.
const EXIT_DEADLINE: Duration = Duration::from_millis(900);

/// Servidor TCP del Tema 12: responde cada mensaje en MAYÚSCULAS.
///
/// Atiende a muchos clientes a la vez. La primera línea de la salida
/// estándar indica la dirección en la que escucha; el registro (RUST_LOG,
/// por defecto «info») va a la salida de errores.
#[derive(Debug, Parser)]
#[command(
    name = "servidor",
    version,
    help_template = HELP_TEMPLATE,
    override_usage = "servidor [OPCIONES]",
    after_help = DURATION_FORMS,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Args {
    /// Dirección en la que escuchar; 0.0.0.0 para toda la red.
    #[arg(
        long,
        value_name = "MÁQUINA",
        default_value = Config::HOST
    )]
    host: String,

    /// Puerto TCP; 0 elige uno libre.
    #[arg(
        long,
        value_name = "PUERTO",
        default_value_t = Config::PORT
    )]
    port: u16,

    /// Clientes atendidos a la vez; los demás esperan su turno.
    #[arg(long, value_name = "N", default_value_t = Config::MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// Conexiones abiertas a la vez desde una misma dirección de cliente (la
    /// que anuncia un proxy de confianza con PROXY, si no la del par); más
    /// allá, se le avisa y se cierra. 0 (por omisión): sin límite, porque
    /// detrás de un puente sin --send-proxy todas vienen de la dirección del
    /// puente.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_connections_per_client: u32,

    /// Tiempo sin recibir nada tras el que se cierra una conexión.
    #[arg(long, value_name = "DURACIÓN",
          default_value_t = PositiveDuration::from_secs(Config::IDLE_TIMEOUT_SECS))]
    idle_timeout: PositiveDuration,

    /// Tiempo que puede esperar un envío a un cliente que no lee.
    #[arg(long, value_name = "DURACIÓN",
          default_value_t = PositiveDuration::from_secs(Config::WRITE_TIMEOUT_SECS))]
    write_timeout: PositiveDuration,

    /// Caracteres de cada mensaje que se muestran en el registro.
    #[arg(
        long,
        value_name = "N",
        default_value_t = Config::LOG_PREVIEW
    )]
    log_preview: usize,

    /// Balanceador de confianza (red como 10.0.0.0/8, o una dirección;
    /// repetible): sus conexiones deben empezar con una cabecera PROXY (v1
    /// o v2) que dice quién es el cliente. Por defecto, ninguno.
    #[arg(long = "trusted-proxy", value_name = "RED")]
    trusted_proxies: Vec<Network>,

    /// Sirve las métricas de Prometheus en http://MÁQUINA:PUERTO/metrics,
    /// un puerto aparte del de los clientes (p. ej. 127.0.0.1:9100; puerto 0
    /// elige uno libre); sin esta opción no se sirven.
    #[arg(long, value_name = "MÁQUINA:PUERTO")]
    metrics: Option<HostPort>,

    #[command(flatten)]
    flags: HelpFlags,
}

fn main() -> ExitCode {
    let args: Args = parse_args();
    init_logging("info");
    exit_code(run(args))
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    let trusted_proxies = TrustedProxies::from_networks(args.trusted_proxies);
    netkit::accept::raise_descriptor_limit();
    let listener = netkit::listen::bind(&args.host, args.port).await?;
    let local = listener
        .local_addr()
        .context("no se pudo leer la dirección de escucha")?;
    let scraped = match &args.metrics {
        Some(address) => Some((metrics::bind(address).await?, exporter()?)),
        None => None,
    };
    let mut signals =
        shutdown::StopSignals::install().context("no se pudo instalar el manejador de señales")?;
    // The first line names the clients' address (harnesses read it).
    announce(&format!("Servidor escuchando en {local}"));

    let mut config = Config {
        max_connections: args.max_connections as usize,
        max_connections_per_client: args.max_connections_per_client as usize,
        idle_timeout: args.idle_timeout.get(),
        write_timeout: args.write_timeout.get(),
        log_preview: args.log_preview,
        trusted_proxies,
        ..Config::default()
    };
    if let Some((metrics_listener, exporter)) = scraped {
        let metrics_addr = metrics_listener
            .local_addr()
            .context("no se pudo leer la dirección de las métricas")?;
        config.metrics = exporter.register(ServerMetrics::register);
        announce(&format!("Métricas: {}", metrics::url(metrics_addr)));
        tokio::spawn(metrics::serve(metrics_listener, Arc::new(exporter)));
    }
    let stop = CancellationToken::new();
    let mut serving = tokio::spawn(servidor::serve(listener, config, stop.clone()));

    tokio::select! {
        signal = signals.recv() => {
            info!("{signal}: el servidor deja de aceptar conexiones y se detiene");
        }
        ended = &mut serving => {
            ended.context("el servidor terminó de forma inesperada")?;
            return Ok(());
        }
    }
    stop.cancel();
    if tokio::time::timeout(EXIT_DEADLINE, serving).await.is_err() {
        warn!("se cierran las conexiones que no terminaron a tiempo");
    }
    Ok(())
}

/// The registry of servidor's metrics, with its build info.
fn exporter() -> anyhow::Result<Exporter> {
    Ok(Exporter::new("servidor", env!("CARGO_PKG_VERSION"), &[])?)
}
