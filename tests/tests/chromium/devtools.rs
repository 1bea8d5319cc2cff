//! A headless Chromium process and its DevTools connection: commands sent
//! as JSON over one WebSocket, answers matched by id, and each page's
//! events (its loads, console errors, WebSockets created) kept for the test
//! that owns the page.
//!
//! The connection runs on a thread of its own with its own runtime: a
//! Chromium shared by every test of a binary must outlive the runtime of
//! whichever test started it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

/// The most console errors kept per page: a page that logs in a loop
/// cannot grow the test without bound; the overflow is counted.
const MOST_ERRORS: usize = 200;
/// Commands waiting to be sent.
const QUEUE: usize = 64;

/// What a page did, as its events said, since the test last looked.
#[derive(Debug, Default)]
pub struct PageEvents {
    /// `load` events of its documents, ever.
    pub loads: u64,
    /// The loader of the main frame's document now (`Page.frameNavigated`).
    pub loader: Option<String>,
    /// The loader of the last document whose `load` event came.
    pub loaded: Option<String>,
    /// Chromium's connection has ended: nothing more will come.
    pub gone: bool,
    /// Console errors, uncaught exceptions and the browser's own errors
    /// (a refused load, a policy violation), in order.
    pub errors: Vec<String>,
    /// Errors not kept, past [`MOST_ERRORS`].
    pub errors_dropped: usize,
    /// WebSockets the page created.
    pub websockets: usize,
}

/// A command for the connection's thread.
enum Order {
    /// A DevTools command, to the browser (`session` none) or to a page.
    Call {
        session: Option<String>,
        method: &'static str,
        params: Value,
        reply: oneshot::Sender<Result<Value, String>>,
    },
    /// From now on, this page's events go to `events`.
    Follow {
        session: String,
        events: Arc<watch::Sender<PageEvents>>,
    },
}

/// A running Chromium and its DevTools connection. The process is killed
/// when this is dropped, and when the test process ends.
pub struct Chromium {
    orders: mpsc::Sender<Order>,
    pid: u32,
    profile: PathBuf,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // Chromium and the processes it started, as a group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid)])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Starting Chromium failed.
#[derive(Debug)]
pub struct StartError(pub String);

impl Chromium {
    /// Starts Chromium headless with `extra_args` (and `home` as its HOME,
    /// where it finds the roots it trusts), connects to it, and returns once
    /// it takes commands.
    pub fn start(extra_args: &[String], home: Option<PathBuf>) -> Result<Chromium, StartError> {
        sweep_profiles();
        let (ready, started) = std::sync::mpsc::sync_channel(1);
        let extra_args = extra_args.to_vec();
        std::thread::Builder::new()
            .name("chromium".into())
            .spawn(move || run(extra_args, home, ready))
            .map_err(|e| StartError(format!("a thread for Chromium: {e}")))?;
        // The thread answers within its own deadlines: one for Chromium to
        // say where DevTools listens, one to connect there.
        started
            .recv_timeout(2 * testkit::PATIENCE + std::time::Duration::from_secs(5))
            .map_err(|e| StartError(format!("Chromium did not start: {e}")))?
    }

    /// Sends `method` with `params` to the browser or to a page's
    /// `session`, and returns its result or the error DevTools gave.
    pub async fn call(
        &self,
        session: Option<&str>,
        method: &'static str,
        params: Value,
    ) -> Result<Value, String> {
        let (reply, answer) = oneshot::channel();
        let order = Order::Call {
            session: session.map(str::to_owned),
            method,
            params,
            reply,
        };
        self.orders
            .send(order)
            .await
            .map_err(|_| "Chromium's connection has ended".to_string())?;
        answer
            .await
            .map_err(|_| "Chromium's connection ended before the answer".to_string())?
    }

    /// Sends `method` and forgets the answer: for a drop, which cannot wait.
    pub fn send_and_forget(&self, session: Option<&str>, method: &'static str, params: Value) {
        let (reply, _) = oneshot::channel();
        let _ = self.orders.try_send(Order::Call {
            session: session.map(str::to_owned),
            method,
            params,
            reply,
        });
    }

