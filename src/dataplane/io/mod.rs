//! Drivers that feed frames to the pipeline.
//!
//! - [`replay`]: offline, frames from a capture file.
//! - [`afxdp`]: the appliance, frames from AF_XDP sockets steered by xlb's own XDP program.
//!   It is the only module of the crate allowed `unsafe` (ring and UMEM access, the `bpf(2)`
//!   and socket calls), each block with a `// SAFETY:` note.

#[allow(unsafe_code)]
pub mod afxdp;
pub mod replay;
