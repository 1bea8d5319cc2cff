//! How a session ends. Each ending owns its close code and its Spanish
//! reason, so that the log line and the Close frame always agree and no
//! other place makes up a reason; and the side it is counted against in the
//! metrics.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use console::{describe_io, Seconds};

/// Why a session ended.
#[derive(Debug)]
pub enum Ending {
    /// The client sent its Close, with this code if it gave one; the bridge
    /// answered with the same code.
    ClientClosed(Option<u16>),
    /// The target closed its connection after everything it sent was
    /// delivered.
    TargetClosed,
    /// Connecting to the target failed.
    TargetUnreachable {
        /// `host:port` of the target.
        target: String,
        /// Why.
        error: io::Error,
    },
    /// The target did not accept the connection in time.
    TargetTimedOut {
        /// `host:port` of the target.
        target: String,
        /// The connect timeout.
        after: Duration,
    },
    /// The connection to the target broke.
    TargetLost {
        /// `host:port` of the target.
        target: String,
        /// Why.
        error: io::Error,
    },
    /// The client sent a message larger than the limit.
    TooBig {
        /// The limit, in bytes.
        max: usize,
    },
    /// The client sent a text message that is not UTF-8.
    InvalidText,
    /// The client broke the WebSocket protocol.
    ProtocolViolation(String),
    /// The bridge is stopping.
    Stopping,
    /// The client answered no ping for this long.
    ClientSilent(Duration),
    /// The client took nothing for this long while answers waited for it.
    ClientStalled(Duration),
    /// The client's connection ended without a Close.
    ClientVanished,
    /// The client's connection failed.
    ClientFailed(String),
}

/// Which side's doing ended a session, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client closed, went away or failed, broke the protocol or the
    /// message limit, or stopped answering pings or taking messages.
    Client,
    /// The target closed, could not be reached, or broke.
    Target,
    /// The bridge is stopping.
    Bridge,
}

impl Side {
    /// Every side, in the order of [`Side::index`].
    pub const ALL: [Side; 3] = [Side::Client, Side::Target, Side::Bridge];

    /// The `side` label.
    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Target => "target",
            Side::Bridge => "bridge",
        }
    }

    /// Where this side is in [`Side::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Ending {
    /// The side whose doing ended the session.
    pub fn side(&self) -> Side {
        match self {
            Ending::TargetClosed
            | Ending::TargetUnreachable { .. }
            | Ending::TargetTimedOut { .. }
            | Ending::TargetLost { .. } => Side::Target,
            Ending::Stopping => Side::Bridge,
            Ending::ClientClosed(_)
            | Ending::TooBig { .. }
            | Ending::InvalidText
            | Ending::ProtocolViolation(_)
            | Ending::ClientSilent(_)
            | Ending::ClientStalled(_)
            | Ending::ClientVanished
            | Ending::ClientFailed(_) => Side::Client,
        }
    }

    /// The Close frame the bridge sends for this ending; `None` where the
    /// client cannot take one, or (for [`Ending::ClientClosed`]) where
    /// tungstenite has already queued the answer itself.
    pub fn close_frame(&self) -> Option<CloseFrame> {
        let code = match self {
            Ending::TargetClosed => CloseCode::Normal,
            Ending::TargetUnreachable { .. }
            | Ending::TargetTimedOut { .. }
            | Ending::TargetLost { .. } => CloseCode::Error,
            Ending::TooBig { .. } => CloseCode::Size,
            Ending::InvalidText => CloseCode::Invalid,
            Ending::ProtocolViolation(_) => CloseCode::Protocol,
            Ending::Stopping => CloseCode::Away,
            Ending::ClientClosed(_)
            | Ending::ClientSilent(_)
            | Ending::ClientStalled(_)
            | Ending::ClientVanished
            | Ending::ClientFailed(_) => return None,
        };
        Some(CloseFrame {
            code,
            reason: fit_close_reason(&self.reason()).into_owned().into(),
        })
    }

    /// Whether the client broke the protocol: the connection is failed
    /// (RFC 6455 §7.1.7), so the bridge sends its Close and waits for no
    /// answer, since what follows the bad frame cannot be trusted.
    pub fn fails_the_connection(&self) -> bool {
        matches!(
            self,
            Ending::TooBig { .. } | Ending::InvalidText | Ending::ProtocolViolation(_)
        )
    }

    /// Whether the client can still be sent a Close after this ending of
    /// the target → client direction.
    pub fn client_reachable(&self) -> bool {
        !matches!(
            self,
            Ending::ClientSilent(_)
                | Ending::ClientStalled(_)
                | Ending::ClientVanished
                | Ending::ClientFailed(_)
        )
    }

    /// The close code sent, or echoed; `None` where no Close went out (the
    /// client went away) or the client's Close had no code.
    pub fn code(&self) -> Option<u16> {
        match self {
            Ending::ClientClosed(code) => *code,
            other => other.close_frame().map(|frame| frame.code.into()),
        }
    }

    /// Why, in the words the log and the Close frame use.
    fn reason(&self) -> String {
        match self {
            Ending::ClientClosed(_) => String::from("el cliente cerró la sesión"),
            Ending::TargetClosed => String::from("el servidor cerró la conexión"),
            Ending::TargetUnreachable { target, error } => format!(
                "no se pudo conectar con el servidor {target}: {}",
                describe_io(error)
            ),
            Ending::TargetTimedOut { target, after } => {
                format!("el servidor {target} no respondió en {}", Seconds(*after))
            }
            Ending::TargetLost { target, error } => format!(
                "se perdió la conexión con el servidor {target}: {}",
                describe_io(error)
            ),
            Ending::TooBig { max } => format!("mensaje demasiado grande (máximo {max} bytes)"),
            Ending::InvalidText => String::from("el texto recibido no es UTF-8 válido"),
            Ending::ProtocolViolation(detail) => {
                format!("error de protocolo WebSocket: {detail}")
            }
            Ending::Stopping => String::from("el puente se detiene"),
            Ending::ClientSilent(after) => {
                format!("el cliente no respondió al ping en {}", Seconds(*after))
            }
            Ending::ClientStalled(after) => {
                format!("el cliente no leyó nada en {}", Seconds(*after))
            }
            Ending::ClientVanished => String::from("el cliente se desconectó sin cerrar la sesión"),
            Ending::ClientFailed(detail) => format!("error con el cliente: {detail}"),
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code() {
            Some(code) => write!(f, "{code} «{}»", self.reason()),
            None => write!(f, "{}", self.reason()),
        }
    }
}

