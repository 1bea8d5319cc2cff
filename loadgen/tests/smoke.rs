//! CI's smoke run: every scenario at small sizes, for correctness only (the
//! numbers of a debug build mean nothing).

use testkit::{repository, run_with_input, servidor_exe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_every_reply_checks_out() {
    let servidor = servidor_exe();
    let bin_dir = servidor.parent().unwrap().to_str().unwrap().to_string();
    let mut args = vec![
        "--quick".to_string(),
        "--with-metrics".to_string(),
        "--bin-dir".to_string(),
        bin_dir,
    ];
    let peers = installed_peers();
    for (name, path) in &peers {
        args.extend([format!("--{name}"), path.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_with_input(env!("CARGO_BIN_EXE_loadgen"), &args, b"").await;
    assert!(run.status.success(), "{}", run.stderr);
    for table in [
        "### One connection streaming",
        "### Request/response, 64-byte lines",
        "### Idle clients: resident memory",
        "### Beside its peers",
        "| 1 | relay | TCP |",
        "| 1 | servidor+metrics |",
        "| 1 | bridge+metrics |",
    ] {
        assert!(run.stdout.contains(table), "{}", run.stdout);
    }
    for (name, _) in &peers {
        let row = format!("| 1 | {name} | WebSocket");
        assert!(run.stdout.contains(&row), "no {row} in {}", run.stdout);
    }
    eprintln!("{}", run.stdout);
}

/// websocat and websockify where scripts/bench installs them (or where
/// `WEBSOCAT`/`WEBSOCKIFY` say): the tests never install them, and say so
/// when they are missing.
fn installed_peers() -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for (name, variable) in [("websocat", "WEBSOCAT"), ("websockify", "WEBSOCKIFY")] {
        let path = std::env::var(variable).unwrap_or_else(|_| {
            let venv = repository().join(".tools/bench/venv/bin").join(name);
            venv.to_string_lossy().into_owned()
        });
        if std::path::Path::new(&path).exists() {
            found.push((name, path));
        } else {
            eprintln!(
                "note: {name} is not installed ({path}): not smoked; scripts/bench installs it"
            );
        }
    }
    found
}
