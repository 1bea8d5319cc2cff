//! The harness for tests that run the real binaries or the daemons'
//! libraries: a process on port 0 with its log captured as a stream of
//! lines, the `tracing` events of an in-process server captured the same
//! way, a port held closed for a server that comes back, a program with
//! piped input, the tutorial's Python programs, and a deadline for every
//! wait.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

mod capture;
pub use capture::{capture_log, capture_transcript, CapturedLog};

/// The longest any single step of a test may take.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// The path of one of the workspace's binaries, built if it is not yet.
///
/// A package's own tests take their binaries from cargo
/// (`CARGO_BIN_EXE_<name>`), which builds them first. The tests that cross
/// packages (the whole chain, the browser, the balancers, loadgen's smoke
/// run) ask for the others here: the first call for one of the system's
/// three binaries in a test process builds all three in one `cargo build`
/// into the same target directory and profile (a no-op when they are up to
/// date; one run instead of three, as each costs a second or two), so
/// `cargo test -p <package>` works on its own as well as inside `cargo test
/// --workspace`.
pub fn built(name: &str) -> PathBuf {
    const SYSTEM_BINARIES: [&str; 3] = ["servidor", "cliente", "bridge"];
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let test_exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("a test executable under target/<profile>/deps");
    let path = profile_dir.join(name);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !built.iter().any(|done| done == name) {
        let target_dir = profile_dir.parent().expect("target/<profile>");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        // Without what cargo set for this test's own run: inherited, the
        // test's CARGO_MANIFEST_DIR reads as a change to crates that track
        // it (ring), and each build from a test would rebuild them and
        // everything above, then the next plain `cargo build` again.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let set_by_cargo = matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            ) || key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_EXE_");
            if set_by_cargo {
                command.env_remove(key.as_ref());
            }
        }
        command
            .args(["build", "--quiet", "--target-dir"])
            .arg(target_dir)
            .current_dir(repository());
        let together = if SYSTEM_BINARIES.contains(&name) {
            SYSTEM_BINARIES.as_slice()
        } else {
            std::slice::from_ref(&name)
        };
        for bin in together {
            command.args(["--bin", bin]);
        }
        if profile_dir.file_name().is_some_and(|dir| dir == "release") {
            command.arg("--release");
        }
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
        assert!(
            output.status.success(),
            "cargo build --bin {name} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        built.extend(together.iter().map(|bin| bin.to_string()));
    }
    assert!(
        path.exists(),
        "no binary {name} in {}",
        profile_dir.display()
    );
    path
}