/// A close reason may be at most 123 bytes: a longer one is cut after its
/// last whole word that fits, and ends in «…».
pub fn fit_close_reason(reason: &str) -> Cow<'_, str> {
    const MAX: usize = 123;
    const ELLIPSIS: &str = "…";
    if reason.len() <= MAX {
        return Cow::Borrowed(reason);
    }
    let mut end = MAX - ELLIPSIS.len();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let kept = match reason[..end].rfind(' ') {
        // Not too short a reason for a word boundary to be worth it.
        Some(space) if space > MAX / 2 => &reason[..space],
        _ => &reason[..end],
    };
    Cow::Owned(format!(
        "{}{ELLIPSIS}",
        kept.trim_end_matches([' ', ',', ':'])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_in_a_control_frame() {
        let long = "ñ".repeat(100);
        let fitted = fit_close_reason(&long);
        assert!(fitted.len() <= 123);
        assert!(fitted.ends_with("ñ…"), "{fitted}");
        assert_eq!(fit_close_reason("corto"), "corto");
        let words = "no se pudo conectar con el servidor 127.0.0.1:5000: conexión rechazada \
                     (error del sistema 111, nadie escucha en ese puerto)";
        let fitted = fit_close_reason(words);
        assert!(fitted.len() <= 123, "{}", fitted.len());
        let kept = fitted.strip_suffix('…').expect("an ellipsis");
        assert!(words.starts_with(kept), "{fitted}");
        assert_eq!(words.as_bytes()[kept.len()], b' ', "cut mid-word: {fitted}");
        let ending = Ending::ProtocolViolation("x".repeat(500));
        let frame = ending.close_frame().expect("a close frame");
        assert!(frame.reason.len() <= 123);
    }

    #[test]
    fn each_ending_has_its_code_and_words() {
        let cases = [
            (
                Ending::ClientClosed(Some(1000)),
                "1000 «el cliente cerró la sesión»",
            ),
            (Ending::ClientClosed(None), "el cliente cerró la sesión"),
            (Ending::TargetClosed, "1000 «el servidor cerró la conexión»"),
            (
                Ending::TooBig { max: 10 },
                "1009 «mensaje demasiado grande (máximo 10 bytes)»",
            ),
            (
                Ending::InvalidText,
                "1007 «el texto recibido no es UTF-8 válido»",
            ),
            (Ending::Stopping, "1001 «el puente se detiene»"),
            (
                Ending::ClientStalled(Duration::from_secs(3)),
                "el cliente no leyó nada en 3 s",
            ),
        ];
        for (ending, shown) in cases {
            assert_eq!(ending.to_string(), shown);
        }
        let lost = Ending::TargetLost {
            target: String::from("127.0.0.1:5000"),
            error: io::Error::from(io::ErrorKind::ConnectionReset),
        };
        assert!(lost
            .to_string()
            .starts_with("1011 «se perdió la conexión con el servidor 127.0.0.1:5000: "));
    }

    #[test]
    fn the_bridge_sends_no_close_of_its_own_where_it_cannot_or_need_not() {
        assert!(Ending::ClientClosed(Some(1000)).close_frame().is_none());
        assert!(Ending::ClientVanished.close_frame().is_none());
        assert!(Ending::ClientSilent(Duration::from_secs(1))
            .close_frame()
            .is_none());
        assert!(Ending::InvalidText.fails_the_connection());
        assert!(!Ending::Stopping.fails_the_connection());
    }
}
