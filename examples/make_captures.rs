//! Regenerates the captures under `examples/` (`cargo run --example make_captures`).
//! A test checks the committed files equal what this writes.

use std::fs::File;
use std::io::BufWriter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (path, frames) in xlb::testkit::captures::bundled() {
        let file = BufWriter::new(File::create(path)?);
        xlb::testkit::captures::write_pcap(&frames, file)?;
        println!("wrote {path}: {} frames", frames.len());
    }
    Ok(())
}
