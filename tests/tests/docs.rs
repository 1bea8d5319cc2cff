//! The docs' command examples, run against the real binaries: every
//! ```` ```console ```` block of README.md, LEEME.md and docs/*.md is a
//! trycmd case (`$ command`, then `? CODE` when it is not 0, then its
//! output, standard error included; `[..]` stands for the rest of a line,
//! `...` for any lines).
//!
//! The docs name the binaries the way a reader runs them after the Quick
//! start (`target/release/servidor`), and this test maps each of those
//! names to the binary of the profile under test. trycmd runs one command
//! per step with no shell and no input, so only self-contained examples
//! (help, version, usage errors, a refused connection) are `console`
//! blocks; examples that need a running server or a pipe stay `sh` or
//! `text` blocks, unchecked here (the conversations they show are tested
//! in `through_bridge.rs` and in each package's tests).
//!
//! After changing a help text or a message:
//! `TRYCMD=overwrite cargo test -p testkit --test docs`, then read the diff.

use std::time::Duration;

#[test]
fn console_examples_in_the_docs_run_as_written() {
    let root = testkit::repository();
    let cases = trycmd::TestCases::new();
    for name in ["servidor", "cliente", "bridge"] {
        let path = testkit::built(name);
        cases.register_bin(format!("target/release/{name}"), path.as_path());
        cases.register_bin(name, path.as_path());
    }
    // An example that does not end (a server that started) fails instead
    // of hanging the suite.
    cases.timeout(Duration::from_secs(20));
    // The examples show the default log filter.
    cases.env("RUST_LOG", "info");
    cases.case(root.join("README.md"));
    cases.case(root.join("LEEME.md"));
    cases.case(root.join("docs/*.md"));
    cases.run();
}
