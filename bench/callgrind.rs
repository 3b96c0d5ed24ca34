//! Runs this benchmark program again under callgrind, counting only `measured_loop`: shared
//! by the benchmarks that report instructions (bench/pipeline.rs, bench/worker.rs).

use std::process::{Command, Stdio};

/// Runs the current executable with `--callgrind-child` and `child_args` under callgrind
/// (collection toggled on only inside `*measured_loop*`); the callgrind output's text, or
/// None when valgrind is missing or the child fails. `tag` keeps concurrent runs apart.
pub fn run_child(tag: &str, child_args: &[&str]) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let out = std::env::temp_dir().join(format!("xlb-callgrind-{}-{tag}.out", std::process::id()));
    let status = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=*measured_loop*",
            &format!("--callgrind-out-file={}", out.display()),
        ])
        .arg(exe)
        .arg("--callgrind-child")
        .args(child_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    let text = std::fs::read_to_string(&out).ok();
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        return None;
    }
    text
}

/// The summed inclusive cost of the calls, in callgrind's output `text`, into every function
/// whose name `wanted` accepts; None if there is no such call. In the output format a call is
/// a `cfn=` line naming the callee (by `(id) name` the first time, by `(id)` after), then a
/// `calls=` line, then a line whose last field is the call's inclusive cost.
#[allow(dead_code, reason = "bench/worker.rs shares this module and reports totals only")]
pub fn inclusive_calls(text: &str, wanted: impl Fn(&str) -> bool) -> Option<u64> {
    let mut names = std::collections::HashMap::new();
    let (mut callee_wanted, mut cost_follows, mut sum, mut found) = (false, false, 0, false);
    for line in text.lines() {
        if cost_follows {
            cost_follows = false;
            if callee_wanted {
                sum += line.split_whitespace().last()?.parse::<u64>().ok()?;
                found = true;
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("cfn=").or_else(|| line.strip_prefix("fn=")) {
            let (id, name) = rest.split_once(' ').unwrap_or((rest, ""));
            if !name.is_empty() {
                names.insert(id.to_owned(), name.to_owned());
            }
            if line.starts_with("cfn=") {
                callee_wanted = names.get(id).is_some_and(|n| wanted(n));
            }
        } else if line.starts_with("calls=") {
            cost_follows = true;
        }
    }
    found.then_some(sum)
}
