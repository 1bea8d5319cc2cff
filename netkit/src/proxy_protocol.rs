//! The client's real address behind a load balancer: the PROXY protocol
//! (HAProxy's, v1 text and v2 binary), read only on connections from
//! trusted proxies (`--trusted-proxy CIDR`).
//!
//! Parsing is the `ppp` crate's; this module only decides whom to believe,
//! and reads exactly the header's bytes, so whatever the client sent next
//! stays in the socket for the server. From an address that is not
//! trusted, a PROXY header is plain data: nobody can choose their logged
//! address by sending one.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use console::args::{InvalidValue, Network};
use ipnet::IpNet;
use nix::sys::socket::{recv, MsgFlags};
use ppp::v2;
use ppp::PartialResult;
use thiserror::Error;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// How long a trusted proxy has to send its whole header by default
/// (`servidor`'s `Config::proxy_header_deadline`; the bridge takes the
/// shorter of this and its handshake timeout): a few seconds.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(3);

/// The longest header read: a v1 header is at most 107 bytes, and a v2
/// header from HAProxy with its usual TLVs well under 1 KiB.
const MAX_HEADER: usize = 1024;
/// The v1 header's limit (PROXY protocol spec, 2.1).
const MAX_V1: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";

/// The proxies whose PROXY headers and forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// From `--trusted-proxy` values, as clap parsed them.
    pub fn from_networks<I>(networks: I) -> Self
    where
        I: IntoIterator<Item = Network>,
    {
        Self {
            networks: networks.into_iter().map(Network::get).collect(),
        }
    }

    /// From networks written out (`10.0.0.0/8`) or single addresses
    /// (`127.0.0.1`), as [`Network`] reads them. Fails on anything else,
    /// saying why in Spanish.
    pub fn new<I, S>(entries: I) -> Result<Self, InvalidValue>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let networks = entries
            .into_iter()
            .map(|entry| entry.as_ref().trim().parse::<Network>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_networks(networks))
    }

    /// Whether no proxy is trusted (the default).
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Whether `address` is a trusted proxy.
    pub fn trusts(&self, address: IpAddr) -> bool {
        // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
        let address = address.to_canonical();
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }
}

/// Who a connection speaks for: the client, and the proxy it came through
/// if a trusted proxy said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// The client's address, as the proxy announced it, or the peer's.
    pub client: SocketAddr,
    /// The proxy the connection came from, when it announced the client.
    pub via: Option<SocketAddr>,
}

impl ClientAddress {
    /// A connection that came straight from `peer`.
    pub fn direct(peer: SocketAddr) -> Self {
        Self {
            client: peer,
            via: None,
        }
    }
}

/// The client as `203.0.113.7:51234 (vía 127.0.0.1:40122)`; port 0 (a hop
/// of `X-Forwarded-For`, which has none) is left out.
impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.client.port() == 0 {
            write!(f, "{}", self.client.ip())?;
        } else {
            write!(f, "{}", self.client)?;
        }
        match self.via {
            Some(via) => write!(f, " (vía {via})"),
            None => Ok(()),
        }
    }
}

/// Whether a trusted proxy must send a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Raw streams (`servidor`): nothing else tells a header from a
    /// message, so a connection without one is refused.
    Required,
    /// HTTP (`bridge`): a request cannot start like a header, so it is
    /// taken when present.
    Optional,
}

/// Why a trusted proxy's connection was refused.
#[derive(Debug, Error)]
pub enum HeaderError {
    /// The connection did not start with a header.
    #[error("falta la cabecera PROXY")]
    Missing,
    /// The header is not valid.
    #[error("cabecera PROXY no válida: {0}")]
    Malformed(String),
    /// The header is longer than any valid one we take.
    #[error("cabecera PROXY demasiado larga (más de {0} bytes)")]
    TooLong(usize),
    /// The connection ended inside the header.
    #[error("la conexión terminó a mitad de la cabecera PROXY")]
    Truncated,
    /// The header did not arrive whole in time.
    #[error("la cabecera PROXY no llegó completa en {}", console::Seconds(*.0))]
    TimedOut(Duration),
    /// Reading failed (said in the message, so not also a `source()`).
    #[error("error al leer la cabecera PROXY: {0}")]
    Io(io::Error),
}

