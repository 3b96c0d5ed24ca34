//! Builds xlb's XDP steering program (`src/dataplane/io/afxdp/steer.bpf.c`) into
//! `$OUT_DIR/steer.bpf.o`, which `steer.rs` embeds with `include_bytes!`.
//!
//! It needs clang with the BPF target and the kernel UAPI headers (`linux-libc-dev`), which
//! `scripts/setup` installs (the libxdp build of xsk-rs needs clang anyway). `CLANG` names
//! another compiler. `-g` is not optional: libbpf reads the map definitions from BTF.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/dataplane/io/afxdp/steer.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("steer.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall"])
        // <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the multiarch dir.
        .arg(format!("-I/usr/include/{}", multiarch()))
        .args(["-c", SOURCE, "-o"])
        .arg(&object)
        .output()
        .unwrap_or_else(|error| {
            panic!("running `{clang}` to build {SOURCE}: {error} (scripts/setup installs clang)")
        });
    let diagnostics = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        // Warnings surface in cargo's output rather than vanish with the script's stderr.
        for line in diagnostics.lines() {
            println!("cargo:warning={line}");
        }
    } else {
        panic!("`{clang}` failed to build {SOURCE} ({}):\n{}", output.status, diagnostics);
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
