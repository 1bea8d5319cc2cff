//! The client's address from `Forwarded` (RFC 7239) or `X-Forwarded-For`,
//! and the scheme and host the browser used from `proto=`/`host=` or
//! `X-Forwarded-Proto`/`X-Forwarded-Host`, believed only as far as trusted
//! proxies vouch for them.
//!
//! Each proxy appends the address it got the request from, so the list is
//! read from the right: the hop that reached us is checked first, and the
//! walk stops at the first address that is not a trusted proxy, since
//! everything left of it could have been written by the client itself.
//! `nginx`'s HTTP proxy cannot send a PROXY header, so this is how a bridge
//! behind it learns who the browser is. When TLS ends at the proxy, the
//! scheme and host are how the bridge learns which origin its own pages
//! have (`https://demo.example.org`, while it is spoken to in plain HTTP).
//!
//! The same walk decides whose word counts for the scheme and host: each
//! element (a `Forwarded` element, or the values of the `X-Forwarded-*`
//! headers lined up from the right) was written by the hop to its right,
//! the last one by the connection's peer. The outermost element written by
//! a trusted proxy that says it wins.

use std::net::{IpAddr, SocketAddr};

use axum::http::header::FORWARDED;
use axum::http::HeaderMap;
use netkit::proxy_protocol::{ClientAddress, TrustedProxies};

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// How the browser reached the site, as trusted proxies tell it; `None`
/// where none said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Site {
    /// Whether the browser spoke https (`proto=https`, `X-Forwarded-Proto:
    /// https`; `wss` counts too) or plain http.
    pub https: Option<bool>,
    /// The host (and port, if any) the browser asked for: `host=` or
    /// `X-Forwarded-Host`.
    pub host: Option<String>,
}

/// The scheme and host the browser used, if `direct` (the connection's
/// own address, or what a trusted proxy's PROXY header announced) is a
/// trusted proxy and it, or trusted proxies before it, said them. From
/// anyone else the headers change nothing.
pub fn site(direct: ClientAddress, headers: &HeaderMap, trusted: &TrustedProxies) -> Site {
    let mut site = Site::default();
    if !trusted.trusts(direct.client.ip()) {
        return site;
    }
    let elements = if headers.contains_key(FORWARDED) {
        forwarded_elements(headers)
    } else {
        x_forwarded_elements(headers)
    };
    // Every element reached here was written by a trusted proxy.
    for element in elements.into_iter().rev() {
        if let Some(https) = element.proto.as_deref().and_then(is_https) {
            site.https = Some(https);
        }
        if let Some(host) = element.host {
            site.host = Some(host);
        }
        match element.hop {
            Some(hop) if trusted.trusts(hop.ip()) => {}
            // The next element to the left was written by someone we do
            // not trust (or do not know).
            _ => break,
        }
    }
    site
}

/// One hop's report: who it got the request from (`for=`), and the scheme
/// and host that request had.
#[derive(Debug, Default)]
struct Element {
    hop: Option<SocketAddr>,
    proto: Option<String>,
    host: Option<String>,
}

/// Every element of every `Forwarded` header, in order.
fn forwarded_elements(headers: &HeaderMap) -> Vec<Element> {
    headers
        .get_all(FORWARDED)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("").split(','))
        .map(|text| {
            let mut element = Element::default();
            for (key, value) in text.split(';').filter_map(|pair| pair.split_once('=')) {
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "for" => element.hop = parse_hop(value),
                    "proto" => element.proto = non_empty(value),
                    "host" => element.host = non_empty(value),
                    _ => {}
                }
            }
            element
        })
        .collect()
}

/// `X-Forwarded-For`, `-Proto` and `-Host` lined up from the right: each
/// proxy that appends to them appends to all it sets, and a proxy that
/// sets one value writes the rightmost.
fn x_forwarded_elements(headers: &HeaderMap) -> Vec<Element> {
    let hops = x_forwarded_for_hops(headers);
    let protos = header_list(headers, X_FORWARDED_PROTO);
    let hosts = header_list(headers, X_FORWARDED_HOST);
    let count = hops.len().max(protos.len()).max(hosts.len());
    // The `from_right`th value of a list, counting from 0 at the right.
    fn nth_from_right<T: Clone>(list: &[T], from_right: usize) -> Option<T> {
        list.len()
            .checked_sub(from_right + 1)
            .map(|at| list[at].clone())
    }
    (0..count)
        .rev()
        .map(|from_right| Element {
            hop: nth_from_right(&hops, from_right).flatten(),
            proto: nth_from_right(&protos, from_right).flatten(),
            host: nth_from_right(&hosts, from_right).flatten(),
        })
        .collect()
}

