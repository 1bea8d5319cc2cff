//! `cliente`: the tutorial's terminal client, with the ` -> ` prompt.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cliente::websocket_link;
use cliente::ClientError;
use console::args::{InvalidValue, PositiveDuration, DURATION_FORMS};
use console::{exit_code, init_logging, parse_args, HelpFlags, HELP_TEMPLATE};
use tokio::io::BufReader;
use tokio_tungstenite::tungstenite::http::Uri;

/// Cliente del Tema 12: envía cada línea escrita al servidor y muestra la
/// respuesta en MAYÚSCULAS.
///
/// Escriba un mensaje tras « -> » y pulse Intro; «q» o el fin de la entrada
/// terminan. También funciona con la entrada redirigida:
///     printf 'Hola\nq\n' | cliente
/// Con --url habla por WebSocket a través del puente:
///     cliente --url ws://127.0.0.1:8080/ws
#[derive(Debug, Parser)]
#[command(
    verbatim_doc_comment,
    name = "cliente",
    version,
    help_template = HELP_TEMPLATE,
    override_usage = "cliente [OPCIONES]",
    after_help = DURATION_FORMS,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Args {
    /// Máquina del servidor.
    #[arg(
        long,
        value_name = "MÁQUINA",
        default_value = cliente::DEFAULT_HOST
    )]
    host: String,

    /// Puerto TCP del servidor.
    #[arg(
        long,
        value_name = "PUERTO",
        default_value_t = cliente::DEFAULT_PORT
    )]
    port: u16,

    /// Conecta por WebSocket a través del puente en vez de por TCP, p. ej.
    /// ws://127.0.0.1:8080/ws (o wss://…).
    #[arg(long, value_name = "URL", conflicts_with_all = ["host", "port"],
          value_parser = websocket_url)]
    url: Option<String>,

    /// Certificado PEM en el que confiar además de los públicos, para wss://
    /// con un certificado propio; si el puente presenta ese mismo
    /// certificado, se acepta tal cual (p. ej. el autofirmado de
    /// «openssl req -x509 …»).
    #[arg(long, value_name = "FICHERO", requires = "url")]
    ca_cert: Option<PathBuf>,

    /// Tiempo de espera para conectar y para cada respuesta.
    #[arg(long, value_name = "DURACIÓN", default_value_t = PositiveDuration::from_secs(30))]
    timeout: PositiveDuration,

    #[command(flatten)]
    flags: HelpFlags,
}

/// `--url` as clap checks it: `ws://` or `wss://` and a host, so that a
/// mistyped URL is a usage error (the connection still checks the rest).
fn websocket_url(text: &str) -> Result<String, InvalidValue> {
    let uri: Uri = text.parse().map_err(|_| InvalidValue::NotWebSocketUrl)?;
    let scheme = uri.scheme_str();
    let host = uri.host().filter(|host| !host.is_empty());
    match (scheme, host) {
        (Some("ws" | "wss"), Some(_)) => Ok(text.to_string()),
        _ => Err(InvalidValue::NotWebSocketUrl),
    }
}

fn main() -> ExitCode {
    let args: Args = parse_args();
    init_logging("warn");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return exit_code(Err(format!("no se pudo iniciar: {error}"))),
    };
    let outcome = runtime.block_on(run(args));
    // Standard input is read on a blocking thread that the runtime would
    // otherwise wait for; nothing is pending on it once the conversation ends.
    runtime.shutdown_background();
    exit_code(outcome)
}

async fn run(args: Args) -> Result<(), ClientError> {
    let patience = args.timeout.get();
    let input = BufReader::new(tokio::io::stdin());
    let output = tokio::io::stdout();
    match &args.url {
        Some(url) => {
            let link = websocket_link::connect_url(url, args.ca_cert.as_deref(), patience).await?;
            cliente::converse(link, input, output, patience).await
        }
        None => {
            let link = cliente::connect(&args.host, args.port, patience).await?;
            cliente::converse(link, input, output, patience).await
        }
    }
}
