//! CI's smoke run: every scenario at small sizes, for correctness only (the
//! numbers of a debug build mean nothing).

use harness::{run_with_input, servidor_exe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_every_reply_checks_out() {
    let servidor = servidor_exe();
    let bin_dir = servidor.parent().unwrap().to_str().unwrap().to_string();
    let run = run_with_input(
        env!("CARGO_BIN_EXE_loadgen"),
        &["--quick", "--with-metrics", "--bin-dir", &bin_dir],
        b"",
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    for table in [
        "### One connection streaming",
        "### Request/response, 64-byte lines",
        "### With --metrics against without",
        "### Idle clients: resident memory",
    ] {
        assert!(run.stdout.contains(table), "{}", run.stdout);
    }
    eprintln!("{}", run.stdout);
}