    /// Routes the page `session`'s events to `events` from now on.
    pub async fn follow(&self, session: &str, events: Arc<watch::Sender<PageEvents>>) {
        let order = Order::Follow {
            session: session.to_owned(),
            events,
        };
        let _ = self.orders.send(order).await;
    }
}

/// Removes the profiles that test processes no longer running left: a
/// shared Chromium is never dropped, so its profile outlives it.
fn sweep_profiles() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("chromium-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The connection's thread: starts Chromium, says how that went on
/// `ready`, then relays orders and events until Chromium goes.
fn run(
    extra_args: Vec<String>,
    home: Option<PathBuf>,
    ready: std::sync::mpsc::SyncSender<Result<Chromium, StartError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(StartError(format!("a runtime: {e}"))));
            return;
        }
    };
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let profile = std::env::temp_dir().join(format!(
        "chromium-{}-{}",
        std::process::id(),
        STARTED.fetch_add(1, Ordering::Relaxed)
    ));
    let mut command = Command::new("/usr/bin/chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(&extra_args)
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // A group of its own, killed whole by `Chromium`'s drop.
        .process_group(0);
    if let Some(home) = &home {
        command.env("HOME", home);
    }
    // SAFETY: prctl is async-signal-safe. Chromium is killed when this
    // thread ends, which is when the test process ends: a shared Chromium
    // is never dropped.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = ready.send(Err(StartError(format!(
                "/usr/bin/chromium ({e}): run scripts/setup --browser first"
            ))));
            return;
        }
    };
    let pid = child.id();
    // Chromium says where DevTools listens on stderr; the rest of what it
    // says is read and dropped, so that the pipe never fills.
    let stderr = BufReader::new(child.stderr.take().expect("piped"));
    let (told, address) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut lines = stderr.lines();
        let mut said = Vec::new();
        let address = loop {
            match lines.next() {
                Some(Ok(line)) => match line.split_once("DevTools listening on ") {
                    Some((_, address)) => break Ok(address.trim().to_owned()),
                    None => {
                        // The last lines are enough to say what went wrong.
                        if said.len() == 40 {
                            said.remove(0);
                        }
                        said.push(line);
                    }
                },
                _ => break Err(said),
            }
        };
        let _ = told.send(address);
        for _ in lines {}
    });
    let chromium = |orders| Chromium {
        orders,
        pid,
        profile: profile.clone(),
    };
    let address = match address.recv_timeout(testkit::PATIENCE) {
        Ok(Ok(address)) => address,
        failed => {
            // Killed with its group by the drop, if it still runs.
            let (orders, _) = mpsc::channel(1);
            drop(chromium(orders));
            let why = match failed {
                Ok(Err(said)) => format!("it ended first, having said {said:#?}"),
                _ => format!("not within {:?}", testkit::PATIENCE),
            };
            let _ = ready.send(Err(StartError(format!(
                "Chromium never said where DevTools listens: {why}"
            ))));
            return;
        }
    };
    runtime.block_on(async move {
        let connecting = tokio_tungstenite::connect_async(address.as_str());
        let socket = match tokio::time::timeout(testkit::PATIENCE, connecting).await {
            Ok(Ok((socket, _))) => socket,
            Ok(Err(e)) => {
                let (orders, _) = mpsc::channel(1);
                drop(chromium(orders));
                let _ = ready.send(Err(StartError(format!("DevTools at {address}: {e}"))));
                return;
            }
            Err(_) => {
                let (orders, _) = mpsc::channel(1);
                drop(chromium(orders));
                let _ = ready.send(Err(StartError(format!(
                    "DevTools at {address}: no connection within {:?}",
                    testkit::PATIENCE
                ))));
                return;
            }
        };
        let (orders, incoming) = mpsc::channel(QUEUE);
        if ready.send(Ok(chromium(orders))).is_err() {
            return;
        }
        relay(socket, incoming).await;
    });
    let _ = child.wait();
}

