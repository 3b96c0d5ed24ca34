//! AF_XDP: the appliance's I/O, and the XDP programs of the side-by-side benchmark.
//!
//! - [`steer`]: xlb's own XDP program, which redirects into the AF_XDP sockets only the
//!   frames xlb owns and passes everything else to the kernel.
//! - [`netdev`]: what xlb reads off a network device (index, MAC, queues).
//! - [`xsk`]: one AF_XDP socket with its own UMEM, and batched receive and transmit.
//! - [`busypoll`]: preferred busy polling (the worker runs its queue's NAPI), where it engages;
//!   [`marker`]: through a UDP socket carrying the device's NAPI id, where the AF_XDP socket
//!   has none (veth).
//! - [`tap`]: the TAP device through which the frames the pipeline passes reach the kernel.
//! - [`generator`], [`sink`], [`redirect`]: `xlb bench`'s traffic generator (`BPF_PROG_RUN` in
//!   live-frames mode), checking and timing sink, and kernel XDP-redirect row.
//! - `bpf`: the libbpf plumbing they all share.

pub(crate) mod bpf;
pub mod busypoll;
pub mod generator;
pub mod marker;
pub mod netdev;
pub mod redirect;
pub mod sink;
pub mod steer;
pub mod tap;
#[cfg(test)]
pub(crate) mod testns;
pub mod xsk;
