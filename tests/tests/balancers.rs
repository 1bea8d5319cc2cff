//! The reference deployments in `deploy/`, run as they are (the loopback
//! recipe: `deploy/loopback.env`'s flags, `deploy/render`'s envsubst): HAProxy or
//! nginx in front of two bridges and two `servidor`s, all on loopback
//! ports, clients on their own loopback addresses (127.0.0.2, 127.0.0.3 …)
//! so that the logs can show whose address arrived where.
//!
//! The balancers run unprivileged in the foreground from a temporary folder
//! holding their configuration, pid and logs, and are killed at the end.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use testkit::*;

mod through_balancer;
use through_balancer::{round_trip, scratch_dir, session_from, session_with, Balancer, RawWs};

mod loopback_recipe;
use loopback_recipe::{
    hand_over, inherited_addresses, listening, page_folder, recipe_flags, render,
};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Which balancer fronts the system.
#[derive(Clone, Copy)]
enum Kind {
    Haproxy,
    Nginx,
}

/// The whole deployment: two servidores, two bridges, one balancer.
struct System {
    servidores: Vec<Running>,
    bridges: Vec<Running>,
    /// Where browsers connect.
    web: SocketAddr,
    balancer: Balancer,
}

async fn system(kind: Kind, bridge_extra: &[&str], read_timeout: &str) -> System {
    let env = [("RUST_LOG", "info")];
    let dir = scratch_dir(match kind {
        Kind::Haproxy => "haproxy",
        Kind::Nginx => "nginx",
    });
    // The balancer's two sockets, bound here and handed over (fd 3 and 4);
    // the bridges and servidores bind port 0 and say where they are.
    let (web_listener, web) = listening();
    let (tcp_listener, tcp) = listening();
    let tcp = tcp.to_string();
    let mut values = vec![
        ("WEB_ADDR", web.to_string()),
        ("TCP_ADDR", tcp.clone()),
        ("PREFIX", dir.display().to_string()),
        ("READ_TIMEOUT", String::from(read_timeout)),
        ("WEB_DIR", page_folder(&dir)),
    ];
    // The start lines of deploy/loopback.env, on port 0.
    let servidor_flags = recipe_flags(&values, "SERVIDOR_FLAGS");
    let mut servidores = Vec::new();
    for _ in 0..2 {
        let mut args = vec!["--port", "0"];
        args.extend(servidor_flags.iter().map(String::as_str));
        servidores.push(Running::start(servidor_exe(), &args, &env).await);
    }
    let bridge_flags = recipe_flags(&values, "BRIDGE_FLAGS");
    let mut bridges = Vec::new();
    for _ in 0..2 {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend(bridge_flags.iter().map(String::as_str));
        args.extend_from_slice(bridge_extra);
        bridges.push(Running::start(bridge_exe(), &args, &env).await);
    }
    values.extend([
        ("BRIDGE_1", bridges[0].addr.to_string()),
        ("BRIDGE_2", bridges[1].addr.to_string()),
        ("SERVIDOR_1", servidores[0].addr.to_string()),
        ("SERVIDOR_2", servidores[1].addr.to_string()),
    ]);
    let (file, program, args): (&str, &str, Vec<String>) = match kind {
        Kind::Haproxy => ("haproxy.cfg", "haproxy", vec![String::from("-db")]),
        Kind::Nginx => (
            "nginx.conf",
            "nginx",
            vec![
                String::from("-p"),
                dir.display().to_string(),
                String::from("-g"),
                String::from("daemon off;"),
            ],
        ),
    };
    values.extend(inherited_addresses(matches!(kind, Kind::Haproxy)));
    // deploy/render: the envsubst command of the recipe.
    let config_path = render(file, &values);
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut command = Command::new(program);
    hand_over(&mut command, &web_listener, &tcp_listener);
    let child = command
        .args(&args)
        .arg(if matches!(kind, Kind::Haproxy) {
            "-f"
        } else {
            "-c"
        })
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group, so that its workers can be stopped with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
    let balancer = Balancer { child, dir };
    let system = System {
        servidores,
        bridges,
        web,
        balancer,
    };
    // With a join code, the wait's session gives it.
    let query = bridge_extra
        .windows(2)
        .find(|flag| flag[0] == "--access-code")
        .map(|flag| format!("?clave={}", flag[1]))
        .unwrap_or_default();
    system
        .balancer
        .wait_until_serving(system.web, 1, &query)
        .await;
    // Held until now: had the balancer bound the addresses itself rather
    // than take these sockets, it would have failed (address in use).
    drop((web_listener, tcp_listener));
    system
}

