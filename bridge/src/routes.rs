//! The bridge's HTTP surface on one port: `GET /ws` upgrades to a WebSocket
//! session, `GET /healthz` tells whether the target accepts connections, and
//! every other `GET` is a file of the page (`--web DIR`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, HOST, ORIGIN, SEC_WEBSOCKET_VERSION,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::server::create_response_with_body;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tracing::{debug, info, info_span, warn};

use console::{describe_io, Seconds};

use netkit::per_client::Held;
use netkit::proxy_protocol::{self, ClientAddress, TrustedProxies};

use crate::access::{self, AccessCode};
use crate::config::Config;
use crate::forwarded;
use crate::limits::ClientLimits;
use crate::metrics::{BridgeMetrics, Refusal};
use crate::origin::OriginPolicy;
use crate::page::{Answer, PageHeaders};
use crate::read_ahead::ReadAhead;
use crate::session::{self, SessionConfig};

/// Everything the handlers share.
pub struct App {
    /// How sessions behave.
    pub session: Arc<SessionConfig>,
    /// Which pages may connect.
    pub origins: OriginPolicy,
    /// One permit per open session.
    pub sessions: Arc<Semaphore>,
    /// Buffer sizes and message limits of each WebSocket, derived from
    /// [`App::session`].
    pub websocket: WebSocketConfig,
    /// The built page, if any.
    pub web: Option<PathBuf>,
    /// Open sessions, waited for at shutdown.
    pub tracker: TaskTracker,
    /// Cancelled when the bridge stops: sessions close with 1001, and new
    /// upgrades and health checks get 503.
    pub shutdown: CancellationToken,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// What is counted for `--metrics`.
    pub metrics: Arc<BridgeMetrics>,
    /// The headers every answer carries.
    pub page: PageHeaders,
    /// Per-client limits on upgrades (sessions open, upgrades per second).
    pub limits: ClientLimits,
    /// The join code a session needs, if any.
    pub access_code: Option<AccessCode>,
    next_id: AtomicU64,
}

impl App {
    /// Shared state for a bridge configured by `config`.
    pub fn new(config: &Config, shutdown: CancellationToken) -> Self {
        Self {
            session: Arc::new(config.session.clone()),
            origins: config.origins.clone(),
            sessions: Arc::new(Semaphore::new(config.max_sessions)),
            websocket: config.session.websocket(),
            web: config.web.clone(),
            tracker: TaskTracker::new(),
            shutdown,
            trusted_proxies: config.trusted_proxies.clone(),
            metrics: Arc::clone(&config.metrics),
            page: PageHeaders::new(config.web.as_deref(), config.frame_from.clone()),
            limits: ClientLimits::new(
                config.max_sessions_per_client,
                config.upgrades_per_client,
                config.trusted_proxies.clone(),
            ),
            access_code: config.access_code.clone(),
            next_id: AtomicU64::new(1),
        }
    }
}

/// Facts about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo {
    /// Who connected: the socket's peer, or the client a trusted proxy's
    /// PROXY header announced.
    pub client: ClientAddress,
    /// The bridge's own address the connection reached.
    pub local: SocketAddr,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// The bridge's routes. Requests must carry a [`ConnectionInfo`] extension.
pub fn router(app: Arc<App>) -> Router {
    let router = Router::new()
        .route(
            "/ws",
            get(upgrade).layer(axum::middleware::map_response(readable_from_any_page)),
        )
        .route("/healthz", get(health));
    let router = match &app.web {
        Some(dir) => {
            let metrics = Arc::clone(&app.metrics);
            router.fallback_service(
                tower::ServiceBuilder::new()
                    .map_response(move |response: Response<_>| {
                        let status = response.status();
                        if status.is_success() || status == StatusCode::NOT_MODIFIED {
                            metrics.static_file_served();
                        }
                        response
                    })
                    .layer(CompressionLayer::new())
                    .service(ServeDir::new(dir)),
            )
        }
        None => router.fallback(no_page),
    };
    router
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            join_link,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            security_headers,
        ))
        .with_state(app)
}

/// How the browser reached the bridge, read from the request once, by the
/// outermost layer ([`security_headers`]), for the layers and handlers
/// inside it.
#[derive(Debug, Clone)]
struct Reached {
    /// What trusted proxies say of the scheme and host.
    site: forwarded::Site,
    /// https directly, or ended by a trusted proxy that says so.
    https: bool,
}

/// Adds [`PageHeaders`]' headers to every answer, the page's files,
/// `/healthz` and refusals alike; and leaves [`Reached`] in the request.
async fn security_headers(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri().clone();
    let reached = request
        .extensions()
        .get::<ConnectionInfo>()
        .map(|connection| {
            let site = forwarded::site(connection.client, request.headers(), &app.trusted_proxies);
            let https = site.https.unwrap_or(connection.tls);
            Reached { site, https }
        });
    let https = reached.as_ref().is_some_and(|reached| reached.https);
    if let Some(reached) = reached {
        request.extensions_mut().insert(reached);
    }
    let mut response = next.run(request).await;
    let status = response.status();
    let answer = if status.is_success() || status == StatusCode::NOT_MODIFIED {
        PageHeaders::classify(&uri, response.headers())
    } else {
        Answer::Other
    };
    app.page.apply(response.headers_mut(), answer, &uri, https);
    response
}

