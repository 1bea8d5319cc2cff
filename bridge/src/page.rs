//! The headers every answer of the bridge carries, chosen for this page: a
//! Content-Security-Policy that allows exactly what the built page needs,
//! the usual hardening headers, HSTS over https, and a cache policy that
//! keeps content-addressed files for a year and revalidates the rest.
//!
//! The page's CSP is derived from the `index.html` trunk built: each inline
//! `<script>` and `<style>` is allowed by its SHA-256, so a rebuilt page
//! with other inline code is allowed as it is, and nothing else runs. The
//! digest list is read again only when the file's modification time
//! changes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Uri};
use data_encoding::BASE64;
use ring::digest::{digest, SHA256};

/// A year, the most a content-addressed file is kept without asking again.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Kept, but revalidated (ETag / Last-Modified) before each use.
const REVALIDATE: &str = "no-cache";
/// What answers that are not the page (refusals, `/healthz`, 404s) may do:
/// nothing at all.
const NOTHING_ALLOWED: &str =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// Two years, with subdomains left alone: a demo's name may share its
/// parent domain with sites that are not https.
const HSTS: &str = "max-age=63072000";

/// What the page's headers depend on: the built page's folder, and which
/// site (if any) may frame it.
#[derive(Debug)]
pub struct PageHeaders {
    index: Option<PathBuf>,
    frame_from: Option<String>,
    inline: Mutex<Option<(SystemTime, InlineDigests)>>,
}

/// The `'sha256-…'` sources of the inline scripts and styles of one
/// `index.html`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct InlineDigests {
    scripts: Vec<String>,
    styles: Vec<String>,
}

/// What kind of answer a response is, as far as its headers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An HTML document of the page (`/`, `/index.html`).
    Page,
    /// Another file of the page.
    File,
    /// Anything else: `/healthz`, a refusal, a 404.
    Other,
}

impl PageHeaders {
    /// Headers for the page built in `web` (if any), framed only by
    /// `frame_from` (an origin) if given.
    pub fn new(web: Option<&Path>, frame_from: Option<String>) -> Self {
        Self {
            index: web.map(|dir| dir.join("index.html")),
            frame_from,
            inline: Mutex::new(None),
        }
    }

    /// Adds the headers that `answer`, for a request to `uri`, carries.
    /// `https`: whether the page reached the browser over https (directly
    /// or through a trusted proxy that ended TLS).
    pub fn apply(&self, headers: &mut HeaderMap, answer: Answer, uri: &Uri, https: bool) {
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        if https {
            headers.insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
        }
        if self.frame_from.is_none() {
            // For browsers that predate frame-ancestors.
            headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        }
        let policy = match answer {
            Answer::Page => self.page_policy(uri),
            Answer::File | Answer::Other => {
                NOTHING_ALLOWED.replace("frame-ancestors 'none'", &self.frame_ancestors())
            }
        };
        if let Ok(value) = HeaderValue::from_str(&policy) {
            headers.insert(CONTENT_SECURITY_POLICY, value);
        }
        let cache = match answer {
            Answer::File if is_content_addressed(uri.path()) => Some(IMMUTABLE),
            Answer::Page | Answer::File => Some(REVALIDATE),
            Answer::Other => None,
        };
        if let Some(cache) = cache {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        }
    }