/// The comma-separated values of every `name` header, in order.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<Option<String>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("").split(','))
        .map(|value| non_empty(value.trim()))
        .collect()
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// Whether a `proto` value means TLS; `None` for a scheme that is not
/// the web's (ignored, as if not said).
fn is_https(proto: &str) -> Option<bool> {
    match proto.to_ascii_lowercase().as_str() {
        "https" | "wss" => Some(true),
        "http" | "ws" => Some(false),
        _ => None,
    }
}

/// The client behind `direct` (the connection's own address, or what a
/// trusted proxy's PROXY header announced), as the forwarding headers
/// tell it, if `direct` is a trusted proxy. A hop given without a port
/// gets port 0.
pub fn client_address(
    direct: ClientAddress,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> ClientAddress {
    if !trusted.trusts(direct.client.ip()) {
        return direct;
    }
    let hops = if headers.contains_key(FORWARDED) {
        forwarded_hops(headers)
    } else {
        x_forwarded_for_hops(headers)
    };
    let via = direct.via.unwrap_or(direct.client);
    let mut client = direct.client;
    for hop in hops.into_iter().rev() {
        let Some(hop) = hop else {
            // "unknown", an obfuscated name or garbage: nothing to trust
            // further left.
            break;
        };
        client = hop;
        if !trusted.trusts(hop.ip()) {
            break;
        }
    }
    if client == direct.client {
        return direct;
    }
    ClientAddress {
        client,
        via: Some(via),
    }
}

/// The `for=` of every element of every `Forwarded` header, in order.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<SocketAddr>> {
    headers
        .get_all(FORWARDED)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("").split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, value)| parse_hop(value.trim().trim_matches('"')))
        })
        .collect()
}

