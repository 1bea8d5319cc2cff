//! Per-client limits behind HAProxy, run from `deploy/haproxy.cfg` as it
//! is (HTTP to the bridges with `send-proxy-v2`, TCP with PROXY v2 to
//! servidor), with clients on their own loopback addresses (127.0.0.3,
//! 127.0.0.4 …): the bridge and servidor limit each browser on its own,
//! by the address HAProxy announces, and never HAProxy's own address as
//! one client.
//!
//! Both of the file's bridges and both servidores are one process each
//! (HAProxy takes two server lines with one address), so that one
//! process counts every session and the counts are exact. HAProxy runs
//! unprivileged in the foreground from a temporary folder holding its
//! configuration and log, and is killed at the end.

use std::net::SocketAddr;
use std::process::Stdio;

use testkit::*;
use tokio::process::Command;

mod loopback_recipe;
use loopback_recipe::{hand_over, inherited_addresses, listening, render};

mod through_balancer;
use through_balancer::{read_answer, round_trip, scratch_dir, session_from, Balancer, RawWs};

/// servidor, a bridge and HAProxy in front of both.
struct System {
    _servidor: Running,
    _bridge: Running,
    web: SocketAddr,
    haproxy: Balancer,
}

async fn system(servidor_extra: &[&str], bridge_extra: &[&str]) -> System {
    let trust = ["--trusted-proxy", "127.0.0.1"];
    let env = [("RUST_LOG", "info")];
    let mut args = vec!["--port", "0"];
    args.extend_from_slice(&trust);
    args.extend_from_slice(servidor_extra);
    let servidor = Running::start(servidor_exe(), &args, &env).await;
    // HAProxy's two sockets, bound here and handed over (fd 3 and 4): it
    // cannot bind port 0 and say where it is.
    let (web_listener, web) = listening();
    let (tcp_listener, tcp) = listening();
    let tcp = tcp.to_string();
    let mut args = vec!["--listen", "127.0.0.1:0", "--target", &tcp, "--send-proxy"];
    args.extend_from_slice(&trust);
    args.extend_from_slice(bridge_extra);
    let bridge = Running::start(bridge_exe(), &args, &env).await;
    let dir = scratch_dir("haproxy-limits");
    let mut values = vec![
        ("PREFIX", dir.display().to_string()),
        ("BRIDGE_1", bridge.addr.to_string()),
        ("BRIDGE_2", bridge.addr.to_string()),
        ("SERVIDOR_1", servidor.addr.to_string()),
        ("SERVIDOR_2", servidor.addr.to_string()),
    ];
    values.extend(inherited_addresses(true));
    // deploy/render: the envsubst command of the recipe.
    let config_path = render("haproxy.cfg", &values);
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut command = Command::new("haproxy");
    hand_over(&mut command, &web_listener, &tcp_listener);
    let child = command
        .arg("-db")
        .arg("-f")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group, which `Balancer` stops as a whole.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start haproxy: {error}"));
    let system = System {
        _servidor: servidor,
        _bridge: bridge,
        web,
        haproxy: Balancer { child, dir },
    };
    system.haproxy.wait_until_serving(system.web, 2, "").await;
    // Held until now: had HAProxy bound the addresses itself rather than
    // take these sockets, it would have failed (address in use).
    drop((web_listener, tcp_listener));
    system
}

/// A session from 127.0.0.`host` that answered.
async fn served_session(web: SocketAddr, host: u8) -> RawWs {
    let mut ws = session_from(web, host).await.expect("a session");
    let answer = round_trip(&mut ws, &format!("hola {host}")).await;
    assert_eq!(answer.unwrap(), format!("HOLA {host}\n"));
    ws
}

#[tokio::test]
async fn behind_haproxy_the_bridge_limits_each_browser_and_never_haproxy() {
    let system = system(
        &[],
        &[
            "--max-sessions-per-client",
            "2",
            "--upgrades-per-client",
            "2",
            "--max-connections-per-client",
            "2",
        ],
    )
    .await;
    let web = system.web;
    // Three browsers, two sessions each: six sessions from HAProxy's one
    // address, past every cap were it one client.
    let mut held = Vec::new();
    for host in [3, 4, 5] {
        for _ in 0..2 {
            held.push(served_session(web, host).await);
        }
    }
    for host in [3, 4, 5] {
        let (status, retry_after, body) = refusal(session_from(web, host).await);
        assert_eq!(status, 429);
        assert_eq!(retry_after, None);
        assert_eq!(body, "demasiadas sesiones desde esta dirección\n");
    }
    // 127.0.0.6 holds two sessions, then asks again and again: refused for
    // its sessions while its burst (6) lasts, then for its rate.
    for _ in 0..2 {
        held.push(served_session(web, 6).await);
    }
    let mut attempts = 2;
    let (status, retry_after, body) = loop {
        assert!(attempts < 40, "never rate limited");
        attempts += 1;
        let refused = refusal(session_from(web, 6).await);
        if refused.1.is_some() {
            break refused;
        }
    };
    assert!(attempts > 6, "rate limited after {attempts} upgrades");
    assert_eq!(status, 429);
    let seconds: u64 = retry_after.unwrap().parse().unwrap();
    assert_eq!(
        body,
        format!("demasiadas conexiones nuevas desde esta dirección; espere {seconds} s\n")
    );
    // Another browser is not held back.
    held.push(served_session(web, 7).await);
}

#[tokio::test]
async fn behind_haproxy_servidor_caps_each_browser_and_never_haproxy() {
    let system = system(
        &["--max-connections-per-client", "1"],
        &[
            "--max-sessions-per-client",
            "0",
            "--upgrades-per-client",
            "0",
        ],
    )
    .await;
    let web = system.web;
    // One connection each: servidor sees three browsers, all through
    // HAProxy's one address.
    let mut held = Vec::new();
    for host in [3, 4, 5] {
        held.push(served_session(web, host).await);
    }
    // A second one from 127.0.0.3 is told why and closed.
    let mut second = session_from(web, 3).await.expect("the bridge admits it");
    assert_eq!(
        read_answer(&mut second).await.unwrap(),
        "demasiadas conexiones desde esta dirección\n"
    );
}
