//! Opening a daemon's listening socket: `host:port` resolved, the first
//! address that binds taken, `SO_REUSEADDR` set so that a restarted daemon
//! takes its port back while old connections are in `TIME_WAIT`.

use std::io;
use std::net::SocketAddr;

use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket};

use console::describe_io;

/// Connections waiting to be accepted, beyond those being served.
const LISTEN_BACKLOG: u32 = 1024;

/// Why the server could not start listening.
#[derive(Debug, Error)]
pub enum BindError {
    /// The host name could not be resolved.
    #[error("no se pudo resolver «{host}»: {}", describe_io(.source))]
    Resolve {
        /// The name given.
        host: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// The host name resolved to no address.
    #[error("«{host}» no corresponde a ninguna dirección")]
    NoAddress {
        /// The name given.
        host: String,
    },
    /// No address could be bound.
    #[error("no se pudo escuchar en {addr}: {}", describe_io(.source))]
    Bind {
        /// The last address tried.
        addr: SocketAddr,
        /// Why the system refused it.
        source: io::Error,
    },
}

/// Opens a listening socket on `host:port` (port 0 takes a free port).
///
/// `SO_REUSEADDR` is set so that a restarted server can take its port back
/// while old connections are still in `TIME_WAIT`.
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, BindError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| BindError::Resolve {
            host: host.to_string(),
            source,
        })?;
    let mut last_error = None;
    for addr in addrs {
        match listen_on(addr) {
            Ok(listener) => return Ok(listener),
            Err(source) => last_error = Some(BindError::Bind { addr, source }),
        }
    }
    Err(last_error.unwrap_or_else(|| BindError::NoAddress {
        host: host.to_string(),
    }))
}

fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
