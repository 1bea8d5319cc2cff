//! The addresses the `bridge` process prints when it listens on every
//! interface: one URL per address of this machine a person can type
//! (compared with what `ip -o addr` lists), never `0.0.0.0` or `[::]`.
//! The test only connects through 127.0.0.1.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use testkit::{http_get, Running};

const BRIDGE: &str = env!("CARGO_BIN_EXE_bridge");

/// This machine's addresses that are up, as `ip -o addr show up` lists
/// them (a tool other than the bridge's own `getifaddrs`), without
/// loopback and IPv6 link-local ones.
fn reachable_addresses() -> Vec<IpAddr> {
    let output = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "up"])
        .output()
        .expect("`ip` (iproute2) lists the interfaces");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            // "2: eth0    inet 192.0.2.2/24 brd … scope global eth0 …"
            let mut words = line.split_whitespace().skip(2);
            let family = words.next()?;
            let address = words.next()?.split('/').next()?;
            matches!(family, "inet" | "inet6").then(|| address.parse().ok())?
        })
        .filter(|ip: &IpAddr| {
            !ip.is_loopback()
                && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
        })
        .collect()
}

/// A page folder of the test's own (`tag` tells concurrent tests apart).
fn page_folder(tag: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tema12-page-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>x</title>").unwrap();
    dir
}

/// Starts the bridge on `listen` (port 0), open to everyone, and returns
/// what it printed for the page and the WebSocket once it serves.
async fn announced(listen: &str, expected: usize) -> (Running, Vec<String>, Vec<String>) {
    announced_with(listen, expected, &["--public"]).await
}

/// The same, with `extra` arguments.
async fn announced_with(
    listen: &str,
    expected: usize,
    extra: &[&str],
) -> (Running, Vec<String>, Vec<String>) {
    let web = page_folder(expected as u16 * 10 + listen.len() as u16 + extra.len() as u16);
    let mut args = vec![
        "--listen",
        listen,
        "--target",
        "127.0.0.1:9",
        "--web",
        web.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let bridge = Running::start(BRIDGE, &args, &[]).await;
    // Serving through loopback: the announcement was printed before.
    let loopback = SocketAddr::from(([127, 0, 0, 1], bridge.addr.port()));
    assert_eq!(http_get(loopback, "/").await.status, 200);
    bridge
        .log_book()
        .wait_until("the announced addresses", |log| {
            log.matches("  Abra ").count() >= expected.max(1)
                && log.matches("WebSocket: ").count() >= expected.max(1)
        })
        .await;
    let log = bridge.log();
    let pages = log
        .lines()
        .filter_map(|line| line.strip_prefix("  Abra "))
        .map(String::from)
        .collect();
    let sockets = log
        .lines()
        .filter_map(|line| line.strip_prefix("WebSocket: "))
        .map(|rest| rest.split(' ').next().unwrap().to_string())
        .collect();
    let _ = std::fs::remove_dir_all(web);
    (bridge, pages, sockets)
}

fn urls(scheme: &str, port: u16, ips: &[IpAddr], path: &str) -> BTreeSet<String> {
    ips.iter()
        .map(|ip| format!("{scheme}://{}/{path}", SocketAddr::new(*ip, port)))
        .collect()
}

#[tokio::test]
async fn on_0_0_0_0_it_names_each_ipv4_address_of_this_machine() {
    let ipv4: Vec<IpAddr> = reachable_addresses()
        .into_iter()
        .filter(IpAddr::is_ipv4)
        .collect();
    let (bridge, pages, sockets) = announced("0.0.0.0:0", ipv4.len()).await;
    let log = bridge.log();
    assert!(bridge.addr.ip().is_unspecified(), "{}", bridge.addr);
    assert!(!log.contains("0.0.0.0"), "{log}");
    let port = bridge.addr.port();
    if ipv4.is_empty() {
        // A machine with loopback alone: said so, and the loopback URL.
        assert!(log.contains("aparte de la local"), "{log}");
        assert_eq!(pages, [format!("http://127.0.0.1:{port}/")]);
    } else {
        assert_eq!(pages.len(), ipv4.len(), "{log}");
        assert_eq!(
            pages.into_iter().collect::<BTreeSet<_>>(),
            urls("http", port, &ipv4, ""),
            "{log}"
        );
        assert_eq!(
            sockets.into_iter().collect::<BTreeSet<_>>(),
            urls("ws", port, &ipv4, "ws"),
            "{log}"
        );
    }
}

#[tokio::test]
async fn on_ipv6_any_it_names_every_address_of_this_machine_in_brackets() {
    let all = reachable_addresses();
    let (bridge, pages, _) = announced("[::]:0", all.len()).await;
    let log = bridge.log();
    assert!(!log.contains("[::]"), "{log}");
    let port = bridge.addr.port();
    if all.is_empty() {
        assert_eq!(pages, [format!("http://[::1]:{port}/")]);
    } else {
        assert_eq!(
            pages.into_iter().collect::<BTreeSet<_>>(),
            urls("http", port, &all, ""),
            "{log}"
        );
    }
}

#[tokio::test]
async fn on_a_given_address_it_names_that_one_alone() {
    let (bridge, pages, sockets) = announced("127.0.0.1:0", 1).await;
    assert_eq!(pages, [format!("http://{}/", bridge.addr)]);
    assert_eq!(sockets, [format!("ws://{}/ws", bridge.addr)]);
}

#[tokio::test]
async fn with_a_join_code_each_address_gets_its_join_link() {
    let ipv4: Vec<IpAddr> = reachable_addresses()
        .into_iter()
        .filter(IpAddr::is_ipv4)
        .collect();
    let code = "clave-de-prueba";
    let (bridge, _, _) = announced_with("0.0.0.0:0", ipv4.len(), &["--access-code", code]).await;
    bridge.wait_for_log("Clientes que no son navegadores").await;
    let log = bridge.log();
    assert!(!log.contains("0.0.0.0"), "{log}");
    let pages: BTreeSet<String> = log
        .lines()
        .filter_map(|line| line.strip_prefix("  Abra "))
        .map(String::from)
        .collect();
    let port = bridge.addr.port();
    let ips = if ipv4.is_empty() {
        vec![IpAddr::from([127, 0, 0, 1])]
    } else {
        ipv4
    };
    let expected: BTreeSet<String> = urls("http", port, &ips, "")
        .into_iter()
        .chain(urls("http", port, &ips, &format!("?clave={code}")))
        .collect();
    assert_eq!(pages, expected, "{log}");
}
