//! A headless Chromium, driven through its DevTools protocol, for the
//! page's tests (`browser/`, `acme_browser.rs`, `balancers_tls.rs`), and the
//! system it loads: servidor in the test's runtime, the real bridge serving
//! the built page.
//!
//! The tests of one binary share one Chromium: a start took 0.4–0.7 s here,
//! beside tests whose own work takes about as long. Each test has
//! a page in a browser context of its own, as a new profile would be: no
//! cookie, storage or cache is shared (cookies ignore ports, and every
//! bridge here is on 127.0.0.1). A test that needs Chromium started with
//! other switches gets one of its own ([`Browser::launch_with`]).

#![allow(dead_code)]

mod devtools;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use serde_json::{json, Value};
use testkit::*;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use devtools::{Chromium, PageEvents};

/// The Chromium every test of this binary shares, started by the first
/// that asks (a failed start is kept: the next tests fail at once). It is
/// never dropped: it is killed when the process ends.
fn shared() -> Result<&'static Chromium, &'static str> {
    static SHARED: OnceLock<Result<Chromium, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| Chromium::start(&[], None).map_err(|e| e.0))
        .as_ref()
        .map_err(String::as_str)
}

/// The shared Chromium, once started.
fn started() -> &'static Chromium {
    shared().expect("a page of the shared Chromium exists, so it started")
}

/// Whose Chromium a page is in.
enum Owner {
    Shared,
    Own(Chromium),
}

/// A page of a headless Chromium, in a browser context of its own, closed
/// when dropped.
pub struct Browser {
    owner: Owner,
    context: String,
    session: String,
    events: Arc<watch::Sender<PageEvents>>,
    /// WebSockets counted by the last [`Browser::websockets_created`].
    websockets_seen: std::sync::atomic::AtomicUsize,
    /// Errors returned by the last [`Browser::console_errors`].
    errors_seen: std::sync::atomic::AtomicUsize,
    /// Closed by [`Browser::close`]: nothing left for the drop.
    closed: bool,
}

/// What a test changes in how Chromium starts: such a test gets a Chromium
/// of its own.
#[derive(Debug, Default)]
pub struct Options {
    /// More switches: a host mapping, accepting a test certificate…
    pub extra_args: Vec<String>,
    /// The HOME it runs with, whose `.pki/nssdb` holds the roots it trusts.
    pub home: Option<PathBuf>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // Closing the context closes its page; nothing waits for it.
        let params = json!({ "browserContextId": self.context });
        self.chromium()
            .send_and_forget(None, "Target.disposeBrowserContext", params);
    }
}

impl Browser {
    /// A page `width` × `height` CSS pixels wide, in the shared Chromium.
    pub async fn start(width: u32, height: u32) -> Browser {
        // The first start blocks: not on the test's runtime.
        let starting = tokio::task::spawn_blocking(|| shared().map(|_| ()));
        within(3 * PATIENCE, "Chromium's start", starting)
            .await
            .expect("starting Chromium")
            .unwrap_or_else(|e| panic!("starting Chromium: {e}"));
        Browser::open(Owner::Shared, width, height).await
    }

    /// A page in a Chromium of its own, started with `options`.
    pub async fn launch_with(width: u32, height: u32, options: Options) -> Browser {
        let starting =
            tokio::task::spawn_blocking(move || Chromium::start(&options.extra_args, options.home));
        let chromium = within(3 * PATIENCE, "Chromium's start", starting)
            .await
            .expect("starting Chromium")
            .unwrap_or_else(|e| panic!("starting Chromium: {}", e.0));
        Browser::open(Owner::Own(chromium), width, height).await
    }

