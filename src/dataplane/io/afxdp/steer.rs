//! xlb's own XDP program: it redirects into the AF_XDP sockets only the frames xlb owns and
//! passes everything else to the kernel, so SSH, routing and the box's own ARP keep working
//! on the NIC xlb serves.
//!
//! The program (`steer.bpf.c`, built by `build.rs` with clang and embedded here) is about 630
//! BPF instructions with the unrolled walk of a NAT reply's IPv6 extension headers (540
//! before NAT replies' fragments, 120 before IPv6). What it steers,
//! into the socket at `xsks[rx_queue_index]`:
//!
//! - IPv4 to a VIP or FullNAT local address (map `dst`, owner "xlb");
//! - unicast IPv4 from a NAT backend reached through this interface (each arm's program
//!   gets [`SteerRules::for_interface`]: a backend's replies come in where xlb sends to
//!   it), unless it is for one of the box's own addresses
//!   (`dst`, owner "kernel": health checks and SSH to backends are the kernel's): TCP/UDP
//!   from a backend's (address, port, protocol) in `nat_src`, and ICMP errors from a backend
//!   address (`nat_src` key with port 0, protocol 1); plain 20-byte headers only. No reply
//!   is multicast or broadcast, so a frame to an Ethernet group address or to 224.0.0.0
//!   and up (a backend's mDNS, DHCP or NTP broadcast from its service port) is the
//!   kernel's. A reply above the path's MTU (a UDP datagram above 1500 bytes: the
//!   backend's kernel fragments it) comes as fragments, which the pipeline forwards
//!   (`pipeline/fragments.rs`: the first balanced as its flow, the later ones following
//!   it): a TCP/UDP first fragment (offset 0, more fragments) is matched by
//!   its ports as a whole packet is and, when steered, its datagram (source, destination,
//!   protocol, IP identification) is remembered with `bpf_ktime_get_ns()` in the LRU map
//!   `nat_frags` ([`FRAGMENT_ENTRIES`]); a later fragment (no ports) is steered when its
//!   first one was, within [`FRAGMENT_WINDOW`] (the pipeline's fragment table's timeout).
//!   A later fragment that arrives before its first one is the kernel's: neither this
//!   program nor the pipeline holds fragments, so that datagram is lost (senders emit
//!   fragments in order; it takes reordering on the path). ICMP fragments are the
//!   kernel's;
//! - ARP requests for a VIP or local address, and ARP whose sender is a VIP or local address
//!   (another host claiming it: the pipeline counts a conflict; control logs it);
//! - IPv6, the same with maps `dst6` and `nat6_src` (rules: [`SteerRules::v6`]): anything to
//!   a VIP or local address (a bad version nibble too, as IPv4: the pipeline drops it,
//!   counted); NAT replies (TCP/UDP from a backend's address, port and
//!   protocol; ICMPv6 errors from a backend's address) that are unicast, not to a
//!   link-local address, and carry TCP, UDP or ICMPv6 directly after the fixed header or
//!   after the extension headers the pipeline forwards (hop-by-hop first, destination
//!   options, routing with segments left 0), walked as the pipeline walks them — at most
//!   [`crate::wire::ipv6::MAX_EXT_HEADERS`] headers ending within
//!   [`crate::wire::ipv6::MAX_EXT_BYTES`] bytes, an unrolled loop the verifier bounds —
//!   so the ports it looks up are the real ones (a chain the pipeline refuses is the
//!   kernel's); a fragment header after that chain, TCP or UDP after it, makes a NAT
//!   reply's fragment, steered as IPv4's (map `nat6_frags`, keyed by addresses, next
//!   header and identification), an atomic fragment (offset 0, no more: RFC 8200 §4.5) as
//!   a whole packet; neighbour solicitations and advertisements (version 6, hop limit 255,
//!   ICMPv6 directly after the fixed header) whose target or source is a VIP or local
//!   address, whether sent to the solicited-node group or unicast. A packet to a VIP is
//!   steered whatever its extension headers (the pipeline walks them and counts what it
//!   refuses, where the kernel, which does not hold the VIP, would drop it uncounted). The
//!   box's own IPv6, router advertisements, MLD, link-local traffic and NDP about other
//!   addresses are the kernel's.
//!
//! - VLAN-tagged frames (one or two tags: 802.1Q `0x8100`, 802.1ad `0x88a8`, VLAN 0
//!   priority tags too) by the same rules, read after their tags (a bounded parse of two
//!   whole tags; the pipeline serves them through an untagged view and keeps the tags). A
//!   third tag, or a frame cut inside its tags, is the kernel's (the pipeline would drop it).
//!
//! What is steered and still not xlb's: in XDP a NAT reply cannot be told from the
//! backend's own unicast traffic from its service port (a DNS server's query from :53 to an
//! upstream, an NTP server's from :123), because only the pipeline's flow table knows the
//! clients. Mirroring that table into a BPF map was considered and refused: every new flow
//! and every expiry on every core would cost a `bpf(2)` call from the pure pipeline, the map
//! would have to bound and evict under floods as the table does, and a flow missing from it
//! (a full map, a lost update) would break a connection, where a needless steer only costs
//! a copy. So the pipeline decides, passes what has no flow, and the AF_XDP port hands it
//! to the kernel through the interface's TAP device ([`super::tap`]), counted.
//!
//! A queue with no socket in `xsks` falls back to `XDP_PASS` (counted as `no_socket`).
//! Every Ethernet/IPv4 ARP request or reply with a non-zero sender address is also recorded
//! in the LRU map `arp_seen` (sender address → MAC and `bpf_ktime_get_ns()`) and passed on,
//! so xlb learns next-hop MACs while the kernel keeps its own neighbour resolution. NDP is
//! recorded the same way in `ndp_seen` ([`SteerProgram::ndp_seen`]): a solicitation's
//! source (not `::`) and an advertisement's target, with the MAC of the message's first
//! option when it is the matching link-layer address option (a bounded parse: every stack
//! writes that option first; a message without it names no MAC, for the pipeline's
//! [`crate::ndp`] either).
//!
//! Control side: [`SteerRules::from_snapshot`] (pure) says what to steer;
//! [`SteerProgram::set_rules`] makes the maps equal to it, deleting what went before writing
//! what came, and never deleting or rewriting an entry that stays, so no frame of a kept
//! address is ever passed by mistake. [`SteerProgram::attach`] uses a BPF link
//! (`BPF_LINK_CREATE`), which the kernel detaches when its last fd closes — when the
//! [`Attachment`] drops, or when the process dies, even by `SIGKILL`. [`remove_stale`]
//! removes a program of ours attached the old way (netlink) and nothing else.
//!
//! Invariants:
//! - Map keys and values are fixed-size byte arrays whose sizes are checked against the
//!   loaded object before any map call, so every pointer handed to libbpf covers exactly
//!   what the kernel reads or writes.
//! - Addresses and ports in map keys are in network byte order, as in the frame; queue
//!   indices, stat indices and timestamps are in host order, as the program uses them.
//! - libbpf option structs are zeroed and sized to the last field used (`opts_size!`), so
//!   libbpf never inspects padding.
//!
//! libbpf logs to stderr (verifier reasons on a failed load; the kernel's "Can't replace
//! active BPF XDP link" when [`remove_stale`] meets a live xlb).
//!
//! The design follows xdp-tools' `xsk_def_xdp_prog` (redirect by `rx_queue_index` with a
//! `XDP_PASS` fallback) and Katran's habit of table-testing the real program with
//! `BPF_PROG_TEST_RUN`.

use std::collections::BTreeMap;
use std::ffi::{CStr, c_int};
use std::fmt;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libxdp_sys as sys;

use super::bpf::{Aligned, Map, Object, check, opts_size, possible_cpus, sum_per_cpu, test_run};

use crate::family::{V4, V6};
use crate::flow::{ForwardMode, Proto};
use crate::snapshot::{IfaceId, Indexed, Snapshot};
use crate::wire::MacAddr;

/// The name of the program function; [`remove_stale`] recognises our programs by it.
pub const PROGRAM_NAME: &str = "xlb_steer";
/// Entries of the socket map: the highest usable queue index plus one.
pub const MAX_QUEUES: u32 = 256;
/// Entries of `dst` (and of `dst6`): VIPs, local addresses and interface addresses together.
pub const MAX_DST: usize = 4096;
/// Entries of `nat_src` (and of `nat6_src`): NAT backend (address, port, protocol) keys plus
/// one ICMP key per NAT backend address.
pub const MAX_NAT_SRC: usize = 65536;
/// Entries of the LRU map `arp_seen`, and of `ndp_seen`.
pub const ARP_SEEN_ENTRIES: usize = 1024;
/// Entries of the LRU maps `nat_frags` and `nat6_frags`: NAT replies' datagrams whose first
/// fragment was steered (an entry is needed for [`FRAGMENT_WINDOW`] only, so this holds
/// 2048 such datagrams a second before one is evicted early).
pub const FRAGMENT_ENTRIES: usize = 4096;
/// How long a steered first fragment lets its datagram's later fragments be steered:
/// `FRAGMENT_WINDOW_NS` in the C source, the pipeline's own fragment timeout (it forwards
/// later fragments that long; after it, they would only be passed to the kernel).
pub const FRAGMENT_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

/// The object `build.rs` compiled.
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/steer.bpf.o")));

const PROGRAM_CNAME: &CStr = c"xlb_steer";

/// Values of `dst`: who answers for the address (`enum owner` in the C source).
const OWNER_XLB: u8 = 1;
const OWNER_KERNEL: u8 = 2;
/// Indices of `stats` (`enum stat` in the C source).
const STAT_STEERED: u32 = 0;
const STAT_PASSED: u32 = 1;
const STAT_NO_SOCKET: u32 = 2;
const STAT_COUNT: u32 = 3;

// From <linux/if_link.h>; libxdp-sys does not export them.
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

/// What the XDP program must steer, derived from a snapshot (pure, testable without root):
/// one [`FamilyRules`] per address family, filling the maps `dst`/`nat_src` (IPv4) and
/// `dst6`/`nat6_src` (IPv6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SteerRules {
    pub v4: FamilyRules<V4>,
    pub v6: FamilyRules<V6>,
}

/// What the program steers for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRules<F: SteerFamily> {
    /// VIPs and FullNAT local addresses, sorted, without duplicates.
    pub dst: Vec<F::Addr>,
    /// NAT backends as (address, port, protocol), sorted, without duplicates: their replies
    /// to clients route through xlb and must be un-NATed.
    pub nat_src: Vec<(F::Addr, u16, Proto)>,
    /// NAT backend addresses, sorted, without duplicates: ICMP (ICMPv6) errors from them may
    /// be about a NATed flow. ([`Proto`] has no ICMP, hence a list of its own.)
    pub nat_src_icmp: Vec<F::Addr>,
    /// The box's own interface addresses, sorted, without duplicates: frames to them always
    /// go to the kernel, even from a NAT backend's port (health-check replies), and so do ARP
    /// requests and NDP solicitations for them. One that is also in `dst` (a local address
    /// on the interface) is the kernel's, as in [`Snapshot::owned`].
    pub interface_addrs: Vec<F::Addr>,
}

impl<F: SteerFamily> Default for FamilyRules<F> {
    fn default() -> Self {
        FamilyRules {
            dst: Vec::new(),
            nat_src: Vec::new(),
            nat_src_icmp: Vec::new(),
            interface_addrs: Vec::new(),
        }
    }
}

impl<F: SteerFamily> FamilyRules<F> {
    /// The rules for plain lists: the addresses xlb answers for (`owned`: VIPs and local
    /// addresses), the NAT backends (address, port, protocol) whose replies and ICMP errors
    /// xlb un-NATs, and the box's own interface addresses. Sorted and deduplicated here.
    pub fn new(
        owned: &[F::Addr],
        nat_backends: &[(F::Addr, u16, Proto)],
        interface_addrs: &[F::Addr],
    ) -> FamilyRules<F> {
        let sorted = |list: &mut Vec<F::Addr>| {
            list.sort_unstable();
            list.dedup();
        };
        let mut rules = FamilyRules {
            dst: owned.to_vec(),
            nat_src: nat_backends.to_vec(),
            nat_src_icmp: nat_backends.iter().map(|&(addr, _, _)| addr).collect(),
            interface_addrs: interface_addrs.to_vec(),
        };
        sorted(&mut rules.dst);
        sorted(&mut rules.nat_src_icmp);
        sorted(&mut rules.interface_addrs);
        rules.nat_src.sort_unstable();
        rules.nat_src.dedup();
        rules
    }

    /// These rules less the NAT backends `reached_here` says no (see
    /// [`SteerRules::for_interface`]).
    fn reaching(&self, reached_here: impl Fn(F::Addr) -> bool) -> FamilyRules<F> {
        FamilyRules {
            nat_src: self
                .nat_src
                .iter()
                .copied()
                .filter(|&(addr, _, _)| reached_here(addr))
                .collect(),
            nat_src_icmp: self
                .nat_src_icmp
                .iter()
                .copied()
                .filter(|&addr| reached_here(addr))
                .collect(),
            ..self.clone()
        }
    }

