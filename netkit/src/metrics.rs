//! Prometheus metrics for `servidor` and `bridge`: what both binaries share
//! when started with `--metrics MÁQUINA:PUERTO`.
//!
//! - [`Exporter`]: the registry (the `metrics` crate's facade over
//!   `metrics-exporter-prometheus`), with the program's build info and the
//!   process's metrics (`metrics-process`: memory, descriptors, CPU);
//! - [`bind`] and [`serve`]: `GET /metrics` on a listener of its own, so the
//!   metrics never share the public port by accident.
//!
//! Each program registers its own handles through [`Exporter::register`]
//! once, at start: a handle is an atomic in the registry, so counting on
//! the hot path takes no lock, looks up no label and allocates nothing.
//! Without `--metrics` no exporter exists and the programs count on
//! [`noop`] handles, which do nothing.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{
    BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::accept::Acceptor;
use console::args::HostPort;
use console::describe_io;

/// The path the metrics are served on.
pub const PATH: &str = "/metrics";

/// The Prometheus text format, version 0.0.4: what every Prometheus
/// version and `promtool check metrics` read.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Scrapers connected at once; more wait in the listen backlog. A
/// Prometheus server keeps one connection per target.
const MAX_CONNECTIONS: usize = 64;

/// How long a scraper may take to send its request, and how long an idle
/// keep-alive connection is kept.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often histogram samples are folded into their buckets between
/// scrapes, so that they never pile up when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the metrics could not be set up.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// The address given to `--metrics` could not be listened on. The
    /// message says the system's error, so it is not also the `source()`
    /// (anyhow's `{:#}` would print it twice).
    #[error("no se pudo escuchar en --metrics {address}: {}", describe_io(.error))]
    Bind {
        /// The address given.
        address: HostPort,
        /// Why.
        error: io::Error,
    },
    /// A histogram was given no buckets.
    #[error("histograma mal definido: {0}")]
    Histogram(BuildError),
}

impl From<BuildError> for MetricsError {
    fn from(error: BuildError) -> MetricsError {
        MetricsError::Histogram(error)
    }
}

/// The registry of one program's metrics, and how they are rendered.
pub struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

impl Exporter {
    /// A registry for `program` (the prefix of its metric names) at
    /// `version`, with `histograms` rendered as Prometheus histograms with
    /// those bucket bounds (the exporter's default would be a summary).
    ///
    /// It registers `<program>_build_info{version}` (always 1) and the
    /// process metrics.
    pub fn new(
        program: &str,
        version: &str,
        histograms: &[(&str, &[f64])],
    ) -> Result<Self, MetricsError> {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in histograms {
            builder =
                builder.set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)?;
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let exporter = Self {
            recorder,
            handle,
            process: metrics_process::Collector::default(),
        };
        let name = format!("{program}_build_info");
        exporter.register(|| {
            ::metrics::describe_gauge!(
                name.clone(),
                "Siempre 1; la etiqueta version dice qué versión está en marcha."
            );
            ::metrics::gauge!(name, "version" => version.to_string()).set(1.0);
            // In place of the crate's own `describe`, which is in English.
            // A metric it adds in a new version would have no `# HELP`,
            // which the tests' `promtool check metrics` reports.
            describe_process_metrics();
        });
        Ok(exporter)
    }

    /// Runs `register` with this registry as the `metrics` crate's
    /// recorder: the handles it makes with `counter!`, `gauge!` and
    /// `histogram!` count into this registry for as long as they live, and
    /// its `describe_*!` calls give the `# HELP` lines.
    pub fn register<T>(&self, register: impl FnOnce() -> T) -> T {
        ::metrics::with_local_recorder(&self.recorder, register)
    }

    /// Every metric in the Prometheus text format (0.0.4), the process
    /// metrics read at this moment.
    pub fn render(&self) -> String {
        self.register(|| self.process.collect());
        self.handle.render()
    }
}

/// The `# HELP` of the process metrics (`metrics-process`'s names, which
/// have no prefix here), in Spanish.
fn describe_process_metrics() {
    use ::metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(
        "process_cpu_seconds_total",
        Unit::Seconds,
        "Tiempo de CPU gastado, de usuario y de sistema, en segundos."
    );
    describe_gauge!(
        "process_open_fds",
        Unit::Count,
        "Descriptores de fichero abiertos."
    );
    describe_gauge!(
        "process_max_fds",
        Unit::Count,
        "Descriptores de fichero abiertos como máximo (ulimit -n)."
    );
    describe_gauge!(
        "process_virtual_memory_bytes",
        Unit::Bytes,
        "Memoria virtual, en bytes."
    );
    describe_gauge!(
        "process_virtual_memory_max_bytes",
        Unit::Bytes,
        "Memoria virtual disponible como máximo, en bytes."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Memoria residente, en bytes."
    );
    describe_gauge!(
        "process_start_time_seconds",
        Unit::Seconds,
        "Momento en que arrancó el proceso, en segundos desde 1970 (época Unix)."
    );
    describe_gauge!(
        "process_threads",
        Unit::Count,
        "Hilos del sistema operativo en el proceso."
    );
}