    async fn open(owner: Owner, width: u32, height: u32) -> Browser {
        let chromium = match &owner {
            Owner::Shared => started(),
            Owner::Own(chromium) => chromium,
        };
        // Each step answers with the id the next one needs.
        let id_from = |method, params, field: &'static str| async move {
            let answer = within(PATIENCE, method, chromium.call(None, method, params))
                .await
                .unwrap_or_else(|e| panic!("{method}: {e}"));
            match answer[field].as_str() {
                Some(id) => id.to_owned(),
                None => panic!("{method} gave no {field}: {answer}"),
            }
        };
        let created = json!({ "disposeOnDetach": true });
        let context = id_from("Target.createBrowserContext", created, "browserContextId").await;
        let blank = json!({ "url": "about:blank", "browserContextId": context });
        let target = id_from("Target.createTarget", blank, "targetId").await;
        let attach = json!({ "targetId": target, "flatten": true });
        let session = id_from("Target.attachToTarget", attach, "sessionId").await;
        let events = Arc::new(watch::Sender::new(PageEvents::default()));
        let following = chromium.follow(&session, events.clone());
        within(PATIENCE, "following the page", following).await;
        let browser = Browser {
            owner,
            context,
            session,
            events,
            websockets_seen: Default::default(),
            errors_seen: Default::default(),
            closed: false,
        };
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            browser.call(domain, json!({})).await;
        }
        let size = json!({
            "width": width,
            "height": height,
            "deviceScaleFactor": 1,
            "mobile": false,
        });
        browser
            .call("Emulation.setDeviceMetricsOverride", size)
            .await;
        browser
    }

    fn chromium(&self) -> &Chromium {
        match &self.owner {
            Owner::Shared => started(),
            Owner::Own(chromium) => chromium,
        }
    }

    /// Sends `method` to this page, within [`PATIENCE`]: its result, or
    /// the error DevTools gave.
    async fn try_call(&self, method: &'static str, params: Value) -> Result<Value, String> {
        let calling = self.chromium().call(Some(&self.session), method, params);
        within(PATIENCE, method, calling).await
    }

    /// Sends `method` to this page; its result.
    async fn call(&self, method: &'static str, params: Value) -> Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Loads `url` and waits for the `load` event of the document it
    /// makes (after any redirect): not of one loading before it, such as
    /// the page's first `about:blank`.
    pub async fn goto(&self, url: &str) {
        let navigated = self.call("Page.navigate", json!({ "url": url })).await;
        if let Some(error) = navigated["errorText"].as_str() {
            panic!("loading {url}: {error}");
        }
        // Without a loader, the navigation stayed in the same document.
        let Some(loader) = navigated["loaderId"].as_str() else {
            return;
        };
        self.wait_load(url, |events| events.loaded.as_deref() == Some(loader))
            .await;
    }

    /// Waits until the page's events satisfy `loaded`, naming `what` loads
    /// if they never do.
    async fn wait_load(&self, what: &str, loaded: impl Fn(&PageEvents) -> bool) {
        let mut events = self.events.subscribe();
        let gone = within(
            PATIENCE,
            &format!("the load of {what}"),
            events.wait_for(|events| events.gone || loaded(events)),
        )
        .await
        .expect("the page's events are held by the page")
        .gone;
        assert!(!gone, "Chromium went away before {what} loaded");
    }

    /// The address of the page shown.
    pub async fn current_url(&self) -> String {
        let url = self.execute("return location.href", vec![]).await;
        url.as_str().unwrap_or_default().to_owned()
    }

    /// Evaluates `expression` in the page, awaiting a promise; its value,
    /// or the exception it threw.
    async fn evaluate(&self, expression: String) -> Result<Value, String> {
        let params = json!({
            "expression": expression,
            "awaitPromise": true,
            "returnByValue": true,
        });
        let answer = self.try_call("Runtime.evaluate", params).await?;
        if let Some(details) = answer.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or_default();
            return Err(format!("the script threw: {text}"));
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Runs `body` as a function called with `args` (its `arguments`), as
    /// WebDriver's Execute Script does; its return value.
    pub async fn execute(&self, body: &str, args: Vec<Value>) -> Value {
        let expression = format!(
            // On lines of their own: a `//` comment ending the body must
            // not swallow what closes it.
            "(function() {{\n{body}\n}}).apply(null, {})",
            Value::from(args)
        );
        self.evaluate(expression)
            .await
            .unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    /// Runs `body` as a function called with `args` and then a callback,
    /// as WebDriver's Execute Async Script does; the value it is called
    /// with, or why it never was (the page went away, or the script threw).
    pub async fn try_execute_async(&self, body: &str, args: Vec<Value>) -> Result<Value, String> {
        let expression = format!(
            "new Promise((done) => {{ (function() {{\n{body}\n}}).apply(null, [...{}, done]); }})",
            Value::from(args)
        );
        self.evaluate(expression).await
    }

    /// [`Browser::try_execute_async`], which must succeed.
    pub async fn execute_async(&self, body: &str, args: Vec<Value>) -> Value {
        self.try_execute_async(body, args)
            .await
            .unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    /// The element's rendered text (`innerText`, trimmed).
    pub async fn text_of(&self, id: &str) -> String {
        let script = "return document.getElementById(arguments[0]).innerText.trim()";
        let text = self.execute(script, vec![id.into()]).await;
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
            .execute_async(SCRIPT, vec![id.into(), seen.into()])
            .await;
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

    /// Waits until the history shows `answer` received from servidor
    /// (`Recibido del servidor: …`); returns the history.
    pub async fn wait_answer(&self, answer: &str) -> String {
        let line = format!("Recibido del servidor: {answer}");
        self.wait_text("registro", answer, |t| t.contains(&line))
            .await
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

    /// Types `keys` into the field #`id`, as a person would: the field
    /// focused, the text entered, and `\u{E007}` (WebDriver's Enter)
    /// pressed as a key, which submits the field's form.
    pub async fn type_into(&self, id: &str, keys: &str) {
        let script = "const field = document.getElementById(arguments[0]);
                      field.focus();
                      field.setSelectionRange(field.value.length, field.value.length);";
        self.execute(script, vec![id.into()]).await;
        for (index, part) in keys.split('\u{E007}').enumerate() {
            if index > 0 {
                self.press_enter().await;
            }
            if !part.is_empty() {
                self.call("Input.insertText", json!({ "text": part })).await;
            }
        }
    }

    async fn press_enter(&self) {
        for kind in ["keyDown", "keyUp"] {
            let mut key = json!({
                "type": kind,
                "key": "Enter",
                "code": "Enter",
                "windowsVirtualKeyCode": 13,
                "nativeVirtualKeyCode": 13,
            });
            if kind == "keyDown" {
                key["text"] = "\r".into();
                key["unmodifiedText"] = "\r".into();
            }
            self.call("Input.dispatchKeyEvent", key).await;
        }
    }

    pub async fn type_message(&self, text: &str) {
        self.type_into("mensaje", text).await;
    }

    /// The value of the field #`id`.
    pub async fn field_value(&self, id: &str) -> String {
        let script = "return document.getElementById(arguments[0]).value";
        let value = self.execute(script, vec![id.into()]).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Empties the field #`id`.
    pub async fn clear(&self, id: &str) {
        let script = "document.getElementById(arguments[0]).value = ''";
        self.execute(script, vec![id.into()]).await;
    }

    /// Types `keys` into #`id`, ending with Enter, which submits its form
    /// as a navigation, and returns once the page that navigation loads is
    /// there.
    pub async fn submit_with_enter(&self, id: &str, keys: &str) {
        assert!(keys.ends_with('\u{E007}'), "{keys:?} does not end in Enter");
        let loads = self.events.borrow().loads;
        self.type_into(id, keys).await;
        self.wait_load("the page the form loads", |events| events.loads > loads)
            .await;
    }

    /// Clicks the middle of #`id` with the mouse, as a person would.
    pub async fn click(&self, id: &str) {
        let script = "const element = document.getElementById(arguments[0]);
                      element.scrollIntoView({ block: 'center' });
                      const box = element.getBoundingClientRect();
                      return [box.left + box.width / 2, box.top + box.height / 2];";
        let middle = self.execute(script, vec![id.into()]).await;
        let (x, y) = (middle[0].as_f64().unwrap(), middle[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            let mouse = json!({
                "type": kind,
                "x": x,
                "y": y,
                "button": if kind == "mouseMoved" { "none" } else { "left" },
                "clickCount": if kind == "mouseMoved" { 0 } else { 1 },
            });
            self.call("Input.dispatchMouseEvent", mouse).await;
        }
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
        let text = self
            .execute_async(SCRIPT, vec![button.into(), id.into()])
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// The console's errors since the last call (a failed load counts).
    pub async fn console_errors(&self) -> Vec<String> {
        use std::sync::atomic::Ordering;
        let events = self.events.borrow();
        assert_eq!(
            events.errors_dropped,
            0,
            "errors past {}",
            events.errors.len()
        );
        let seen = self
            .errors_seen
            .swap(events.errors.len(), Ordering::Relaxed);
        events.errors[seen..].to_vec()
    }

    /// WebSockets the page created since the last call: what the page did,
    /// whatever the bridge logs.
    pub async fn websockets_created(&self) -> usize {
        use std::sync::atomic::Ordering;
        let created = self.events.borrow().websockets;
        created - self.websockets_seen.swap(created, Ordering::Relaxed)
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("a screenshot in base64");
        let folder = repository().join("target/screenshots");
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Closes the page and its context.
    pub async fn close(mut self) {
        let params = json!({ "browserContextId": self.context });
        let closing = self
            .chromium()
            .call(None, "Target.disposeBrowserContext", params);
        within(PATIENCE, "closing the page", closing)
            .await
            .unwrap_or_else(|e| panic!("closing the page: {e}"));
        self.closed = true;
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