/// The join link: a page request with `?clave=` gets the code as a cookie
/// (when it is the right one) and a 303 to the same page without it, so the
/// code leaves the address bar and the history. `/ws` keeps its query: that
/// is where clients that are not browsers give the code.
async fn join_link(
    State(app): State<Arc<App>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    let given = access::query_code(uri);
    if uri.path() == "/ws" || given.is_none() {
        return next.run(request).await;
    }
    let mut location = uri.path().to_owned();
    if let Some(rest) = access::query_without_code(uri) {
        location.push('?');
        location.push_str(&rest);
    }
    let mut response = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(axum::http::header::LOCATION, location)
        .header(axum::http::header::CACHE_CONTROL, "no-store")
        .body(Body::empty())
        .unwrap_or_default();
    if let (Some(code), Some(given)) = (&app.access_code, given) {
        if code.matches(given) {
            let https = request
                .extensions()
                .get::<Reached>()
                .is_some_and(|reached| reached.https);
            if let Ok(cookie) = HeaderValue::from_str(&code.cookie(https)) {
                response
                    .headers_mut()
                    .insert(axum::http::header::SET_COOKIE, cookie);
            }
        } else {
            info!("enlace de la demo con una clave equivocada");
        }
    }
    response
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    let mut text = text.into();
    text.push('\n');
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The refusals come before tungstenite's check of the upgrade headers, so
/// that a plain `GET /ws` (the page's `fetch` after a failed WebSocket,
/// which browsers report only as 1006) learns why with a status and a
/// Spanish sentence; with none of them it gets 426 as before.
async fn upgrade(
    State(app): State<Arc<App>>,
    Extension(connection): Extension<ConnectionInfo>,
    Extension(Reached { site, https }): Extension<Reached>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let client = forwarded::client_address(connection.client, headers, &app.trusted_proxies);
    if app.shutdown.is_cancelled() {
        app.metrics.refused(Refusal::Stopping);
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "el puente se está deteniendo",
            Some(1),
        );
    }
    if let Some(code) = &app.access_code {
        if !code.admits(request.uri(), headers) {
            app.metrics.refused(Refusal::AccessCode);
            // Neither the code nor the query goes to the log.
            info!("sesión rechazada desde {client}: falta la clave de la demo o no es la correcta");
            return refusal(StatusCode::UNAUTHORIZED, "falta la clave de la demo", None);
        }
    }
    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    // Behind a trusted proxy that ended TLS, the page's origin is the one
    // the browser used, not the one the proxy spoke to us with.
    let host = site
        .host
        .as_deref()
        .or_else(|| headers.get(HOST).and_then(|v| v.to_str().ok()));
    let verdict = app.origins.check(origin, host, https);
    if !verdict.accepted() {
        app.metrics.refused(Refusal::Origin);
        let origin = origin.unwrap_or_default();
        if origin.starts_with("https://") && !connection.tls && site.https.is_none() {
            // The usual mistake behind nginx or HAProxy: TLS ends there and
            // nobody told the bridge.
            info!(
                "origen rechazado: {origin} (desde {client}); si un proxy termina TLS delante del puente, \
                 que envíe X-Forwarded-Proto y confíe en él con --trusted-proxy (vea deploy/*-tls*)"
            );
        } else {
            info!("origen rechazado: {origin} (desde {client}); admítalo con --allow-origin");
        }
        return refusal(
            StatusCode::FORBIDDEN,
            &format!("la página no es de este puente (origen {origin}; el puente solo admite sus propias páginas y las de --allow-origin)"),
            None,
        );
    }

    // Per-client admission (see `crate::limits`): 429 before the 101, no
    // session and no target connection; the place is held for the
    // session's life.
    let client_place = match app.limits.admit(client.client.ip(), &app.metrics) {
        Ok(place) => place,
        Err(refused) => return refused.into_response(),
    };
    let Ok(permit) = Arc::clone(&app.sessions).try_acquire_owned() else {
        app.metrics.refused(Refusal::Limit);
        warn!("sesión rechazada desde {client}: se alcanzó el máximo de sesiones");
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "el puente está lleno",
            Some(5),
        );
    };
    // tungstenite checks the method, version, Connection, Upgrade,
    // Sec-WebSocket-Version and the key, and derives the accept key.
    let switching = match create_response_with_body(&request, Body::empty) {
        Ok(response) => response,
        Err(refused) => {
            app.metrics.refused(Refusal::BadRequest);
            return refused_upgrade(&refused);
        }
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        app.metrics.refused(Refusal::BadRequest);
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "esta conexión no se puede convertir en WebSocket",
        );
    };

    spawn_session(
        app,
        on_upgrade,
        client,
        connection.local,
        (permit, client_place),
    );
    switching
}

