//! Which web pages may open a WebSocket through the bridge.
//!
//! Browsers let any page open a WebSocket to any address, sending the page's
//! origin in the `Origin` header. Without a check, any site a user visits
//! could reach a loopback server through a bridge running on their machine.
//! So by default only pages from the bridge's own origin are let in, plus
//! clients that are not browsers (they send no `Origin`); `--allow-origin`
//! widens that.

use std::fmt;
use std::str::FromStr;

use console::args::{HostPort, InvalidValue};

/// A page's origin as browsers send it, `scheme://host[:port]`, in a
/// normal form: the scheme and host in lower case, the port explicit (the
/// scheme's default when left out), a trailing slash dropped. Two origins
/// are the same page's exactly when they are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: &'static str,
    authority: HostPort,
}

impl Origin {
    /// The scheme's port when an origin names none.
    fn default_port(scheme: &str) -> Option<(&'static str, u16)> {
        match scheme {
            "http" => Some(("http", 80)),
            "ws" => Some(("ws", 80)),
            "https" => Some(("https", 443)),
            "wss" => Some(("wss", 443)),
            _ => None,
        }
    }
}

impl FromStr for Origin {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().to_ascii_lowercase();
        let text = text.strip_suffix('/').unwrap_or(&text);
        let (scheme, authority) = text.split_once("://").ok_or(InvalidValue::NotOrigin)?;
        let (scheme, port) = Self::default_port(scheme).ok_or(InvalidValue::NotOrigin)?;
        let authority =
            HostPort::with_default_port(authority, port).map_err(|_| InvalidValue::NotOrigin)?;
        Ok(Self { scheme, authority })
    }
}

/// `scheme://host`, with `:port` unless it is the scheme's default.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.authority.url_host();
        match Self::default_port(self.scheme) {
            Some((_, port)) if port == self.authority.port() => {
                write!(f, "{}://{host}", self.scheme)
            }
            _ => write!(f, "{}://{}", self.scheme, self.authority),
        }
    }
}

/// One `--allow-origin`: an origin, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// `*`: every page.
    Any,
    /// Pages from this origin.
    Only(Origin),
}

impl FromStr for AllowedOrigin {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "*" => Ok(Self::Any),
            _ => text.parse().map(Self::Only),
        }
    }
}

/// The origins let in besides the bridge's own.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<Origin>,
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
    /// A policy that lets in the `allowed` origins, as `--allow-origin`
    /// gives them.
    pub fn from_allowed<I>(allowed: I) -> Self
    where
        I: IntoIterator<Item = AllowedOrigin>,
    {
        let mut policy = OriginPolicy::default();
        for entry in allowed {
            match entry {
                AllowedOrigin::Any => policy.any = true,
                AllowedOrigin::Only(origin) => policy.allowed.push(origin),
            }
        }
        policy
    }

    /// A policy that lets in `allowed` origins written out (`*` lets in
    /// every origin). Fails on an entry that is not an origin
    /// (`scheme://host[:port]`).
    pub fn new<I, S>(allowed: I) -> Result<Self, InvalidValue>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let allowed = allowed
            .into_iter()
            .map(|entry| entry.as_ref().parse())
            .collect::<Result<Vec<AllowedOrigin>, _>>()?;
        Ok(Self::from_allowed(allowed))
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
        let Ok(origin) = origin.parse::<Origin>() else {
            return if self.any {
                Verdict::Allowed
            } else {
                Verdict::Refused
            };
        };
        let scheme = if https { "https" } else { "http" };
        let own = host.and_then(|host| format!("{scheme}://{host}").parse::<Origin>().ok());
        if own.as_ref() == Some(&origin) {
            return Verdict::SameOrigin;
        }
        if self.any || self.allowed.contains(&origin) {
            Verdict::Allowed
        } else {
            Verdict::Refused
        }
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
    fn origins_are_written_in_their_normal_form() {
        let normal = |text: &str| text.parse::<Origin>().map(|origin| origin.to_string());
        assert_eq!(
            normal("https://Class.Example/").as_deref(),
            Ok("https://class.example")
        );
        assert_eq!(normal("https://h:443").as_deref(), Ok("https://h"));
        assert_eq!(normal("http://h:443").as_deref(), Ok("http://h:443"));
        assert_eq!(normal("ws://h:80").as_deref(), Ok("ws://h"));
        assert_eq!(
            normal("http://[::1]:8080").as_deref(),
            Ok("http://[::1]:8080")
        );
        assert_eq!(normal("http://[::1]").as_deref(), Ok("http://[::1]"));
        assert_eq!(
            normal("http://127.0.0.1:0").as_deref(),
            Ok("http://127.0.0.1:0")
        );
        for bad in [
            "",
            "*",
            "null",
            "http://",
            "http://h:",
            "http://:80",
            "http://u@h",
            "http://h?x",
            "http://h#x",
            "http://::1",
            "file:///etc",
        ] {
            assert_eq!(normal(bad), Err(InvalidValue::NotOrigin), "{bad}");
        }
    }

    #[test]
    fn a_star_is_any_origin_only_on_its_own() {
        assert_eq!("*".parse(), Ok(AllowedOrigin::Any));
        assert!("https://*.example".parse::<AllowedOrigin>().is_err());
        let only = "http://h:8080".parse::<AllowedOrigin>();
        assert_eq!(
            only,
            Ok(AllowedOrigin::Only("http://h:8080".parse().unwrap()))
        );
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        let policy = OriginPolicy::default();
        let verdict = policy.check(Some("http://[::1]:8080"), Some("[::1]:8080"), false);
        assert_eq!(verdict, Verdict::SameOrigin);
    }
}
