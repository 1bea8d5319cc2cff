//! The values the command lines take that are more than a number or a
//! name: `host:port` addresses, networks, and durations. Each is a
//! `FromStr` type that clap uses as its value parser, so a bad value is a
//! usage error (exit 2) naming the flag, with the reason in Spanish
//! ([`InvalidValue`], which [`crate::parse_args`] appends to its message).
//!
//! There is one `host:port` parser for the whole workspace: [`HostPort`].

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use thiserror::Error;

/// How the help describes the durations every binary accepts.
pub const DURATION_FORMS: &str = "Las duraciones se escriben con su unidad (200ms, 2s, 1m, 1h30m) \
     o como segundos sin unidad (2).";

/// Why a value given on the command line is not what its flag takes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidValue {
    /// `host` with no `:port`.
    #[error("falta el puerto (MÁQUINA:PUERTO, p. ej. 127.0.0.1:8080)")]
    MissingPort,
    /// `:port` with no host.
    #[error("falta la máquina (MÁQUINA:PUERTO, p. ej. 127.0.0.1:8080)")]
    MissingHost,
    /// The port is not a number from 0 to 65535.
    #[error("el puerto «{0}» no es un número de 0 a 65535")]
    BadPort(String),
    /// The host is neither a name nor an IP address.
    #[error("«{0}» no es un nombre de máquina ni una dirección IP")]
    BadHost(String),
    /// An IPv6 address and a port without the brackets that tell them apart.
    #[error("una dirección IPv6 se escribe entre corchetes: [{0}]:PUERTO")]
    BareIpv6(String),
    /// Not a network in CIDR notation nor an address.
    #[error("no es una red (p. ej. 10.0.0.0/8) ni una dirección IP")]
    NotNetwork,
    /// Not an origin as browsers send them.
    #[error("no es un origen (esquema://máquina[:puerto], p. ej. https://example.org)")]
    NotOrigin,
    /// Not a WebSocket URL.
    #[error("no es una URL de WebSocket (ws://MÁQUINA:PUERTO/ws o wss://MÁQUINA:PUERTO/ws)")]
    NotWebSocketUrl,
    /// Not a duration.
    #[error("no es una duración (p. ej. 200ms, 2s, 1m, o segundos sin unidad: 2)")]
    NotDuration,
    /// A duration of zero where it would make no sense.
    #[error("la duración debe ser mayor que cero")]
    ZeroDuration,
    /// A duration past [`PositiveDuration::MAX`].
    #[error("la duración no puede pasar de 365 días")]
    TooLong,
}

/// A `host:port` address: a name, an IPv4 address, or an IPv6 address in
/// brackets (`[::1]:8080`), and a port (0 lets the system choose one when
/// listening). The host is kept as written (a name is resolved when used).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Without brackets.
    host: String,
    port: u16,
}

impl HostPort {
    /// `host` (without brackets) and `port`, unchecked.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Parses `host[:port]`, taking `default_port` when the port is left
    /// out (as a URL's authority does).
    pub fn with_default_port(text: &str, default_port: u16) -> Result<Self, InvalidValue> {
        let (host, port) = split(text)?;
        let port = match port {
            Some(port) => port,
            None => default_port,
        };
        Ok(Self { host, port })
    }

    /// The host as given, an IPv6 address without its brackets: what a
    /// resolver takes.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as a URL writes it: an IPv6 address in brackets.
    pub fn url_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl FromStr for HostPort {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match split(text)? {
            (host, Some(port)) => Ok(Self { host, port }),
            (_, None) => Err(InvalidValue::MissingPort),
        }
    }
}

/// `host:port`, an IPv6 host in brackets: what [`HostPort::from_str`]
/// reads back, and what `TcpStream::connect` takes.
impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.url_host(), self.port)
    }
}

/// Splits `host[:port]` into a checked host (IPv6 without brackets) and
/// port, if any.
fn split(text: &str) -> Result<(String, Option<u16>), InvalidValue> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (inside, rest) = bracketed
            .split_once(']')
            .ok_or_else(|| InvalidValue::BadHost(text.to_string()))?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(InvalidValue::BadHost(format!("[{inside}]")));
        }
        let port = match rest {
            "" => None,
            _ => Some(
                rest.strip_prefix(':')
                    .ok_or_else(|| InvalidValue::BadHost(text.to_string()))?,
            ),
        };
        (inside, port)
    } else {
        match text.rsplit_once(':') {
            None => {
                check_name(text)?;
                (text, None)
            }
            Some((host, _)) if host.contains(':') => {
                // Several colons: an IPv6 address, which needs brackets
                // to be told apart from its port.
                let address = [text, host]
                    .into_iter()
                    .find(|address| address.parse::<Ipv6Addr>().is_ok());
                return Err(match address {
                    Some(address) => InvalidValue::BareIpv6(address.to_string()),
                    None => InvalidValue::BadHost(host.to_string()),
                });
            }
            Some((host, port)) => {
                check_name(host)?;
                (host, Some(port))
            }
        }
    };
    let port = port.map(parse_port).transpose()?;
    Ok((host.to_string(), port))
}

