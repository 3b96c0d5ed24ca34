//! AF_XDP: the appliance's I/O.
//!
//! - [`steer`]: xlb's own XDP program, which redirects into the AF_XDP sockets only the
//!   frames xlb owns and passes everything else to the kernel.
//! - [`netdev`]: what xlb reads off a network device (index, MAC, queues).
//! - [`xsk`]: one AF_XDP socket with its own UMEM, and batched receive and transmit.

pub(crate) mod bpf;
pub mod netdev;
pub mod steer;
pub mod xsk;
