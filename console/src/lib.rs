//! How the binaries speak to the terminal, in the tutorial's Spanish: the log
//! format, message previews for the log, and io errors in plain words; the
//! values their flags take are in [`args`].

pub mod args;

use std::fmt;
use std::io;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The `--help` layout shared by every binary, with Spanish headings.
pub const HELP_TEMPLATE: &str = "\
{before-help}{about-with-newline}
Uso: {usage}

Opciones:
{options}{after-help}";

/// `-h/--help` and `-V/--version`, in Spanish, for every binary (with
/// `disable_help_flag` and `disable_version_flag` set on the command).
#[derive(Debug, clap::Args)]
pub struct HelpFlags {
    /// Muestra esta ayuda.
    #[arg(short, long, action = clap::ArgAction::Help)]
    help: Option<bool>,

    /// Muestra la versión.
    #[arg(short = 'V', long, action = clap::ArgAction::Version)]
    version: Option<bool>,
}

/// Prints a line on standard output (the bound address, say) and flushes
/// it, so that a program reading it sees it at once. Never panics: with
/// nobody reading (`servidor | head -1`), the line is dropped.
pub fn announce(line: &str) {
    use std::io::Write;
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// The process's exit: 0, or 1 after `error: …` on standard error.
pub fn exit_code<E: fmt::Display>(outcome: Result<(), E>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Parses the command line like `T::parse`, but reports the common usage
/// mistakes in Spanish, and shows each default in the help in Spanish.
/// Exits with 0 after `--help`/`--version`, 2 on a usage error.
pub fn parse_args<T: clap::Parser>() -> T {
    let matches = spanish_defaults(T::command())
        .try_get_matches()
        .unwrap_or_else(|error| exit_on_usage_error(error));
    T::from_arg_matches(&matches).unwrap_or_else(|error| exit_on_usage_error(error))
}

/// Ends each option's help with «(por defecto …)», made from the very value
/// clap falls back on, in place of clap's English «[default: …]»: a default
/// is written once, in its `#[arg]`, and the help cannot drift from it.
pub fn spanish_defaults(command: clap::Command) -> clap::Command {
    let with_defaults: Vec<clap::Id> = command
        .get_arguments()
        .filter(|arg| arg.get_action().takes_values() && !arg.get_default_values().is_empty())
        .map(|arg| arg.get_id().clone())
        .collect();
    with_defaults.into_iter().fold(command, |command, id| {
        command.mut_arg(id, |arg| {
            let values: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let help = help.trim_end_matches('.');
            arg.help(format!("{help} (por defecto {})", values.join(", ")))
                .hide_default_value(true)
        })
    })
}

fn exit_on_usage_error(error: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match error.get(kind) {
        Some(ContextValue::String(text)) => text.clone(),
        Some(ContextValue::Strings(texts)) => texts.join(", "),
        _ => String::from("?"),
    };
    let message = match error.kind() {
        ErrorKind::InvalidValue if context(ContextKind::InvalidValue).is_empty() => {
            format!("falta el valor de {}", context(ContextKind::InvalidArg))
        }
        ErrorKind::MissingRequiredArgument => {
            format!("falta {}", context(ContextKind::InvalidArg))
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => format!(
            "valor no válido «{}» para {}{}",
            context(ContextKind::InvalidValue),
            context(ContextKind::InvalidArg),
            reason(&error)
        ),
        ErrorKind::UnknownArgument => {
            format!(
                "argumento desconocido «{}»",
                context(ContextKind::InvalidArg)
            )
        }
        ErrorKind::ArgumentConflict => format!(
            "{} no se puede usar junto con {}",
            context(ContextKind::InvalidArg),
            context(ContextKind::PriorArg)
        ),
        ErrorKind::NoEquals | ErrorKind::TooManyValues | ErrorKind::WrongNumberOfValues => {
            format!("uso incorrecto de {}", context(ContextKind::InvalidArg))
        }
        _ => error.exit(),
    };
    eprintln!("error: {message}\n\nMás información: --help");
    std::process::exit(2)
}

/// Why a value was refused, after a colon, when one of [`args`]'s parsers
/// said why in Spanish (clap's own parsers speak English: left out).
fn reason(error: &clap::Error) -> String {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<args::InvalidValue>())
        .map(|reason| format!(": {reason}"))
        .unwrap_or_default()
}

/// Sends `tracing` events to standard error, filtered by `RUST_LOG`, or by
/// `default` when it is unset or invalid. Informational lines read like the
/// tutorial's `print`s; warnings and errors carry a prefix.
pub fn init_logging(default: &str) {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    transcript_subscriber(filter, io::stderr).init();
}

/// The subscriber [`init_logging`] installs, writing the events `filter`
/// lets through to `writer`: for tests that read the transcript in-process.
/// `filter` is an [`EnvFilter`] or its directives (`"info"`,
/// `"warn,[conn{id=7}]=debug"`).
pub fn transcript_subscriber<F, W>(filter: F, writer: W) -> impl Subscriber + Send + Sync + 'static
where
    F: Into<EnvFilter>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry()
        .with(filter.into())
        .with(SpanIds)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .event_format(TranscriptFormat),
        )
}

