//! Debian's `pebble` (a test ACME CA) and `pebble-challtestsrv` (its DNS,
//! answering 127.0.0.1 for every name), started by a test, unprivileged,
//! in the foreground, with their files in a temp folder, killed when the
//! test drops them. Shared by `bridge/tests/acme.rs` and
//! `tests/tests/acme_browser.rs`.
//!
//! Pebble's own addresses are bound on port 0 and read back from
//! `/proc/<pid>/net/{tcp,udp}` (it prints only what it was told): its API
//! on 127.0.0.1, its management on 127.0.0.2.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bridge::acme::client::CaClient;
use testkit::within;
use tokio::process::{Child, Command};

/// The longest pebble may take to start.
const PATIENCE: Duration = Duration::from_secs(20);

/// A folder of its own for one test, removed at the end.
pub struct Folder(pub PathBuf);

impl Folder {
    pub fn new(test: &str) -> Folder {
        let path = std::env::temp_dir().join(format!("tema12-acme-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Folder(path)
    }

    pub fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        // Kept when the test fails: pebble's logs are in it.
        if std::thread::panicking() {
            eprintln!("logs de pebble en {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running pebble and its DNS.
pub struct Pebble {
    pebble: Child,
    dns: Child,
    /// The ACME directory URL.
    pub directory: String,
    /// The CA of pebble's own HTTPS API (for `--acme-ca-cert`).
    pub api_ca: PathBuf,
    /// The root pebble issues from, PEM (new at every start).
    pub root: String,
}

impl Pebble {
    /// Starts challtestsrv and pebble, validating TLS-ALPN-01 on
    /// `tls_port`; waits until the directory answers.
    pub async fn start(folder: &Folder, tls_port: u16) -> Pebble {
        // Pebble's HTTPS API needs a certificate; the package has none.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble API test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let api_key = rcgen::KeyPair::generate().unwrap();
        let api_params = rcgen::CertificateParams::new(vec![
            String::from("127.0.0.1"),
            String::from("127.0.0.2"),
            String::from("localhost"),
        ])
        .unwrap();
        let api_cert = api_params.signed_by(&api_key, &issuer).unwrap();
        let api_ca = folder.write("api-ca.pem", &ca_cert.pem());
        let cert = folder.write("api.pem", &api_cert.pem());
        let key = folder.write("api.key", &api_key.serialize_pem());

        let dns = spawn(
            folder,
            "challtestsrv",
            Command::new("pebble-challtestsrv").args([
                "-dns01",
                "127.0.0.1:0",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                "127.0.0.1:0",
                "-defaultIPv6",
                "",
            ]),
        );
        let dns_pid = dns.id().unwrap();
        let dns_addr = within(PATIENCE, "challtestsrv's DNS port", async {
            loop {
                if let Some(addr) = listening(dns_pid, "udp").first() {
                    break *addr;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;

        let config = serde_json::json!({
            "pebble": {
                "listenAddress": "127.0.0.1:0",
                "managementListenAddress": "127.0.0.2:0",
                "certificate": cert,
                "privateKey": key,
                "httpPort": tls_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config = folder.write("pebble.json", &config.to_string());
        let pebble = spawn(
            folder,
            "pebble",
            Command::new("pebble")
                .arg("-config")
                .arg(&config)
                .arg("-dnsserver")
                .arg(dns_addr.to_string())
                // No random 0–15 s wait before validating. Nonces are
                // still rejected 5 % of the time: instant-acme retries.
                .env("PEBBLE_VA_NOSLEEP", "1"),
        );
        let pebble_pid = pebble.id().unwrap();
        let (api, management) = within(PATIENCE, "pebble's ports", async {
            loop {
                let ports = listening(pebble_pid, "tcp");
                let on = |ip: [u8; 4]| ports.iter().find(|addr| addr.ip().octets() == ip).copied();
                if let (Some(api), Some(management)) = (on([127, 0, 0, 1]), on([127, 0, 0, 2])) {
                    break (api, management);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let root = get(&api_ca, &format!("https://{management}/roots/0")).await;
        let root = String::from_utf8(root).expect("a PEM root");
        Pebble {
            pebble,
            dns,
            directory: format!("https://{api}/dir"),
            api_ca,
            root,
        }
    }

    /// Kills pebble and its DNS.
    pub async fn stop(mut self) {
        let _ = self.pebble.kill().await;
        let _ = self.dns.kill().await;
    }
}

/// Runs `command` with its output in `folder/<name>.log`, killed if the
/// test ends first.
fn spawn(folder: &Folder, name: &str, command: &mut Command) -> Child {
    let log = std::fs::File::create(folder.0.join(format!("{name}.log"))).unwrap();
    command
        .current_dir(&folder.0)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("{name} no arranca ({error}): ¿scripts/setup --browser?"))
}

/// The IPv4 addresses process `pid` listens on (`tcp`) or is bound to
/// (`udp`), read from `/proc`.
fn listening(pid: u32, protocol: &str) -> Vec<SocketAddrV4> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?.to_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/{protocol}")).unwrap_or_default();
    let waiting = if protocol == "tcp" { "0A" } else { "07" };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&waiting) || !inodes.contains(*fields.get(9)?) {
                return None;
            }
            let (ip, port) = fields[1].split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?;
            let port = u16::from_str_radix(port, 16).ok()?;
            // The kernel prints the address in host byte order.
            Some(SocketAddrV4::new(Ipv4Addr::from(ip.swap_bytes()), port))
        })
        .collect()
}

/// The body of a GET to pebble, retried until it answers.
async fn get(ca: &Path, url: &str) -> Vec<u8> {
    let client = CaClient::new(Some(ca)).unwrap();
    within(PATIENCE, url, async {
        loop {
            if let Some(body) = client.get(url).await {
                break body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}