impl System {
    fn sessions_on(&self, bridge: usize) -> usize {
        self.bridges[bridge].log().matches("sesión abierta").count()
    }

    /// Kills the bridges and servidores and waits until their output has
    /// ended: then their logs are whole, with no line still in a pipe.
    async fn stop_for_logs(&mut self) {
        for running in self.bridges.iter_mut().chain(&mut self.servidores) {
            let _ = running.child.start_kill();
            running.wait_exit(PATIENCE).await;
            running.wait_output_end().await;
        }
    }
}

/// `count` sessions from 127.0.0.2, 127.0.0.3 …, each having had one round
/// trip, all open at once.
async fn open_sessions(web: SocketAddr, count: usize) -> Vec<(u8, RawWs)> {
    let opening = (0..count).map(|n| {
        let host = 2 + n as u8;
        tokio::spawn(async move {
            let mut ws = session_from(web, host).await.expect("a session");
            let answer = round_trip(&mut ws, &format!("hola {host}"))
                .await
                .expect("an answer");
            assert_eq!(answer, format!("HOLA {host}\n"));
            (host, ws)
        })
    });
    let mut sessions = Vec::new();
    for opened in within(
        PATIENCE,
        "all sessions",
        futures_util::future::join_all(opening),
    )
    .await
    {
        sessions.push(opened.expect("the session's task"));
    }
    sessions
}