impl From<io::Error> for HeaderError {
    fn from(error: io::Error) -> HeaderError {
        HeaderError::Io(error)
    }
}

/// Who connected from `peer`: read from its PROXY header if `peer` is a
/// trusted proxy (consuming exactly the header, within `within`), or
/// `peer` itself.
pub async fn client_address(
    stream: &mut TcpStream,
    peer: SocketAddr,
    trusted: &TrustedProxies,
    presence: Presence,
    within: Duration,
) -> Result<ClientAddress, HeaderError> {
    if !trusted.trusts(peer.ip()) {
        return Ok(ClientAddress::direct(peer));
    }
    let announced = read_header(stream, presence, within).await?;
    Ok(match announced {
        Some(client) => ClientAddress {
            client,
            via: Some(peer),
        },
        // LOCAL (a health check) or UNKNOWN: the proxy speaks for itself.
        None => ClientAddress::direct(peer),
    })
}

/// What the start of a stream holds so far.
enum Seen {
    /// Not a PROXY header.
    Other,
    /// A header, not yet whole.
    Incomplete,
    /// A whole header of this many bytes, announcing this client (or none).
    Header(usize, Option<SocketAddr>),
}

/// Reads a PROXY header within `within`, consuming exactly its bytes;
/// the client address it announces, if any.
///
/// The bytes are looked at with `MSG_PEEK`, so that whatever follows the
/// header stays in the socket. A look that finds no more bytes than the
/// last one reports `WouldBlock` to tokio, which clears the socket's
/// readiness: the next wait then lasts until more bytes, or the end, come
/// (a plain `peek` would find the same bytes at once, again and again).
async fn read_header(
    stream: &mut TcpStream,
    presence: Presence,
    within: Duration,
) -> Result<Option<SocketAddr>, HeaderError> {
    let deadline = Instant::now() + within;
    let mut seen = vec![0; MAX_HEADER];
    let mut looked = None;
    loop {
        let ready = match timeout_at(deadline, stream.ready(Interest::READABLE)).await {
            Ok(ready) => ready?,
            Err(_elapsed) => return Err(HeaderError::TimedOut(within)),
        };
        // Once the peer has ended its side, every byte it sent is here: no
        // more will come, so the look is the last one.
        let ended = ready.is_read_closed();
        let look = stream.try_io(Interest::READABLE, || {
            let read = recv(stream.as_raw_fd(), &mut seen, MsgFlags::MSG_PEEK)?;
            if !ended && looked == Some(read) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(read)
        });
        let read = match look {
            Ok(read) => read,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(error) => return Err(error.into()),
        };
        looked = Some(read);
        if read == 0 {
            return match presence {
                Presence::Required => Err(HeaderError::Truncated),
                Presence::Optional => Ok(None),
            };
        }
        match classify(&seen[..read])? {
            Seen::Other => {
                return match presence {
                    Presence::Required => Err(HeaderError::Missing),
                    Presence::Optional => Ok(None),
                }
            }
            Seen::Header(len, client) => {
                stream.read_exact(&mut seen[..len]).await?;
                return Ok(client);
            }
            Seen::Incomplete if read == seen.len() => return Err(HeaderError::TooLong(MAX_HEADER)),
            Seen::Incomplete if ended => return Err(HeaderError::Truncated),
            Seen::Incomplete => {}
        }
    }
}

/// Tells what `start`, the first bytes of a stream, holds.
fn classify(start: &[u8]) -> Result<Seen, HeaderError> {
    if is_prefix_either_way(start, v2::PROTOCOL_PREFIX) {
        return classify_v2(start);
    }
    if is_prefix_either_way(start, V1_PREFIX) {
        return classify_v1(start);
    }
    Ok(Seen::Other)
}

