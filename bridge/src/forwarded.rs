//! The client's address from `Forwarded` (RFC 7239) or `X-Forwarded-For`,
//! believed only as far as trusted proxies vouch for it.
//!
//! Each proxy appends the address it got the request from, so the list is
//! read from the right: the hop that reached us is checked first, and the
//! walk stops at the first address that is not a trusted proxy, since
//! everything left of it could have been written by the client itself.
//! `nginx`'s HTTP proxy cannot send a PROXY header, so this is how a bridge
//! behind it learns who the browser is.

use std::net::{IpAddr, SocketAddr};

use axum::http::header::FORWARDED;
use axum::http::HeaderMap;
use netkit::proxy_protocol::{ClientAddress, TrustedProxies};

const X_FORWARDED_FOR: &str = "x-forwarded-for";

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
}
