//! The benchmark's kernel fast-path row: xlb's `xlb_redirect` XDP program
//! (`bpf/redirect.bpf.c`), which gives every frame fixed MACs and redirects it out of another
//! interface (`bpf_redirect`), parsing nothing. It measures how fast the kernel alone moves
//! frames between the same veths that xlb forwards between.
//!
//! Invariant: the config value is the 16-byte `struct redirect_config`, checked at load.

use std::os::fd::RawFd;

use crate::dataplane::io::afxdp::bpf::{Aligned, Map, Object};
use crate::dataplane::io::afxdp::steer::{Attachment, SteerError, XdpMode, attach_program};
use crate::wire::MacAddr;

static OBJECT: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/redirect.bpf.o")));

/// The loaded redirect program.
#[derive(Debug)]
pub struct Redirect {
    program_fd: RawFd,
    config: Map<4, 16>,
    /// Owns the program and map (closed on drop, after any [`Attachment`] of it).
    _object: Object,
}

/// `struct redirect_config`: out interface, destination and source MACs.
fn encode(out_ifindex: u32, dst_mac: MacAddr, src_mac: MacAddr) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[0..4].copy_from_slice(&out_ifindex.to_ne_bytes());
    value[4..10].copy_from_slice(&dst_mac.0);
    value[10..16].copy_from_slice(&src_mac.0);
    value
}

impl Redirect {
    /// Loads `xlb_redirect` (the verifier runs here). Needs `CAP_BPF`.
    pub fn load() -> Result<Redirect, SteerError> {
        let object = Object::open(OBJECT, "redirect.bpf.o")?;
        let config = object.map(c"redirect_config", 1)?;
        object.load()?;
        Ok(Redirect {
            program_fd: object.program_fd(c"xlb_redirect")?,
            config: object.loaded(config)?,
            _object: object,
        })
    }

    /// Frames leave by `out_ifindex`, from `src_mac` to `dst_mac`.
    pub fn configure(
        &self,
        out_ifindex: u32,
        dst_mac: MacAddr,
        src_mac: MacAddr,
    ) -> Result<(), SteerError> {
        self.config.update(&0u32.to_ne_bytes(), &encode(out_ifindex, dst_mac, src_mac))
    }

    /// Attaches the program to interface `ifindex` (detached when the result drops).
    pub fn attach(&self, ifindex: u32, mode: XdpMode) -> Result<Attachment, SteerError> {
        attach_program(self.program_fd, ifindex, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_encodes_as_the_program_reads_it() {
        let value = encode(7, MacAddr([1, 2, 3, 4, 5, 6]), MacAddr([7, 8, 9, 10, 11, 12]));
        assert_eq!(u32::from_ne_bytes(value[0..4].try_into().unwrap()), 7);
        assert_eq!(&value[4..], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }
}