/// Whether `start` and `signature` agree as far as both go.
fn is_prefix_either_way(start: &[u8], signature: &[u8]) -> bool {
    let common = start.len().min(signature.len());
    start[..common] == signature[..common]
}

fn classify_v1(start: &[u8]) -> Result<Seen, HeaderError> {
    let Some(end) = start.windows(2).position(|pair| pair == b"\r\n") else {
        return if start.len() >= MAX_V1 {
            Err(HeaderError::TooLong(MAX_V1))
        } else {
            Ok(Seen::Incomplete)
        };
    };
    let len = end + 2;
    if len > MAX_V1 {
        return Err(HeaderError::TooLong(MAX_V1));
    }
    let header = ppp::v1::Header::try_from(&start[..len])
        .map_err(|error| HeaderError::Malformed(error.to_string()))?;
    let client = match header.addresses {
        ppp::v1::Addresses::Tcp4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        ppp::v1::Addresses::Tcp6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        ppp::v1::Addresses::Unknown => None,
    };
    Ok(Seen::Header(len, client))
}

fn classify_v2(start: &[u8]) -> Result<Seen, HeaderError> {
    let parsed = v2::Header::try_from(start);
    if parsed.is_incomplete() || start.len() < v2::PROTOCOL_PREFIX.len() {
        return Ok(Seen::Incomplete);
    }
    let header = parsed.map_err(|error| HeaderError::Malformed(error.to_string()))?;
    let client = match (header.command, header.addresses) {
        (v2::Command::Local, _) => None,
        (v2::Command::Proxy, v2::Addresses::IPv4(ip)) => {
            Some(SocketAddr::from((ip.source_address, ip.source_port)))
        }
        (v2::Command::Proxy, v2::Addresses::IPv6(ip)) => {
            Some(SocketAddr::from((ip.source_address, ip.source_port)))
        }
        (v2::Command::Proxy, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
    };
    Ok(Seen::Header(header.len(), client))
}

/// A PROXY v2 header announcing `client` on a connection to `destination`
/// (for `bridge --send-proxy`). Addresses of different families are both
/// given as IPv6, as the protocol has one family per header.
pub fn v2_header(client: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let addresses = match (client, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            v2::Addresses::from((client, destination))
        }
        _ => v2::Addresses::from((as_v6(client), as_v6(destination))),
    };
    let builder = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        addresses,
    );
    // Building writes into a Vec, which cannot fail; an empty header would
    // only be refused by the target, never sent half-made.
    builder.build().unwrap_or_default()
}

/// A PROXY v2 `LOCAL` header: the connection is the proxy's own, such as a
/// health check, and announces no client (for `bridge --send-proxy`'s
/// `/healthz`, so that a target requiring the header takes the check).
pub fn v2_local_header() -> Vec<u8> {
    let builder = v2::Builder::new(
        v2::Version::Two | v2::Command::Local,
        v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
    );
    // As in `v2_header`: building into a Vec cannot fail.
    builder.build().unwrap_or_default()
}

