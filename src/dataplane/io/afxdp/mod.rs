//! AF_XDP: the appliance's I/O. Everything here is what `xlb run` uses; the benchmark's
//! programs (traffic generator, sink, XDP redirect, null forwarder) live in
//! [`crate::bench`] and reach the kernel only through the safe API this module exports
//! (`bpf`, [`steer`], [`xsk`], [`busypoll`], [`netdev`], [`packet`]), so that this stays the one module
//! of the crate allowed `unsafe`.
//!
//! - [`steer`]: xlb's own XDP program, which redirects into the AF_XDP sockets only the
//!   frames xlb owns and passes everything else to the kernel.
//! - [`decap`]: `xlb decap`'s XDP program for tunnel mode's real servers, which strips IPIP
//!   and GUE addressed to the host and hands the inner packet to its stack.
//! - [`netdev`]: what xlb reads off a network device (index, MAC, queues).
//! - [`xsk`]: one AF_XDP socket with its own UMEM, and batched receive and transmit.
//! - [`busypoll`]: preferred busy polling (the worker runs its queue's NAPI), where it engages;
//!   [`marker`]: through a UDP socket carrying the device's NAPI id, where the AF_XDP socket
//!   has none (veth).
//! - [`groups`]: the solicited-node multicast groups of xlb's IPv6 addresses, joined on its
//!   interfaces so a NIC's filter lets neighbour solicitations for a VIP through to XDP.
//! - [`packet`]: a raw `AF_PACKET` sender, the benchmark generator's last way out where the
//!   kernel refuses live frames (its AF_XDP sender uses [`xsk`] first).
//! - [`tap`]: the TAP device through which the frames the pipeline passes reach the kernel.
//! - [`fault`]: the kernel's refusals of multi-buffer XDP injected on demand, for the root
//!   test of xlb's refusal to start (debug builds only: no test machine's kernel refuses).
//! - `bpf`: the libbpf plumbing every XDP program of the crate goes through (an embedded
//!   object opened and loaded, its maps, `BPF_PROG_TEST_RUN`), the benchmark's included.
//!   `xlb_bpf.h`, the header every program's C source includes, lives beside it.

pub(crate) mod bpf;
pub mod busypoll;
pub mod decap;
pub mod fault;
pub mod groups;
pub mod marker;
pub mod netdev;
pub mod packet;
pub mod steer;
pub mod tap;
#[cfg(test)]
pub(crate) mod testns;
pub mod xsk;
