//! The loopback recipe of `deploy/` as the balancer tests use it: the
//! values and start flags of `deploy/loopback.env`, and the configurations
//! written by `deploy/render` (its envsubst command), with the test's own
//! ports and folders put in through the environment, which the env file
//! lets win.

// Each balancer test file uses part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command as StdCommand;

use tokio::process::Command;

use testkit::repository;

/// The value of `name` in `deploy/loopback.env`, with `overrides` in the
/// environment.
pub fn recipe_value(overrides: &[(&str, String)], name: &str) -> String {
    let output = StdCommand::new("bash")
        .args([
            "-c",
            r#"set -a; . deploy/loopback.env; set +a; printf %s "${!1}""#,
            "recipe",
            name,
        ])
        .current_dir(repository())
        .envs(overrides.iter().map(|(key, value)| (*key, value)))
        .output()
        .expect("bash reads deploy/loopback.env");
    assert!(output.status.success(), "{output:?}");
    let value = String::from_utf8(output.stdout).unwrap();
    assert!(!value.is_empty(), "deploy/loopback.env has no {name}");
    value
}

/// A start line's flags from `deploy/loopback.env` (`SERVIDOR_FLAGS`,
/// `BRIDGE_FLAGS`), as words.
pub fn recipe_flags(overrides: &[(&str, String)], name: &str) -> Vec<String> {
    recipe_value(overrides, name)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// `deploy/render file` with `overrides`: the path of the configuration it
/// wrote, checked to have no `${…}` left.
pub fn render(file: &str, overrides: &[(&str, String)]) -> PathBuf {
    let output = StdCommand::new(repository().join("deploy").join("render"))
        .arg(file)
        .envs(overrides.iter().map(|(key, value)| (*key, value)))
        .output()
        .expect("deploy/render runs");
    assert!(output.status.success(), "{output:?}");
    let path = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    let config = std::fs::read_to_string(&path).unwrap();
    let missing = config
        .match_indices("${")
        .any(|(at, _)| config[at + 2..].starts_with(|c: char| c.is_ascii_uppercase()));
    assert!(!missing, "a value is missing:\n{config}");
    // nginx's own variables survive.
    if file.starts_with("nginx") {
        assert!(config.contains("$http_upgrade"), "{config}");
    }
    path
}

/// A page folder for the bridges' `--web` (the balancers do not look at
/// the page; `WEB_DIR` stands in for `dist`).
pub fn page_folder(dir: &std::path::Path) -> String {
    let page = dir.join("page");
    std::fs::create_dir_all(&page).unwrap();
    std::fs::write(page.join("index.html"), "<!doctype html><title>x</title>").unwrap();
    page.display().to_string()
}

/// The descriptors the balancer finds its two listening sockets on.
pub const WEB_FD: i32 = 3;
pub const TCP_FD: i32 = 4;

/// A listening socket on a port of 127.0.0.1 the kernel chose, for the
/// balancer to inherit (it cannot bind port 0 and say where it is).
pub fn listening() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The `WEB_ADDR`/`TCP_ADDR` values that make HAProxy use the handed-over
/// sockets (`fd@N`); nginx keeps the addresses and finds the sockets in
/// `$NGINX` (see [`hand_over`]).
pub fn inherited_addresses(haproxy: bool) -> Vec<(&'static str, String)> {
    if haproxy {
        vec![
            ("WEB_ADDR", format!("fd@{WEB_FD}")),
            ("TCP_ADDR", format!("fd@{TCP_FD}")),
        ]
    } else {
        Vec::new()
    }
}

/// Makes the balancer started by `command` find `web` on fd 3 and `tcp` on
/// fd 4, and tells nginx so (`NGINX=3;4;`: it then uses them for the
/// `listen` of their addresses instead of binding). The caller keeps its
/// own copies open until the balancer serves: had it bound the addresses
/// itself, it would have failed (address in use).
pub fn hand_over(command: &mut Command, web: &TcpListener, tcp: &TcpListener) {
    let (web_fd, tcp_fd) = (web.as_raw_fd(), tcp.as_raw_fd());
    // SAFETY: between fork and exec only fcntl and dup2 run, which are
    // async-signal-safe; dup2 leaves the copies open across exec.
    unsafe {
        command.pre_exec(move || {
            use nix::fcntl::{fcntl, FcntlArg};
            // Out of the way first, in case either is already 3 or 4.
            let web = fcntl(web_fd, FcntlArg::F_DUPFD(10))?;
            let tcp = fcntl(tcp_fd, FcntlArg::F_DUPFD(10))?;
            nix::unistd::dup2(web, WEB_FD)?;
            nix::unistd::dup2(tcp, TCP_FD)?;
            Ok(())
        });
    }
    command.env("NGINX", format!("{WEB_FD};{TCP_FD};"));
}
