//! xlb — a kernel-bypass layer-4 load balancer.
//!
//! xlb does what LVS/IPVS does (a virtual IP in front of real servers, DR / NAT / FullNAT /
//! tunnel forwarding for IPv4 and IPv6, the classic schedulers) in user space, on AF_XDP sockets, with one poll loop
//! per pinned core.
//!
//! The crate is laid out around one pure function, [`dataplane::Pipeline::process`]: bytes in,
//! a [`dataplane::Verdict`] and rewritten bytes out. Every I/O backend — AF_XDP, pcap replay,
//! in-memory tests, benchmarks, fuzzers — drives that same function.
//!
//! - [`wire`]: zero-copy views over Ethernet, ARP, IPv4, IPv6, TCP, UDP, ICMP, ICMPv6 and
//!   NDP, and RFC 1624 incremental checksums.
//! - [`sched`]: backend selection (weighted Maglev, WRR, RR, SH, random, LC, WLC, LT).
//! - [`conntrack`]: per-core connection tracking with bounded memory and no lock.
//! - [`persist`]: persistence templates (`ipvsadm -p`), one lock-free table all cores share.
//! - [`family`]: the sealed address-family trait ([`family::V4`], [`family::V6`]) the
//!   per-family tables are monomorphised over.
//! - [`arp`]: the neighbour table, held packets and ARP frames xlb answers and sends itself.
//! - [`ndp`]: IPv6 neighbour discovery (answers, solicitations, announcements, learning),
//!   beside ARP; the pipeline's NDP step calls it.
//! - [`snapshot`]: the immutable [`snapshot::Snapshot`] control builds and workers read.
//! - [`report`]: the counters and reports workers publish and control reads.
//! - [`dataplane`]: the pipeline and the drivers that feed it.
//! - [`bench`]: `xlb bench`, the programs only the side-by-side benchmark runs (traffic
//!   generator, sink, XDP redirect, null forwarder), kept out of the dataplane.
//! - [`control`]: configuration and building snapshots from it, health checks, statistics,
//!   metrics and the control socket.
//! - [`daemon`]: `xlb run`, which wires control and the workers together.
//! - [`decap`]: `xlb decap`, the tunnel mode's real-server side (an XDP decapsulator).
//!
//! Layers point one way: wire ← arp/hash ← sched/conntrack ← snapshot/report ← dataplane ←
//! control ← daemon. The dataplane never imports control; what both need (the snapshot, the
//! reports, [`log`], [`instance`], [`tuning`]) lives in modules of their own that import
//! neither, and a test (`layers`) fails listing any line that breaks it.

pub mod addr_map;
pub mod arp;
pub mod bench;
pub mod conntrack;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod decap;
pub mod family;
pub mod fleet;
pub mod flow;
pub mod hash;
pub mod instance;
#[cfg(test)]
mod layers;
pub mod log;
pub mod ndp;
pub mod notify;
pub mod persist;
pub mod report;
pub mod sched;
pub mod snapshot;
pub mod testkit;
pub mod time;
pub mod tuning;
pub mod wire;