/// Handles that count nothing, for a program run without `--metrics`:
/// `make` runs with no recorder, so every handle it makes is a no-op.
pub fn noop<T>(make: impl FnOnce() -> T) -> T {
    ::metrics::with_local_recorder(&::metrics::NoopRecorder, make)
}

/// Listens on `address` (port 0 takes a free one) for scrapers.
pub async fn bind(address: &HostPort) -> Result<TcpListener, MetricsError> {
    TcpListener::bind((address.host(), address.port()))
        .await
        .map_err(|error| MetricsError::Bind {
            address: address.clone(),
            error,
        })
}

/// The URL the metrics are served at, for the announcement.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}{PATH}")
}

/// Answers scrapers on `listener` for as long as the program runs:
/// `GET /metrics` gets every metric; another path gets 404, another method
/// on `/metrics` 405, and a request hyper cannot parse 400.
pub async fn serve(listener: TcpListener, exporter: Arc<Exporter>) {
    // Never cancelled: the metrics stay readable while the program stops,
    // and end with it.
    let forever = CancellationToken::new();
    let mut acceptor = Acceptor::new(listener, MAX_CONNECTIONS);
    let upkeep = {
        let handle = exporter.handle.clone();
        async move {
            let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                ticks.tick().await;
                handle.run_upkeep();
            }
        }
    };
    tokio::pin!(upkeep);
    loop {
        let accepted = tokio::select! {
            () = &mut upkeep => return,
            accepted = acceptor.next(&forever) => accepted,
        };
        let Some(accepted) = accepted else { return };
        let exporter = Arc::clone(&exporter);
        // Not tracked: nothing waits for a scrape to finish.
        tokio::spawn(async move {
            let _permit = accepted.permit;
            let service = service_fn(move |request| {
                let response = answer(&request, &exporter);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(accepted.stream), service)
                .await;
            if let Err(error) = served {
                debug!(
                    "métricas: conexión con {} terminada: {error}",
                    accepted.peer
                );
            }
        });
    }
}

/// The answer to one request to the metrics port.
fn answer(request: &Request<Incoming>, exporter: &Exporter) -> Response<Full<Bytes>> {
    if request.uri().path() != PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "no encontrado: las métricas están en /metrics\n",
        );
    }
    match *request.method() {
        Method::GET | Method::HEAD => {
            let mut response = Response::new(Full::new(Bytes::from(exporter.render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
            response
        }
        _ => {
            let mut response = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "método no admitido: las métricas se leen con GET\n",
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_in_use_is_said_once() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: HostPort = taken.local_addr().unwrap().to_string().parse().unwrap();
        let error = bind(&address).await.unwrap_err();
        assert!(std::error::Error::source(&error).is_none());
        let message = error.to_string();
        let expected =
            format!("no se pudo escuchar en --metrics {address}: la dirección ya está en uso");
        assert!(message.starts_with(&expected), "{message}");
        assert_eq!(message.matches("en uso").count(), 1, "{message}");
    }

    #[test]
    fn handles_count_into_their_registry_and_noop_ones_nowhere() {
        let exporter = Exporter::new("prueba", "1.2.3", &[("prueba_seconds", &[0.5, 1.0])])
            .expect("an exporter");
        let (counter, histogram) = exporter.register(|| {
            ::metrics::describe_counter!("prueba_things_total", "Things.");
            (
                ::metrics::counter!("prueba_things_total", "kind" => "a"),
                ::metrics::histogram!("prueba_seconds"),
            )
        });
        let silent = noop(|| ::metrics::counter!("prueba_things_total", "kind" => "a"));
        counter.increment(2);
        silent.increment(5);
        histogram.record(0.7);
        let text = exporter.render();
        assert!(
            text.contains("# HELP prueba_things_total Things.\n"),
            "{text}"
        );
        assert!(
            text.contains("prueba_things_total{kind=\"a\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("prueba_build_info{version=\"1.2.3\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("prueba_seconds_bucket{le=\"0.5\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("prueba_seconds_bucket{le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    }

    /// Every `# HELP` the exporter itself writes is in Spanish, the
    /// process metrics' too (their crate describes them in English).
    #[test]
    fn help_texts_are_in_spanish() {
        let exporter = Exporter::new("prueba", "1.2.3", &[]).expect("an exporter");
        let text = exporter.render();
        let helps: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("# HELP "))
            .collect();
        for (name, help) in [
            ("prueba_build_info", "Siempre 1; la etiqueta version"),
            ("process_cpu_seconds_total", "Tiempo de CPU gastado"),
            (
                "process_resident_memory_bytes",
                "Memoria residente, en bytes.",
            ),
            ("process_threads", "Hilos del sistema operativo"),
        ] {
            let line = format!("# HELP {name} {help}");
            assert!(helps.iter().any(|h| h.starts_with(&line)), "{text}");
        }
        for english in [
            "Total user",
            "Number of",
            "Maximum",
            "size in bytes",
            "Always",
        ] {
            assert!(!text.contains(english), "{english}: {text}");
        }
    }
}