/// The spans whose `id` the transcript writes before each line inside
/// them, and how: servidor's connections (`info_span!("conn", id)`) show
/// as `[#7]`, the bridge's sessions (`info_span!("ws", id)`) as `[ws#7]`.
/// The id lives in the span, given once per connection, and
/// `RUST_LOG='warn,[conn{id=7}]=debug'` picks one connection's lines.
///
/// At `info` level: under `RUST_LOG=warn` (benchmarks, `loadgen`) the spans
/// are off and cost nothing as the tasks are polled; a warning then shows
/// no id, as no other line names the connection at that level.
const ID_SPANS: [(&str, &str); 2] = [("conn", "#"), ("ws", "ws#")];

/// A connection's mark and id, kept in its span's extensions by [`SpanIds`]
/// for [`TranscriptFormat`] to write.
struct SpanId {
    mark: &'static str,
    id: u64,
}

/// Takes the `id` of each span named in [`ID_SPANS`] when the span is made,
/// as a number: the fmt layer's own record of the fields is text, styled
/// for a terminal.
struct SpanIds;

impl<S> Layer<S> for SpanIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let name = attrs.metadata().name();
        let Some(&(_, mark)) = ID_SPANS.iter().find(|(known, _)| *known == name) else {
            return;
        };
        let mut found = IdField(None);
        attrs.record(&mut found);
        if let (Some(id), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().insert(SpanId { mark, id });
        }
    }
}

/// Finds a field named `id` holding a whole number.
struct IdField(Option<u64>);

impl Visit for IdField {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "id" {
            self.0 = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "id" {
            self.0 = u64::try_from(value).ok();
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

/// Formats an event as its message and fields, with no timestamp or target,
/// so the server console shows the tutorial's transcript; inside a
/// connection's span (see [`ID_SPANS`]) the line starts with its id.
struct TranscriptFormat;

impl<S, N> FormatEvent<S, N> for TranscriptFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let prefix = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "aviso: ",
            Level::INFO => "",
            Level::DEBUG | Level::TRACE => "depuración: ",
        };
        write!(writer, "{prefix}")?;
        for span in ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
        {
            if let Some(SpanId { mark, id }) = span.extensions().get::<SpanId>() {
                write!(writer, "[{mark}{id}] ")?;
            }
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A message as the log shows it: decoded leniently, control characters
/// escaped (a peer cannot forge log lines), one trailing newline dropped,
/// and cut after `limit` characters with a note of the full size.
pub struct Preview<'a> {
    bytes: &'a [u8],
    limit: usize,
}

/// Shows `bytes` in the log, cut after `limit` characters.
pub fn preview(bytes: &[u8], limit: usize) -> Preview<'_> {
    Preview { bytes, limit }
}

impl fmt::Display for Preview<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self
            .bytes
            .strip_suffix(b"\n")
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .unwrap_or(self.bytes);
        let mut written = 0;
        for chunk in shown.utf8_chunks() {
            for character in chunk.valid().chars() {
                if written == self.limit {
                    return write!(f, "… ({} bytes en total)", self.bytes.len());
                }
                if character.is_control() {
                    write!(f, "{}", character.escape_default())?;
                } else {
                    write!(f, "{character}")?;
                }
                written += 1;
            }
            for byte in chunk.invalid() {
                if written == self.limit {
                    return write!(f, "… ({} bytes en total)", self.bytes.len());
                }
                write!(f, "\\x{byte:02X}")?;
                written += 1;
            }
        }
        Ok(())
    }
}