/// Lets a page served from another origin (a `?ws=` override names this
/// bridge) read why its WebSocket was refused: without these headers its
/// `fetch` would end in a network error, as opaque as the failed handshake.
/// A refusal holds nothing private (a sentence, the Origin the caller sent)
/// and the page's `fetch` sends no cookie, so any origin may read it;
/// `Retry-After` is not a header scripts may read unless exposed. The 101
/// is left alone: it is no answer a script reads.
async fn readable_from_any_page(mut response: Response) -> Response {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
    }
    response
}

/// A refused upgrade: the status, the sentence the page shows (first line of
/// the body), and for a temporary refusal the seconds to wait.
fn refusal(status: StatusCode, sentence: &str, retry_after: Option<u32>) -> Response {
    let mut response = plain(status, sentence);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Runs the session once hyper hands over the upgraded connection; the
/// permit and the client's place are held until it ends.
fn spawn_session(
    app: Arc<App>,
    on_upgrade: OnUpgrade,
    client: ClientAddress,
    local: SocketAddr,
    permit: (OwnedSemaphorePermit, Held),
) {
    let id = app.next_id.fetch_add(1, Ordering::Relaxed);
    let tracker = app.tracker.clone();
    tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    ReadAhead::new(TokioIo::new(upgraded)),
                    Role::Server,
                    Some(app.websocket),
                )
                .await;
                session::run(
                    ws,
                    id,
                    client,
                    local,
                    Arc::clone(&app.session),
                    // Its own node: waiting on it takes no lock that other
                    // sessions take too.
                    app.shutdown.child_token(),
                    &app.metrics,
                )
                .await;
            }
            Err(error) => info_span!("ws", id)
                .in_scope(|| debug!("la conexión no llegó a ser WebSocket: {error}")),
        }
        drop(permit);
    });
}

/// Why a request to `/ws` is not a WebSocket upgrade, as an HTTP answer.
fn refused_upgrade(refused: &WsError) -> Response {
    match refused {
        WsError::Protocol(
            ProtocolError::MissingConnectionUpgradeHeader
            | ProtocolError::MissingUpgradeWebSocketHeader,
        ) => plain(
            StatusCode::UPGRADE_REQUIRED,
            "esta dirección es para WebSocket: conecte con ws://…/ws",
        ),
        WsError::Protocol(ProtocolError::MissingSecWebSocketVersionHeader) => {
            let mut response = plain(
                StatusCode::UPGRADE_REQUIRED,
                "versión de WebSocket no admitida (se admite la 13)",
            );
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            response
        }
        WsError::Protocol(
            ProtocolError::MissingSecWebSocketKey | ProtocolError::InvalidSecWebSocketKey,
        ) => plain(
            StatusCode::BAD_REQUEST,
            "falta la cabecera Sec-WebSocket-Key o no es válida",
        ),
        WsError::Protocol(ProtocolError::WrongHttpVersion) => plain(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "WebSocket necesita HTTP/1.1",
        ),
        other => plain(
            StatusCode::BAD_REQUEST,
            format!("petición WebSocket no válida: {other}"),
        ),
    }
}

/// The answer to health checks once the bridge is
/// stopping, so that a load balancer sends nobody new here.
fn stopping() -> Response {
    plain(StatusCode::SERVICE_UNAVAILABLE, "el puente se detiene")
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if app.shutdown.is_cancelled() {
        return stopping();
    }
    let target = &app.session.target;
    let within = app.session.connect_timeout;
    match timeout(within, probe(target, app.session.send_proxy)).await {
        Ok(Ok(())) => plain(
            StatusCode::OK,
            format!("ok: el servidor {target} acepta conexiones"),
        ),
        Ok(Err(error)) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "el servidor {target} no acepta conexiones: {}",
                describe_io(&error)
            ),
        ),
        Err(_elapsed) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("el servidor {target} no respondió en {}", Seconds(within)),
        ),
    }
}

/// Opens a connection to the target and closes it. With `--send-proxy` it
/// first says, with a PROXY `LOCAL` header, that this is the bridge's own
/// check and no client's: a target that requires the header (servidor
/// behind `--trusted-proxy`, HAProxy's `accept-proxy`) takes it as a check
/// rather than refusing it, and servidor keeps it out of its transcript.
async fn probe(target: &str, send_proxy: bool) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(target).await?;
    if send_proxy {
        stream.write_all(&proxy_protocol::v2_local_header()).await?;
    }
    Ok(())
}

async fn no_page() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "este puente no sirve ninguna página: arránquelo con --web DIR (la página construida \
         está en dist/). El WebSocket está en /ws y el estado en /healthz.",
    )
}