    /// The `dst`/`dst6` map these rules want: address (network order) → owner.
    fn dst_entries(&self) -> BTreeMap<F::DstKey, [u8; 1]> {
        let mut entries: BTreeMap<F::DstKey, [u8; 1]> =
            self.dst.iter().map(|&addr| (F::dst_key(addr), [OWNER_XLB])).collect();
        entries.extend(self.interface_addrs.iter().map(|&addr| (F::dst_key(addr), [OWNER_KERNEL])));
        entries
    }

    /// The `nat_src`/`nat6_src` map these rules want: keys as `struct nat_key`/`nat6_key`
    /// lay them out.
    fn nat_src_entries(&self) -> BTreeMap<F::NatKey, [u8; 1]> {
        let tcp_udp =
            self.nat_src.iter().map(|&(addr, port, proto)| F::nat_key(addr, port, proto.number()));
        let icmp = self.nat_src_icmp.iter().map(|&addr| F::nat_key(addr, 0, F::PROTO_ICMP));
        tcp_udp.chain(icmp).map(|key| (key, [1])).collect()
    }
}

impl<F: SteerFamily> FamilyRules<F> {
    /// The rules of family `F` for `snapshot`: its VIPs and local addresses of that family,
    /// the backends of its NAT services of that family, and the box's own addresses of that
    /// family on its interfaces.
    pub fn from_snapshot(snapshot: &Snapshot) -> FamilyRules<F> {
        let index = snapshot.family::<F>();
        let owned: Vec<F::Addr> = index.announced().into_iter().map(|(addr, _)| addr).collect();
        let mut nat_backends = Vec::new();
        for (number, service) in snapshot.services.iter().enumerate() {
            if service.forward != ForwardMode::Nat {
                continue;
            }
            for backend in snapshot.service_backends(number) {
                if let Some(addr) = F::of_ip(backend.addr) {
                    nat_backends.push((addr, backend.port, service.proto));
                }
            }
        }
        let interface_addrs: Vec<F::Addr> =
            index.subnets().iter().map(|(_, subnet)| subnet.addr).collect();
        FamilyRules::new(&owned, &nat_backends, &interface_addrs)
    }

    /// These rules less the NAT backends `snapshot` does not reach through `iface` (see
    /// [`SteerRules::for_interface`]).
    fn for_interface(&self, snapshot: &Snapshot, iface: IfaceId) -> FamilyRules<F> {
        let index = snapshot.family::<F>();
        self.reaching(|addr| index.route(addr).is_some_and(|route| route.egress == iface))
    }
}

impl SteerRules {
    /// The rules for `snapshot`, both families: its announced addresses, the backends of its
    /// NAT services, and its interface addresses.
    pub fn from_snapshot(snapshot: &Snapshot) -> SteerRules {
        SteerRules {
            v4: FamilyRules::from_snapshot(snapshot),
            v6: FamilyRules::from_snapshot(snapshot),
        }
    }

    /// What the program on interface `iface` steers: these rules, less the NAT backends
    /// `snapshot` does not reach through `iface`. A backend's replies come in where xlb sends
    /// to it (its default route is the box), so on another arm a packet "from" it is not a
    /// reply xlb could own (a client forging one, or the backend's traffic on another path):
    /// the kernel's. With one interface, the rules unchanged.
    pub fn for_interface(&self, snapshot: &Snapshot, iface: IfaceId) -> SteerRules {
        SteerRules {
            v4: self.v4.for_interface(snapshot, iface),
            v6: self.v6.for_interface(snapshot, iface),
        }
    }

    /// Whether these rules fit the program's maps; [`SteerProgram::set_rules`] changes
    /// nothing when they do not.
    pub fn check_fits(&self) -> Result<(), SteerError> {
        for (map, count, max) in [
            ("dst", self.v4.dst_entries().len(), MAX_DST),
            ("nat_src", self.v4.nat_src_entries().len(), MAX_NAT_SRC),
            ("dst6", self.v6.dst_entries().len(), MAX_DST),
            ("nat6_src", self.v6.nat_src_entries().len(), MAX_NAT_SRC),
        ] {
            if count > max {
                return Err(SteerError::TooMany { map, count, max });
            }
        }
        Ok(())
    }
}

/// How a family's addresses sit in the program's maps (implemented for [`V4`] and [`V6`]).
pub trait SteerFamily: Indexed {
    /// A `dst`/`dst6` key: the address's bytes in network order.
    type DstKey: Copy + Ord + fmt::Debug;
    /// A `nat_src`/`nat6_src` key: `struct nat_key`/`nat6_key`.
    type NatKey: Copy + Ord + fmt::Debug;
    /// The protocol number of the family's ICMP (1, 58): the key of errors from a backend.
    const PROTO_ICMP: u8;

    /// `addr` as a `dst`/`dst6` key.
    fn dst_key(addr: Self::Addr) -> Self::DstKey;
    /// The key of (address, port, protocol): address and port in network order, protocol,
    /// a zero pad byte.
    fn nat_key(addr: Self::Addr, port: u16, proto: u8) -> Self::NatKey;
}

/// `struct nat_key`/`nat6_key`: the address's bytes, the port in network order, protocol,
/// a zero pad byte.
fn nat_key<const A: usize, const K: usize>(addr: [u8; A], port: u16, proto: u8) -> [u8; K] {
    let mut key = [0u8; K];
    key[..A].copy_from_slice(&addr);
    key[A..A + 2].copy_from_slice(&port.to_be_bytes());
    key[A + 2] = proto;
    key
}

impl SteerFamily for V4 {
    type DstKey = [u8; 4];
    type NatKey = [u8; 8];
    const PROTO_ICMP: u8 = 1;

    fn dst_key(addr: Ipv4Addr) -> [u8; 4] {
        addr.octets()
    }

    fn nat_key(addr: Ipv4Addr, port: u16, proto: u8) -> [u8; 8] {
        nat_key(addr.octets(), port, proto)
    }
}

impl SteerFamily for V6 {
    type DstKey = [u8; 16];
    type NatKey = [u8; 20];
    const PROTO_ICMP: u8 = 58;

    fn dst_key(addr: Ipv6Addr) -> [u8; 16] {
        addr.octets()
    }

    fn nat_key(addr: Ipv6Addr, port: u16, proto: u8) -> [u8; 20] {
        nat_key(addr.octets(), port, proto)
    }
}

/// How the program is attached: in the driver, or in the generic (skb) path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// `XDP_FLAGS_DRV_MODE`: the driver runs it before building an skb.
    Native,
    /// `XDP_FLAGS_SKB_MODE`: the stack runs it on an skb; works on every device.
    Generic,
}

impl XdpMode {
    pub(crate) fn flags(self) -> u32 {
        match self {
            XdpMode::Native => XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
        }
    }
}

