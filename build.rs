//! Builds every XDP program (`NAME.bpf.c`) into `$OUT_DIR/NAME.bpf.o`, which `NAME.rs`
//! embeds with `include_bytes!`: the appliance's steering program in
//! `src/dataplane/io/afxdp/`, and the benchmark's generator, sink and redirect in
//! `src/bench/bpf/`. They all share `src/dataplane/io/afxdp/xlb_bpf.h`, and their names are
//! unique across both directories (one `$OUT_DIR`).
//!
//! It needs clang with the BPF target and the kernel UAPI headers (`linux-libc-dev`), which
//! `scripts/setup` installs (the libxdp build of xsk-rs needs clang anyway). `CLANG` names
//! another compiler. `-g` is not optional: libbpf reads the map definitions from BTF.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The appliance's programs, and the directory of the header every program includes.
const AFXDP_DIR: &str = "src/dataplane/io/afxdp";
/// The benchmark-only programs (`xlb bench`).
const BENCH_DIR: &str = "src/bench/bpf";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut objects = std::collections::BTreeMap::new();
    for dir in [AFXDP_DIR, BENCH_DIR] {
        println!("cargo:rerun-if-changed={dir}");
        for source in sources(dir) {
            println!("cargo:rerun-if-changed={}", source.display());
            let name = source.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let object = name.replace(".bpf.c", ".bpf.o");
            if let Some(other) = objects.insert(object.clone(), source.clone()) {
                panic!("{} and {} would both build {object}", other.display(), source.display());
            }
            compile(&source, &out.join(object));
        }
    }
}

/// The `*.bpf.c` files of `dir`, sorted.
fn sources(dir: &str) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {dir}: {error}"))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    sources
}

/// Compiles one program with clang's BPF target; panics with clang's diagnostics on failure.
fn compile(source: &std::path::Path, object: &std::path::Path) {
    let source_name = source.display();
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall"])
        // <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the multiarch dir.
        .arg(format!("-I/usr/include/{}", multiarch()))
        .arg(format!("-I{AFXDP_DIR}"))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "running `{clang}` to build {source_name}: {error} (scripts/setup installs clang)"
            )
        });
    let diagnostics = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        // Warnings surface in cargo's output rather than vanish with the script's stderr.
        for line in diagnostics.lines() {
            println!("cargo:warning={line}");
        }
    } else {
        panic!("`{clang}` failed to build {source_name} ({}):\n{}", output.status, diagnostics);
    }
}

/// The multiarch tuple of the host's headers (`x86_64-linux-gnu`): gcc's answer, else one
/// derived from the target architecture.
fn multiarch() -> String {
    let from_gcc = Command::new("gcc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|tuple| !tuple.is_empty());
    from_gcc.unwrap_or_else(|| {
        let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string());
        format!("{arch}-linux-gnu")
    })
}
