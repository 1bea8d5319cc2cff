//! The addresses a person can type: when the bridge listens on every
//! interface (`0.0.0.0` or `[::]`), `http://0.0.0.0:8080/` opens nothing on
//! a pupil's computer, so the bridge names the page once per address this
//! machine really has (its non-loopback interface addresses).

use std::net::{IpAddr, SocketAddr};

/// The page's URLs for a listener bound to `listen`, served with `scheme`
/// (`http` or `https`).
///
/// A specific address is given back as it is (even a loopback one: that is
/// what was asked for). An unspecified one (`0.0.0.0`, `[::]`) becomes one
/// URL per address of `interfaces` that such a listener accepts on and a
/// person elsewhere can reach: loopback and unspecified addresses are
/// skipped, and so are IPv6 ones for a `0.0.0.0` listener. IPv6 link-local
/// addresses are skipped too (they need a zone, which browsers reject).
/// The result is empty when no interface address fits.
pub fn page_urls(listen: SocketAddr, scheme: &str, interfaces: &[IpAddr]) -> Vec<String> {
    let port = listen.port();
    if !listen.ip().is_unspecified() {
        return vec![page_url(scheme, listen)];
    }
    let mut urls: Vec<String> = Vec::new();
    for ip in interfaces {
        if ip.is_loopback() || ip.is_unspecified() || is_ipv6_link_local(ip) {
            continue;
        }
        // A 0.0.0.0 listener takes IPv4 only; [::] takes both (dual stack,
        // Linux's default).
        if listen.is_ipv4() && ip.is_ipv6() {
            continue;
        }
        let url = page_url(scheme, SocketAddr::new(*ip, port));
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls
}

/// `scheme://address/`, with IPv6 addresses in brackets (SocketAddr's
/// `Display` does that).
fn page_url(scheme: &str, address: SocketAddr) -> String {
    format!("{scheme}://{address}/")
}

fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The addresses of this machine's network interfaces that are up (from
/// `getifaddrs`), in the system's order, without repeats. Loopback ones are
/// included; [`page_urls`] leaves them out.
pub fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    use nix::net::if_::InterfaceFlags;
    let mut addresses = Vec::new();
    for interface in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        if !interface.flags.contains(InterfaceFlags::IFF_UP) {
            continue;
        }
        let Some(address) = interface.address else {
            continue;
        };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn machine() -> Vec<IpAddr> {
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            "fe80::1".parse().unwrap(),
            "2001:db8::20".parse().unwrap(),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)),
        ]
    }

    #[test]
    fn an_ipv4_wildcard_names_each_ipv4_address_but_loopback() {
        let urls = page_urls("0.0.0.0:8080".parse().unwrap(), "http", &machine());
        assert_eq!(urls, ["http://192.168.1.20:8080/", "http://10.0.0.7:8080/"]);
    }

    #[test]
    fn an_ipv6_wildcard_names_both_families_with_brackets() {
        let urls = page_urls("[::]:8443".parse().unwrap(), "https", &machine());
        assert_eq!(
            urls,
            [
                "https://192.168.1.20:8443/",
                "https://[2001:db8::20]:8443/",
                "https://10.0.0.7:8443/",
            ]
        );
    }

    #[test]
    fn a_specific_address_is_printed_as_is() {
        for listen in ["127.0.0.1:8080", "192.168.1.20:80", "[::1]:8080"] {
            let listen: SocketAddr = listen.parse().unwrap();
            let urls = page_urls(listen, "http", &machine());
            assert_eq!(urls, [format!("http://{listen}/")]);
        }
        let urls = page_urls("[2001:db8::20]:8080".parse().unwrap(), "http", &[]);
        assert_eq!(urls, ["http://[2001:db8::20]:8080/"]);
    }

    #[test]
    fn only_loopback_gives_nothing() {
        let loopback = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        assert!(page_urls("0.0.0.0:8080".parse().unwrap(), "http", &loopback).is_empty());
        assert!(page_urls("[::]:8080".parse().unwrap(), "http", &[]).is_empty());
    }

    #[test]
    fn this_machine_has_a_loopback_and_never_the_wildcard() {
        let addresses = interface_addresses().unwrap();
        assert!(addresses.iter().any(IpAddr::is_loopback), "{addresses:?}");
        assert!(!addresses.iter().any(IpAddr::is_unspecified));
    }
}