/// What an XDP program returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAction {
    /// `XDP_ABORTED`, and any value the kernel does not know (it treats those the same).
    Aborted,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_PASS`: on to the kernel's stack.
    Pass,
    /// `XDP_TX`.
    Tx,
    /// `XDP_REDIRECT`: here, into an AF_XDP socket.
    Redirect,
}

impl XdpAction {
    pub(crate) fn from_retval(retval: u32) -> XdpAction {
        match retval {
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            _ => XdpAction::Aborted,
        }
    }
}

/// The program's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerStats {
    /// Frames redirected to a socket.
    pub steered: u64,
    /// Frames passed to the kernel because xlb does not own them.
    pub passed: u64,
    /// Frames xlb owns that arrived on a queue with no socket, and so went to the kernel.
    pub no_socket: u64,
}

/// Why loading, configuring or attaching the program failed.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// A libbpf or `bpf(2)` call failed.
    #[error("{call} ({what}): {}", io::Error::from_raw_os_error(*errno))]
    Call {
        /// The function that failed.
        call: &'static str,
        /// What it was doing it to.
        what: String,
        /// The errno it reported.
        errno: i32,
    },
    /// The embedded object lacks a program or map this module needs, or lays a map out
    /// differently from the Rust side (the C source and this file are out of step).
    #[error("the embedded XDP object: {0}")]
    Object(String),
    /// The rules do not fit a map.
    #[error("map {map}: {count} entries wanted, at most {max} fit")]
    TooMany {
        /// The map.
        map: &'static str,
        /// Entries the rules want.
        count: usize,
        /// Its capacity.
        max: usize,
    },
    /// A queue index beyond the socket map.
    #[error("queue {queue}: the socket map holds queues 0 to {}", MAX_QUEUES - 1)]
    QueueOutOfRange {
        /// The queue asked for.
        queue: u32,
    },
}

impl SteerError {
    /// The errno of a failed call, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SteerError::Call { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// The loaded (not necessarily attached) program and its maps.
#[derive(Debug)]
pub struct SteerProgram {
    /// Owns the program and maps whose fds the other fields hold: closed last, on drop.
    _object: Object,
    program_fd: RawFd,
    xsks: Map<4, 4>,
    dst: Map<4, 1>,
    nat_src: Map<8, 1>,
    arp_seen: Map<4, 16>,
    dst6: Map<16, 1>,
    nat6_src: Map<20, 1>,
    ndp_seen: Map<16, 16>,
    /// `struct frag_key` (12 bytes) -> `bpf_ktime_get_ns()` when its first fragment was
    /// steered.
    nat_frags: Map<12, 8>,
    /// `struct frag6_key` (40 bytes) -> as `nat_frags`.
    nat6_frags: Map<40, 8>,
    stats: Map<4, 8>,
}

impl SteerProgram {
    /// Opens the embedded object and loads it into the kernel (the verifier runs here).
    /// Nothing is attached. Needs `CAP_BPF` (root).
    pub fn load() -> Result<SteerProgram, SteerError> {
        SteerProgram::load_with(false)
    }

    /// [`SteerProgram::load`], with `multi_buffer`: loaded with `BPF_F_XDP_HAS_FRAGS`, for an
    /// interface whose MTU lets in frames longer than one AF_XDP buffer (the sockets are
    /// bound with `XDP_USE_SG`). The program reads only headers, which lie in the first
    /// buffer; a frame whose headers do not is passed to the kernel as any frame it cannot
    /// parse.
    pub fn load_with(multi_buffer: bool) -> Result<SteerProgram, SteerError> {
        let object = Object::open(OBJECT, "steer.bpf.o")?;
        if multi_buffer {
            object.set_has_frags(PROGRAM_CNAME)?;
            if let Some(errno) = super::fault::refused(super::fault::Step::Load) {
                let what = "steer.bpf.o (injected: XLB_TEST_REFUSE_MULTI_BUFFER=load)".into();
                return Err(SteerError::Call { call: "bpf_object__load", what, errno });
            }
        }
        let xsks = object.map(c"xsks", MAX_QUEUES as usize)?;
        let dst = object.map(c"dst", MAX_DST)?;
        let nat_src = object.map(c"nat_src", MAX_NAT_SRC)?;
        let arp_seen = object.map(c"arp_seen", ARP_SEEN_ENTRIES)?;
        let dst6 = object.map(c"dst6", MAX_DST)?;
        let nat6_src = object.map(c"nat6_src", MAX_NAT_SRC)?;
        let ndp_seen = object.map(c"ndp_seen", ARP_SEEN_ENTRIES)?;
        let nat_frags = object.map(c"nat_frags", FRAGMENT_ENTRIES)?;
        let nat6_frags = object.map(c"nat6_frags", FRAGMENT_ENTRIES)?;
        let stats = object.map(c"stats", STAT_COUNT as usize)?;
        object.load()?;
        Ok(SteerProgram {
            program_fd: object.program_fd(PROGRAM_CNAME)?,
            xsks: object.loaded(xsks)?,
            dst: object.loaded(dst)?,
            nat_src: object.loaded(nat_src)?,
            arp_seen: object.loaded(arp_seen)?,
            dst6: object.loaded(dst6)?,
            nat6_src: object.loaded(nat6_src)?,
            ndp_seen: object.loaded(ndp_seen)?,
            nat_frags: object.loaded(nat_frags)?,
            nat6_frags: object.loaded(nat6_frags)?,
            stats: object.loaded(stats)?,
            _object: object,
        })
    }

    /// Makes the maps equal to `rules`: entries that went are deleted, then new or changed
    /// ones written; an entry that stays is never touched, so it is never missing. Nothing
    /// changes if the rules do not fit.
    pub fn set_rules(&self, rules: &SteerRules) -> Result<(), SteerError> {
        rules.check_fits()?;
        self.dst.sync(&rules.v4.dst_entries())?;
        self.nat_src.sync(&rules.v4.nat_src_entries())?;
        self.dst6.sync(&rules.v6.dst_entries())?;
        self.nat6_src.sync(&rules.v6.nat_src_entries())
    }

    /// Attaches the program to interface `ifindex` in `mode` through a BPF link, which the
    /// kernel removes when the returned [`Attachment`] drops or the process dies. Fails with
    /// `EBUSY` or `EEXIST` if another program is attached there.
    pub fn attach(&self, ifindex: u32, mode: XdpMode) -> Result<Attachment, SteerError> {
        attach_program(self.program_fd, ifindex, mode)
    }

    /// Attaches natively if the driver supports it, else generically.
    pub fn attach_best(&self, ifindex: u32) -> Result<(Attachment, XdpMode), SteerError> {
        match self.attach(ifindex, XdpMode::Native) {
            Ok(attachment) => Ok((attachment, XdpMode::Native)),
            Err(_) => self.attach(ifindex, XdpMode::Generic).map(|a| (a, XdpMode::Generic)),
        }
    }

    /// Steers queue `queue`'s frames into the AF_XDP socket `xsk_fd` (bound to that queue).
    pub fn set_socket(&self, queue: u32, xsk_fd: RawFd) -> Result<(), SteerError> {
        if queue >= MAX_QUEUES {
            return Err(SteerError::QueueOutOfRange { queue });
        }
        self.xsks.update(&queue.to_ne_bytes(), &(xsk_fd as u32).to_ne_bytes())
    }

    /// Removes queue `queue`'s socket: its frames xlb owns fall back to the kernel.
    pub fn clear_socket(&self, queue: u32) -> Result<(), SteerError> {
        if queue >= MAX_QUEUES {
            return Err(SteerError::QueueOutOfRange { queue });
        }
        self.xsks.delete(&queue.to_ne_bytes()).map(drop)
    }

    /// What ARP has shown: sender address, MAC and when it was last seen, in
    /// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`), sorted by address.
    pub fn arp_seen(&self) -> Result<Vec<(Ipv4Addr, MacAddr, u64)>, SteerError> {
        seen(&self.arp_seen)
    }

    /// What NDP has shown, as [`arp_seen`](Self::arp_seen): a solicitation's source, an
    /// advertisement's target, with the MAC of its link-layer address option.
    pub fn ndp_seen(&self) -> Result<Vec<(Ipv6Addr, MacAddr, u64)>, SteerError> {
        seen(&self.ndp_seen)
    }

    /// How many NAT replies' datagrams the program remembers steering a first fragment of,
    /// (IPv4, IPv6), however long ago (the LRU maps `nat_frags`, `nat6_frags`).
    pub fn fragmented_replies(&self) -> Result<(usize, usize), SteerError> {
        Ok((self.nat_frags.entries()?.len(), self.nat6_frags.entries()?.len()))
    }

    /// The program's counters, summed over all CPUs.
    pub fn stats(&self) -> Result<SteerStats, SteerError> {
        let cpus = possible_cpus()?;
        let mut per_cpu = vec![0u8; 8 * cpus];
        let mut totals = [0u64; STAT_COUNT as usize];
        for (index, total) in (0..STAT_COUNT).zip(totals.iter_mut()) {
            if self.stats.lookup_into(&index.to_ne_bytes(), &mut per_cpu)? {
                *total = sum_per_cpu(&per_cpu);
            }
        }
        Ok(SteerStats {
            steered: totals[STAT_STEERED as usize],
            passed: totals[STAT_PASSED as usize],
            no_socket: totals[STAT_NO_SOCKET as usize],
        })
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN`, as if it arrived on queue
    /// `rx_queue` of no particular device. The kernel accepts a queue other than 0 only
    /// with a device: use [`test_run_on`](Self::test_run_on) for that. Maps are the live
    /// ones: `arp_seen` learns and `stats` count. Needs `CAP_BPF`.
    pub fn test_run(&self, frame: &[u8], rx_queue: u32) -> Result<XdpAction, SteerError> {
        self.test_run_on(frame, 0, rx_queue)
    }

    /// [`test_run`](Self::test_run) on queue `rx_queue` of device `ifindex` (0: none), in
    /// the calling thread's network namespace.
    ///
    /// The kernel refuses (`EINVAL`) frames shorter than an Ethernet header: no driver
    /// delivers one, and the verifier has proved the program safe on them anyway.
    pub fn test_run_on(
        &self,
        frame: &[u8],
        ifindex: u32,
        rx_queue: u32,
    ) -> Result<XdpAction, SteerError> {
        let run = test_run(self.program_fd, frame, ifindex, rx_queue, &mut [])?;
        Ok(XdpAction::from_retval(run.retval))
    }
}

/// The entries of `arp_seen` or `ndp_seen` (`struct arp_entry` values), sorted by address.
fn seen<const K: usize, A: From<[u8; K]>>(
    map: &Map<K, 16>,
) -> Result<Vec<(A, MacAddr, u64)>, SteerError> {
    Ok(map
        .entries()?
        .into_iter()
        .map(|(key, value)| {
            let [m0, m1, m2, m3, m4, m5, _, _, t @ ..] = value;
            (A::from(key), MacAddr([m0, m1, m2, m3, m4, m5]), u64::from_ne_bytes(t))
        })
        .collect())
}

/// Attaches program `program_fd` (an XDP program) to interface `ifindex` in `mode` through
/// a BPF link, which the kernel removes when the returned [`Attachment`] drops or the
/// process dies. Fails with `EBUSY` or `EEXIST` if another program is attached there.
pub(crate) fn attach_program(
    program_fd: RawFd,
    ifindex: u32,
    mode: XdpMode,
) -> Result<Attachment, SteerError> {
    // SAFETY: an all-zero bpf_link_create_opts is the "no options" value.
    let mut opts: sys::bpf_link_create_opts = unsafe { mem::zeroed() };
    opts.flags = mode.flags();
    opts.sz = opts_size!(opts, bpf_link_create_opts, flags);
    // SAFETY: `program_fd` is a loaded program; `opts` is initialised and lives across the
    // call.
    let ret = unsafe {
        sys::bpf_link_create(program_fd, ifindex as c_int, sys::bpf_attach_type_BPF_XDP, &opts)
    };
    let fd = check(ret, "bpf_link_create", || format!("XDP {mode:?} on ifindex {ifindex}"))?;
    // SAFETY: bpf_link_create returned a fresh fd that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Attachment { link, ifindex, mode })
}

/// The program attached to one interface through a BPF link. Dropping it closes the link,
/// and the kernel detaches the program. The link holds the program, so it may outlive the
/// [`SteerProgram`].
pub struct Attachment {
    link: OwnedFd,
    ifindex: u32,
    mode: XdpMode,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("link_fd", &self.link.as_raw_fd())
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .finish()
    }
}

impl Attachment {
    /// Native or generic.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface it is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

/// Detaches an `xlb_steer` program that a killed run left attached to `ifindex` the old way
/// (netlink, not a link): `Ok(true)` if one was removed. A program with another name is
/// never touched, nor one attached through a live link (another xlb running: the kernel
/// refuses with `EBUSY`); both give `Ok(false)`. Programs attached by [`SteerProgram::attach`]
/// go with their process, so normally there is nothing to remove.
pub fn remove_stale(ifindex: u32) -> Result<bool, SteerError> {
    remove_named(ifindex, PROGRAM_NAME)
}

/// Detaches every program named `name` attached to `ifindex` the old way (netlink):
/// `Ok(true)` if one was removed. Programs of other names are never touched, nor one held
/// by a live link (the kernel refuses with `EBUSY`: left alone).
pub(crate) fn remove_named(ifindex: u32, name: &str) -> Result<bool, SteerError> {
    let mut removed = false;
    for (program, flags) in attached_named(ifindex, name)? {
        let id = program.as_raw_fd();
        // SAFETY: all-zero is the "no options" value; the fields are set below.
        let mut detach: sys::bpf_xdp_attach_opts = unsafe { mem::zeroed() };
        detach.old_prog_fd = program.as_raw_fd();
        detach.sz = opts_size!(detach, bpf_xdp_attach_opts, old_prog_fd);
        // SAFETY: `detach` is initialised and lives across the call. With `old_prog_fd`
        // set, libbpf asks for XDP_FLAGS_REPLACE: the kernel detaches only if that very
        // program is still the one attached.
        let ret = unsafe { sys::bpf_xdp_detach(ifindex as c_int, flags, &detach) };
        match check(ret, "bpf_xdp_detach", || format!("{name} (fd {id}) on ifindex {ifindex}")) {
            Ok(_) => removed = true,
            // Attached through a link, which a live process holds: not stale.
            Err(error) if error.errno() == Some(libc::EBUSY) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(removed)
}

/// The programs named `name` attached to `ifindex` (driver, generic or offloaded), each
/// with the `XDP_FLAGS_*` mode flag it is attached under.
pub(crate) fn attached_named(ifindex: u32, name: &str) -> Result<Vec<(OwnedFd, u32)>, SteerError> {
    // SAFETY: an all-zero bpf_xdp_query_opts is the "no options" value.
    let mut query: sys::bpf_xdp_query_opts = unsafe { mem::zeroed() };
    query.sz = opts_size!(query, bpf_xdp_query_opts, skb_prog_id);
    // SAFETY: `query` is initialised and lives across the call, which fills it.
    let ret = unsafe { sys::bpf_xdp_query(ifindex as c_int, 0, &mut query) };
    check(ret, "bpf_xdp_query", || format!("ifindex {ifindex}"))?;
    let mut found = Vec::new();
    for (id, flags) in [
        (query.drv_prog_id, XDP_FLAGS_DRV_MODE),
        (query.skb_prog_id, XDP_FLAGS_SKB_MODE),
        (query.hw_prog_id, XDP_FLAGS_HW_MODE),
    ] {
        if id == 0 {
            continue;
        }
        let Some(program) = program_by_id(id)? else { continue };
        if program_name(&program)? == name {
            found.push((program, flags));
        }
    }
    Ok(found)
}

/// An fd for program `id`, or `None` if it is gone already.
fn program_by_id(id: u32) -> Result<Option<OwnedFd>, SteerError> {
    // SAFETY: a plain syscall wrapper taking an integer.
    let ret = unsafe { sys::bpf_prog_get_fd_by_id(id) };
    match check(ret, "bpf_prog_get_fd_by_id", || format!("program id {id}")) {
        // SAFETY: the call returned a fresh fd that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(error) if error.errno() == Some(libc::ENOENT) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The name the kernel keeps for a program (at most 15 bytes).
fn program_name(program: &OwnedFd) -> Result<String, SteerError> {
    // SAFETY: an all-zero bpf_prog_info asks for no arrays, which the kernel requires.
    let mut info: sys::bpf_prog_info = unsafe { mem::zeroed() };
    let mut length = mem::size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: `info` has `length` writable bytes; both live across the call.
    let ret = unsafe { sys::bpf_prog_get_info_by_fd(program.as_raw_fd(), &mut info, &mut length) };
    check(ret, "bpf_prog_get_info_by_fd", || format!("fd {}", program.as_raw_fd()))?;
    let name: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Ok(String::from_utf8_lossy(&name).into_owned())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::ptr;
    use std::time::{Duration, Instant};

    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    use super::*;
    use crate::control::Config;
    use crate::dataplane::io::afxdp::bpf::plan;
    use crate::dataplane::io::afxdp::testns::Netns;
    use crate::testkit::{self, ACK, SYN, SYN_ACK};

    /// A DR, two NAT (TCP and UDP, sharing a backend) and a FullNAT service.
    const CONFIG: &str = r#"
        [[interface]]
        name = "eth0"
        addr = "10.1.1.10/24"
        mac = "02:00:00:00:00:01"
        gateway = "10.1.1.1"

        [[service]]
        vip = "10.1.1.100"
        port = 80
        forward = "dr"
        [[service.backend]]
        addr = "10.1.1.11"

        [[service]]
        vip = "10.1.1.101"
        port = 8080
        forward = "nat"
        [[service.backend]]
        addr = "10.1.1.21"
        port = 80
        [[service.backend]]
        addr = "10.1.1.22"

        [[service]]
        vip = "10.1.1.101"
        port = 53
        proto = "udp"
        forward = "nat"
        [[service.backend]]
        addr = "10.1.1.21"
        port = 5353

        [[service]]
        vip = "10.1.1.102"
        port = 443
        forward = "fullnat"
        local_addrs = ["10.1.1.200", "10.1.1.201"]
        [[service.backend]]
        addr = "10.3.3.31"
        port = 8443
    "#;

    const BOX: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 10);
    const DR_VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 100);
    const NAT_VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 101);
    const FULLNAT_VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 102);
    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 200);
    const DR_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 11);
    const NAT_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 21);
    const FULLNAT_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 3, 3, 31);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
    const LB_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xc7]);
    const BACKEND_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x21]);

    /// Rules for IPv4 only.
    fn v4_rules(v4: FamilyRules<V4>) -> SteerRules {
        SteerRules { v4, ..SteerRules::default() }
    }

    fn snapshot(text: &str) -> Snapshot {
        let config = Config::parse(text, "test.toml").expect("valid config");
        Snapshot::build(&config, 1).expect("valid snapshot")
    }

    #[test]
    fn rules_hold_announced_addresses_nat_backends_and_interfaces() {
        let rules = SteerRules::from_snapshot(&snapshot(CONFIG));
        let local_2 = Ipv4Addr::new(10, 1, 1, 201);
        assert_eq!(rules.v4.dst, [DR_VIP, NAT_VIP, FULLNAT_VIP, LOCAL, local_2]);
        // NAT backends only: not the DR backend, not the FullNAT one (its replies go to a
        // local address, which `dst` already steers).
        assert_eq!(
            rules.v4.nat_src,
            [
                (NAT_BACKEND, 80, Proto::Tcp),
                (NAT_BACKEND, 5353, Proto::Udp),
                (Ipv4Addr::new(10, 1, 1, 22), 8080, Proto::Tcp),
            ]
        );
        assert_eq!(rules.v4.nat_src_icmp, [NAT_BACKEND, Ipv4Addr::new(10, 1, 1, 22)]);
        assert_eq!(rules.v4.interface_addrs, [BOX]);
    }

    #[test]
    fn each_arm_steers_only_the_nat_backends_it_reaches() {
        let two_arms = CONFIG.replacen(
            "[[service]]",
            "[[interface]]\nname = \"eth1\"\naddr = \"10.3.3.10/24\"\nmac = \"02:00:00:00:00:02\"\n\n[[service]]",
            1,
        );
        let text = two_arms.replace("addr = \"10.3.3.31\"\n        port = 8443", "addr = \"10.3.3.31\"\n        port = 8443\n\n        [[service]]\n        vip = \"10.1.1.103\"\n        port = 80\n        forward = \"nat\"\n        [[service.backend]]\n        addr = \"10.3.3.32\"\n        port = 8080");
        let arms = snapshot(&text);
        let rules = SteerRules::from_snapshot(&arms);
        let arm2 = Ipv4Addr::new(10, 3, 3, 32);
        assert!(rules.v4.nat_src.contains(&(arm2, 8080, Proto::Tcp)));
        let eth0 = rules.for_interface(&arms, IfaceId(0));
        let eth1 = rules.for_interface(&arms, IfaceId(1));
        assert!(!eth0.v4.nat_src.iter().any(|&(addr, _, _)| addr == arm2), "{eth0:?}");
        assert_eq!(eth0.v4.nat_src.len() + 1, rules.v4.nat_src.len());
        assert_eq!(eth1.v4.nat_src, [(arm2, 8080, Proto::Tcp)]);
        assert_eq!(eth1.v4.nat_src_icmp, [arm2]);
        assert!(!eth0.v4.nat_src_icmp.contains(&arm2));
        // Addresses xlb owns are steered on every arm.
        assert_eq!((&eth0.v4.dst, &eth1.v4.dst), (&rules.v4.dst, &rules.v4.dst));
        assert_eq!(eth1.v4.interface_addrs, rules.v4.interface_addrs);
        // One interface: unchanged.
        let one = snapshot(CONFIG);
        let rules = SteerRules::from_snapshot(&one);
        assert_eq!(rules.for_interface(&one, IfaceId(0)), rules);
        assert!(rules.check_fits().is_ok());
    }

    #[test]
    fn dr_only_rules_steer_no_backend() {
        let dr_only = &CONFIG[..CONFIG.find("[[service]]\n        vip = \"10.1.1.101\"").unwrap()];
        let rules = SteerRules::from_snapshot(&snapshot(dr_only));
        assert_eq!(rules.v4.dst, [DR_VIP]);
        assert!(rules.v4.nat_src.is_empty() && rules.v4.nat_src_icmp.is_empty());
        assert_eq!(
            SteerRules::from_snapshot(&snapshot(&CONFIG[..CONFIG.find("[[service]]").unwrap()])),
            SteerRules {
                v4: FamilyRules { interface_addrs: vec![BOX], ..FamilyRules::default() },
                ..SteerRules::default()
            }
        );
    }

    #[test]
    fn map_entries_are_laid_out_as_the_program_reads_them() {
        let rules = FamilyRules::<V4> {
            dst: vec![DR_VIP, BOX],
            nat_src: vec![(NAT_BACKEND, 0x1f90, Proto::Udp)],
            nat_src_icmp: vec![NAT_BACKEND],
            interface_addrs: vec![BOX],
        };
        let dst = rules.dst_entries();
        assert_eq!(dst.len(), 2);
        assert_eq!(dst[&[10, 1, 1, 100]], [OWNER_XLB]);
        // An address that is both is the kernel's, as Snapshot::owned has it.
        assert_eq!(dst[&[10, 1, 1, 10]], [OWNER_KERNEL]);
        let keys: Vec<[u8; 8]> = rules.nat_src_entries().into_keys().collect();
        assert_eq!(keys, [[10, 1, 1, 21, 0, 0, 1, 0], [10, 1, 1, 21, 0x1f, 0x90, 17, 0]]);
    }

    #[test]
    fn ipv6_map_entries_are_laid_out_as_the_program_reads_them() {
        let backend: Ipv6Addr = "2001:db8::21".parse().unwrap();
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let rules = FamilyRules::<V6>::new(
            &[vip, vip],
            &[(backend, 0x1f90, Proto::Udp), (backend, 0x1f90, Proto::Udp)],
            &[vip],
        );
        assert_eq!((rules.dst.len(), rules.nat_src.len(), rules.nat_src_icmp.len()), (1, 1, 1));
        let dst = rules.dst_entries();
        assert_eq!(dst.len(), 1);
        assert_eq!(dst[&vip.octets()], [OWNER_KERNEL], "the box's own wins, as for IPv4");
        let keys: Vec<[u8; 20]> = rules.nat_src_entries().into_keys().collect();
        let key = |port: [u8; 2], proto: u8| {
            let mut key = [0u8; 20];
            key[..16].copy_from_slice(&backend.octets());
            key[16..18].copy_from_slice(&port);
            key[18] = proto;
            key
        };
        assert_eq!(keys, [key([0, 0], 58), key([0x1f, 0x90], 17)]);
    }

    /// A dual-stack box: CONFIG's IPv4 services and interface, an IPv6 address on eth0 and a
    /// second arm (eth1, IPv6 only reached there) with a DR, a NAT and a FullNAT IPv6
    /// service.
    const CONFIG6: &str = r#"
        [[interface]]
        name = "eth0"
        addr = "10.1.1.10/24"
        mac = "02:00:00:00:00:01"
        addr6 = "2001:db8::10/64"

        [[interface]]
        name = "eth1"
        addr = "10.3.3.10/24"
        mac = "02:00:00:00:00:02"
        addr6 = "2001:db8:3::10/64"

        [[service]]
        vip = "10.1.1.101"
        port = 80
        forward = "nat"
        [[service.backend]]
        addr = "10.1.1.21"

        [[service]]
        vip = "2001:db8::100"
        port = 80
        forward = "dr"
        [[service.backend]]
        addr = "2001:db8::11"

        [[service]]
        vip = "2001:db8::101"
        port = 53
        proto = "udp"
        forward = "nat"
        [[service.backend]]
        addr = "2001:db8::21"
        port = 5353
        [[service.backend]]
        addr = "2001:db8:3::32"
        port = 5353

        [[service]]
        vip = "2001:db8::102"
        port = 443
        forward = "fullnat"
        local_addrs = ["2001:db8::200"]
        [[service.backend]]
        addr = "2001:db8:3::31"
        port = 8443
    "#;

    #[test]
    fn rules_hold_ipv6_services_apart_from_ipv4() {
        let ip = |text: &str| text.parse::<Ipv6Addr>().unwrap();
        let dual = snapshot(CONFIG6);
        let rules = SteerRules::from_snapshot(&dual);
        assert_eq!(rules.v4.dst, [NAT_VIP]);
        assert_eq!(rules.v4.nat_src, [(NAT_BACKEND, 80, Proto::Tcp)]);
        assert_eq!(rules.v4.interface_addrs, [BOX, Ipv4Addr::new(10, 3, 3, 10)]);
        let v6 = &rules.v6;
        let vips = ["2001:db8::100", "2001:db8::101", "2001:db8::102", "2001:db8::200"];
        assert_eq!(v6.dst, vips.map(ip));
        let (near, far) = (ip("2001:db8::21"), ip("2001:db8:3::32"));
        assert_eq!(v6.nat_src, [(near, 5353, Proto::Udp), (far, 5353, Proto::Udp)]);
        assert_eq!(v6.nat_src_icmp, [near, far]);
        assert_eq!(v6.interface_addrs, [ip("2001:db8::10"), ip("2001:db8:3::10")]);
        assert!(rules.check_fits().is_ok());
        // Each arm steers the IPv6 NAT backends it reaches, as for IPv4.
        let eth0 = rules.for_interface(&dual, IfaceId(0));
        let eth1 = rules.for_interface(&dual, IfaceId(1));
        assert_eq!(
            (eth0.v6.nat_src_icmp.as_slice(), eth1.v6.nat_src_icmp.as_slice()),
            (&[near][..], &[far][..])
        );
        assert_eq!(eth1.v6.nat_src, [(far, 5353, Proto::Udp)]);
        assert_eq!((&eth0.v6.dst, &eth1.v6.dst), (&v6.dst, &v6.dst));
        // An IPv4-only snapshot steers no IPv6.
        assert_eq!(SteerRules::from_snapshot(&snapshot(CONFIG)).v6, FamilyRules::default());
    }

    #[test]
    fn actions_decode_like_the_kernel() {
        let decoded: Vec<_> = (0..6).map(XdpAction::from_retval).collect();
        use XdpAction::*;
        assert_eq!(decoded, [Aborted, Drop, Pass, Tx, Redirect, Aborted]);
    }

    proptest! {
        /// Applying the plan gives the wanted map, and an entry that stays is neither
        /// deleted nor rewritten (so the program never misses it).
        #[test]
        fn plan_reaches_wanted_without_touching_kept_entries(
            current in proptest::collection::btree_map(0u8..32, 0u8..3, 0..24),
            wanted in proptest::collection::btree_map(0u8..32, 0u8..3, 0..24),
        ) {
            let (gone, changed) = plan(&current, &wanted);
            let mut map = current.clone();
            for key in &gone {
                prop_assert!(!wanted.contains_key(key));
                prop_assert!(map.remove(key).is_some());
            }
            for (key, value) in &changed {
                prop_assert_ne!(current.get(key), Some(value));
                map.insert(*key, *value);
            }
            prop_assert_eq!(map, wanted);
        }
    }

    // ---- Root-only: the real program through BPF_PROG_TEST_RUN, and real attachment. ----

    /// True as root; otherwise skips (or fails under `XLB_REQUIRE_ROOT_TESTS=1`).
    fn root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        assert_ne!(
            std::env::var("XLB_REQUIRE_ROOT_TESTS").as_deref(),
            Ok("1"),
            "XLB_REQUIRE_ROOT_TESTS=1 but not root"
        );
        eprintln!("skipped: needs root");
        false
    }

    /// An AF_XDP socket, unbound: enough for the XSKMAP, so `bpf_redirect_map` finds an
    /// entry and the program returns `XDP_REDIRECT` (a test run redirects nothing).
    fn xdp_socket() -> OwnedFd {
        // SAFETY: a plain syscall; the fd it returns is checked and then owned.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket(AF_XDP): {}", io::Error::last_os_error());
        // SAFETY: `fd` is fresh and owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
        testkit::tcp(CLIENT_MAC, LB_MAC, src, dst, SYN, b"")
    }

    fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
        testkit::udp(CLIENT_MAC, LB_MAC, src, dst, b"hello")
    }

    fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let quoted = testkit::udp(LB_MAC, BACKEND_MAC, (dst, 40000), (src, 5353), b"hi");
        testkit::icmp_frag_needed(BACKEND_MAC, LB_MAC, src, dst, 1400, &quoted, 8)
    }

    fn arp_request(sender: (MacAddr, Ipv4Addr), target: Ipv4Addr) -> Vec<u8> {
        testkit::arp(true, sender.0, sender.1, MacAddr::ZERO, target)
    }

    /// `frame` with four bytes of IPv4 options (IHL 6) that repeat its ports, so a program
    /// that ignored IHL would read the same ports there (a source port below 256 makes the
    /// first byte 0, "end of options").
    fn with_ip_options(frame: &[u8]) -> Vec<u8> {
        let mut out = frame[..34].to_vec();
        out.extend_from_slice(&frame[34..38]);
        out.extend_from_slice(&frame[34..]);
        out[14] = 0x46;
        let total = u16::from_be_bytes([out[16], out[17]]) + 4;
        out[16..18].copy_from_slice(&total.to_be_bytes());
        out
    }

    /// `frame` with `tags` (TPIDs and TCIs) after its MACs.
    fn with_tags(frame: &[u8], tags: &[u8]) -> Vec<u8> {
        let mut out = frame[..12].to_vec();
        out.extend_from_slice(tags);
        out.extend_from_slice(&frame[12..]);
        out
    }

    /// The tags [`with_vlan_cases`] puts on every case.
    const TAG_SETS: [(&str, &[u8]); 3] = [
        ("802.1Q VLAN 7", &[0x81, 0x00, 0x00, 0x07]),
        ("802.1ad 100 + 802.1Q 7", &[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x07]),
        ("priority tag (VLAN 0)", &[0x81, 0x00, 0xa0, 0x00]),
    ];

    /// `cases`, then every one of them again tagged with each of [`TAG_SETS`] (steered alike:
    /// the program reads past one or two tags), then malformed tags around `to_vip` (a
    /// frame xlb owns untagged), which are the kernel's: a third tag, a frame cut inside
    /// its tag or its inner tag.
    fn with_vlan_cases(
        mut cases: Vec<(String, Vec<u8>, bool)>,
        to_vip: &[u8],
    ) -> Vec<(String, Vec<u8>, bool)> {
        let untagged = cases.clone();
        for (label, tags) in TAG_SETS {
            for (what, frame, owned) in &untagged {
                cases.push((format!("{what}, {label}"), with_tags(frame, tags), *owned));
            }
        }
        let three = [0x88, 0xa8, 0, 100, 0x81, 0, 0, 7, 0x81, 0, 0, 8];
        cases.push(("to a VIP with three tags".into(), with_tags(to_vip, &three), false));
        let cut = with_tags(to_vip, TAG_SETS[0].1);
        cases.push(("to a VIP cut inside its tag".into(), cut[..15].to_vec(), false));
        let cut = with_tags(to_vip, TAG_SETS[1].1);
        cases.push(("to a VIP cut inside its inner tag".into(), cut[..19].to_vec(), false));
        cases.push((
            "to a VIP cut inside the EtherType after two tags".into(),
            cut[..21].to_vec(),
            false,
        ));
        cases
    }

    /// `frame` (Ethernet, IPv4) as a fragment of datagram `ident` at `offset` (8-byte units),
    /// `more` (fragments) set or not. Its bytes stay: a later fragment's payload begins with
    /// `frame`'s ports, so a program that read ports there would find them.
    fn fragment4(frame: &[u8], ident: u16, offset: u16, more: bool) -> Vec<u8> {
        let mut out = frame.to_vec();
        out[18..20].copy_from_slice(&ident.to_be_bytes());
        out[20..22].copy_from_slice(&(u16::from(more) << 13 | offset).to_be_bytes());
        out
    }

    /// `frame` (Ethernet, IPv6) with a fragment header of datagram `ident` at `offset`
    /// (8-byte units), `more` set or not, after `chain` (as [`with_chain`]).
    fn fragment6(frame: &[u8], chain: &[(u8, u8)], ident: u32, offset: u16, more: bool) -> Vec<u8> {
        let mut header = [0u8; 8];
        header[2..4].copy_from_slice(&(offset << 3 | u16::from(more)).to_be_bytes());
        header[4..].copy_from_slice(&ident.to_be_bytes());
        let chain: Vec<(u8, Vec<u8>)> =
            chain.iter().map(|&(kind, len)| (kind, testkit::ext_header(kind, len))).collect();
        let mut refs: Vec<(u8, &[u8])> = chain.iter().map(|(k, h)| (*k, h.as_slice())).collect();
        refs.push((44, &header));
        testkit::with_ext_headers(frame, &refs)
    }

    fn ipv6_udp() -> Vec<u8> {
        let builder = PacketBuilder::ethernet2(CLIENT_MAC.0, LB_MAC.0)
            .ipv6(Ipv6Addr::LOCALHOST.octets(), Ipv6Addr::LOCALHOST.octets(), 64)
            .udp(40000, 53);
        let mut frame = Vec::new();
        builder.write(&mut frame, b"v6").unwrap();
        frame
    }

    /// (what, frame, whether xlb owns it).
    fn cases() -> Vec<(String, Vec<u8>, bool)> {
        let client = (CLIENT, 40000);
        let to_vip = tcp(client, (DR_VIP, 80));
        let nat_reply = testkit::tcp(BACKEND_MAC, LB_MAC, (NAT_BACKEND, 80), client, SYN_ACK, b"");
        let vip_request = arp_request((CLIENT_MAC, CLIENT), DR_VIP);
        let truncating_sender = (MacAddr([0x02, 0, 0, 0, 0, 0x99]), Ipv4Addr::new(192, 0, 2, 99));
        let mut cases: Vec<(String, Vec<u8>, bool)> = vec![
            ("tcp to a DR VIP".into(), to_vip.clone(), true),
            ("udp to a NAT VIP".into(), udp(client, (NAT_VIP, 53)), true),
            ("tcp to a VIP port with no service".into(), tcp(client, (NAT_VIP, 9999)), true),
            ("tcp to a FullNAT VIP".into(), tcp(client, (FULLNAT_VIP, 443)), true),
            (
                "tcp to a FullNAT local address".into(),
                tcp((FULLNAT_BACKEND, 8443), (LOCAL, 61000)),
                true,
            ),
            ("tcp from a NAT backend's port".into(), nat_reply.clone(), true),
            ("udp from a NAT backend's port".into(), udp((NAT_BACKEND, 5353), client), true),
            ("tcp from a NAT backend, another port".into(), tcp((NAT_BACKEND, 81), client), false),
            ("udp from a NAT backend's tcp port".into(), udp((NAT_BACKEND, 80), client), false),
            (
                "tcp from a NAT backend's port to the box".into(),
                tcp((NAT_BACKEND, 80), (BOX, 50000)),
                false,
            ),
            ("tcp from a DR backend".into(), tcp((DR_BACKEND, 80), client), false),
            // No reply is multicast or broadcast: a backend's mDNS, DHCP or NTP broadcast
            // from its service port is the kernel's (issue 10, item 9).
            (
                "udp from a NAT backend's port to a multicast group (mDNS)".into(),
                testkit::udp(
                    BACKEND_MAC,
                    MacAddr([0x01, 0, 0x5e, 0, 0, 0xfb]),
                    (NAT_BACKEND, 5353),
                    (Ipv4Addr::new(224, 0, 0, 251), 5353),
                    b"mdns",
                ),
                false,
            ),
            (
                "udp from a NAT backend's port, broadcast".into(),
                testkit::udp(
                    BACKEND_MAC,
                    MacAddr::BROADCAST,
                    (NAT_BACKEND, 5353),
                    (Ipv4Addr::new(10, 1, 1, 255), 5353),
                    b"bcast",
                ),
                false,
            ),
            (
                "udp from a NAT backend's port to 255.255.255.255 at the box's MAC".into(),
                testkit::udp(
                    BACKEND_MAC,
                    LB_MAC,
                    (NAT_BACKEND, 5353),
                    (Ipv4Addr::BROADCAST, 5353),
                    b"bcast",
                ),
                false,
            ),
            (
                "udp from a NAT backend's port to a multicast group at the box's MAC".into(),
                testkit::udp(
                    BACKEND_MAC,
                    LB_MAC,
                    (NAT_BACKEND, 5353),
                    (Ipv4Addr::new(239, 1, 2, 3), 5353),
                    b"group",
                ),
                false,
            ),
            ("icmp error from a NAT backend".into(), icmp_error(NAT_BACKEND, CLIENT), true),
            (
                "icmp error from a NAT backend to the box".into(),
                icmp_error(NAT_BACKEND, BOX),
                false,
            ),
            (
                "icmp error from another host".into(),
                icmp_error(Ipv4Addr::new(10, 1, 1, 99), CLIENT),
                false,
            ),
            (
                "icmp echo from a NAT backend".into(),
                testkit::icmp_echo(BACKEND_MAC, LB_MAC, NAT_BACKEND, CLIENT, 64, false, b"ping"),
                false,
            ),
            (
                "tcp to the box (ssh)".into(),
                testkit::tcp(CLIENT_MAC, LB_MAC, client, (BOX, 22), ACK, b""),
                false,
            ),
            ("arp request for a VIP".into(), vip_request.clone(), true),
            (
                "arp request for a local address".into(),
                arp_request((CLIENT_MAC, CLIENT), LOCAL),
                true,
            ),
            (
                "arp probe (sender 0.0.0.0) for a VIP".into(),
                arp_request((CLIENT_MAC, Ipv4Addr::UNSPECIFIED), NAT_VIP),
                true,
            ),
            ("arp request for the box".into(), arp_request((CLIENT_MAC, CLIENT), BOX), false),
            (
                "arp reply from a backend".into(),
                testkit::arp(false, BACKEND_MAC, NAT_BACKEND, LB_MAC, BOX),
                false,
            ),
            (
                "arp reply from another host claiming a VIP".into(),
                testkit::arp(false, BACKEND_MAC, DR_VIP, LB_MAC, Ipv4Addr::UNSPECIFIED),
                true,
            ),
            (
                "arp request from another host claiming a local address".into(),
                arp_request((BACKEND_MAC, LOCAL), BOX),
                true,
            ),
            ("ipv6".into(), ipv6_udp(), false),
            ("ihl 6 tcp to a VIP".into(), with_ip_options(&to_vip), true),
            ("ihl 6 tcp from a NAT backend's port".into(), with_ip_options(&nat_reply), false),
            // A NAT reply's first fragment is matched by its ports (and remembered: see
            // `program_steers_a_nat_replys_later_fragments_after_their_first`); every
            // datagram here has an identification of its own.
            (
                "first fragment of tcp from a NAT backend's port".into(),
                fragment4(&nat_reply, 0x100, 0, true),
                true,
            ),
            (
                "first fragment of udp from a NAT backend's port".into(),
                fragment4(&udp((NAT_BACKEND, 5353), client), 0x101, 0, true),
                true,
            ),
            (
                "later fragment from a NAT backend, its first never seen".into(),
                fragment4(&udp((NAT_BACKEND, 5353), client), 0x102, 185, false),
                false,
            ),
            (
                "first fragment from a NAT backend, another port".into(),
                fragment4(&udp((NAT_BACKEND, 5354), client), 0x103, 0, true),
                false,
            ),
            (
                "first fragment from a DR backend".into(),
                fragment4(&udp((DR_BACKEND, 5353), client), 0x104, 0, true),
                false,
            ),
            (
                "first fragment from a NAT backend's port to the box".into(),
                fragment4(&udp((NAT_BACKEND, 5353), (BOX, 40000)), 0x105, 0, true),
                false,
            ),
            (
                "first fragment of an icmp error from a NAT backend".into(),
                fragment4(&icmp_error(NAT_BACKEND, CLIENT), 0x106, 0, true),
                false,
            ),
            (
                "first fragment with options from a NAT backend's port".into(),
                fragment4(&with_ip_options(&nat_reply), 0x107, 0, true),
                false,
            ),
            (
                "later fragment to a VIP".into(),
                fragment4(&udp(client, (NAT_VIP, 53)), 0x108, 185, false),
                true,
            ),
            (
                "first fragment to the box".into(),
                fragment4(&udp(client, (BOX, 53)), 0x109, 0, true),
                false,
            ),
        ];
        // Cut short of what each decision reads, then just long enough. (Shorter than an
        // Ethernet header, the kernel refuses to test-run: see `frames_shorter_than_...`.)
        for (length, owned) in [(14, false), (20, false), (33, false), (34, true)] {
            cases.push((
                format!("tcp to a VIP cut to {length} bytes"),
                to_vip[..length].to_vec(),
                owned,
            ));
        }
        for (length, owned) in [(37, false), (38, true)] {
            cases.push((
                format!("NAT reply cut to {length} bytes"),
                nat_reply[..length].to_vec(),
                owned,
            ));
        }
        let cut_request = arp_request(truncating_sender, DR_VIP);
        cases.push((
            "arp request for a VIP cut to 41 bytes".into(),
            cut_request[..41].to_vec(),
            false,
        ));
        cases.push(("arp request for a VIP, 42 bytes".into(), vip_request[..42].to_vec(), true));
        with_vlan_cases(cases, &to_vip)
    }

    fn monotonic_ns() -> u64 {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `now` is a valid timespec for the call to fill.
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) }, 0);
        now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
    }

    /// Runs every case on queue 0, checking the action and which counter moved.
    fn run_cases(
        program: &SteerProgram,
        cases: &[(String, Vec<u8>, bool)],
        owned_action: XdpAction,
        owned_counter: fn(&SteerStats) -> u64,
    ) {
        for (what, frame, owned) in cases {
            let (what, owned) = (what.as_str(), *owned);
            let before = program.stats().unwrap();
            let action = program.test_run(frame, 0).unwrap_or_else(|e| panic!("{what}: {e}"));
            let after = program.stats().unwrap();
            let expected = if owned { owned_action } else { XdpAction::Pass };
            assert_eq!(action, expected, "{what}");
            let (counter, name): (fn(&SteerStats) -> u64, _) =
                if owned { (owned_counter, "owned") } else { (|s| s.passed, "passed") };
            assert_eq!(counter(&after), counter(&before) + 1, "{what}: {name} counter");
            let moved = |s: &SteerStats| s.steered + s.passed + s.no_socket;
            assert_eq!(moved(&after), moved(&before) + 1, "{what}: one counter per frame");
        }
    }

    #[test]
    fn program_steers_what_xlb_owns_and_passes_the_rest() {
        if !root() {
            return;
        }
        let program = SteerProgram::load().expect("load (verifier)");
        program.set_rules(&SteerRules::from_snapshot(&snapshot(CONFIG))).unwrap();
        let socket = xdp_socket();
        let started = monotonic_ns();

        // A socket on queue 0: what xlb owns is redirected.
        program.set_socket(0, socket.as_raw_fd()).unwrap();
        run_cases(&program, &cases(), XdpAction::Redirect, |s| s.steered);

        // No socket on the frame's queue: it falls back to the kernel, counted apart.
        program.clear_socket(0).unwrap();
        program.set_socket(1, socket.as_raw_fd()).unwrap();
        run_cases(&program, &cases(), XdpAction::Pass, |s| s.no_socket);
        program.clear_socket(1).unwrap();
        program.clear_socket(1).unwrap();
        assert!(matches!(
            program.set_socket(MAX_QUEUES, 0),
            Err(SteerError::QueueOutOfRange { .. })
        ));

        // ARP taught it the senders of well-formed ARP, and nothing else.
        let finished = monotonic_ns();
        let seen = program.arp_seen().unwrap();
        let mut learned: Vec<(Ipv4Addr, MacAddr)> =
            seen.iter().map(|&(ip, mac, _)| (ip, mac)).collect();
        learned.sort();
        let mut expected = [
            (NAT_BACKEND, BACKEND_MAC),
            (CLIENT, CLIENT_MAC),
            (DR_VIP, BACKEND_MAC),
            (LOCAL, BACKEND_MAC),
        ];
        expected.sort();
        assert_eq!(learned, expected);
        for (ip, _, seen_ns) in seen {
            assert!((started..=finished).contains(&seen_ns), "{ip} seen at {seen_ns}");
        }

        // Frames shorter than an Ethernet header cannot be test-run (no driver delivers one;
        // the verifier proved the program's bounds checks for every length).
        for length in [0, 1, 13] {
            let error = program.test_run(&tcp((CLIENT, 1), (DR_VIP, 80))[..length], 0).unwrap_err();
            assert_eq!(error.errno(), Some(libc::EINVAL), "{length} bytes: {error}");
        }

        // A queue other than 0 needs a device; the kernel says so.
        assert_eq!(
            program.test_run(&tcp((CLIENT, 1), (DR_VIP, 80)), 1).unwrap_err().errno(),
            Some(libc::EINVAL)
        );
    }

    // ---- IPv6 ----

    const BOX6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200);
    const NAT_BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x21);
    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7);
    const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
    const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

    /// A VIP and a local address, a NAT backend serving TCP :80 and UDP :5353, the box.
    fn rules6() -> SteerRules {
        let nat_backends = [(NAT_BACKEND6, 80, Proto::Tcp), (NAT_BACKEND6, 5353, Proto::Udp)];
        let v6 = FamilyRules::new(&[VIP6, LOCAL6], &nat_backends, &[BOX6]);
        SteerRules { v6, ..SteerRules::default() }
    }

    fn tcp6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16)) -> Vec<u8> {
        testkit::tcp6(CLIENT_MAC, LB_MAC, src, dst, SYN, b"")
    }

    fn udp6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16)) -> Vec<u8> {
        testkit::udp6(CLIENT_MAC, LB_MAC, src, dst, b"hello")
    }

    /// An ICMPv6 message of `msg_type` with four zero bytes and `body` after its checksum.
    fn icmpv6(src: Ipv6Addr, dst: (MacAddr, Ipv6Addr), hop_limit: u8, msg_type: u8) -> Vec<u8> {
        let kind =
            etherparse::Icmpv6Type::Unknown { type_u8: msg_type, code_u8: 0, bytes5to8: [0; 4] };
        let builder = PacketBuilder::ethernet2(CLIENT_MAC.0, dst.0.0)
            .ipv6(src.octets(), dst.1.octets(), hop_limit)
            .icmpv6(kind);
        let mut frame = Vec::new();
        builder.write(&mut frame, &[0; 16]).unwrap();
        frame
    }

    /// `frame` (Ethernet, IPv6) with an 8-byte hop-by-hop options header (one PadN) before
    /// its payload, as MLD reports carry one (router alert).
    fn with_hop_by_hop(frame: &[u8]) -> Vec<u8> {
        testkit::with_ext_headers(frame, &[(0, &testkit::ext_header(0, 0))])
    }

    /// `frame` (Ethernet, IPv6) with `chain` ((kind, length field) extension headers, padded
    /// or, for routing, segments left 0) before its payload.
    fn with_chain(frame: &[u8], chain: &[(u8, u8)]) -> Vec<u8> {
        let headers: Vec<(u8, Vec<u8>)> =
            chain.iter().map(|&(kind, len)| (kind, testkit::ext_header(kind, len))).collect();
        let refs: Vec<(u8, &[u8])> = headers.iter().map(|(k, h)| (*k, h.as_slice())).collect();
        testkit::with_ext_headers(frame, &refs)
    }

    /// `frame` (Ethernet, IPv6) with version nibble 4.
    fn with_version_4(frame: &[u8]) -> Vec<u8> {
        let mut out = frame.to_vec();
        out[14] = 0x40 | (out[14] & 0x0f);
        out
    }

    fn solicit(src: (MacAddr, Ipv6Addr), target: Ipv6Addr) -> Vec<u8> {
        testkit::neighbor_solicitation(src.0, src.1, target, None)
    }

    /// (what, frame, whether xlb owns it).
    fn cases6() -> Vec<(String, Vec<u8>, bool)> {
        let client = (CLIENT6, 40000);
        let to_vip = tcp6(client, (VIP6, 80));
        let nat_reply =
            testkit::tcp6(BACKEND_MAC, LB_MAC, (NAT_BACKEND6, 80), client, SYN_ACK, b"");
        let vip_solicit = solicit((CLIENT_MAC, CLIENT6), VIP6);
        let too_big = |src, dst| {
            let quoted = testkit::udp6(LB_MAC, BACKEND_MAC, (dst, 40000), (src, 5353), b"hi");
            testkit::icmpv6_packet_too_big(BACKEND_MAC, LB_MAC, src, dst, 1280, &quoted, 8)
        };
        let version_4 = with_version_4(&to_vip);
        let mut cases: Vec<(String, Vec<u8>, bool)> = vec![
            ("tcp6 to a VIP".into(), to_vip.clone(), true),
            ("udp6 to a VIP".into(), udp6(client, (VIP6, 53)), true),
            ("tcp6 to a local address".into(), tcp6((NAT_BACKEND6, 8443), (LOCAL6, 61000)), true),
            (
                "icmpv6 echo to a VIP".into(),
                testkit::icmpv6_echo(CLIENT_MAC, LB_MAC, CLIENT6, VIP6, 64, false, b"ping"),
                true,
            ),
            // Steered, for the pipeline to drop counted (`ipv6_ext_headers`).
            ("tcp6 to a VIP after a hop-by-hop header".into(), with_hop_by_hop(&to_vip), true),
            // As IPv4: the pipeline drops it, counted as `bad_ip_version`.
            ("version 4 in an IPv6 frame to a VIP".into(), version_4, true),
            (
                "version 4 in an IPv6 frame from a NAT backend's port".into(),
                with_version_4(&nat_reply),
                false,
            ),
            (
                "NS for a VIP, version 4".into(),
                with_version_4(&solicit((MacAddr([0x02, 0, 0, 0, 0, 0x98]), OTHER6), VIP6)),
                false,
            ),
            (
                "NS to a VIP for another target (unicast)".into(),
                testkit::neighbor_solicitation(CLIENT_MAC, CLIENT6, OTHER6, Some((VIP6, LB_MAC))),
                true,
            ),
            (
                "NA from a backend to the box, version 4".into(),
                with_version_4(&testkit::neighbor_advertisement(
                    (BACKEND_MAC, NAT_BACKEND6),
                    (LB_MAC, BOX6),
                    NAT_BACKEND6,
                    MacAddr([0x02, 0, 0, 0, 0, 0x97]),
                    true,
                )),
                false,
            ),
            ("tcp6 to the box (ssh)".into(), tcp6(client, (BOX6, 22)), false),
            ("tcp6 to another address".into(), tcp6(client, (OTHER6, 80)), false),
            ("tcp6 link-local".into(), tcp6((LINK_LOCAL, 1), (OTHER6, 22)), false),
            ("tcp6 from a NAT backend's port".into(), nat_reply.clone(), true),
            ("udp6 from a NAT backend's port".into(), udp6((NAT_BACKEND6, 5353), client), true),
            (
                "tcp6 from a NAT backend, another port".into(),
                tcp6((NAT_BACKEND6, 81), client),
                false,
            ),
            ("udp6 from a NAT backend's tcp port".into(), udp6((NAT_BACKEND6, 80), client), false),
            (
                "tcp6 from a NAT backend's port to the box".into(),
                tcp6((NAT_BACKEND6, 80), (BOX6, 50000)),
                false,
            ),
            // The extension headers the pipeline forwards are walked to the ports.
            (
                "tcp6 from a NAT backend's port after a hop-by-hop header".into(),
                with_hop_by_hop(&nat_reply),
                true,
            ),
            (
                "udp6 from a NAT backend's port after hop-by-hop, options, routing".into(),
                with_chain(&udp6((NAT_BACKEND6, 5353), client), &[(0, 0), (60, 1), (43, 0)]),
                true,
            ),
            (
                "tcp6 from a NAT backend's port after 8 destination options (the bound)".into(),
                with_chain(&nat_reply, &[(60, 0); 8]),
                true,
            ),
            (
                "tcp6 from a NAT backend's port after options ending at 1024 bytes".into(),
                with_chain(&nat_reply, &[(60, 63), (60, 63)]),
                true,
            ),
            (
                "icmpv6 error from a NAT backend after destination options".into(),
                with_chain(&too_big(NAT_BACKEND6, CLIENT6), &[(60, 0)]),
                true,
            ),
            (
                "tcp6 from a NAT backend, another port, after hop-by-hop".into(),
                with_hop_by_hop(&tcp6((NAT_BACKEND6, 81), client)),
                false,
            ),
            // Chains the pipeline refuses are the kernel's.
            (
                "tcp6 from a NAT backend's port after 9 destination options".into(),
                with_chain(&nat_reply, &[(60, 0); 9]),
                false,
            ),
            (
                "tcp6 from a NAT backend's port after options past 1024 bytes".into(),
                with_chain(&nat_reply, &[(60, 63), (60, 64)]),
                false,
            ),
            (
                "tcp6 from a NAT backend's port after hop-by-hop not first".into(),
                with_chain(&nat_reply, &[(60, 0), (0, 0)]),
                false,
            ),
            (
                "tcp6 from a NAT backend's port after a routing header, segments left 1".into(),
                {
                    let mut frame = with_chain(&nat_reply, &[(43, 0)]);
                    frame[54 + 3] = 1;
                    frame
                },
                false,
            ),
            // A NAT reply's first fragment is matched by its ports (and remembered: see
            // `program_steers_a_nat_replys_later_fragments_after_their_first`).
            (
                "first fragment of tcp6 from a NAT backend's port".into(),
                fragment6(&nat_reply, &[], 0x100, 0, true),
                true,
            ),
            (
                "first fragment of udp6 from a NAT backend's port after hop-by-hop".into(),
                fragment6(&udp6((NAT_BACKEND6, 5353), client), &[(0, 0)], 0x101, 0, true),
                true,
            ),
            (
                "atomic fragment of udp6 from a NAT backend's port".into(),
                fragment6(&udp6((NAT_BACKEND6, 5353), client), &[], 0x102, 0, false),
                true,
            ),
            (
                "later fragment from a NAT backend, its first never seen".into(),
                fragment6(&nat_reply, &[], 0x103, 4, false),
                false,
            ),
            (
                "first fragment from a NAT backend, another port".into(),
                fragment6(&tcp6((NAT_BACKEND6, 81), client), &[], 0x104, 0, true),
                false,
            ),
            (
                "first fragment from another host".into(),
                fragment6(&udp6((OTHER6, 5353), client), &[], 0x105, 0, true),
                false,
            ),
            (
                "first fragment from a NAT backend's port to the box".into(),
                fragment6(&udp6((NAT_BACKEND6, 5353), (BOX6, 40000)), &[], 0x106, 0, true),
                false,
            ),
            (
                "first fragment of an icmpv6 error from a NAT backend".into(),
                fragment6(&too_big(NAT_BACKEND6, CLIENT6), &[], 0x107, 0, true),
                false,
            ),
            (
                "first fragment from a NAT backend's port, options after the fragment header"
                    .into(),
                {
                    let options = with_chain(&udp6((NAT_BACKEND6, 5353), client), &[(60, 0)]);
                    fragment6(&options, &[], 0x108, 0, true)
                },
                false,
            ),
            (
                "later fragment to a VIP".into(),
                fragment6(&udp6(client, (VIP6, 53)), &[], 0x109, 4, false),
                true,
            ),
            (
                "tcp6 from a NAT backend's port, a header longer than the frame".into(),
                {
                    let mut frame = with_chain(&nat_reply, &[(60, 0)]);
                    frame[54 + 1] = 20;
                    frame
                },
                false,
            ),
            (
                "udp6 from a NAT backend's port to a multicast group (mDNS)".into(),
                testkit::udp6(
                    BACKEND_MAC,
                    MacAddr([0x33, 0x33, 0, 0, 0, 0xfb]),
                    (NAT_BACKEND6, 5353),
                    ("ff02::fb".parse().unwrap(), 5353),
                    b"mdns",
                ),
                false,
            ),
            (
                "udp6 from a NAT backend's port to a multicast group at the box's MAC".into(),
                testkit::udp6(
                    BACKEND_MAC,
                    LB_MAC,
                    (NAT_BACKEND6, 5353),
                    ("ff05::1:3".parse().unwrap(), 5353),
                    b"group",
                ),
                false,
            ),
            (
                "udp6 from a NAT backend's port to a link-local address".into(),
                udp6((NAT_BACKEND6, 5353), (LINK_LOCAL, 5353)),
                false,
            ),
            ("icmpv6 error from a NAT backend".into(), too_big(NAT_BACKEND6, CLIENT6), true),
            (
                "icmpv6 error from a NAT backend to the box".into(),
                too_big(NAT_BACKEND6, BOX6),
                false,
            ),
            ("icmpv6 error from another host".into(), too_big(OTHER6, CLIENT6), false),
            (
                "icmpv6 echo from a NAT backend".into(),
                testkit::icmpv6_echo(BACKEND_MAC, LB_MAC, NAT_BACKEND6, CLIENT6, 64, false, b"p"),
                false,
            ),
            ("NS for a VIP (solicited-node group)".into(), vip_solicit.clone(), true),
            (
                "NS for a VIP (unicast)".into(),
                testkit::neighbor_solicitation(CLIENT_MAC, CLIENT6, VIP6, Some((VIP6, LB_MAC))),
                true,
            ),
            ("NS for a local address".into(), solicit((CLIENT_MAC, CLIENT6), LOCAL6), true),
            (
                "NS from :: for a VIP (duplicate address detection)".into(),
                solicit((CLIENT_MAC, Ipv6Addr::UNSPECIFIED), VIP6),
                true,
            ),
            ("NS for the box".into(), solicit((CLIENT_MAC, CLIENT6), BOX6), false),
            ("NS for another target".into(), solicit((CLIENT_MAC, CLIENT6), OTHER6), false),
            (
                "NS for a VIP with hop limit 64 (not NDP: from off-link)".into(),
                testkit::with_hop_limit(
                    solicit((MacAddr([0x02, 0, 0, 0, 0, 0x99]), OTHER6), VIP6),
                    64,
                ),
                false,
            ),
            (
                "NS from another host using a VIP as source".into(),
                solicit((BACKEND_MAC, VIP6), BOX6),
                true,
            ),
            (
                "NA from another host claiming a VIP".into(),
                testkit::neighbor_advertisement(
                    (BACKEND_MAC, OTHER6),
                    (testkit::multicast_mac(ALL_NODES), ALL_NODES),
                    VIP6,
                    BACKEND_MAC,
                    false,
                ),
                true,
            ),
            (
                "NA from a backend to the box".into(),
                testkit::neighbor_advertisement(
                    (BACKEND_MAC, NAT_BACKEND6),
                    (LB_MAC, BOX6),
                    NAT_BACKEND6,
                    BACKEND_MAC,
                    true,
                ),
                false,
            ),
            (
                "router advertisement".into(),
                icmpv6(LINK_LOCAL, (testkit::multicast_mac(ALL_NODES), ALL_NODES), 255, 134),
                false,
            ),
            (
                "router solicitation".into(),
                icmpv6(
                    LINK_LOCAL,
                    (MacAddr([0x33, 0x33, 0, 0, 0, 2]), "ff02::2".parse().unwrap()),
                    255,
                    133,
                ),
                false,
            ),
            (
                "MLDv2 report (hop-by-hop router alert)".into(),
                with_hop_by_hop(&icmpv6(
                    LINK_LOCAL,
                    (MacAddr([0x33, 0x33, 0, 0, 0, 0x16]), "ff02::16".parse().unwrap()),
                    1,
                    143,
                )),
                false,
            ),
        ];
        // Cut short of what each decision reads, then just long enough.
        for (length, owned) in [(14, false), (53, false), (54, true)] {
            cases.push((
                format!("tcp6 to a VIP cut to {length} bytes"),
                to_vip[..length].to_vec(),
                owned,
            ));
        }
        for (length, owned) in [(57, false), (58, true)] {
            cases.push((
                format!("NAT reply (tcp6) cut to {length} bytes"),
                nat_reply[..length].to_vec(),
                owned,
            ));
        }
        // After hop-by-hop: its first 4 bytes, then the ports, must be in the frame.
        let chained = with_hop_by_hop(&nat_reply);
        for (length, owned) in [(57, false), (58, false), (65, false), (66, true)] {
            cases.push((
                format!("NAT reply (tcp6) after hop-by-hop cut to {length} bytes"),
                chained[..length].to_vec(),
                owned,
            ));
        }
        // A first fragment: its fragment header, then the ports, must be in the frame.
        let first = fragment6(&udp6((NAT_BACKEND6, 5353), client), &[], 0x10a, 0, true);
        for (length, owned) in [(61, false), (62, false), (65, false), (66, true)] {
            cases.push((
                format!("first fragment of a NAT reply (udp6) cut to {length} bytes"),
                first[..length].to_vec(),
                owned,
            ));
        }
        for (length, owned) in [(77, false), (78, true)] {
            cases.push((
                format!("NS for a VIP cut to {length} bytes"),
                vip_solicit[..length].to_vec(),
                owned,
            ));
        }
        with_vlan_cases(cases, &to_vip)
    }

    #[test]
    fn program_steers_the_ipv6_xlb_owns_and_passes_the_rest() {
        if !root() {
            return;
        }
        let program = SteerProgram::load().expect("load (verifier)");
        program.set_rules(&rules6()).unwrap();
        let socket = xdp_socket();
        let started = monotonic_ns();

        program.set_socket(0, socket.as_raw_fd()).unwrap();
        run_cases(&program, &cases6(), XdpAction::Redirect, |s| s.steered);
        program.clear_socket(0).unwrap();
        run_cases(&program, &cases6(), XdpAction::Pass, |s| s.no_socket);

        // NDP taught it a solicitation's source and an advertisement's target, with the MAC
        // of their link-layer option; nothing from duplicate address detection (::), from a
        // solicitation with the wrong hop limit, or from a message cut before its option.
        let finished = monotonic_ns();
        let seen = program.ndp_seen().unwrap();
        let learned: Vec<(Ipv6Addr, MacAddr)> =
            seen.iter().map(|&(ip, mac, _)| (ip, mac)).collect();
        assert_eq!(
            learned,
            [(NAT_BACKEND6, BACKEND_MAC), (VIP6, BACKEND_MAC), (CLIENT6, CLIENT_MAC)]
        );
        for (ip, _, seen_ns) in seen {
            assert!((started..=finished).contains(&seen_ns), "{ip} seen at {seen_ns}");
        }
        assert!(program.arp_seen().unwrap().is_empty(), "IPv6 is not ARP");

        // The IPv4 rules do not steer IPv6, nor the IPv6 rules IPv4.
        program.set_socket(0, socket.as_raw_fd()).unwrap();
        let mapped_vip = Ipv4Addr::new(10, 1, 1, 100);
        let v4_only = v4_rules(FamilyRules::new(&[mapped_vip], &[], &[]));
        program.set_rules(&v4_only).unwrap();
        assert_eq!(program.test_run(&tcp6((CLIENT6, 1), (VIP6, 80)), 0).unwrap(), XdpAction::Pass);
        assert_eq!(
            program.test_run(&tcp((CLIENT, 1), (mapped_vip, 80)), 0).unwrap(),
            XdpAction::Redirect
        );
        program.set_rules(&rules6()).unwrap();
        assert_eq!(program.dst.entries().unwrap().len(), 0);
        assert_eq!(program.dst6.entries().unwrap().len(), 3);
        assert_eq!(program.nat6_src.entries().unwrap().len(), 3, "two ports, one ICMPv6 key");
        assert_eq!(
            program.test_run(&tcp((CLIENT, 1), (mapped_vip, 80)), 0).unwrap(),
            XdpAction::Pass
        );
    }

    /// Runs `steps` in order on queue 0, where a socket is: (what, frame, whether steered).
    fn run_steps(program: &SteerProgram, steps: &[(&str, Vec<u8>, bool)]) {
        for (what, frame, steered) in steps {
            let expected = if *steered { XdpAction::Redirect } else { XdpAction::Pass };
            let action = program.test_run(frame, 0).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(action, expected, "{what}");
        }
    }

    /// A NAT reply's later fragments (no ports) are steered when their datagram's first
    /// fragment was (matched by its ports), for FRAGMENT_WINDOW; before it, or for another
    /// datagram (addresses, protocol, identification), they are the kernel's. In IPv4 and
    /// in IPv6 (after the extension headers the program walks). Each later fragment's bytes
    /// where ports would be are port 9999, which no rule has: only its datagram decides;
    /// the one before its first carries the NAT backend's port there, and is still passed.
    #[test]
    fn program_steers_a_nat_replys_later_fragments_after_their_first() {
        if !root() {
            return;
        }
        let program = SteerProgram::load().expect("load (verifier)");
        let rules = SteerRules { v4: SteerRules::from_snapshot(&snapshot(CONFIG)).v4, ..rules6() };
        program.set_rules(&rules).unwrap();
        let socket = xdp_socket();
        program.set_socket(0, socket.as_raw_fd()).unwrap();
        let started = monotonic_ns();

        let client = (CLIENT, 40000);
        let reply = udp((NAT_BACKEND, 5353), client);
        let later = |src: Ipv4Addr, dst, ident, offset, more| {
            fragment4(&udp((src, 9999), (dst, 40000)), ident, offset, more)
        };
        let tcp_reply = testkit::tcp(BACKEND_MAC, LB_MAC, (NAT_BACKEND, 80), client, ACK, b"x");
        run_steps(
            &program,
            &[
                ("a later fragment before its first", fragment4(&reply, 1, 185, true), false),
                ("its first fragment", fragment4(&reply, 1, 0, true), true),
                ("a middle fragment", later(NAT_BACKEND, CLIENT, 1, 185, true), true),
                ("the last fragment", later(NAT_BACKEND, CLIENT, 1, 370, false), true),
                ("the last fragment again", later(NAT_BACKEND, CLIENT, 1, 370, false), true),
                ("another identification", later(NAT_BACKEND, CLIENT, 2, 185, false), false),
                (
                    "the identification, tcp",
                    fragment4(&tcp((NAT_BACKEND, 9999), client), 1, 185, false),
                    false,
                ),
                (
                    "the identification, another destination",
                    later(NAT_BACKEND, Ipv4Addr::new(192, 0, 2, 8), 1, 185, false),
                    false,
                ),
                (
                    "the identification, a DR backend",
                    later(DR_BACKEND, CLIENT, 1, 185, false),
                    false,
                ),
                (
                    "first fragment from a NAT backend, another port",
                    fragment4(&udp((NAT_BACKEND, 5354), client), 3, 0, true),
                    false,
                ),
                ("its later fragment", later(NAT_BACKEND, CLIENT, 3, 185, false), false),
                (
                    "first fragment from a NAT backend's port to the box (the kernel's)",
                    fragment4(&udp((NAT_BACKEND, 5353), (BOX, 40000)), 4, 0, true),
                    false,
                ),
                ("its later fragment", later(NAT_BACKEND, BOX, 4, 185, false), false),
                (
                    "first fragment from a DR backend",
                    fragment4(&udp((DR_BACKEND, 5353), client), 5, 0, true),
                    false,
                ),
                ("its later fragment", later(DR_BACKEND, CLIENT, 5, 185, false), false),
                ("first fragment of tcp", fragment4(&tcp_reply, 6, 0, true), true),
                (
                    "its later fragment",
                    fragment4(&tcp((NAT_BACKEND, 9999), client), 6, 185, false),
                    true,
                ),
            ],
        );
        // What the program remembered: the two datagrams steered, laid out as
        // `struct frag_key` (addresses, identification, protocol, pad), stamped meanwhile.
        let finished = monotonic_ns();
        let remembered = program.nat_frags.entries().unwrap();
        let key = |ident: u16, proto: u8| {
            let mut key = [0u8; 12];
            key[..4].copy_from_slice(&NAT_BACKEND.octets());
            key[4..8].copy_from_slice(&CLIENT.octets());
            key[8..10].copy_from_slice(&ident.to_be_bytes());
            key[10] = proto;
            key
        };
        assert_eq!(remembered.keys().copied().collect::<Vec<_>>(), [key(1, 17), key(6, 6)]);
        for stamp in remembered.values() {
            assert!((started..=finished).contains(&u64::from_ne_bytes(*stamp)), "{stamp:?}");
        }
        assert_eq!(program.fragmented_replies().unwrap(), (2, 0));

        // A first fragment steered longer ago than the window: its later fragments are the
        // kernel's (the pipeline no longer knows them either), until a first one comes again.
        let window = FRAGMENT_WINDOW.as_nanos() as u64;
        let stale = (monotonic_ns() - window - 1).to_ne_bytes();
        program.nat_frags.update(&key(7, 17), &stale).unwrap();
        run_steps(
            &program,
            &[
                (
                    "a later fragment after the window",
                    later(NAT_BACKEND, CLIENT, 7, 185, false),
                    false,
                ),
                ("a first fragment again", fragment4(&reply, 7, 0, true), true),
                ("a later fragment now", later(NAT_BACKEND, CLIENT, 7, 185, false), true),
            ],
        );

        let client = (CLIENT6, 40000);
        let reply = udp6((NAT_BACKEND6, 5353), client);
        let later = |src: Ipv6Addr, dst, chain: &[(u8, u8)], ident, offset, more| {
            fragment6(&udp6((src, 9999), (dst, 40000)), chain, ident, offset, more)
        };
        let other = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 8);
        run_steps(
            &program,
            &[
                (
                    "ipv6: a later fragment before its first",
                    fragment6(&reply, &[], 1, 185, true),
                    false,
                ),
                ("ipv6: its first fragment", fragment6(&reply, &[], 1, 0, true), true),
                ("ipv6: a middle fragment", later(NAT_BACKEND6, CLIENT6, &[], 1, 185, true), true),
                (
                    "ipv6: the last fragment, after hop-by-hop",
                    later(NAT_BACKEND6, CLIENT6, &[(0, 0)], 1, 370, false),
                    true,
                ),
                (
                    "ipv6: another identification",
                    later(NAT_BACKEND6, CLIENT6, &[], 2, 1, false),
                    false,
                ),
                (
                    "ipv6: the identification, tcp",
                    fragment6(&tcp6((NAT_BACKEND6, 9999), client), &[], 1, 185, false),
                    false,
                ),
                (
                    "ipv6: the identification, another destination",
                    later(NAT_BACKEND6, other, &[], 1, 185, false),
                    false,
                ),
                (
                    "ipv6: the identification, another source",
                    later(OTHER6, CLIENT6, &[], 1, 185, false),
                    false,
                ),
                ("ipv6: an atomic fragment", fragment6(&reply, &[], 3, 0, false), true),
                (
                    "ipv6: a later fragment of its identification (not remembered)",
                    later(NAT_BACKEND6, CLIENT6, &[], 3, 185, false),
                    false,
                ),
                (
                    "ipv6: first fragment from a NAT backend, another port",
                    fragment6(&udp6((NAT_BACKEND6, 5354), client), &[], 4, 0, true),
                    false,
                ),
                (
                    "ipv6: its later fragment",
                    later(NAT_BACKEND6, CLIENT6, &[], 4, 185, false),
                    false,
                ),
                (
                    "ipv6: first fragment from a NAT backend's port to the box (the kernel's)",
                    fragment6(&udp6((NAT_BACKEND6, 5353), (BOX6, 40000)), &[], 5, 0, true),
                    false,
                ),
                ("ipv6: its later fragment", later(NAT_BACKEND6, BOX6, &[], 5, 185, false), false),
            ],
        );
        assert_eq!(program.fragmented_replies().unwrap(), (3, 1));
        let remembered = program.nat6_frags.entries().unwrap();
        let mut key = [0u8; 40];
        key[..16].copy_from_slice(&NAT_BACKEND6.octets());
        key[16..32].copy_from_slice(&CLIENT6.octets());
        key[32..36].copy_from_slice(&1u32.to_be_bytes());
        key[36] = 17;
        assert_eq!(remembered.keys().copied().collect::<Vec<_>>(), [key]);
    }

    #[test]
    fn rules_replace_rules() {
        if !root() {
            return;
        }
        let program = SteerProgram::load().expect("load (verifier)");
        let socket = xdp_socket();
        program.set_socket(0, socket.as_raw_fd()).unwrap();
        let frame = |dst: Ipv4Addr| tcp((CLIENT, 40000), (dst, 80));
        let reply = |port: u16| udp((NAT_BACKEND, port), (CLIENT, 40000));
        let action = |frame: &[u8]| program.test_run(frame, 0).unwrap();

        let first = v4_rules(FamilyRules {
            dst: vec![DR_VIP, NAT_VIP],
            nat_src: vec![(NAT_BACKEND, 53, Proto::Udp)],
            ..FamilyRules::default()
        });
        program.set_rules(&first).unwrap();
        assert_eq!(action(&frame(DR_VIP)), XdpAction::Redirect);
        assert_eq!(action(&frame(NAT_VIP)), XdpAction::Redirect);
        assert_eq!(action(&reply(53)), XdpAction::Redirect);

        let second = v4_rules(FamilyRules {
            dst: vec![NAT_VIP, FULLNAT_VIP],
            nat_src: vec![(NAT_BACKEND, 5353, Proto::Udp)],
            interface_addrs: vec![DR_VIP],
            ..FamilyRules::default()
        });
        program.set_rules(&second).unwrap();
        assert_eq!(action(&frame(DR_VIP)), XdpAction::Pass, "now the kernel's");
        assert_eq!(action(&frame(NAT_VIP)), XdpAction::Redirect);
        assert_eq!(action(&frame(FULLNAT_VIP)), XdpAction::Redirect);
        assert_eq!(action(&reply(53)), XdpAction::Pass);
        assert_eq!(action(&reply(5353)), XdpAction::Redirect);
        assert_eq!(program.dst.entries().unwrap().len(), 3);

        program.set_rules(&SteerRules::default()).unwrap();
        assert!(program.dst.entries().unwrap().is_empty());
        assert!(program.nat_src.entries().unwrap().is_empty());
        assert_eq!(action(&frame(NAT_VIP)), XdpAction::Pass);

        let too_many = v4_rules(FamilyRules {
            dst: (0..=MAX_DST as u32).map(Ipv4Addr::from).collect(),
            ..FamilyRules::default()
        });
        assert!(matches!(
            program.set_rules(&too_many),
            Err(SteerError::TooMany { map: "dst", .. })
        ));
        assert!(program.dst.entries().unwrap().is_empty(), "nothing written");
    }

    fn xdp_attached(netns: &Netns, device: &str) -> bool {
        netns.ip(&["link", "show", "dev", device]).contains("xdp")
    }

    /// Waits (up to 2 s) for `device` to show no XDP program, and fails if it still does.
    fn wait_detached(netns: &Netns, device: &str) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while xdp_attached(netns, device) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!xdp_attached(netns, device), "{device}: detached when the link closed");
    }

    /// The name of the program attached to `ifindex` in generic (`skb`) or native mode.
    fn attached_name(ifindex: u32, skb: bool) -> Option<String> {
        // SAFETY: zeroed opts with `sz` set; filled by the call.
        let mut query: sys::bpf_xdp_query_opts = unsafe { mem::zeroed() };
        query.sz = opts_size!(query, bpf_xdp_query_opts, skb_prog_id);
        // SAFETY: `query` lives across the call.
        assert_eq!(unsafe { sys::bpf_xdp_query(ifindex as c_int, 0, &mut query) }, 0);
        let id = if skb { query.skb_prog_id } else { query.drv_prog_id };
        (id != 0).then(|| program_name(&program_by_id(id).unwrap().unwrap()).unwrap())
    }

    /// Attaches `program_fd` the old way (netlink), as a killed run might have left it.
    fn attach_by_netlink(ifindex: u32, program_fd: RawFd) {
        // SAFETY: plain arguments; null opts.
        let ret = unsafe {
            sys::bpf_xdp_attach(ifindex as c_int, program_fd, XDP_FLAGS_SKB_MODE, ptr::null())
        };
        assert_eq!(ret, 0, "bpf_xdp_attach: {}", io::Error::from_raw_os_error(-ret));
    }

    /// A two-instruction XDP program named `foreign` (return XDP_PASS): someone else's.
    fn foreign_program() -> OwnedFd {
        // SAFETY: an all-zero bpf_insn is valid plain data; code and imm are set below
        // (registers stay r0).
        let mut insns: [sys::bpf_insn; 2] = unsafe { mem::zeroed() };
        insns[0].code = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K: r0 = imm
        insns[0].imm = 2; // XDP_PASS
        insns[1].code = 0x95; // BPF_JMP | BPF_EXIT
        // SAFETY: the names are NUL-terminated; `insns` holds the two instructions given.
        let fd = unsafe {
            sys::bpf_prog_load(
                sys::bpf_prog_type_BPF_PROG_TYPE_XDP,
                c"foreign".as_ptr(),
                c"MIT".as_ptr(),
                insns.as_ptr(),
                insns.len(),
                ptr::null_mut(),
            )
        };
        assert!(fd >= 0, "bpf_prog_load: {}", io::Error::from_raw_os_error(-fd));
        // SAFETY: a fresh fd owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn attaches_by_link_in_a_namespace_and_detaches_on_drop() {
        if !root() {
            return;
        }
        let netns = Netns::create(format!("xlb-{}-steer", std::process::id()));
        let queues = ["numtxqueues", "2", "numrxqueues", "2"];
        let mut add = vec!["link", "add", "veth0"];
        add.extend_from_slice(&queues);
        add.extend_from_slice(&["type", "veth", "peer", "name", "veth1"]);
        add.extend_from_slice(&queues);
        netns.ip(&add);
        netns.ip(&["link", "set", "veth0", "up"]);
        netns.ip(&["link", "set", "veth1", "up"]);
        let program = SteerProgram::load().expect("load (verifier)");
        program.set_rules(&SteerRules::from_snapshot(&snapshot(CONFIG))).unwrap();
        let socket = xdp_socket();

        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    netns.enter();
                    let name = c"veth0";
                    // SAFETY: `name` is NUL-terminated.
                    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                    assert_ne!(ifindex, 0);
                    assert!(!remove_stale(ifindex).unwrap(), "nothing attached yet");

                    let (attachment, mode) = program.attach_best(ifindex).expect("attach");
                    assert_eq!(
                        (mode, attachment.mode(), attachment.ifindex()),
                        (XdpMode::Native, XdpMode::Native, ifindex)
                    );
                    assert_eq!(attached_name(ifindex, false).as_deref(), Some(PROGRAM_NAME));
                    assert!(xdp_attached(&netns, "veth0"));
                    // A live link is not stale: left alone.
                    assert!(!remove_stale(ifindex).unwrap());
                    assert!(xdp_attached(&netns, "veth0"));
                    assert!(program.attach(ifindex, XdpMode::Native).is_err(), "one at a time");

                    // The socket map is indexed by the frame's queue.
                    let frame = tcp((CLIENT, 40000), (DR_VIP, 80));
                    program.set_socket(1, socket.as_raw_fd()).unwrap();
                    assert_eq!(
                        program.test_run_on(&frame, ifindex, 1).unwrap(),
                        XdpAction::Redirect
                    );
                    assert_eq!(program.test_run_on(&frame, ifindex, 0).unwrap(), XdpAction::Pass);

                    drop(attachment);
                    wait_detached(&netns, "veth0");

                    let generic = program.attach(ifindex, XdpMode::Generic).expect("generic");
                    assert_eq!(attached_name(ifindex, true).as_deref(), Some(PROGRAM_NAME));
                    assert!(netns.ip(&["link", "show", "dev", "veth0"]).contains("xdpgeneric"));
                    drop(generic);
                    wait_detached(&netns, "veth0");

                    // Left behind the old way by a killed run: removed.
                    attach_by_netlink(ifindex, program.program_fd);
                    assert_eq!(attached_name(ifindex, true).as_deref(), Some(PROGRAM_NAME));
                    assert!(remove_stale(ifindex).unwrap());
                    assert!(!xdp_attached(&netns, "veth0"));

                    // Someone else's program: never touched.
                    let foreign = foreign_program();
                    attach_by_netlink(ifindex, foreign.as_raw_fd());
                    assert!(!remove_stale(ifindex).unwrap());
                    assert_eq!(attached_name(ifindex, true).as_deref(), Some("foreign"));
                })
                .join()
                .map_err(std::panic::resume_unwind)
                .ok();
        });
    }
}
