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