/// Waits up to 1.5 s for `ws` to be closed: its close frame if it was;
/// otherwise `None`, once a round trip shows it is still served. Anything
/// else (an error, data, an end without a close) fails the test.
async fn closed_or_still_served(host: u8, ws: &mut RawWs) -> Option<CloseFrame> {
    match tokio::time::timeout(Duration::from_millis(1500), ws.next()).await {
        Err(_quiet) => {
            let answer = round_trip(ws, "sigo").await.expect("still served");
            assert_eq!(answer, "SIGO\n");
            None
        }
        Ok(Some(Ok(Message::Close(Some(frame))))) => Some(frame),
        Ok(other) => panic!("127.0.0.{host}: {other:?} instead of a close"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_spreads_200_sessions_and_servidor_logs_each_browser() {
    let mut system = system(Kind::Haproxy, &[], "60s").await;
    let sessions = open_sessions(system.web, 200).await;
    system.stop_for_logs().await;
    let (first, second) = (system.sessions_on(0), system.sessions_on(1));
    // The readiness probe above was one more session.
    assert!(first + second >= 200, "{first} + {second}");
    for carried in [first, second] {
        assert!(carried >= 60, "a bridge carried {carried} of 200");
    }
    let logs: String = system.servidores.iter().map(Running::log).collect();
    let clients: BTreeSet<u8> = sessions.iter().map(|(host, _)| *host).collect();
    for host in clients {
        let needle = format!("Conexión desde: 127.0.0.{host}:");
        assert!(
            logs.contains(&needle),
            "no {needle:?} in the servidores' logs"
        );
    }
    assert!(logs.contains("(vía 127.0.0.1:"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_haproxy_moves_sessions_cleanly() {
    let mut system = system(Kind::Haproxy, &["--drain", "3"], "60s").await;
    let sessions = open_sessions(system.web, 100).await;
    system.bridges[0].signal("TERM");
    let signalled = Instant::now();

    let web = system.web;
    let watching = sessions.into_iter().map(|(host, mut ws)| {
        tokio::spawn(async move {
            // Not on the stopped bridge: it sees nothing, and still works.
            let frame = closed_or_still_served(host, &mut ws).await?;
            assert_eq!(frame.code, CloseCode::Away, "{host}");
            let closed_after = signalled.elapsed();
            // Reconnects through the balancer, to the other bridge.
            let mut again = session_from(web, host).await.expect("a new session");
            let answer = round_trip(&mut again, "otra vez").await.expect("served");
            assert_eq!(answer, "OTRA VEZ\n");
            Some(closed_after)
        })
    });
    let outcomes = within(
        PATIENCE,
        "every session's outcome",
        futures_util::future::join_all(watching),
    )
    .await;
    let closed: Vec<Duration> = outcomes
        .into_iter()
        .filter_map(|outcome| outcome.expect("a session's task"))
        .collect();
    assert!(!closed.is_empty(), "no session was on the stopped bridge");
    for after in &closed {
        assert!(*after < Duration::from_secs(1), "1001 after {after:?}");
    }
    assert!(system.bridges[0].wait_exit(PATIENCE).await.success());
    // Counted from its whole log, once its output has ended.
    system.bridges[0].wait_output_end().await;
    let on_first = system.sessions_on(0);
    // Every session the stopped bridge had (bar the readiness probe, which
    // had closed) got its 1001.
    assert!(
        closed.len() + 1 >= on_first && closed.len() <= on_first,
        "{} of {on_first}",
        closed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_servidor_ends_only_its_sessions_and_new_ones_go_to_the_other() {
    let mut system = system(Kind::Haproxy, &[], "60s").await;
    let sessions = open_sessions(system.web, 40).await;
    let first = &mut system.servidores[0];
    first.child.start_kill().unwrap();
    first.wait_exit(PATIENCE).await;
    // Counted once its output has ended: a line it printed may still be in
    // the pipe when the sessions have their answers.
    first.wait_output_end().await;
    let on_first = first.log().matches("(vía 127.0.0.1:").count();

    let watching = sessions.into_iter().map(|(host, mut ws)| {
        tokio::spawn(async move {
            let Some(frame) = closed_or_still_served(host, &mut ws).await else {
                return false;
            };
            assert!(
                matches!(frame.code, CloseCode::Normal | CloseCode::Error),
                "127.0.0.{host}: {frame:?}"
            );
            assert!(!frame.reason.is_empty(), "127.0.0.{host}: no reason");
            true
        })
    });
    let ended = within(
        PATIENCE,
        "every session's outcome",
        futures_util::future::join_all(watching),
    )
    .await
    .into_iter()
    .filter(|outcome| *outcome.as_ref().expect("a session's task"))
    .count();
    // The readiness probe's connection may have been on it, already closed.
    assert!(
        ended == on_first || ended + 1 == on_first,
        "{ended} of {on_first}"
    );

    let again = open_sessions(system.web, 10).await;
    assert_eq!(again.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_the_same_and_a_silent_session_outlives_its_read_timeout() {
    let mut system = system(Kind::Nginx, &["--ping-interval", "300ms"], "1s").await;
    let mut sessions = open_sessions(system.web, 20).await;

    // Silent for longer than nginx's proxy_read_timeout: the bridge's pings
    // keep the connection busy, and tungstenite answers them as it reads.
    let (_, ws) = sessions.first_mut().unwrap();
    let quiet_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet_until {
        match tokio::time::timeout_at(quiet_until.into(), ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => {}
            Ok(other) => panic!("{other:?} while silent"),
        }
    }
    assert_eq!(round_trip(ws, "aún aquí").await.unwrap(), "AÚN AQUÍ\n");

    // Each client's address reached both bridges and servidores.
    system.stop_for_logs().await;
    assert!(system.sessions_on(0) > 0 && system.sessions_on(1) > 0);
    let logs: String = system.bridges.iter().map(Running::log).collect();
    assert!(
        logs.contains("sesión abierta desde 127.0.0.2 (vía 127.0.0.1:"),
        "{logs}"
    );
    let logs: String = system.servidores.iter().map(Running::log).collect();
    assert!(
        logs.contains("Conexión desde: 127.0.0.3 (vía 127.0.0.1:"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_behind_haproxy_share_one_access_code() {
    const CODE: &str = "aula-3B_2026";
    let mut system = system(Kind::Haproxy, &["--access-code", CODE], "60s").await;
    // Without the code: 401 through HAProxy, whichever bridge answers.
    for host in 2..6 {
        match session_from(system.web, host).await {
            Err(WsError::Http(refused)) => assert_eq!(refused.status(), 401),
            other => panic!("127.0.0.{host}: {other:?} instead of 401"),
        }
    }
    // With it, in the query or in the cookie the join link left (from
    // whichever bridge answered the link): both bridges serve.
    let cookie = format!("clave_demo={CODE}");
    let query = format!("?clave={CODE}");
    let mut sessions = Vec::new();
    for host in 2..22 {
        let mut ws = if host % 2 == 0 {
            session_with(system.web, host, &query, None).await
        } else {
            session_with(system.web, host, "", Some(&cookie)).await
        }
        .unwrap_or_else(|error| panic!("127.0.0.{host}: {error}"));
        assert_eq!(round_trip(&mut ws, "hola").await.unwrap(), "HOLA\n");
        sessions.push(ws);
    }
    system.stop_for_logs().await;
    assert!(system.sessions_on(0) > 0 && system.sessions_on(1) > 0);
}
