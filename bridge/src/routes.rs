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
    CONNECTION, HOST, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tracing::{debug, info, warn};

use mayusculas::console::describe_io;

use crate::origin::OriginPolicy;
use crate::session::{self, SessionConfig};

/// Everything the handlers share.
pub struct App {
    /// How sessions behave.
    pub session: Arc<SessionConfig>,
    /// Which pages may connect.
    pub origins: OriginPolicy,
    /// One permit per open session.
    pub sessions: Arc<Semaphore>,
    /// Buffer sizes and message limits of each WebSocket.
    pub websocket: WebSocketConfig,
    /// The built page, if any.
    pub web: Option<PathBuf>,
    /// Open sessions, waited for at shutdown.
    pub tracker: TaskTracker,
    /// Cancelled when the bridge stops.
    pub shutdown: CancellationToken,
    next_id: AtomicU64,
}

impl App {
    /// Shared state for `max_sessions` sessions at most.
    pub fn new(
        session: SessionConfig,
        origins: OriginPolicy,
        max_sessions: usize,
        websocket: WebSocketConfig,
        web: Option<PathBuf>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            session: Arc::new(session),
            origins,
            sessions: Arc::new(Semaphore::new(max_sessions)),
            websocket,
            web,
            tracker: TaskTracker::new(),
            shutdown,
            next_id: AtomicU64::new(1),
        }
    }
}

/// Facts about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// The bridge's routes. Requests must carry a [`ConnectionInfo`] extension.
pub fn router(app: Arc<App>) -> Router {
    let router = Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(health));
    let router = match &app.web {
        Some(dir) => router.fallback_service(
            tower::ServiceBuilder::new()
                .layer(CompressionLayer::new())
                .service(ServeDir::new(dir)),
        ),
        None => router.fallback(no_page),
    };
    router.with_state(app)
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

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

async fn upgrade(
    State(app): State<Arc<App>>,
    Extension(connection): Extension<ConnectionInfo>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    if !has_token(headers, CONNECTION, "upgrade") || !has_token(headers, UPGRADE, "websocket") {
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "esta dirección es para WebSocket: conecte con ws://…/ws",
        );
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut response = plain(
            StatusCode::UPGRADE_REQUIRED,
            "versión de WebSocket no admitida (se admite la 13)",
        );
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "falta la cabecera Sec-WebSocket-Key",
        );
    };
    let accept = derive_accept_key(key.as_bytes());

    let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    let verdict = app.origins.check(origin, host, connection.tls);
    if !verdict.accepted() {
        let origin = origin.unwrap_or_default();
        info!(
            "origen rechazado: {origin} (desde {}); admítalo con --allow-origin",
            connection.peer
        );
        return plain(
            StatusCode::FORBIDDEN,
            format!("origen no permitido: {origin}; el puente solo admite sus propias páginas y las de --allow-origin"),
        );
    }

    let Ok(permit) = Arc::clone(&app.sessions).try_acquire_owned() else {
        warn!(
            "sesión rechazada desde {}: se alcanzó el máximo de sesiones",
            connection.peer
        );
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "demasiadas sesiones abiertas; inténtelo más tarde",
        );
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "esta conexión no se puede convertir en WebSocket",
        );
    };

    let id = app.next_id.fetch_add(1, Ordering::Relaxed);
    let session_app = Arc::clone(&app);
    app.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(session_app.websocket),
                )
                .await;
                let config = Arc::clone(&session_app.session);
                session::run(
                    ws,
                    id,
                    connection.peer,
                    config,
                    // Its own node: waiting on it takes no lock that other
                    // sessions take too.
                    session_app.shutdown.child_token(),
                )
                .await;
            }
            Err(error) => debug!("[ws#{id}] la conexión no llegó a ser WebSocket: {error}"),
        }
        drop(permit);
    });

    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "respuesta no válida"))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let target = &app.session.target;
    let within = app.session.connect_timeout;
    match timeout(within, TcpStream::connect(target)).await {
        Ok(Ok(_)) => plain(
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
            format!(
                "el servidor {target} no respondió en {} s",
                within.as_secs()
            ),
        ),
    }
}

async fn no_page() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "este puente no sirve ninguna página: arránquelo con --web DIR (la página construida \
         está en dist/). El WebSocket está en /ws y el estado en /healthz.",
    )
}
