//! Which web pages may open a WebSocket through the bridge.
//!
//! Browsers let any page open a WebSocket to any address, sending the page's
//! origin in the `Origin` header. Without a check, any site a user visits
//! could reach a loopback server through a bridge running on their machine.
//! So by default only pages from the bridge's own origin are let in, plus
//! clients that are not browsers (they send no `Origin`); `--allow-origin`
//! widens that.

use crate::config::split_authority;

/// The origins let in besides the bridge's own.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
    any: bool,
}

/// What the policy decided, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin` header: not a browser.
    NoOrigin,
    /// The page came from the bridge itself.
    SameOrigin,
    /// Listed with `--allow-origin`.
    Allowed,
    /// A page from elsewhere.
    Refused,
}

impl Verdict {
    /// Whether the client may connect.
    pub fn accepted(self) -> bool {
        self != Verdict::Refused
    }
}

impl OriginPolicy {
    /// A policy that lets in `allowed` origins (`*` lets in every origin).
    /// Fails on an entry that is not an origin (`scheme://host[:port]`).
    pub fn new<I, S>(allowed: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut policy = OriginPolicy::default();
        for entry in allowed {
            let entry = entry.as_ref();
            if entry == "*" {
                policy.any = true;
                continue;
            }
            let normal = normalize_origin(entry).ok_or_else(|| {
                format!("«{entry}» no es un origen (esquema://máquina[:puerto], p. ej. https://example.org)")
            })?;
            policy.allowed.push(normal);
        }
        Ok(policy)
    }

    /// Whether every origin is let in (`--allow-origin '*'`).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Decides on a request with this `Origin` header, for a bridge whose
    /// own origin is `https://host` if `https`, else `http://host`. `host`
    /// and `https` are the request's `Host` and whether it came over TLS,
    /// unless a trusted proxy said what the browser used (see
    /// [`crate::forwarded::site`]).
    pub fn check(&self, origin: Option<&str>, host: Option<&str>, https: bool) -> Verdict {
        let Some(origin) = origin else {
            return Verdict::NoOrigin;
        };
        let Some(origin) = normalize_origin(origin) else {
            return if self.any {
                Verdict::Allowed
            } else {
                Verdict::Refused
            };
        };
        let scheme = if https { "https" } else { "http" };
        if let Some(own) = host.and_then(|host| normalize_origin(&format!("{scheme}://{host}"))) {
            if own == origin {
                return Verdict::SameOrigin;
            }
        }
        if self.any || self.allowed.contains(&origin) {
            Verdict::Allowed
        } else {
            Verdict::Refused
        }
    }
}

/// `scheme://host[:port]` in lower case, without the scheme's default port
/// or a trailing slash; `None` if it is not of that form.
fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" | "ws" => "80",
        "https" | "wss" => "443",
        _ => return None,
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = split_authority(authority);
    if host.is_empty() {
        return None;
    }
    match port {
        Some(port) if port.parse::<u16>().is_err() => None,
        Some(port) if port != default_port => Some(format!("{scheme}://{host}:{port}")),
        _ => Some(format!("{scheme}://{host}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_origin_means_not_a_browser_and_is_accepted() {
        let policy = OriginPolicy::default();
        assert_eq!(
            policy.check(None, Some("127.0.0.1:8080"), false),
            Verdict::NoOrigin
        );
    }

    #[test]
    fn the_bridges_own_pages_are_accepted() {
        let policy = OriginPolicy::default();
        let verdict = policy.check(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), false);
        assert_eq!(verdict, Verdict::SameOrigin);
        let verdict = policy.check(Some("https://Demo.Example"), Some("demo.example:443"), true);
        assert_eq!(verdict, Verdict::SameOrigin);
    }

    #[test]
    fn the_scheme_decides_the_own_origin_whatever_the_connection() {
        // TLS ended at a proxy: the bridge speaks plain HTTP, the page was
        // https. Only with https (a trusted proxy's word) is it its own.
        let policy = OriginPolicy::default();
        let page = Some("https://demo.example.org");
        let host = Some("demo.example.org");
        assert_eq!(policy.check(page, host, true), Verdict::SameOrigin);
        assert_eq!(policy.check(page, host, false), Verdict::Refused);
        let plain_page = Some("http://demo.example.org");
        assert_eq!(policy.check(plain_page, host, true), Verdict::Refused);
    }

    #[test]
    fn foreign_pages_are_refused() {
        let policy = OriginPolicy::default();
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9999",
            "https://127.0.0.1:8080",
            "null",
            "",
        ] {
            let verdict = policy.check(Some(origin), Some("127.0.0.1:8080"), false);
            assert_eq!(verdict, Verdict::Refused, "{origin}");
        }
    }

    #[test]
    fn listed_origins_are_accepted() {
        let policy =
            OriginPolicy::new(["https://class.example/", "http://localhost:8081"]).unwrap();
        let host = Some("127.0.0.1:8080");
        assert_eq!(
            policy.check(Some("https://class.example"), host, false),
            Verdict::Allowed
        );
        assert_eq!(
            policy.check(Some("https://class.example:443"), host, false),
            Verdict::Allowed
        );
        assert_eq!(
            policy.check(Some("http://localhost:8081"), host, false),
            Verdict::Allowed
        );
        assert_eq!(
            policy.check(Some("http://localhost:8082"), host, false),
            Verdict::Refused
        );
    }

    #[test]
    fn a_star_accepts_every_origin() {
        let policy = OriginPolicy::new(["*"]).unwrap();
        assert!(policy.allows_any());
        assert_eq!(policy.check(Some("null"), None, false), Verdict::Allowed);
    }

    #[test]
    fn entries_must_be_origins() {
        for bad in [
            "example.org",
            "ftp://example.org",
            "https://example.org/page",
            "http://h:99999",
        ] {
            assert!(OriginPolicy::new([bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        let policy = OriginPolicy::default();
        let verdict = policy.check(Some("http://[::1]:8080"), Some("[::1]:8080"), false);
        assert_eq!(verdict, Verdict::SameOrigin);
    }
}