/// A host name or IPv4 address: letters, digits, `-`, `.` and `_`.
fn check_name(host: &str) -> Result<(), InvalidValue> {
    if host.is_empty() {
        return Err(InvalidValue::MissingHost);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if !host.chars().all(allowed) || host.starts_with(['-', '.']) {
        return Err(InvalidValue::BadHost(host.to_string()));
    }
    Ok(())
}

/// Digits only (no sign, no spaces), at most 65535.
fn parse_port(port: &str) -> Result<u16, InvalidValue> {
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| port.parse().ok())
        .flatten()
        .ok_or_else(|| InvalidValue::BadPort(port.to_string()))
}

/// A network in CIDR notation (`10.0.0.0/8`, `fd00::/8`), or a single
/// address taken as a network of one (`/32`, `/128`). Host bits are
/// dropped: `10.1.2.3/8` is `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network(IpNet);

impl Network {
    /// The network.
    pub fn get(self) -> IpNet {
        self.0
    }
}

impl From<Network> for IpNet {
    fn from(network: Network) -> Self {
        network.0
    }
}

impl FromStr for Network {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let network = match text.parse::<IpNet>() {
            Ok(network) => network,
            Err(_) => IpNet::from(
                text.parse::<IpAddr>()
                    .map_err(|_| InvalidValue::NotNetwork)?,
            ),
        };
        Ok(Self(network.trunc()))
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A duration longer than zero and at most [`PositiveDuration::MAX`], as
/// the command line writes it: with a unit (`200ms`, `2s`, `1m`, `1h30m`,
/// by the `humantime` crate) or as whole seconds (`2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PositiveDuration(Duration);

impl PositiveDuration {
    /// The longest duration taken: far beyond any sensible timeout, and
    /// far from overflowing a clock when added to it.
    pub const MAX: Duration = Duration::from_secs(365 * 24 * 60 * 60);

    /// `seconds` seconds, for defaults; `seconds` must be from 1 to
    /// [`Self::MAX`] (checked when the value is parsed back, not here).
    pub const fn from_secs(seconds: u64) -> Self {
        Self(Duration::from_secs(seconds))
    }

    /// `duration`, for defaults kept as a `Duration`; like
    /// [`Self::from_secs`], checked only when parsed back.
    pub const fn from_duration(duration: Duration) -> Self {
        Self(duration)
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<PositiveDuration> for Duration {
    fn from(duration: PositiveDuration) -> Self {
        duration.0
    }
}

impl FromStr for PositiveDuration {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let duration = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            Duration::from_secs(text.parse().map_err(|_| InvalidValue::TooLong)?)
        } else {
            humantime::parse_duration(text).map_err(|error| match error {
                humantime::DurationError::NumberOverflow => InvalidValue::TooLong,
                _ => InvalidValue::NotDuration,
            })?
        };
        if duration.is_zero() {
            Err(InvalidValue::ZeroDuration)
        } else if duration > Self::MAX {
            Err(InvalidValue::TooLong)
        } else {
            Ok(Self(duration))
        }
    }
}

/// As `humantime` writes it (`5s`, `200ms`, `1m 30s`): what the help
/// shows as a default, and what [`PositiveDuration::from_str`] reads back.
impl fmt::Display for PositiveDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_port(text: &str) -> Result<(String, u16), InvalidValue> {
        text.parse::<HostPort>()
            .map(|parsed| (parsed.host().to_string(), parsed.port()))
    }

    #[test]
    fn host_ports_of_every_kind() {
        let ok = |host: &str, port| Ok((host.to_string(), port));
        assert_eq!(host_port("127.0.0.1:5000"), ok("127.0.0.1", 5000));
        assert_eq!(host_port("127.0.0.1:0"), ok("127.0.0.1", 0));
        assert_eq!(host_port("localhost:65535"), ok("localhost", 65535));
        assert_eq!(host_port("servidor_1.local:80"), ok("servidor_1.local", 80));
        assert_eq!(host_port("[::1]:8080"), ok("::1", 8080));
        assert_eq!(host_port("[::]:0"), ok("::", 0));
        assert!(host_port("[fe80::1%eth0]:1").is_err());
    }

    #[test]
    fn host_ports_read_back_what_they_write() {
        for text in ["127.0.0.1:0", "[::1]:8080", "example.org:443"] {
            let parsed: HostPort = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(parsed.to_string().parse::<HostPort>().unwrap(), parsed);
        }
    }

