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
///
/// The message says the system's error in its own words, so the io error
/// is not also the [`std::error::Error::source`]: anyhow's `{:#}` would
/// print it a second time.
#[derive(Debug, Error)]
pub enum BindError {
    /// The host name could not be resolved.
    #[error("no se pudo resolver «{host}»: {}", describe_io(.error))]
    Resolve {
        /// The name given.
        host: String,
        /// What the resolver said.
        error: io::Error,
    },
    /// The host name resolved to no address.
    #[error("«{host}» no corresponde a ninguna dirección")]
    NoAddress {
        /// The name given.
        host: String,
    },
    /// No address could be bound.
    #[error("no se pudo escuchar en {addr}: {}", describe_io(.error))]
    Bind {
        /// The last address tried.
        addr: SocketAddr,
        /// Why the system refused it.
        error: io::Error,
    },
}

/// Opens a listening socket on `host:port` (port 0 takes a free port).
///
/// `SO_REUSEADDR` is set so that a restarted server can take its port back
/// while old connections are still in `TIME_WAIT`.
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, BindError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| BindError::Resolve {
            host: host.to_string(),
            error,
        })?;
    let mut last_error = None;
    for addr in addrs {
        match listen_on(addr) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(BindError::Bind { addr, error }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_in_use_is_said_once() {
        let taken = bind("127.0.0.1", 0).await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = bind("127.0.0.1", port).await.unwrap_err();
        assert!(std::error::Error::source(&error).is_none());
        let message = error.to_string();
        let expected =
            format!("no se pudo escuchar en 127.0.0.1:{port}: la dirección ya está en uso");
        assert!(message.starts_with(&expected), "{message}");
        assert_eq!(message.matches("en uso").count(), 1, "{message}");
    }
}
