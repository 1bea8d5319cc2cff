//! The demo's join code (`--access-code`): who may open a session. A browser
//! trades the code in the join link (`/?clave=…`) for a cookie and is sent
//! to the page without it; other clients put it on the WebSocket URL
//! (`/ws?clave=…`). The code itself is never logged.

use std::fmt;

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, Uri};
use data_encoding::BASE64URL_NOPAD;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// The query parameter that carries the code, on the page and on `/ws`.
pub const QUERY: &str = "clave";
/// The cookie a browser keeps the code in after the join link.
pub const COOKIE_NAME: &str = "clave_demo";
/// Random bytes of an `auto` code: 128 bits, 22 base64url characters.
const AUTO_BYTES: usize = 16;
/// Longest code accepted on the command line.
const MAX_LEN: usize = 256;

/// Why a code given on the command line cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessCodeError {
    /// An empty code would let anyone in.
    #[error("la clave está vacía")]
    Empty,
    /// Longer than [`MAX_LEN`].
    #[error("la clave es demasiado larga (máximo {MAX_LEN} caracteres)")]
    TooLong,
    /// Outside the characters that travel in a URL unescaped.
    #[error("la clave solo puede tener letras y cifras ASCII, «-», «_», «.» y «~»")]
    BadCharacter,
    /// The system's random source failed (`auto`).
    #[error("no se pudo generar una clave aleatoria")]
    Random,
}

/// A join code. Comparison is by SHA-256 digest, folded in constant time.
#[derive(Clone)]
pub struct AccessCode {
    code: String,
    digest: [u8; 32],
}

impl fmt::Debug for AccessCode {
    // Never print the code, not even in a debug dump of the config.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessCode(…)")
    }
}

impl AccessCode {
    /// A code given by the teacher. Only URL-safe characters, so that the
    /// code in a link, a cookie and a query needs no escaping.
    pub fn new(code: &str) -> Result<Self, AccessCodeError> {
        if code.is_empty() {
            return Err(AccessCodeError::Empty);
        }
        if code.len() > MAX_LEN {
            return Err(AccessCodeError::TooLong);
        }
        if !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        {
            return Err(AccessCodeError::BadCharacter);
        }
        Ok(Self {
            code: code.to_owned(),
            digest: sha256(code.as_bytes()),
        })
    }

    /// A random code of 128 bits from the system's random source.
    pub fn generate() -> Result<Self, AccessCodeError> {
        let mut bytes = [0u8; AUTO_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| AccessCodeError::Random)?;
        Self::new(&BASE64URL_NOPAD.encode(&bytes))
    }

    /// The code, for the join link printed at start and nowhere else.
    pub fn reveal(&self) -> &str {
        &self.code
    }

    /// Whether `given` is the code, in time independent of where they
    /// differ: the digests are compared with every byte folded in.
    pub fn matches(&self, given: &str) -> bool {
        let given = sha256(given.as_bytes());
        let difference = self
            .digest
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        difference == 0
    }

    /// The link that lets a browser in: `base` (`http(s)://host[:port]`,
    /// with or without a trailing `/`) with `/?clave=CODE`.
    pub fn join_link(&self, base: &str) -> String {
        format!("{}/?{QUERY}={}", base.trim_end_matches('/'), self.code)
    }

    /// Whether a request carries the code, in its query or its cookie.
    pub fn admits(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        query_code(uri).is_some_and(|code| self.matches(code))
            || cookie_codes(headers).any(|code| self.matches(code))
    }

    /// The `Set-Cookie` value that keeps the code in a browser: HttpOnly
    /// (no script reads it), SameSite=Strict (no other site sends it), and
    /// Secure when the page is https.
    pub fn cookie(&self, https: bool) -> String {
        let secure = if https { "; Secure" } else { "" };
        format!(
            "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
            self.code
        )
    }
}

/// The value of `clave=` in the query, if any.
pub fn query_code(uri: &Uri) -> Option<&str> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(QUERY)?.strip_prefix('='))
}

/// The query without its `clave=` pairs, for the redirect and for logs.
pub fn query_without_code(uri: &Uri) -> Option<String> {
    let rest: Vec<&str> = uri
        .query()?
        .split('&')
        .filter(|pair| *pair != QUERY && !pair.starts_with(&format!("{QUERY}=")))
        .collect();
    (!rest.is_empty()).then(|| rest.join("&"))
}

/// Every value of the demo's cookie in the request's `Cookie` headers.
fn cookie_codes(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn auto_codes_are_22_url_safe_characters_and_differ() {
        let a = AccessCode::generate().unwrap();
        let b = AccessCode::generate().unwrap();
        assert_eq!(a.reveal().len(), 22);
        assert_ne!(a.reveal(), b.reveal());
        assert!(AccessCode::new(a.reveal()).is_ok());
    }

    #[test]
    fn matches_only_the_code() {
        let code = AccessCode::new("aula-3").unwrap();
        assert!(code.matches("aula-3"));
        assert!(!code.matches("aula-4"));
        assert!(!code.matches(""));
        assert!(!code.matches("aula-3 "));
    }

    #[test]
    fn refuses_codes_that_would_need_escaping() {
        assert!(matches!(AccessCode::new(""), Err(AccessCodeError::Empty)));
        assert!(AccessCode::new("a b").is_err());
        assert!(AccessCode::new("a&b").is_err());
        assert!(AccessCode::new(&"x".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn finds_the_code_in_the_query_or_the_cookie() {
        let code = AccessCode::new("k1").unwrap();
        let empty = HeaderMap::new();
        assert!(code.admits(&"/ws?clave=k1".parse().unwrap(), &empty));
        assert!(code.admits(&"/ws?x=1&clave=k1".parse().unwrap(), &empty));
        assert!(!code.admits(&"/ws?claveX=k1".parse().unwrap(), &empty));
        assert!(!code.admits(&"/ws".parse().unwrap(), &empty));
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; clave_demo=k1"));
        assert!(code.admits(&"/ws".parse().unwrap(), &headers));
    }

    #[test]
    fn the_redirect_drops_only_the_code() {
        let uri: Uri = "/?clave=k1&ws=x".parse().unwrap();
        assert_eq!(query_without_code(&uri).as_deref(), Some("ws=x"));
        let uri: Uri = "/?clave=k1".parse().unwrap();
        assert_eq!(query_without_code(&uri), None);
    }

    #[test]
    fn join_link_and_cookie() {
        let code = AccessCode::new("k1").unwrap();
        assert_eq!(
            code.join_link("https://demo.example/"),
            "https://demo.example/?clave=k1"
        );
        assert_eq!(
            code.cookie(false),
            "clave_demo=k1; Path=/; HttpOnly; SameSite=Strict"
        );
        assert!(code.cookie(true).ends_with("; Secure"));
        assert_eq!(format!("{code:?}"), "AccessCode(…)");
    }
}
