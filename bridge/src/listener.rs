//! Accepting HTTP connections (plain or TLS) and serving them with hyper,
//! with a deadline on every handshake: tokio-tungstenite has none, and a
//! half-sent handshake must not hold a connection open forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use netkit::accept::Acceptor;
use netkit::per_client::{Held, PerClient};
use netkit::proxy_protocol::{client_address, Presence, TrustedProxies, HEADER_DEADLINE};

use crate::config::Config;
use crate::metrics::{BridgeMetrics, Refusal};
use crate::plain_http;
use crate::routes::{router, App, ConnectionInfo};

/// How long an in-flight HTTP exchange may take to finish at shutdown.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// HTTP connections (page files, handshakes in progress) beside sessions.
const HTTP_CONNECTIONS: usize = 1024;

/// Runs a bridge on `listener` until `shutdown` is cancelled, then drains:
/// every session is sent 1001 and new upgrades and health checks get 503
/// (so a load balancer stops sending anyone here) while HTTP is still
/// served, until the sessions have closed or `config.drain` has passed.
pub async fn serve(listener: TcpListener, config: Config, shutdown: CancellationToken) {
    let app = Arc::new(App::new(&config, shutdown.clone()));
    // Forgets rate-limited addresses whose burst refilled, until we return.
    let _sweep = app.limits.sweep().map(AbortOnDrop);
    let per_peer = PerClient::new(config.max_connections_per_client);
    let acceptor = Acceptor::new(listener, config.max_sessions + HTTP_CONNECTIONS);
    let stop_http = CancellationToken::new();
    let http = serve_connections(
        acceptor,
        Arc::clone(&app),
        config.tls,
        config.handshake_timeout,
        per_peer,
        stop_http.clone(),
    );
    tokio::pin!(http);
    tokio::select! {
        () = &mut http => return,
        () = shutdown.cancelled() => {}
    }
    app.tracker.close();
    tokio::select! {
        () = &mut http => return,
        drained = timeout(config.drain, app.tracker.wait()) => if drained.is_err() {
            warn!(
                "{} sesiones no se cerraron en {} s: se cortan",
                app.tracker.len(),
                config.drain.as_secs_f32()
            );
        },
    }
    stop_http.cancel();
    http.await;
}

/// Serves HTTP connections from `acceptor` until `stop` is cancelled;
/// returns once every HTTP connection has ended (sessions are tracked by
/// [`App::tracker`]).
async fn serve_connections(
    mut acceptor: Acceptor,
    app: Arc<App>,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    per_peer: PerClient,
    stop: CancellationToken,
) {
    let trusted = Arc::new(app.trusted_proxies.clone());
    let metrics = Arc::clone(&app.metrics);
    let routes = router(app);
    let notices = Arc::new(plain_http::Notices::default());
    let connections = TaskTracker::new();
    while let Some(accepted) = acceptor.next(&stop).await {
        // Before any byte is read: one address cannot hold every slot
        // with connections that send nothing. A trusted proxy carries
        // everyone's connections and is not one client.
        let peer_place = if trusted.trusts(accepted.peer.ip()) {
            Held::uncounted()
        } else if let Some(place) = per_peer.try_hold(accepted.peer.ip()) {
            place
        } else {
            metrics.refused(Refusal::ClientConnections);
            debug!(
                "conexión de {} cerrada: esa dirección tiene {} conexiones abiertas",
                accepted.peer,
                per_peer.max()
            );
            continue;
        };
        let routes = routes.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        let trusted = Arc::clone(&trusted);
        let metrics = Arc::clone(&metrics);
        let plain_notices = Arc::clone(&notices);
        connections.spawn(async move {
            let _permit = (accepted.permit, peer_place);
            let Some(info) = connection_info(
                accepted.stream,
                accepted.peer,
                &trusted,
                tls.is_some(),
                handshake_timeout,
            )
            .await
            else {
                return;
            };
            let (stream, info) = info;
            let http = Http {
                routes,
                info,
                handshake_timeout,
                shutdown: stop,
                metrics: &metrics,
            };
            let Some(tls) = tls else {
                return http.serve(stream).await;
            };
            let deadline = Instant::now() + handshake_timeout;
            let plain = timeout_at(deadline, plain_http::is_plain_http(&stream)).await;
            let handshake = match plain {
                Ok(true) => {
                    let (client, local) = (info.client.client, info.local);
                    let notices = &plain_notices;
                    return plain_http::answer(stream, client, local, notices, handshake_timeout)
                        .await;
                }
                Ok(false) => timeout_at(deadline, tls.accept(stream)).await,
                Err(elapsed) => Err(elapsed),
            };
            match handshake {
                Ok(Ok(stream)) => http.serve(stream).await,
                Ok(Err(error)) => debug!("TLS fallido con {}: {error}", info.client),
                Err(_elapsed) => {
                    metrics.refused(Refusal::HandshakeTimeout);
                    debug!("TLS sin terminar a tiempo con {}", info.client);
                }
            }
        });
    }
    drop(acceptor);
    connections.close();
    connections.wait().await;
}

/// What the routes need to know of a new connection: who it is for (from
/// a trusted proxy's PROXY header, taken when present) and where it came
/// in; `None` if a trusted proxy sent a bad header.
async fn connection_info(
    mut stream: TcpStream,
    peer: SocketAddr,
    trusted: &TrustedProxies,
    tls: bool,
    handshake_timeout: Duration,
) -> Option<(TcpStream, ConnectionInfo)> {
    // Answers are small writes: Nagle must not hold them; failing to set it
    // costs latency only.
    if let Err(error) = stream.set_nodelay(true) {
        debug!("TCP_NODELAY no se pudo activar con {peer}: {error}");
    }
    let within = HEADER_DEADLINE.min(handshake_timeout);
    let client = match client_address(&mut stream, peer, trusted, Presence::Optional, within).await
    {
        Ok(client) => client,
        Err(refused) => {
            warn!("conexión rechazada desde {peer}: {refused}");
            return None;
        }
    };
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(error) => {
            debug!("conexión de {peer} perdida al empezar: {error}");
            return None;
        }
    };
    Some((stream, ConnectionInfo { client, local, tls }))
}

/// One HTTP connection's service, once TLS (if any) is done.
struct Http<'a> {
    routes: Router,
    info: ConnectionInfo,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
    metrics: &'a BridgeMetrics,
}

impl Http<'_> {
    async fn serve<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let info = self.info;
        // Whether a request's headers ever arrived: a header timeout before
        // that is a handshake not done in time; after it, an idle
        // keep-alive connection closed.
        let requested = Arc::new(AtomicBool::new(false));
        let service = self.routes.map_request({
            let requested = Arc::clone(&requested);
            move |mut request: Request<Incoming>| {
                requested.store(true, Ordering::Relaxed);
                request.extensions_mut().insert(info);
                request
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.handshake_timeout)
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        tokio::pin!(connection);
        let served = tokio::select! {
            served = connection.as_mut() => served,
            _ = self.shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                match timeout(HTTP_SHUTDOWN_GRACE, connection.as_mut()).await {
                    Ok(served) => served,
                    Err(_elapsed) => return,
                }
            }
        };
        if let Err(error) = served {
            if error.is_timeout() && !requested.load(Ordering::Relaxed) {
                self.metrics.refused(Refusal::HandshakeTimeout);
            }
            debug!("conexión HTTP con {} terminada: {error}", info.client);
        }
    }
}

/// Aborts a background task when dropped, so it lives as long as its
/// owner's scope.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
