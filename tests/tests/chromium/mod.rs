//! A headless Chromium under chromedriver for the page's tests (`browser/`,
//! `acme_browser.rs`, `balancers_tls.rs`), and the system it loads:
//! servidor in the test's runtime, the real bridge serving the built page.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use testkit::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_util::sync::{CancellationToken, DropGuard};

/// A headless Chromium under chromedriver, closed when dropped.
pub struct Browser {
    pub client: Client,
    _driver: DriverGroup,
    _profile: TempDir,
}

/// chromedriver, in a process group of its own with the Chromium it
/// starts. Chromium is chromedriver's child, not the test's: a test that
/// panics before `client.close()` would leave it running, so the whole
/// group goes when this is dropped.
struct DriverGroup(Child);

impl Drop for DriverGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One of ChromeDriver's logs, emptied as it is read: `browser` (the
/// console, `goog:loggingPrefs` asks for it) or `performance` (DevTools
/// events). An extension of ChromeDriver's, not W3C WebDriver.
#[derive(Debug)]
pub struct GetLog(&'static str);

impl WebDriverCompatibleCommand for GetLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = serde_json::json!({ "type": self.0 }).to_string();
        (http::Method::POST, Some(body))
    }
}

/// What a test changes in how Chromium starts.
#[derive(Debug, Default)]
pub struct Options {
    /// More switches: a host mapping, accepting a test certificate…
    pub extra_args: Vec<String>,
    /// The HOME it runs with, whose `.pki/nssdb` holds the roots it trusts.
    pub home: Option<PathBuf>,
}

impl Browser {
    pub async fn start(width: u32, height: u32) -> Browser {
        Browser::launch(width, height, false).await
    }

    /// A browser that also records the page's network events, for
    /// [`Browser::websockets_created`].
    pub async fn start_recording_network(width: u32, height: u32) -> Browser {
        Browser::launch(width, height, true).await
    }

    pub async fn launch(width: u32, height: u32, network: bool) -> Browser {
        Browser::launch_with(width, height, network, Options::default()).await
    }

