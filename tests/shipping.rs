//! What an operator installing the package meets: `xlb run`'s log formats and start-up
//! line, the example config the package installs, and the man pages generated from the CLI.
//! None of these need root: `xlb run` stops at the config before it touches anything.

use std::process::{Command, Output};

fn xlb(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xlb"));
    command.args(args).env("XLB_NO_HUGEPAGES", "1").env_remove("JOURNAL_STREAM");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("running xlb")
}

fn missing_config() -> String {
    std::env::temp_dir()
        .join(format!("xlb-shipping-{}-missing.toml", std::process::id()))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn run_logs_a_timestamped_start_up_line_with_version_and_config_then_why_it_stopped() {
    let config = missing_config();
    let out = xlb(&["run", "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    let version = env!("CARGO_PKG_VERSION");
    for (line, rest) in lines.iter().zip([
        format!("xlb: info: xlb {version} starting, config {config}"),
        format!("xlb: error: {config}: "),
    ]) {
        let (stamp, text) = line.split_once(' ').expect("a timestamp, then the line");
        // RFC 3339 UTC to the millisecond: 2026-12-06T00:58:53.123Z
        assert_eq!(stamp.len(), 24, "{line}");
        assert!(stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{line}");
        assert!(text.starts_with(&rest), "{line}");
    }
}

#[test]
fn run_logs_one_json_object_per_line() {
    let config = missing_config();
    let out = xlb(&["run", "--config", &config, "--log-format", "json"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let objects: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    assert_eq!(objects.len(), 2, "{stderr}");
    assert_eq!(objects[0]["level"], "info");
    assert!(objects[0]["msg"].as_str().unwrap().contains(&format!("config {config}")));
    assert_eq!(objects[1]["level"], "error");
    assert!(objects.iter().all(|o| o["ts"].as_str().is_some_and(|ts| ts.ends_with('Z'))));
    let refused = xlb(&["run", "--config", &config, "--log-format", "yaml"], &[]);
    assert_eq!(refused.status.code(), Some(2), "clap refuses an unknown format");
}
