//! Accepting HTTP connections (plain or TLS) and serving them with hyper,
//! with a deadline on every handshake: tokio-tungstenite has none, and a
//! half-sent handshake must not hold a connection open forever.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::debug;

use mayusculas::accept::Acceptor;

use crate::routes::{router, App, ConnectionInfo};

/// How long an in-flight HTTP exchange may take to finish at shutdown.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Serves HTTP connections from `acceptor` until the app's shutdown token is
/// cancelled; returns once every HTTP connection has ended (sessions are
/// waited for through [`App::tracker`]).
///
/// `handshake_timeout` bounds the TLS handshake, each request's headers and
/// an idle keep-alive connection.
pub async fn serve(
    mut acceptor: Acceptor,
    app: Arc<App>,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
) {
    let routes = router(Arc::clone(&app));
    let connections = TaskTracker::new();
    let shutdown = app.shutdown.clone();
    while let Some(accepted) = acceptor.next(&shutdown).await {
        let routes = routes.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = accepted.permit;
            let info = ConnectionInfo {
                peer: accepted.peer,
                tls: tls.is_some(),
            };
            let _ = accepted.stream.set_nodelay(true);
            match tls {
                None => {
                    serve_http(accepted.stream, routes, info, handshake_timeout, shutdown).await
                }
                Some(tls) => match timeout(handshake_timeout, tls.accept(accepted.stream)).await {
                    Ok(Ok(stream)) => {
                        serve_http(stream, routes, info, handshake_timeout, shutdown).await
                    }
                    Ok(Err(error)) => debug!("TLS fallido con {}: {error}", info.peer),
                    Err(_elapsed) => debug!("TLS sin terminar a tiempo con {}", info.peer),
                },
            }
        });
    }
    drop(acceptor);
    connections.close();
    connections.wait().await;
}

async fn serve_http<IO>(
    io: IO,
    routes: Router,
    info: ConnectionInfo,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = routes.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(info);
        request
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match timeout(HTTP_SHUTDOWN_GRACE, connection.as_mut()).await {
                Ok(served) => served,
                Err(_elapsed) => return,
            }
        }
    };
    if let Err(error) = served {
        debug!("conexión HTTP con {} terminada: {error}", info.peer);
    }
}