fn as_v6(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(bytes: &[u8]) -> Result<Seen, HeaderError> {
        classify(bytes)
    }

    #[test]
    fn a_read_error_is_said_once() {
        let error = HeaderError::from(io::Error::other("la red se cayó"));
        assert!(std::error::Error::source(&error).is_none());
        assert_eq!(
            error.to_string(),
            "error al leer la cabecera PROXY: la red se cayó"
        );
    }

    #[test]
    fn networks_and_single_addresses_are_trusted_and_nothing_else() {
        let trusted = TrustedProxies::new(["10.0.0.0/8", "127.0.0.1", "::1"]).unwrap();
        assert!(trusted.trusts("10.1.2.3".parse().unwrap()));
        assert!(trusted.trusts("127.0.0.1".parse().unwrap()));
        assert!(trusted.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(trusted.trusts("::1".parse().unwrap()));
        assert!(!trusted.trusts("127.0.0.2".parse().unwrap()));
        assert!(!TrustedProxies::default().trusts("127.0.0.1".parse().unwrap()));
        assert!(TrustedProxies::new(["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::new(["proxy.example"]).is_err());
    }

    #[test]
    fn a_v1_header_gives_its_length_and_client() {
        let input = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 5000\r\nhola\n";
        match header_of(input).unwrap() {
            Seen::Header(len, client) => {
                assert_eq!(&input[len..], b"hola\n");
                assert_eq!(client, Some("203.0.113.7:51234".parse().unwrap()));
            }
            _ => panic!("not a header"),
        }
        assert!(matches!(
            header_of(b"PROXY UNKNOWN\r\n").unwrap(),
            Seen::Header(15, None)
        ));
    }

    #[test]
    fn every_cut_of_a_header_is_incomplete_and_other_data_is_not_a_header() {
        let v1 = b"PROXY TCP6 2001:db8::7 ::1 51234 5000\r\n".to_vec();
        let v2 = v2_header(
            "203.0.113.7:51234".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
        );
        for header in [v1, v2] {
            for cut in 1..header.len() {
                assert!(
                    matches!(header_of(&header[..cut]).unwrap(), Seen::Incomplete),
                    "cut at {cut}"
                );
            }
            assert!(matches!(
                header_of(&header).unwrap(),
                Seen::Header(len, Some(_)) if len == header.len()
            ));
        }
        for other in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"hola\n",
            b"PROXI",
            b"\r\n\r\nX",
        ] {
            assert!(
                matches!(header_of(other).unwrap(), Seen::Other),
                "{other:?}"
            );
        }
    }

    #[test]
    fn v2_local_announces_nobody_and_tlvs_are_skipped() {
        let local = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        assert!(matches!(header_of(&local).unwrap(), Seen::Header(16, None)));
        assert_eq!(v2_local_header(), local);

        let with_tlv = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            v2::Addresses::from((
                "203.0.113.7:51234".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:5000".parse::<SocketAddr>().unwrap(),
            )),
        )
        .write_tlv(v2::Type::UniqueId, b"abc".as_slice())
        .unwrap()
        .build()
        .unwrap();
        let mut input = with_tlv.clone();
        input.extend_from_slice(b"hola\n");
        assert!(matches!(
            header_of(&input).unwrap(),
            Seen::Header(len, Some(client))
                if len == with_tlv.len() && client == "203.0.113.7:51234".parse().unwrap()
        ));
    }

    #[test]
    fn malformed_and_overlong_headers_are_refused() {
        assert!(matches!(
            header_of(b"PROXY TCP4 nope 127.0.0.1 1 2\r\n"),
            Err(HeaderError::Malformed(_))
        ));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(header_of(&long), Err(HeaderError::TooLong(_))));
        let mut bad_version = v2_header(
            "203.0.113.7:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        bad_version[12] = 0x31;
        assert!(matches!(
            header_of(&bad_version),
            Err(HeaderError::Malformed(_))
        ));
    }

    #[test]
    fn mixed_families_are_announced_as_ipv6() {
        let header = v2_header(
            "[2001:db8::7]:51234".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
        );
        assert!(matches!(
            header_of(&header).unwrap(),
            Seen::Header(_, Some(client)) if client == "[2001:db8::7]:51234".parse().unwrap()
        ));
    }

    #[test]
    fn a_client_address_shows_the_proxy_it_came_through() {
        let address = ClientAddress {
            client: "203.0.113.7:51234".parse().unwrap(),
            via: Some("127.0.0.1:40122".parse().unwrap()),
        };
        assert_eq!(
            address.to_string(),
            "203.0.113.7:51234 (vía 127.0.0.1:40122)"
        );
        let direct = ClientAddress::direct("127.0.0.1:1".parse().unwrap());
        assert_eq!(direct.to_string(), "127.0.0.1:1");
        let forwarded = ClientAddress {
            client: "[2001:db8::7]:0".parse().unwrap(),
            via: Some("127.0.0.1:2".parse().unwrap()),
        };
        assert_eq!(forwarded.to_string(), "2001:db8::7 (vía 127.0.0.1:2)");
    }
}