    /// Whether a successful answer to `uri` with these headers is one of
    /// the page's HTML documents or another of its files (or neither).
    pub fn classify(uri: &Uri, headers: &HeaderMap) -> Answer {
        // A 304 carries no Content-Type, yet its headers replace the cached
        // ones: the document's path decides too.
        let html = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|kind| kind.starts_with("text/html"))
            || uri.path().ends_with('/')
            || uri.path().ends_with(".html");
        if html {
            Answer::Page
        } else if uri.path() == "/healthz" || uri.path() == "/ws" {
            Answer::Other
        } else {
            Answer::File
        }
    }

    fn frame_ancestors(&self) -> String {
        match &self.frame_from {
            Some(origin) => format!("frame-ancestors {origin}"),
            None => "frame-ancestors 'none'".to_string(),
        }
    }

    /// The page's policy: its own script and module (`'self'`, with
    /// `'wasm-unsafe-eval'` to compile it), its inline code by digest, and
    /// connections to itself plus the bridge a `?ws=` override names (its
    /// WebSocket and its refusals, read over http(s)).
    fn page_policy(&self, uri: &Uri) -> String {
        let inline = self.inline_digests();
        let mut connect = vec!["'self'".to_string()];
        if let Some(other) = uri.query().and_then(ws_override_origin) {
            // The page fetches the same URL over http(s) to learn why a
            // handshake was refused.
            let fetched = match other.strip_prefix("wss://") {
                Some(host) => format!("https://{host}"),
                None => other.replacen("ws://", "http://", 1),
            };
            connect.push(other);
            connect.push(fetched);
        }
        let mut script = vec!["'self'".to_string(), "'wasm-unsafe-eval'".to_string()];
        script.extend(inline.scripts);
        let style = if inline.styles.is_empty() {
            "'none'".to_string()
        } else {
            inline.styles.join(" ")
        };
        format!(
            "default-src 'none'; script-src {}; style-src {style}; connect-src {}; \
             img-src data:; base-uri 'none'; form-action 'self'; {}",
            script.join(" "),
            connect.join(" "),
            self.frame_ancestors()
        )
    }

    fn inline_digests(&self) -> InlineDigests {
        let Some(index) = &self.index else {
            return InlineDigests::default();
        };
        let modified = std::fs::metadata(index)
            .and_then(|meta| meta.modified())
            .ok();
        let mut cached = self
            .inline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let (Some(modified), Some((seen, digests))) = (modified, cached.as_ref()) {
            if *seen == modified {
                return digests.clone();
            }
        }
        let digests = std::fs::read_to_string(index)
            .map(|html| inline_digests_of(&html))
            .unwrap_or_default();
        if let Some(modified) = modified {
            *cached = Some((modified, digests.clone()));
        }
        digests
    }
}

/// The `'sha256-…'` source of every inline `<script>` and `<style>` in
/// `html` (a script with a `src` has no inline code to allow).
fn inline_digests_of(html: &str) -> InlineDigests {
    InlineDigests {
        scripts: inline_bodies(html, "script").map(csp_digest).collect(),
        styles: inline_bodies(html, "style").map(csp_digest).collect(),
    }
}

/// The contents of each `<tag …>…</tag>` in `html` whose opening tag has
/// no `src`. trunk writes these elements itself, so a plain scan suffices.
fn inline_bodies<'a>(html: &'a str, tag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut rest = html;
    std::iter::from_fn(move || loop {
        let start = rest.find(&open)?;
        let after_name = &rest[start + open.len()..];
        // `<styles>` or `<scripty>` are other elements.
        if !after_name.starts_with(|c: char| c == '>' || c.is_ascii_whitespace()) {
            rest = after_name;
            continue;
        }
        let tag_end = after_name.find('>')?;
        let attributes = &after_name[..tag_end];
        let body_and_rest = &after_name[tag_end + 1..];
        let body_end = body_and_rest.find(&close)?;
        let body = &body_and_rest[..body_end];
        rest = &body_and_rest[body_end + close.len()..];
        if !attributes.contains("src=") {
            return Some(body);
        }
    })
}

fn csp_digest(body: &str) -> String {
    let hash = digest(&SHA256, body.as_bytes());
    format!("'sha256-{}'", BASE64.encode(hash.as_ref()))
}