/// A duration as the log says it, in seconds with a decimal comma:
/// `5 s`, `0,3 s`, `1,25 s` (to the millisecond). Timeouts may be given as
/// `300ms`: whole seconds alone would log that as `0 s`.
pub struct Seconds(pub std::time::Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0.as_secs();
        let millis = self.0.subsec_millis();
        if millis == 0 {
            return write!(f, "{whole} s");
        }
        let fraction = format!("{millis:03}");
        write!(f, "{whole},{} s", fraction.trim_end_matches('0'))
    }
}

/// An io error in Spanish where the cause is a common one, else as the
/// system words it.
pub fn describe_io(error: &io::Error) -> String {
    let words = match error.kind() {
        io::ErrorKind::ConnectionRefused => "conexión rechazada (¿está en marcha el servidor?)",
        io::ErrorKind::ConnectionReset => "el otro extremo reinició la conexión",
        io::ErrorKind::ConnectionAborted => "conexión abortada",
        io::ErrorKind::BrokenPipe => "el otro extremo cerró la conexión",
        io::ErrorKind::TimedOut => "se agotó el tiempo de espera",
        io::ErrorKind::AddrInUse => "la dirección ya está en uso",
        io::ErrorKind::AddrNotAvailable => "la dirección no pertenece a esta máquina",
        io::ErrorKind::NotFound => "no existe",
        io::ErrorKind::PermissionDenied => "permiso denegado",
        io::ErrorKind::HostUnreachable => "no se puede llegar a la máquina",
        io::ErrorKind::NetworkUnreachable => "no se puede llegar a la red",
        _ => return error.to_string(),
    };
    match error.raw_os_error() {
        Some(code) => format!("{words} (error del sistema {code})"),
        None => words.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn seconds_are_said_with_a_decimal_comma_when_not_whole() {
        let said = |millis| Seconds(Duration::from_millis(millis)).to_string();
        assert_eq!(said(5_000), "5 s");
        assert_eq!(said(0), "0 s");
        assert_eq!(said(300), "0,3 s");
        assert_eq!(said(1_250), "1,25 s");
        assert_eq!(said(2_001), "2,001 s");
        // Below a millisecond is not said.
        assert_eq!(Seconds(Duration::from_micros(1_000_400)).to_string(), "1 s");
    }

    #[test]
    fn defaults_are_shown_in_spanish_from_their_values() {
        #[derive(clap::Parser)]
        struct Args {
            /// Puerto; 0 elige uno libre.
            #[arg(long, default_value_t = 5000)]
            port: u16,
            /// Sin valor por defecto.
            #[arg(long)]
            name: Option<String>,
            /// Una bandera.
            #[arg(long)]
            quiet: bool,
        }
        let command = spanish_defaults(<Args as clap::CommandFactory>::command());
        let help_of = |id: &str| {
            let arg = command.get_arguments().find(|arg| arg.get_id() == id);
            arg.and_then(|arg| arg.get_help()).map(ToString::to_string)
        };
        assert_eq!(
            help_of("port").as_deref(),
            Some("Puerto; 0 elige uno libre (por defecto 5000)")
        );
        assert_eq!(help_of("name").as_deref(), Some("Sin valor por defecto"));
        assert_eq!(help_of("quiet").as_deref(), Some("Una bandera"));
    }

    #[test]
    fn a_refused_value_says_why_in_spanish() {
        #[derive(Debug, clap::Parser)]
        struct Args {
            #[arg(long)]
            listen: args::HostPort,
            #[arg(long)]
            port: Option<u16>,
        }
        let refused = |line: &[&str]| {
            let error = <Args as clap::Parser>::try_parse_from(line).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
            reason(&error)
        };
        assert_eq!(
            refused(&["prueba", "--listen", "sin-puerto"]),
            ": falta el puerto (MÁQUINA:PUERTO, p. ej. 127.0.0.1:8080)"
        );
        // clap's own parsers speak English: their reason is left out.
        assert_eq!(refused(&["prueba", "--listen", "h:1", "--port", "abc"]), "");
    }

    #[test]
    fn preview_drops_one_trailing_newline() {
        assert_eq!(preview(b"Hola\n", 80).to_string(), "Hola");
        assert_eq!(preview(b"Hola\r\n", 80).to_string(), "Hola");
        assert_eq!(preview(b"Hola", 80).to_string(), "Hola");
    }

    #[test]
    fn preview_escapes_control_characters_and_invalid_bytes() {
        assert_eq!(
            preview(b"a\nb\x1b[31m\xFF", 80).to_string(),
            "a\\nb\\u{1b}[31m\\xFF"
        );
    }

    #[test]
    fn preview_cuts_long_messages() {
        let long = "ñ".repeat(1000);
        let shown = preview(long.as_bytes(), 5).to_string();
        assert_eq!(shown, "ñññññ… (2000 bytes en total)");
    }

    /// Lines written through [`transcript_subscriber`], kept for a test.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// What `events` log under `filter`, as the transcript shows it.
    fn transcript(filter: &str, events: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = transcript_subscriber(filter, move || writer.clone());
        tracing::subscriber::with_default(subscriber, events);
        captured.text()
    }

    #[test]
    fn the_transcript_writes_a_connections_id_from_its_span() {
        let text = transcript("info", || {
            tracing::info!("servidor escuchando");
            tracing::info_span!("conn", id = 7).in_scope(|| {
                let client = "127.0.0.1:38328";
                tracing::info!("Conexión desde: {client}");
                tracing::warn!("Conexión rechazada desde {client}: falta la cabecera PROXY");
                tracing::debug!("oculto");
            });
            tracing::info_span!("ws", id = 12).in_scope(|| {
                tracing::info!("sesión abierta desde 127.0.0.1:1 hacia 127.0.0.1:5000");
                tracing::error!("algo falló");
            });
            tracing::info_span!("other", id = 3).in_scope(|| tracing::info!("sin marca"));
        });
        assert_eq!(
            text,
            "servidor escuchando\n\
             [#7] Conexión desde: 127.0.0.1:38328\n\
             aviso: [#7] Conexión rechazada desde 127.0.0.1:38328: falta la cabecera PROXY\n\
             [ws#12] sesión abierta desde 127.0.0.1:1 hacia 127.0.0.1:5000\n\
             error: [ws#12] algo falló\n\
             sin marca\n"
        );
    }

    #[test]
    fn under_warn_the_spans_are_off_and_warnings_have_no_id() {
        let text = transcript("warn", || {
            tracing::info_span!("conn", id = 3).in_scope(|| {
                tracing::info!("oculto");
                tracing::warn!("Conexión rechazada");
            });
        });
        assert_eq!(text, "aviso: Conexión rechazada\n");
    }

    #[test]
    fn one_connection_can_be_picked_by_its_span() {
        let text = transcript("warn,[conn{id=7}]=debug", || {
            for id in [6_u64, 7, 8] {
                tracing::info_span!("conn", id).in_scope(|| {
                    tracing::debug!("detalle");
                    tracing::info!("enviando: HOLA");
                });
            }
        });
        assert_eq!(text, "depuración: [#7] detalle\n[#7] enviando: HOLA\n");
        let alone = transcript("[conn{id=7}]=debug", || {
            tracing::info!("fuera de toda conexión");
            for id in [6_u64, 7] {
                tracing::info_span!("conn", id).in_scope(|| tracing::debug!("detalle"));
            }
        });
        assert_eq!(alone, "depuración: [#7] detalle\n");
    }

    #[test]
    fn a_field_named_like_the_id_in_an_event_is_not_taken_for_it() {
        let text = transcript("info", || {
            tracing::info_span!("conn", id = 5).in_scope(|| {
                tracing::info!(id = 9, "hola");
            });
        });
        assert!(text.starts_with("[#5] hola "), "{text:?}");
    }

    #[test]
    fn io_errors_in_spanish() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            describe_io(&refused),
            "conexión rechazada (¿está en marcha el servidor?)"
        );
        let other = io::Error::other("algo raro");
        assert_eq!(describe_io(&other), "algo raro");
    }
}
