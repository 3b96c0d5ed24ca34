//! The crate's layers point one way, and these tests hold them to it by reading the sources.
//!
//! - The dataplane never imports control: not in code, not in a doc link (only its test
//!   modules may, to build a fixture snapshot from config text as control does). What both
//!   need lives in modules of their own that both import: [`crate::snapshot`] (what
//!   control builds and workers read, [`IfaceId`](crate::snapshot::IfaceId) included),
//!   [`crate::report`] (what workers publish and control reads), [`crate::log`],
//!   [`crate::instance`] (the lock directory), [`crate::tuning`] (`BusyPollMode`),
//!   [`crate::fleet`] (the fleet mode and VRRP state) and
//!   [`crate::wire`] (`parse_mac`).
//! - Those shared modules import neither control nor the dataplane in code (their docs may
//!   point at either), so no cycle can run through them.
//!
//! Control does not import the dataplane either today; the daemon is what wires the two
//! together (it builds snapshots with control and runs the workers).
//!
//! The scan is textual: a path written `crate::control` (or `crate::dataplane`), or a
//! `crate::{...}` group naming the module, counts. `#[cfg(test)] mod ... {}` blocks are
//! skipped up to their closing brace.

use std::path::{Path, PathBuf};

/// The `.rs` files at `path` (a file, or a directory searched recursively), in a stable
/// order.
fn sources(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            files.extend(sources(&entry));
        } else if entry.extension().is_some_and(|ext| ext == "rs") {
            files.push(entry);
        }
    }
    files
}

/// Whether comment lines count: a doc link is a dependency of the docs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comments {
    Count,
    Skip,
}

/// The lines of `text` that name `crate::<module>`, outside `#[cfg(test)] mod` blocks, as
/// (line number, line).
fn paths_to<'a>(text: &'a str, module: &str, comments: Comments) -> Vec<(usize, &'a str)> {
    let path = format!("crate::{module}");
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim();
        let test_module = lines.peek().is_some_and(|(_, next)| {
            let next = next.trim();
            (next.starts_with("mod ") || next.starts_with("pub(crate) mod ")) && next.ends_with('{')
        });
        if trimmed == "#[cfg(test)]" && test_module {
            let mut depth = 0usize;
            for (_, line) in lines.by_ref() {
                let code = line.split("//").next().unwrap_or("");
                depth += code.matches('{').count();
                depth = depth.saturating_sub(code.matches('}').count());
                if depth == 0 {
                    break;
                }
            }
            continue;
        }
        if comments == Comments::Skip && trimmed.starts_with("//") {
            continue;
        }
        let grouped = trimmed.contains("crate::{") && trimmed.contains(module);
        if line.contains(&path) || grouped {
            found.push((index + 1, line));
        }
    }
    found
}

/// Every line of the sources at `paths` (relative to the crate root) that names
/// `crate::<module>`, as `file:line: text`.
fn offenders(paths: &[&str], module: &str, comments: Comments) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for path in paths {
        for file in sources(&root.join(path)) {
            let text = std::fs::read_to_string(&file).expect("a readable source file");
            let name = file.strip_prefix(root).unwrap_or(&file).display().to_string();
            for (number, line) in paths_to(&text, module, comments) {
                found.push(format!("{name}:{number}: {}", line.trim()));
            }
        }
    }
    found
}

#[test]
fn dataplane_never_imports_control() {
    let found = offenders(&["src/dataplane"], "control", Comments::Count);
    assert!(
        found.is_empty(),
        "the dataplane must not import control (move what both need into a module both \
         import):\n{}",
        found.join("\n")
    );
}

#[test]
fn shared_modules_import_neither_side() {
    let shared = [
        "src/snapshot.rs",
        "src/report",
        "src/log.rs",
        "src/instance.rs",
        "src/tuning.rs",
        "src/fleet.rs",
    ];
    for module in ["control", "dataplane"] {
        let found = offenders(&shared, module, Comments::Skip);
        assert!(
            found.is_empty(),
            "a module control and the dataplane share must not import {module}:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn the_scan_sees_imports_and_skips_test_modules() {
    let text = "use crate::control::Snapshot;\nuse crate::{control, wire};\n\
                /// [`crate::control::log`]\n#[cfg(test)]\nmod tests {\n    fn f() {\n        \
                crate::control::Config::parse();\n    }\n}\nuse crate::control::after;\n";
    let lines = |comments| -> Vec<usize> {
        paths_to(text, "control", comments).into_iter().map(|(n, _)| n).collect()
    };
    assert_eq!(lines(Comments::Count), [1, 2, 3, 10]);
    assert_eq!(lines(Comments::Skip), [1, 2, 10]);
    assert!(paths_to("use crate::snapshot::Snapshot;\n", "control", Comments::Count).is_empty());
}