/// The origin (`ws://host:port`, `wss://host`) of a `?ws=` override in a
/// query string, if it names a WebSocket URL the page would accept. Only
/// characters that cannot break out of a CSP source list pass.
fn ws_override_origin(query: &str) -> Option<String> {
    let raw = query.split('&').find_map(|pair| pair.strip_prefix("ws="))?;
    let url = percent_decode(raw)?;
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "ws" && scheme != "wss" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-.:[]".contains(c);
    if authority.is_empty() || !authority.chars().all(allowed) {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// `%XX` and `+` decoded; `None` if the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `path` names a file trunk made content-addressed
/// (`/web-0123456789abcdef.js`, `/web-0123456789abcdef_bg.wasm`): its
/// name changes whenever its content does, so it never needs revalidating.
fn is_content_addressed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.split('.').next().unwrap_or(name);
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    match stem.rsplit_once('-') {
        Some((_, hash)) => hash.len() >= 16 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_files_are_recognised() {
        assert!(is_content_addressed("/web-3f2a9c0d1e4b5a67.js"));
        assert!(is_content_addressed("/web-3f2a9c0d1e4b5a67_bg.wasm"));
        assert!(!is_content_addressed("/index.html"));
        assert!(!is_content_addressed("/web.js"));
        assert!(!is_content_addressed("/mi-pagina.css"));
        assert!(!is_content_addressed("/"));
    }

    #[test]
    fn inline_code_is_allowed_by_its_digest_and_nothing_else() {
        let html = "<style>a{}</style><script type=\"module\">go()</script>\
                    <script src=\"/x.js\"></script><scripty>no</scripty>";
        let digests = inline_digests_of(html);
        assert_eq!(digests.styles, vec![csp_digest("a{}")]);
        assert_eq!(digests.scripts, vec![csp_digest("go()")]);
        // The digest is of the exact bytes, as browsers compute it.
        assert_eq!(
            csp_digest(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
    }

    #[test]
    fn a_ws_override_adds_only_its_origin() {
        assert_eq!(
            ws_override_origin("ws=ws%3A%2F%2F127.0.0.1%3A8080%2Fws").as_deref(),
            Some("ws://127.0.0.1:8080")
        );
        assert_eq!(
            ws_override_origin("a=1&ws=wss://Demo.example.org/ws").as_deref(),
            Some("wss://demo.example.org")
        );
        assert_eq!(ws_override_origin("ws=http://x/ws"), None);
        assert_eq!(ws_override_origin("ws=ws://x;script-src%20*"), None);
        assert_eq!(ws_override_origin("ws=ws://x%20'unsafe-inline'"), None);
        assert_eq!(ws_override_origin("ws=%zz"), None);
        assert_eq!(ws_override_origin("wsx=ws://x"), None);
    }

    #[test]
    fn a_ws_override_may_be_reached_by_websocket_and_by_fetch() {
        let page = PageHeaders::new(None, None);
        for (query, connect) in [
            (
                "/?ws=wss://demo.example.org/ws",
                "connect-src 'self' wss://demo.example.org https://demo.example.org;",
            ),
            (
                "/?ws=ws://127.0.0.2:9999/ws",
                "connect-src 'self' ws://127.0.0.2:9999 http://127.0.0.2:9999;",
            ),
            ("/", "connect-src 'self';"),
        ] {
            let mut headers = HeaderMap::new();
            let uri: Uri = query.parse().unwrap();
            page.apply(&mut headers, Answer::Page, &uri, false);
            let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains(connect), "{query}: {csp}");
        }
    }

    #[test]
    fn the_page_gets_its_policy_and_everything_else_none() {
        let page = PageHeaders::new(None, None);
        let mut headers = HeaderMap::new();
        page.apply(&mut headers, Answer::Page, &Uri::from_static("/"), false);
        let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval'"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("base-uri 'none'"), "{csp}");
        assert!(csp.contains("form-action 'self'"), "{csp}");
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[REFERRER_POLICY], "no-referrer");
        assert!(headers.get(STRICT_TRANSPORT_SECURITY).is_none());

        let mut headers = HeaderMap::new();
        page.apply(
            &mut headers,
            Answer::Other,
            &Uri::from_static("/healthz"),
            true,
        );
        assert_eq!(headers[CONTENT_SECURITY_POLICY], NOTHING_ALLOWED);
        assert_eq!(headers[STRICT_TRANSPORT_SECURITY], HSTS);
        assert!(headers.get(CACHE_CONTROL).is_none());
    }

    #[test]
    fn a_named_course_site_may_frame_the_page() {
        let page = PageHeaders::new(None, Some("https://aula.example.org".into()));
        let mut headers = HeaderMap::new();
        page.apply(&mut headers, Answer::Page, &Uri::from_static("/"), false);
        let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.ends_with("frame-ancestors https://aula.example.org"),
            "{csp}"
        );
        assert!(headers.get(X_FRAME_OPTIONS).is_none());
    }
}