    /// A browser started with `options` (see [`Options`]).
    pub async fn launch_with(width: u32, height: u32, network: bool, options: Options) -> Browser {
        // ChromeDriver started with --port=0 was seen once (beside another
        // test starting one) to end its output before it said its port; why
        // is unknown. A new start is tried, twice at most, and each failure
        // is shown with what ChromeDriver said and how it ended.
        let mut failures = Vec::new();
        let (driver, port) = loop {
            let mut driver = Command::new("chromedriver");
            driver
                .arg("--port=0")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                // Its own group, with the Chromium it starts: see `DriverGroup`.
                .process_group(0)
                .kill_on_drop(true);
            if let Some(home) = &options.home {
                driver.env("HOME", home);
            }
            let mut driver = driver
                .spawn()
                .expect("chromedriver: run scripts/setup --browser first");
            match driver_port(&mut driver).await {
                Ok(port) => break (driver, port),
                Err(output) if failures.len() < 2 => {
                    eprintln!("chromedriver did not start, once more: {output}");
                    failures.push(output);
                }
                Err(output) => {
                    failures.push(output);
                    panic!("chromedriver never said its port: {failures:#?}");
                }
            }
        };
        let profile =
            TempDir(std::env::temp_dir().join(format!("chromium-{}-{port}", std::process::id())));
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.0.display()));
        args.push(format!("--window-size={width},{height}"));
        args.extend(options.extra_args);
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": args,
            },
            "goog:loggingPrefs": {
                "browser": "ALL",
                "performance": if network { "ALL" } else { "OFF" },
            }
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        };
        // ChromeDriver listens once it has said so: one attempt.
        let url = format!("http://127.0.0.1:{port}");
        let client = within(
            PATIENCE,
            "chromedriver and chromium",
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&url),
        )
        .await
        .unwrap_or_else(|e| panic!("a session of chromedriver on port {port}: {e}"));
        Browser {
            client,
            _driver: DriverGroup(driver),
            _profile: profile,
        }
    }

    /// The element's rendered text (`innerText`, trimmed).
    pub async fn text_of(&self, id: &str) -> String {
        let script = "return document.getElementById(arguments[0]).innerText.trim()";
        let text = self
            .client
            .execute(script, vec![id.into()])
            .await
            .unwrap_or_else(|e| panic!("the text of #{id}: {e}"));
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Waits, in the page, until the element's text is no longer `seen`,
    /// and returns it: a `MutationObserver` answers on the change.
    pub async fn next_text(&self, id: &str, seen: &str) -> String {
        const SCRIPT: &str = "
            const [id, seen, done] = arguments;
            const element = document.getElementById(id);
            const text = () => element.innerText.trim();
            const observer = new MutationObserver(() => {
                if (text() !== seen) { observer.disconnect(); done(text()); }
            });
            if (text() !== seen) { done(text()); }
            else { observer.observe(element, { childList: true, subtree: true, characterData: true }); }
        ";
        let text = self
            .client
            .execute_async(SCRIPT, vec![id.into(), seen.into()])
            .await
            .unwrap_or_else(|e| panic!("a change of #{id}: {e}"));
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the element's text satisfies `test`; returns it.
    pub async fn wait_text(&self, id: &str, what: &str, test: impl Fn(&str) -> bool) -> String {
        let waiting = async {
            let mut text = self.text_of(id).await;
            while !test(&text) {
                text = self.next_text(id, &text).await;
            }
            text
        };
        match tokio::time::timeout(PATIENCE, waiting).await {
            Ok(text) => text,
            Err(_) => panic!(
                "#{id} never showed {what}; it shows {:?}",
                self.text_of(id).await
            ),
        }
    }

    /// Waits until the page says it is connected; returns its status.
    pub async fn wait_connected(&self) -> String {
        self.wait_text("estado", "Conectado", |t| t.starts_with("Conectado a"))
            .await
    }

    /// Waits until the page's status names a refusal by its `sentence`;
    /// returns the status.
    pub async fn wait_refusal(&self, sentence: &str) -> String {
        self.wait_text("estado", sentence, |t| t.contains(sentence))
            .await
    }

    pub async fn type_message(&self, text: &str) {
        let input = self.client.find(Locator::Id("mensaje")).await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Types `keys` into #`id`, ending with Enter, which submits its form
    /// as a navigation, and returns once the page that navigation loads is
    /// the one in the window.
    ///
    /// The keys return before the navigation begins: a script run just
    /// after them can still find the old page, and one that waits there
    /// (a `MutationObserver`) dies with it, reported as an error. So the
    /// old page is marked first, and the test waits until a page without
    /// the mark answers; ChromeDriver runs each script once a navigation
    /// already under way has finished loading.
    pub async fn submit_with_enter(&self, id: &str, keys: &str) {
        assert!(keys.ends_with('\u{E007}'), "{keys:?} does not end in Enter");
        self.client
            .execute("window.paginaAnterior = true", vec![])
            .await
            .unwrap_or_else(|e| panic!("marking the page before the form is sent: {e}"));
        let field = self.client.find(Locator::Id(id)).await.unwrap();
        field.send_keys(keys).await.unwrap();
        const SCRIPT: &str = "
            const done = arguments[0];
            if (!window.paginaAnterior) { done('nueva'); }
            else { addEventListener('pagehide', () => done('saliendo'), { once: true }); }
        ";
        let mut seen = Vec::new();
        within(PATIENCE, "the page the form loads", async {
            // The old page, leaving or killed on the way, then the new one:
            // a few looks at most.
            while seen.len() < 5 {
                match self.client.execute_async(SCRIPT, vec![]).await {
                    Ok(answer) if answer == "nueva" => return,
                    Ok(answer) => seen.push(answer.to_string()),
                    Err(e) => seen.push(e.to_string()),
                }
            }
            panic!("the form's page never came; seen: {seen:#?}");
        })
        .await;
    }

    pub async fn click(&self, id: &str) {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Clicks `button` in the page with an observer already on `id`, and
    /// returns `id`'s text after its first change: a change that comes and
    /// goes before the test could look is not missed.
    pub async fn click_then_change(&self, button: &str, id: &str) -> String {
        const SCRIPT: &str = "
            const [button, id, done] = arguments;
            const element = document.getElementById(id);
            const observer = new MutationObserver(() => {
                observer.disconnect();
                done(element.innerText.trim());
            });
            observer.observe(element, { childList: true, subtree: true, characterData: true });
            document.getElementById(button).click();
        ";
        let changing = self
            .client
            .execute_async(SCRIPT, vec![button.into(), id.into()]);
        let text = within(PATIENCE, "a change after the click", changing)
            .await
            .unwrap_or_else(|e| panic!("#{id} after a click on #{button}: {e}"));
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Reads (and so empties) ChromeDriver's `kind` log.
    pub async fn log(&self, kind: &'static str) -> Vec<serde_json::Value> {
        let entries = within(
            PATIENCE,
            "ChromeDriver's log",
            self.client.issue_cmd(GetLog(kind)),
        )
        .await
        .unwrap_or_else(|e| panic!("ChromeDriver's {kind} log: {e}"));
        match entries {
            serde_json::Value::Array(entries) => entries,
            other => panic!("ChromeDriver's {kind} log is not a list: {other}"),
        }
    }

    /// The console's errors since the last call (a failed load counts).
    pub async fn console_errors(&self) -> Vec<String> {
        self.log("browser")
            .await
            .into_iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// WebSockets the page created since the last call (a browser from
    /// [`Browser::start_recording_network`]): what the page did, whatever
    /// the bridge logs.
    pub async fn websockets_created(&self) -> usize {
        self.log("performance")
            .await
            .iter()
            .filter_map(|entry| entry["message"].as_str())
            .filter_map(|message| serde_json::from_str::<serde_json::Value>(message).ok())
            .filter(|message| message["message"]["method"] == "Network.webSocketCreated")
            .count()
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let folder = repository().join("target/screenshots");
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

/// The port ChromeDriver says it listens on, from its line `ChromeDriver
/// was started successfully on port N.`; else what it said and how it
/// ended.
pub async fn driver_port(driver: &mut Child) -> Result<u16, String> {
    let stdout = driver.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut said = Vec::new();
    let port = within(PATIENCE, "chromedriver's port", async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                return rest.trim_end_matches('.').parse().ok();
            }
            said.push(line);
        }
        None
    })
    .await;
    match port {
        Some(port) => {
            // The rest of its output is not needed; it must not fill the pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok(port)
        }
        None => {
            let _ = driver.start_kill();
            let status = within(PATIENCE, "chromedriver's end", driver.wait()).await;
            Err(format!("{status:?}; it said {said:?}"))
        }
    }
}

/// `servidor::serve` on `listener`, in the test's runtime, until the guard
/// is dropped.
pub fn serve(listener: TcpListener) -> DropGuard {
    let stop = CancellationToken::new();
    tokio::spawn(servidor::serve(
        listener,
        servidor::Config::default(),
        stop.clone(),
    ));
    stop.drop_guard()
}

/// servidor in the test's runtime and a bridge in front serving the page.
pub struct System {
    /// Stops servidor when dropped.
    pub server: DropGuard,
    /// servidor's address, for a second bridge.
    pub target: SocketAddr,
    pub bridge: Running,
}

/// servidor on a port the kernel chose, and a bridge in front serving the
/// page with `extra` flags.
pub async fn system_with(extra: &[&str]) -> System {
    let dist = built_page();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let server = serve(listener);
    let mut args = vec!["--web", dist.to_str().unwrap()];
    args.extend_from_slice(extra);
    let bridge = bridge_to(target, &args).await;
    System {
        server,
        target,
        bridge,
    }
}

/// [`system_with`] no extra flags: servidor's stop guard and the bridge.
pub async fn system() -> (DropGuard, Running) {
    let System { server, bridge, .. } = system_with(&[]).await;
    (server, bridge)
}

pub fn page_url(bridge: SocketAddr) -> String {
    format!("http://{bridge}/")
}