/// The repository's root.
pub fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// The browser page, built with `trunk build --release` into `dist/` (once
/// per test process; trunk and cargo skip what is up to date). The tools come
/// from `scripts/setup`.
pub fn built_page() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let root = repository();
    BUILT.get_or_init(|| {
        if page_is_fresh(&root) {
            return;
        }
        let home = std::env::var("HOME").unwrap_or_default();
        let path = format!(
            "{}/.tools/node_modules/.bin:{home}/.cargo/bin:{}",
            root.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = std::process::Command::new("trunk")
            .args(["build", "--release"])
            .current_dir(&root)
            .env("PATH", path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run trunk ({e}): run scripts/setup first"));
        assert!(
            output.status.success(),
            "trunk build --release failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    });
    root.join("dist")
}

/// Whether `dist/index.html` is newer than everything the page is built
/// from (`index.html`, `Trunk.toml`, `Cargo.toml`, `Cargo.lock`, `web/`): then trunk
/// would only copy the same files again, at about five seconds a test
/// process.
fn page_is_fresh(root: &Path) -> bool {
    fn modified(path: &Path) -> Option<std::time::SystemTime> {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    }
    fn newest_in(dir: &Path) -> Option<std::time::SystemTime> {
        let mut newest = modified(dir)?;
        for entry in std::fs::read_dir(dir).ok()? {
            let path = entry.ok()?.path();
            let stamp = if path.is_dir() {
                newest_in(&path)?
            } else {
                modified(&path)?
            };
            newest = newest.max(stamp);
        }
        Some(newest)
    }
    let Some(built) = modified(&root.join("dist/index.html")) else {
        return false;
    };
    let sources = [
        modified(&root.join("index.html")),
        modified(&root.join("Trunk.toml")),
        modified(&root.join("Cargo.lock")),
        modified(&root.join("Cargo.toml")),
        newest_in(&root.join("web")),
    ];
    sources
        .into_iter()
        .all(|source| source.is_some_and(|source| source < built))
}

/// `servidor`, as last built (see [`built`]).
pub fn servidor_exe() -> PathBuf {
    built("servidor")
}

/// `cliente`, as last built (see [`built`]).
pub fn cliente_exe() -> PathBuf {
    built("cliente")
}

/// `bridge`, as last built (see [`built`]).
pub fn bridge_exe() -> PathBuf {
    built("bridge")
}

/// Starts the `servidor` at `exe` on port 0, with extra arguments and
/// environment.
pub async fn servidor_at(
    exe: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Running {
    let mut all = vec!["--port", "0"];
    all.extend_from_slice(args);
    Running::start(exe, &all, env).await
}

/// Starts the built `servidor` (see [`built`]) on port 0.
pub async fn servidor(args: &[&str], env: &[(&str, &str)]) -> Running {
    servidor_at(servidor_exe(), args, env).await
}

/// Starts the `bridge` at `exe` on a free port in front of `target`, with
/// extra arguments and its log at `info` (tests wait for its lines).
pub async fn bridge_at(
    exe: impl AsRef<std::ffi::OsStr>,
    target: SocketAddr,
    extra: &[&str],
) -> Running {
    let target = target.to_string();
    let mut args = vec!["--listen", "127.0.0.1:0", "--target", &target];
    args.extend_from_slice(extra);
    Running::start(exe, &args, &[("RUST_LOG", "info")]).await
}

/// Starts the built `bridge` (see [`built`]) in front of `target`.
pub async fn bridge_to(target: SocketAddr, extra: &[&str]) -> Running {
    bridge_at(bridge_exe(), target, extra).await
}

/// A WebSocket to the bridge at `addr` (`ws://addr/ws`).
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket session with the bridge at `addr` (`ws://addr/ws`).
pub async fn websocket(addr: SocketAddr) -> Ws {
    websocket_at(&format!("ws://{addr}/ws")).await
}

/// A WebSocket session at `url`, which may carry the join code
/// (`ws://addr/ws?clave=…`).
pub async fn websocket_at(url: &str) -> Ws {
    upgrade(url, None)
        .await
        .unwrap_or_else(|e| panic!("the upgrade at {url}: {e}"))
}

/// The upgrade to the bridge at `addr`, as a page from `origin` (or a
/// client that is not a browser) asks for it: the session, or why not.
pub async fn websocket_from(
    addr: SocketAddr,
    origin: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    upgrade(&format!("ws://{addr}/ws"), origin).await
}

/// The upgrade at `url`, with an `Origin` header when `origin` is given.
async fn upgrade(
    url: &str,
    origin: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("a valid URL");
    if let Some(origin) = origin {
        let origin = origin.parse().expect("an origin header value");
        request.headers_mut().insert("origin", origin);
    }
    within(
        PATIENCE,
        "the handshake",
        tokio_tungstenite::connect_async(request),
    )
    .await
    .map(|(ws, _response)| ws)
}

/// The WebSocket handshake for `request` (a URL, or a request with headers
/// of its own) over `stream`, already connected (from a chosen address,
/// after a PROXY header, over TLS…), within [`PATIENCE`]: the session, or
/// why not.
pub async fn websocket_over<S, R>(
    request: R,
    stream: S,
) -> Result<tokio_tungstenite::WebSocketStream<S>, tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    R: tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
{
    within(
        PATIENCE,
        "the upgrade",
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .map(|(ws, _response)| ws)
}

/// An upgrade the bridge refused: its status, `Retry-After` and text,
/// checked to be plain text. Anything else fails the test.
pub fn refusal<T: std::fmt::Debug>(
    result: Result<T, tokio_tungstenite::tungstenite::Error>,
) -> (u16, Option<String>, String) {
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = result else {
        panic!("expected an HTTP refusal, got {result:?}");
    };
    let headers = response.headers();
    assert_eq!(
        headers.get("content-type").map(|value| value.as_bytes()),
        Some(b"text/plain; charset=utf-8".as_slice()),
        "{headers:?}"
    );
    let retry_after = headers
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_string());
    let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
    (response.status().as_u16(), retry_after, body)
}

/// Runs `program args… flag value`, which must be a usage error as clap
/// reports it here: exit code 2, standard error starting with «valor no
/// válido «value» para flag <…» and holding `why`, nothing on stdout.
pub async fn refuses_value(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    flag: &str,
    value: &str,
    why: &str,
) {
    let mut all = args.to_vec();
    all.extend([flag, value]);
    let run = run_with_input(program, &all, b"").await;
    assert_eq!(run.status.code(), Some(2), "{flag} {value}: {}", run.stderr);
    let named = format!("error: valor no válido «{value}» para {flag} <");
    assert!(
        run.stderr.starts_with(&named),
        "{flag} {value}: {}",
        run.stderr
    );
    assert!(run.stderr.contains(why), "{flag} {value}: {}", run.stderr);
    assert!(run.stdout.is_empty(), "{flag} {value}: {}", run.stdout);
}

/// Runs `program args…`, which must refuse them: exit code 1 and a line
/// on standard error holding `message`. What it printed, for more checks.
pub async fn refuses(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    message: &str,
) -> Finished {
    let refused = run_with_input(program, args, b"").await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains(message), "{}", refused.stderr);
    refused
}

/// A client of the bridge at `addr` that sends its upgrade request, then
/// nothing at all: it answers no ping and reads nothing.
pub async fn silent_websocket(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// A loopback port held closed: a socket bound to it that does not listen,
/// so connecting is refused (as to a stopped server) and nothing else can
/// take the port. [`HeldPort::listen`] opens a listener there whenever the
/// test brings its server (back) up; it and the holder share the port
/// through `SO_REUSEPORT`, which an in-process server's listener needs
/// (the binaries do not set it).
pub struct HeldPort {
    _holder: TcpSocket,
    addr: SocketAddr,
}

impl HeldPort {
    /// A port of 127.0.0.1 the kernel chose, held closed.
    pub fn new() -> HeldPort {
        let holder = TcpSocket::new_v4().expect("a socket");
        holder.set_reuseport(true).expect("SO_REUSEPORT");
        holder
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("a port of 127.0.0.1");
        let addr = holder.local_addr().expect("the bound address");
        HeldPort {
            _holder: holder,
            addr,
        }
    }

    /// The held address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A listener on the held port; when it is dropped the port is refused
    /// again, still held.
    pub fn listen(&self) -> TcpListener {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket.set_reuseport(true).expect("SO_REUSEPORT");
        // Connections of an earlier listener may linger in TIME_WAIT.
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(self.addr).expect("the held port");
        socket.listen(1024).expect("listening on the held port")
    }
}

impl Default for HeldPort {
    fn default() -> Self {
        Self::new()
    }
}

/// The tutorial's own Python programs (`servidor.py`, `cliente.py`).
pub fn tutorial_program(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tutorial")
        .join(name)
}

/// A log as it grows: every appended line wakes whoever waits for one, so
/// a test waits for the line it needs rather than polling.
#[derive(Clone, Debug)]
pub struct LogBook {
    text: Arc<watch::Sender<String>>,
}

impl Default for LogBook {
    fn default() -> Self {
        Self {
            text: Arc::new(watch::Sender::new(String::new())),
        }
    }
}

impl LogBook {
    /// Appends `line` (with its `\n`) and wakes the waiters.
    pub fn append(&self, line: &str) {
        self.text.send_modify(|text| text.push_str(line));
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.text.borrow().clone()
    }

    /// How many times `needle` occurs in the log so far.
    pub fn count(&self, needle: &str) -> usize {
        self.text.borrow().matches(needle).count()
    }

    /// Waits (at most [`PATIENCE`]) until `ready` holds for the log; fails
    /// the test naming `what` otherwise.
    pub async fn wait_until(&self, what: &str, ready: impl FnMut(&String) -> bool) {
        let mut changes = self.text.subscribe();
        let waited = tokio::time::timeout(PATIENCE, changes.wait_for(ready)).await;
        match waited {
            Ok(Ok(_)) => {}
            // The sender lives in `self`: the channel cannot close.
            Ok(Err(_)) => unreachable!("the log's sender is held by the log"),
            Err(_) => panic!("the log never showed {what}; it holds:\n{}", self.text()),
        }
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for(&self, needle: &str) {
        self.wait_until(&format!("{needle:?}"), |text| text.contains(needle))
            .await;
    }

    /// Waits until `needle` occurs `times` times in the log.
    pub async fn wait_for_count(&self, needle: &str, times: usize) {
        let what = format!("{needle:?} {times} times");
        self.wait_until(&what, |text| text.matches(needle).count() >= times)
            .await;
    }
}

/// A running process whose first stdout line named its address, with the
/// rest of its output collected. Killed when dropped.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    log: LogBook,
    /// How many of stdout and stderr are still open.
    outputs_open: Arc<watch::Sender<usize>>,
}

impl Running {
    /// Starts `program args…` and waits for it to print its address: the
    /// last word of its first stdout line.
    pub async fn start(
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Running {
        let name = program.as_ref().to_string_lossy().into_owned();
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = LogBook::default();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        within(PATIENCE, "the address line", stdout.read_line(&mut first))
            .await
            .unwrap();
        let addr = first
            .split_whitespace()
            .last()
            .and_then(|word| word.parse().ok())
            .unwrap_or_else(|| panic!("no address in first line {first:?}"));
        let outputs_open = Arc::new(watch::Sender::new(2));
        collect(stdout, log.clone(), outputs_open.clone());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        collect(stderr, log.clone(), outputs_open.clone());
        Running {
            child,
            addr,
            log,
            outputs_open,
        }
    }

    /// Everything printed after the address line, stdout and stderr mixed.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// The log as a stream of lines, to wait on.
    pub fn log_book(&self) -> &LogBook {
        &self.log
    }

    /// Waits until the log contains `needle` (woken by each new line).
    pub async fn wait_for_log(&self, needle: &str) {
        self.log.wait_for(needle).await;
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        within(limit, "the process to exit", self.child.wait())
            .await
            .unwrap()
    }

    /// Waits until its stdout and stderr have ended (it has exited, or
    /// closed them): then every line it printed is in the log, none still
    /// on its way through the pipe.
    pub async fn wait_output_end(&self) {
        let mut open = self.outputs_open.subscribe();
        within(
            PATIENCE,
            "its output to end",
            open.wait_for(|open| *open == 0),
        )
        .await
        .expect("the count is held by the process's handle");
    }
}

/// Appends `reader`'s lines to `log` until it ends, then counts it out of
/// `open`.
fn collect<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut reader: BufReader<R>,
    log: LogBook,
    open: Arc<watch::Sender<usize>>,
) {
    tokio::spawn(async move {
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => log.append(&String::from_utf8_lossy(&line)),
            }
        }
        open.send_modify(|open| *open -= 1);
    });
}

/// What a finished program printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args…` with `input` on stdin, to completion.
pub async fn run_with_input(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    input: &[u8],
) -> Finished {
    let name = program.as_ref().to_string_lossy().into_owned();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Fed from its own task: a large input must not block reading the output.
    tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let output = within(PATIENCE, &name, child.wait_with_output())
        .await
        .unwrap();
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Sends one message and reads until the answer's newline.
pub async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    read_line(stream).await
}

/// Reads bytes up to and including the next `\n`.
pub async fn read_line(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let read = within(PATIENCE, "an answer", stream.read(&mut byte))
            .await
            .unwrap();
        assert!(read > 0, "connection closed after {answer:?}");
        answer.push(byte[0]);
        if byte[0] == b'\n' {
            return answer;
        }
    }
}

/// Reads until the peer closes.
pub async fn read_to_end(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut all = Vec::new();
    within(PATIENCE, "end of stream", stream.read_to_end(&mut all)).await?;
    Ok(all)
}

/// The address of a program's metrics endpoint, from the line it prints
/// after its address lines: `Métricas: http://ADDR/metrics`.
pub async fn metrics_addr(running: &Running) -> SocketAddr {
    const PREFIX: &str = "Métricas: http://";
    running.wait_for_log(PREFIX).await;
    let log = running.log();
    log.lines()
        .find_map(|line| line.strip_prefix(PREFIX))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
}

/// An HTTP/1.1 answer, as read off the wire.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The header lines, as sent (`name: value`).
    pub headers: Vec<String>,
    /// The body.
    pub body: String,
}

impl HttpAnswer {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `request` (raw bytes) to `addr` on a new connection and reads the
/// answer until the server closes it (ask with `Connection: close`).
pub async fn http_exchange(addr: SocketAddr, request: &[u8]) -> HttpAnswer {
    let mut stream = within(PATIENCE, "connecting", TcpStream::connect(addr))
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let raw = read_to_end(&mut stream).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    HttpAnswer {
        status,
        headers: lines.map(str::to_string).collect(),
        body: body.to_string(),
    }
}

/// `GET path` on a new connection.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpAnswer {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_exchange(addr, request.as_bytes()).await
}

/// One scrape of a `/metrics` endpoint in the Prometheus text format.
pub struct Scrape {
    /// What was served.
    pub text: String,
}

impl Scrape {
    /// The value of the sample `name{labels}` (labels in any order, and
    /// exactly these); fails the test if there is no such sample.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        wanted.sort();
        self.samples()
            .find(|(sample, sample_labels, _)| *sample == name && *sample_labels == wanted)
            .map(|(_, _, value)| value)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    /// Every sample: name, labels sorted by name, value.
    fn samples(&self) -> impl Iterator<Item = (&str, Vec<(String, String)>, f64)> {
        self.text.lines().filter_map(|line| {
            if line.starts_with('#') || line.trim().is_empty() {
                return None;
            }
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
                None => (series, Vec::new()),
            };
            Some((name, labels, value))
        })
    }
}

/// `a="x",b="y"` into sorted pairs (values unescaped).
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (at, '"') => break at,
                (_, other) => value.push(other),
            }
        };
        labels.push((key.to_string(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels.sort();
    Some(labels)
}

/// Reads `http://addr/metrics`, checking the status and the content type.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let answer = http_get(addr, "/metrics").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape { text: answer.body }
}

/// Scrapes `addr` until `ready` holds for a scrape, and returns that one.
pub async fn scrape_until(addr: SocketAddr, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let scraped = scrape(addr).await;
        if ready(&scraped) {
            return scraped;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the metrics never showed {what}; the last scrape:\n{}",
            scraped.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks `text` with `promtool check metrics` (Debian's `prometheus`
/// package, which `scripts/setup --promtool` installs): the format, and
/// the naming and help-text lints. Without promtool the check is skipped
/// with a note, except under CI, where it fails.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is missing under CI: scripts/setup --promtool installs it"
            );
            eprintln!(
                "SKIPPED: the promtool check of /metrics (promtool not found; \
                 scripts/setup --promtool installs it)"
            );
            return;
        }
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\non:\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
