//! The loopback recipe of `deploy/` as the balancer tests use it: the
//! values and start flags of `deploy/loopback.env`, and the configurations
//! written by `deploy/render` (its envsubst command), with the test's own
//! ports and folders put in through the environment, which the env file
//! lets win.

// Each balancer test file uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use testkit::repository;

/// The value of `name` in `deploy/loopback.env`, with `overrides` in the
/// environment.
pub fn recipe_value(overrides: &[(&str, String)], name: &str) -> String {
    let output = Command::new("bash")
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
    let output = Command::new(repository().join("deploy").join("render"))
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
