//! The page as an internet-facing site serves it: the real `dist/` behind
//! an in-process bridge and `servidor`, its headers checked by name and
//! value, revalidation answered with 304, and Lighthouse (headless
//! Chromium) holding all four categories at 100.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `servidor` and a bridge serving the built page, both in this process,
/// stopped when the token is dropped.
struct Site {
    addr: SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

async fn site() -> Site {
    site_with(|_| {}).await
}

async fn site_with(adjust: impl FnOnce(&mut bridge::Config)) -> Site {
    let dist = built_page();
    let stop = CancellationToken::new();
    let target = netkit::listen::bind("127.0.0.1", 0).await.unwrap();
    let target_addr = target.local_addr().unwrap();
    tokio::spawn(servidor::serve(
        target,
        servidor::Config::default(),
        stop.clone(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = bridge::Config::for_target(target_addr.to_string());
    config.web = Some(dist);
    adjust(&mut config);
    tokio::spawn(bridge::serve(listener, config, stop.clone()));
    Site {
        addr,
        _stop: stop.drop_guard(),
    }
}

/// The content-addressed script trunk wrote (`web-<hash>.js`).
fn hashed_script(dist: &Path) -> String {
    std::fs::read_dir(dist)
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .find(|name| name.starts_with("web-") && name.ends_with(".js"))
        .expect("trunk's web-<hash>.js in dist/")
}

#[tokio::test]
async fn the_page_carries_its_security_headers_and_cache_policy() {
    let site = site().await;
    let page = http_get(site.addr, "/").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").expect("a CSP");
    for part in [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval' 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part:?} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    // Plain http: no HSTS (it would be ignored, and wrong behind no TLS).
    assert_eq!(page.header("strict-transport-security"), None);

    let script = hashed_script(&built_page());
    let asset = http_get(site.addr, &format!("/{script}")).await;
    assert_eq!(asset.status, 200);
    assert_eq!(
        asset.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));

    for path in ["/healthz", "/no-existe"] {
        let other = http_get(site.addr, path).await;
        assert_eq!(
            other.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            other.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(
            other.header("content-security-policy"),
            Some("default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_page_is_revalidated_with_a_304() {
    let site = site().await;
    let page = http_get(site.addr, "/").await;
    let validator = match (page.header("etag"), page.header("last-modified")) {
        (Some(etag), _) => format!("If-None-Match: {etag}"),
        (None, Some(date)) => format!("If-Modified-Since: {date}"),
        (None, None) => panic!("no validator on the page: {:?}", page.headers),
    };
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\n{validator}\r\nConnection: close\r\n\r\n",
        site.addr
    );
    let again = http_exchange(site.addr, request.as_bytes()).await;
    assert_eq!(again.status, 304, "{:?}", again.headers);
    // A 304's headers replace the cached ones: the page's own policy, not
    // the one for other answers.
    let csp = again.header("content-security-policy").unwrap();
    assert!(csp.contains("'wasm-unsafe-eval'"), "{csp}");
    assert_eq!(again.header("cache-control"), Some("no-cache"));
}

#[tokio::test]
async fn a_ws_override_is_the_one_other_bridge_the_page_may_reach() {
    let site = site().await;
    let page = http_get(site.addr, "/?ws=ws%3A%2F%2F127.0.0.2%3A9999%2Fws").await;
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("connect-src 'self' ws://127.0.0.2:9999 http://127.0.0.2:9999;"),
        "{csp}"
    );
    let forged = http_get(site.addr, "/?ws=ws%3A%2F%2Fx%3B%20script-src%20*").await;
    let csp = forged.header("content-security-policy").unwrap();
    assert!(csp.contains("connect-src 'self';"), "{csp}");
}

#[tokio::test]
async fn a_named_course_site_may_frame_the_page() {
    let site =
        site_with(|config| config.frame_from = Some("https://aula.example.org".into())).await;
    let page = http_get(site.addr, "/").await;
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.ends_with("frame-ancestors https://aula.example.org"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), None);
}

/// The folder where `scripts/setup --browser` installed Lighthouse.
fn lighthouse_tools() -> PathBuf {
    let tools = repository().join(".tools");
    assert!(
        tools.join("node_modules/lighthouse").exists(),
        "no Lighthouse in .tools/: run scripts/setup --browser"
    );
    tools
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lighthouse_scores_100_in_every_category() {
    let site = site().await;
    let out = tempdir("lighthouse");
    let report = out.join("informe.json");
    let url = format!("http://{}/", site.addr);
    // Lighthouse's own API, through a script that exits once the report is
    // written (the CLI waits 3 s more); the flags it runs Chromium with are
    // in the script.
    let mut command = tokio::process::Command::new("node");
    command
        .arg(repository().join("tests/lighthouse/audit.mjs"))
        .arg(lighthouse_tools())
        .arg(&url)
        .arg(&report)
        .env("CHROME_PATH", "/usr/bin/chromium")
        .kill_on_drop(true);
    let output = within(Duration::from_secs(120), "lighthouse", command.output())
        .await
        .expect("node runs");
    assert!(
        output.status.success(),
        "lighthouse failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let mut below = Vec::new();
    for category in ["performance", "accessibility", "best-practices", "seo"] {
        let score = json["categories"][category]["score"].as_f64();
        if score != Some(1.0) {
            // Name the audits that cost points, so a failure says what to fix.
            let refs = json["categories"][category]["auditRefs"]
                .as_array()
                .cloned();
            let failing: Vec<String> = refs
                .unwrap_or_default()
                .iter()
                .filter(|audit| audit["weight"].as_f64().unwrap_or(0.0) > 0.0)
                .filter_map(|audit| {
                    let id = audit["id"].as_str()?;
                    let score = json["audits"][id]["score"].as_f64()?;
                    (score < 1.0).then(|| format!("{id}={score}"))
                })
                .collect();
            below.push(format!("{category}: {score:?} ({})", failing.join(", ")));
        }
    }
    assert!(below.is_empty(), "below 100: {below:#?}");
    let _ = std::fs::remove_dir_all(&out);
}

/// A fresh directory under the target directory for one test's files.
fn tempdir(name: &str) -> PathBuf {
    let dir = repository()
        .join("target/tmp")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn hsts_only_where_the_page_is_https_by_a_trusted_proxys_say_so() {
    let forwarded_https = |_: SocketAddr| {
        "GET / HTTP/1.1\r\nHost: demo.example.org\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n"
            .to_string()
    };
    let trusting = site_with(|config| {
        config.trusted_proxies =
            netkit::proxy_protocol::TrustedProxies::new(["127.0.0.1"]).unwrap();
    })
    .await;
    let page = http_exchange(trusting.addr, forwarded_https(trusting.addr).as_bytes()).await;
    assert_eq!(
        page.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    // The same words from a peer nobody trusts change nothing.
    let plain = site().await;
    let page = http_exchange(plain.addr, forwarded_https(plain.addr).as_bytes()).await;
    assert_eq!(page.header("strict-transport-security"), None);
}