    #[test]
    fn host_ports_need_both_halves() {
        assert_eq!(host_port("localhost"), Err(InvalidValue::MissingPort));
        assert_eq!(host_port("127.0.0.1"), Err(InvalidValue::MissingPort));
        assert_eq!(host_port("[::1]"), Err(InvalidValue::MissingPort));
        assert_eq!(host_port(":5000"), Err(InvalidValue::MissingHost));
        assert_eq!(host_port(""), Err(InvalidValue::MissingHost));
        assert_eq!(host_port("h:"), Err(InvalidValue::BadPort(String::new())));
    }

    #[test]
    fn host_ports_refuse_junk() {
        let bad_port = |port: &str| Err(InvalidValue::BadPort(port.to_string()));
        assert_eq!(host_port("h:99999"), bad_port("99999"));
        assert_eq!(host_port("h:abc"), bad_port("abc"));
        assert_eq!(host_port("h:+80"), bad_port("+80"));
        assert_eq!(host_port("h: 80"), bad_port(" 80"));
        assert_eq!(host_port("h:-1"), bad_port("-1"));
        for junk in [
            "sin puerto:80",
            "http://h:80",
            "user@h:80",
            "h/x:80",
            "-h:80",
            "[::1:80",
            "[::1]80",
            "[::1]:80:90",
            "[nope]:80",
            "a:b:80",
        ] {
            assert!(host_port(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn ipv6_without_brackets_gets_a_hint() {
        assert_eq!(
            host_port("::1"),
            Err(InvalidValue::BareIpv6(String::from("::1")))
        );
        assert!(matches!(
            host_port("fe80::1:8080"),
            Err(InvalidValue::BareIpv6(_))
        ));
    }

    #[test]
    fn a_default_port_fills_a_missing_one() {
        let parsed = HostPort::with_default_port("example.org", 443).unwrap();
        assert_eq!((parsed.host(), parsed.port()), ("example.org", 443));
        let parsed = HostPort::with_default_port("[::1]", 80).unwrap();
        assert_eq!((parsed.url_host().as_str(), parsed.port()), ("[::1]", 80));
        let parsed = HostPort::with_default_port("h:8080", 80).unwrap();
        assert_eq!(parsed.port(), 8080);
        assert!(HostPort::with_default_port("h:x", 80).is_err());
    }

    #[test]
    fn networks_and_single_addresses() {
        let network = |text: &str| text.parse::<Network>().map(|n| n.to_string());
        assert_eq!(network("10.0.0.0/8").as_deref(), Ok("10.0.0.0/8"));
        assert_eq!(network("10.1.2.3/8").as_deref(), Ok("10.0.0.0/8"));
        assert_eq!(network("127.0.0.1").as_deref(), Ok("127.0.0.1/32"));
        assert_eq!(network("::1").as_deref(), Ok("::1/128"));
        assert_eq!(network("fd00::/8").as_deref(), Ok("fd00::/8"));
        for bad in [
            "10.0.0.0/33",
            "proxy.example",
            "",
            "10.0.0.0/",
            "1.2.3.4:80",
        ] {
            assert_eq!(network(bad), Err(InvalidValue::NotNetwork), "{bad}");
        }
    }

    #[test]
    fn durations_with_units_or_whole_seconds() {
        let duration = |text: &str| text.parse::<PositiveDuration>().map(PositiveDuration::get);
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn durations_refuse_zero_junk_and_the_absurd() {
        let duration = |text: &str| text.parse::<PositiveDuration>().map(PositiveDuration::get);
        assert_eq!(duration("0"), Err(InvalidValue::ZeroDuration));
        assert_eq!(duration("0ms"), Err(InvalidValue::ZeroDuration));
        for junk in ["", "abc", "-1", "2 x", "1.5", "s", " 2"] {
            assert_eq!(duration(junk), Err(InvalidValue::NotDuration), "{junk:?}");
        }
        assert_eq!(duration("366d"), Err(InvalidValue::TooLong));
        assert_eq!(duration("99999999999999999999"), Err(InvalidValue::TooLong));
        assert_eq!(
            duration("99999999999999999999999999h"),
            Err(InvalidValue::TooLong)
        );
        assert_eq!(duration("365d"), Ok(PositiveDuration::MAX));
    }

    #[test]
    fn durations_read_back_what_the_help_shows() {
        for seconds in [1, 5, 30, 60, 90, 3600] {
            let default = PositiveDuration::from_secs(seconds);
            assert_eq!(default.to_string().parse(), Ok(default));
        }
        assert_eq!(PositiveDuration::from_secs(30).to_string(), "30s");
        let short = PositiveDuration::from_duration(Duration::from_millis(200));
        assert_eq!(short.to_string(), "200ms");
        assert_eq!(short.to_string().parse(), Ok(short));
    }
}