/// Sends the orders and hands out what comes back, until either side ends.
async fn relay<S>(mut socket: S, mut orders: mpsc::Receiver<Order>)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures_util::Sink<Message>
        + Unpin,
{
    let mut next_id: u64 = 0;
    let mut waiting: HashMap<u64, oneshot::Sender<Result<Value, String>>> = HashMap::new();
    let mut pages: HashMap<String, Arc<watch::Sender<PageEvents>>> = HashMap::new();
    loop {
        tokio::select! {
            order = orders.recv() => match order {
                Some(Order::Call { session, method, params, reply }) => {
                    next_id += 1;
                    let mut command = json!({ "id": next_id, "method": method, "params": params });
                    if let Some(session) = session {
                        command["sessionId"] = Value::String(session);
                    }
                    if socket.send(Message::text(command.to_string())).await.is_err() {
                        let _ = reply.send(Err("Chromium's connection has ended".into()));
                        break;
                    }
                    // Calls whose caller gave up (a timeout) wait no more.
                    waiting.retain(|_, reply| !reply.is_closed());
                    waiting.insert(next_id, reply);
                }
                Some(Order::Follow { session, events }) => {
                    pages.insert(session, events);
                }
                // Every Chromium handle is gone.
                None => break,
            },
            message = socket.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                let Ok(message) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(id) = message["id"].as_u64() {
                    if let Some(reply) = waiting.remove(&id) {
                        let result = match message.get("error") {
                            Some(error) => Err(error.to_string()),
                            None => Ok(message["result"].clone()),
                        };
                        let _ = reply.send(result);
                    }
                } else if message["method"] == "Target.detachedFromTarget" {
                    // A closed page: its events are over.
                    if let Some(session) = message["params"]["sessionId"].as_str() {
                        pages.remove(session);
                    }
                } else if let Some(page) = message["sessionId"].as_str().and_then(|s| pages.get(s)) {
                    page.send_modify(|events| record(events, &message));
                }
            }
        }
    }
    // Whoever waits on a page hears that nothing more will come.
    for page in pages.values() {
        page.send_modify(|events| events.gone = true);
    }
}

/// Notes one event of a page.
fn record(events: &mut PageEvents, message: &Value) {
    let params = &message["params"];
    let error = match message["method"].as_str().unwrap_or_default() {
        // The main frame's new document (a frame of its own has a parent).
        "Page.frameNavigated" if params["frame"]["parentId"].is_null() => {
            events.loader = params["frame"]["loaderId"].as_str().map(str::to_owned);
            None
        }
        "Page.loadEventFired" => {
            events.loads += 1;
            events.loaded = events.loader.clone();
            None
        }
        "Network.webSocketCreated" => {
            events.websockets += 1;
            None
        }
        // What ChromeDriver's browser log calls SEVERE.
        "Runtime.consoleAPICalled" if params["type"] == "error" || params["type"] == "assert" => {
            let words: Vec<String> = params["args"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|arg| match &arg["value"] {
                    Value::String(text) => text.clone(),
                    Value::Null => arg["description"].as_str().unwrap_or_default().to_owned(),
                    other => other.to_string(),
                })
                .collect();
            let kind = params["type"].as_str().unwrap_or_default();
            Some(format!("console.{kind}: {}", words.join(" ")))
        }
        "Runtime.exceptionThrown" => {
            let details = &params["exceptionDetails"];
            let text = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or_default();
            Some(format!("exception: {text}"))
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => {
            let entry = &params["entry"];
            Some(format!(
                "{} {}",
                entry["url"].as_str().unwrap_or_default(),
                entry["text"].as_str().unwrap_or_default()
            ))
        }
        _ => None,
    };
    if let Some(error) = error {
        if events.errors.len() < MOST_ERRORS {
            events.errors.push(error);
        } else {
            events.errors_dropped += 1;
        }
    }
}