/// Every address of every `X-Forwarded-For` header, in order.
fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<SocketAddr>> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("").split(','))
        .map(|hop| parse_hop(hop.trim()))
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:5`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:5`.
fn parse_hop(hop: &str) -> Option<SocketAddr> {
    if let Ok(address) = hop.parse::<SocketAddr>() {
        return Some(address);
    }
    let bare = hop.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn proxy() -> ClientAddress {
        ClientAddress::direct("127.0.0.1:40122".parse().unwrap())
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(["127.0.0.1", "10.0.0.0/8"]).unwrap()
    }

    #[test]
    fn the_walk_stops_at_the_first_hop_that_is_not_a_trusted_proxy() {
        let sent = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.1.1")]);
        let client = client_address(proxy(), &sent, &trusted());
        assert_eq!(client.client, "203.0.113.7:0".parse().unwrap());
        assert_eq!(client.via, Some("127.0.0.1:40122".parse().unwrap()));
    }

    #[test]
    fn an_untrusted_sender_cannot_choose_its_address() {
        let sent = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        let direct = ClientAddress::direct("192.0.2.9:5555".parse().unwrap());
        assert_eq!(client_address(direct, &sent, &trusted()), direct);
        assert_eq!(
            client_address(proxy(), &sent, &TrustedProxies::default()),
            proxy()
        );
    }

    #[test]
    fn forwarded_elements_with_ports_brackets_and_quotes() {
        let sent = headers(&[(
            "forwarded",
            "for=198.51.100.1;proto=http, for=\"[2001:db8::17]:4711\";by=10.0.0.1",
        )]);
        let client = client_address(proxy(), &sent, &trusted());
        assert_eq!(client.client, "[2001:db8::17]:4711".parse().unwrap());
    }

    #[test]
    fn unknown_or_garbage_hops_end_the_walk_at_the_last_trusted_one() {
        let sent = headers(&[("x-forwarded-for", "203.0.113.7, nonsense, 10.0.0.5")]);
        let client = client_address(proxy(), &sent, &trusted());
        assert_eq!(client.client, "10.0.0.5:0".parse().unwrap());
        let sent = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client_address(proxy(), &sent, &trusted()), proxy());
    }

    #[test]
    fn a_proxy_protocol_client_keeps_its_proxy_as_via() {
        let announced = ClientAddress {
            client: "10.0.0.5:1234".parse().unwrap(),
            via: Some("127.0.0.1:9".parse().unwrap()),
        };
        let sent = headers(&[("x-forwarded-for", "203.0.113.7")]);
        let client = client_address(announced, &sent, &trusted());
        assert_eq!(client.client, "203.0.113.7:0".parse().unwrap());
        assert_eq!(client.via, Some("127.0.0.1:9".parse().unwrap()));
    }

    fn https_site(host: &str) -> Site {
        Site {
            https: Some(true),
            host: Some(host.to_string()),
        }
    }

    #[test]
    fn a_trusted_proxy_tells_the_scheme_and_host_either_way() {
        let sent = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "demo.example.org"),
        ]);
        assert_eq!(
            site(proxy(), &sent, &trusted()),
            https_site("demo.example.org")
        );
        let sent = headers(&[(
            "forwarded",
            "for=203.0.113.7;proto=https;host=\"demo.example.org:8443\"",
        )]);
        assert_eq!(
            site(proxy(), &sent, &trusted()),
            https_site("demo.example.org:8443")
        );
        // Scheme names are case-insensitive; wss is https too.
        let sent = headers(&[("x-forwarded-proto", "WSS")]);
        assert_eq!(site(proxy(), &sent, &trusted()).https, Some(true));
        let sent = headers(&[("forwarded", "proto=http")]);
        assert_eq!(site(proxy(), &sent, &trusted()).https, Some(false));
    }

    #[test]
    fn from_anyone_else_the_headers_change_nothing() {
        let sent = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "demo.example.org"),
            ("forwarded", "proto=https;host=demo.example.org"),
        ]);
        let stranger = ClientAddress::direct("192.0.2.9:5555".parse().unwrap());
        assert_eq!(site(stranger, &sent, &trusted()), Site::default());
        assert_eq!(
            site(proxy(), &sent, &TrustedProxies::default()),
            Site::default()
        );
        // A PROXY header announced a client: the HTTP headers are that
        // client's own, not the proxy's.
        let announced = ClientAddress {
            client: "203.0.113.7:1234".parse().unwrap(),
            via: Some("127.0.0.1:9".parse().unwrap()),
        };
        assert_eq!(site(announced, &sent, &trusted()), Site::default());
    }

    #[test]
    fn what_a_client_wrote_before_the_proxy_appended_is_not_believed() {
        // The client sent "https"; nginx appended its own "http".
        let sent = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https, http"),
        ]);
        assert_eq!(site(proxy(), &sent, &trusted()).https, Some(false));
        let sent = headers(&[(
            "forwarded",
            "for=10.9.9.9;proto=https;host=evil.example, for=203.0.113.7;proto=http",
        )]);
        assert_eq!(
            site(proxy(), &sent, &trusted()),
            Site {
                https: Some(false),
                host: None
            }
        );
    }

    #[test]
    fn through_a_chain_of_trusted_proxies_the_outermost_word_wins() {
        // The edge (10.0.0.5, trusted) ended TLS and said so; the inner
        // proxy that connected to us spoke plain http to the bridge.
        let sent = headers(&[(
            "forwarded",
            "for=203.0.113.7;proto=https;host=demo.example.org, for=10.0.0.5;proto=http",
        )]);
        assert_eq!(
            site(proxy(), &sent, &trusted()),
            https_site("demo.example.org")
        );
        // The same with X-Forwarded-*: the inner proxy appended to each.
        let sent = headers(&[
            ("x-forwarded-for", "203.0.113.7, 10.0.0.5"),
            ("x-forwarded-proto", "https, http"),
        ]);
        assert_eq!(site(proxy(), &sent, &trusted()).https, Some(true));
        // An element without a proto keeps what the inner one said.
        let sent = headers(&[("forwarded", "for=203.0.113.7, for=10.0.0.5;proto=https")]);
        assert_eq!(site(proxy(), &sent, &trusted()).https, Some(true));
    }

    #[test]
    fn unknown_schemes_and_empty_values_are_ignored() {
        let sent = headers(&[("x-forwarded-proto", "gopher"), ("x-forwarded-host", "")]);
        assert_eq!(site(proxy(), &sent, &trusted()), Site::default());
    }
}
