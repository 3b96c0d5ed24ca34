//! What an operator installing the package meets: `xlb run`'s log formats and start-up
//! line, the example config the package installs, and the man pages generated from the CLI.
//! None of these need root: `xlb run` stops at the config before it touches anything.

use std::path::Path;
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

#[test]
fn the_packaged_example_config_passes_check() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/xlb.toml");
    let out = xlb(&["check", "--config", config.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_pages_are_generated_for_xlb_and_xlb_ctl() {
    let dir = std::env::temp_dir().join(format!("xlb-shipping-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = xlb(&["man", "--out", dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    let xlb_8 = read("xlb.8");
    let version = env!("CARGO_PKG_VERSION");
    assert!(xlb_8.contains(&format!(".TH xlb 8  \"xlb {version}\"")), "{xlb_8}");
    for word in [".SS \"xlb run\"", ".SS \"xlb check\"", ".SS \"xlb ctl\"", "log\\-format"] {
        assert!(xlb_8.contains(word), "xlb.8 lacks {word}");
    }
    assert!(!xlb_8.contains("corpus"), "hidden subcommands stay out of the page");
    let ctl_8 = read("xlb-ctl.8");
    assert!(ctl_8.contains(&format!(".TH xlb-ctl 8  \"xlb {version}\"")), "{ctl_8}");
    for verb in ["\\-A", "\\-L", "\\-R", "\\-\\-socket"] {
        assert!(ctl_8.contains(verb), "xlb-ctl.8 lacks {verb}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
