//! Builds every XDP program of `src/dataplane/io/afxdp/` (`NAME.bpf.c`: the steering
//! program, and the benchmark's generator, sink and redirect) into `$OUT_DIR/NAME.bpf.o`,
//! which `NAME.rs` embeds with `include_bytes!`. They share `xlb_bpf.h`.
//!
//! It needs clang with the BPF target and the kernel UAPI headers (`linux-libc-dev`), which
//! `scripts/setup` installs (the libxdp build of xsk-rs needs clang anyway). `CLANG` names
//! another compiler. `-g` is not optional: libbpf reads the map definitions from BTF.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const DIR: &str = "src/dataplane/io/afxdp";

fn main() {
    println!("cargo:rerun-if-changed={DIR}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut sources: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap_or_else(|error| panic!("reading {DIR}: {error}"))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for source in sources {
        println!("cargo:rerun-if-changed={}", source.display());
        let name = source.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        compile(&source, &out.join(name.replace(".bpf.c", ".bpf.o")));
    }
}

/// Compiles one program with clang's BPF target; panics with clang's diagnostics on failure.
fn compile(source: &std::path::Path, object: &std::path::Path) {
    let source_name = source.display();
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall"])
        // <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the multiarch dir.
        .arg(format!("-I/usr/include/{}", multiarch()))
        .arg(format!("-I{DIR}"))
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
