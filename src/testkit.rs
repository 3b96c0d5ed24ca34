//! Frame builders for tests, golden cases, fixtures, benchmarks and fuzz seeds.
//!
//! Frames are built with `etherparse`, an implementation independent of [`crate::wire`]: the
//! checksums of an expected frame come from a full computation, while the pipeline patches
//! them incrementally, so a golden case that matches byte for byte checks both.

use std::net::Ipv4Addr;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IcmpEchoHeader, Icmpv4Type, PacketBuilder,
};

use crate::dataplane::Verdict;
use crate::report::{Counters, DropReason, Stat};
use crate::wire::MacAddr;

pub mod malformed;
mod v6;

pub use v6::*;

/// Whether this process runs with effective user id 0 (from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The guard of root-only tests (namespaces, XDP, BPF): true when `test` may run. Otherwise
/// it says `test` is skipped and returns false — or fails when `XLB_REQUIRE_ROOT_TESTS=1`
/// (CI, `scripts/test` as root), so a skipped root test cannot pass unseen.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("XLB_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"),
        "{test}: needs root, and XLB_REQUIRE_ROOT_TESTS=1"
    );
    eprintln!("SKIPPED {test}: needs root (network namespaces, XDP)");
    false
}

/// The verdicts a test saw [`crate::dataplane::Pipeline::process`] (or `process_batch`)
/// return, counted by the test itself.
///
/// The pipeline's `rx == tx + pass + drop + held` holds by construction (it counts each
/// verdict it returns), so checking that sum proves nothing. [`VerdictTally::check`]
/// compares an independent count instead: frames and bytes received, each kind of verdict,
/// and each drop reason, against the pipeline's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictTally {
    pub frames: u64,
    pub bytes: u64,
    pub tx: u64,
    pub pass: u64,
    pub held: u64,
    pub encapsulated: u64,
    /// Indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
}

impl Default for VerdictTally {
    fn default() -> Self {
        VerdictTally {
            frames: 0,
            bytes: 0,
            tx: 0,
            pass: 0,
            held: 0,
            encapsulated: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl VerdictTally {
    /// Counts one frame of `len` bytes (as it was handed to the pipeline) and its verdict.
    pub fn record(&mut self, len: usize, verdict: Verdict) {
        self.frames += 1;
        self.bytes += len as u64;
        match verdict {
            Verdict::Tx(_) => self.tx += 1,
            Verdict::Pass => self.pass += 1,
            Verdict::Held => self.held += 1,
            Verdict::Encapsulated => self.encapsulated += 1,
            Verdict::Drop(reason) => self.drops[reason as usize] += 1,
        }
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Adds another tally's counts to this one.
    pub fn add(&mut self, other: &VerdictTally) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.tx += other.tx;
        self.pass += other.pass;
        self.held += other.held;
        self.encapsulated += other.encapsulated;
        for (all, n) in self.drops.iter_mut().zip(other.drops) {
            *all += n;
        }
    }

    /// Every difference between this tally and `counters`, one line each; `Ok` when none.
    pub fn check(&self, counters: &Counters) -> Result<(), String> {
        let mut wrong = Vec::new();
        let total_drops: u64 = self.drops.iter().sum();
        for (stat, seen) in [
            (Stat::RxPackets, self.frames),
            (Stat::RxBytes, self.bytes),
            (Stat::TxPackets, self.tx),
            (Stat::PassPackets, self.pass),
            (Stat::HeldPackets, self.held),
            (Stat::TunnelledPackets, self.encapsulated),
            (Stat::DropPackets, total_drops),
        ] {
            if counters.get(stat) != seen {
                wrong.push(format!("{stat}: counted {}, returned {seen}", counters.get(stat)));
            }
        }
        for reason in DropReason::ALL {
            if counters.drops(*reason) != self.drops(*reason) {
                wrong.push(format!(
                    "drop {reason}: counted {}, returned {}",
                    counters.drops(*reason),
                    self.drops(*reason)
                ));
            }
        }
        if wrong.is_empty() { Ok(()) } else { Err(wrong.join("\n")) }
    }
}

/// One end of a TCP or UDP packet: MAC, address, port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

impl Host {
    pub const fn new(mac: [u8; 6], ip: [u8; 4]) -> Host {
        Host { mac: MacAddr(mac), ip: Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]) }
    }
}

/// TCP flags for [`tcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

pub const SYN: Flags = Flags { syn: true, ack: false, fin: false, rst: false, psh: false };
pub const SYN_ACK: Flags = Flags { syn: true, ack: true, fin: false, rst: false, psh: false };
pub const ACK: Flags = Flags { syn: false, ack: true, fin: false, rst: false, psh: false };
pub const PSH_ACK: Flags = Flags { syn: false, ack: true, fin: false, rst: false, psh: true };
pub const FIN_ACK: Flags = Flags { syn: false, ack: true, fin: true, rst: false, psh: false };
pub const RST: Flags = Flags { syn: false, ack: false, fin: false, rst: true, psh: false };

/// A TCP segment in an Ethernet frame, L2 from `src_mac` to `dst_mac`.
pub fn tcp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1000, 64240);
    write_segment(builder, flags, payload)
}

/// Sets `flags` on a TCP segment's builder and writes it with `payload` (both families).
fn write_segment(
    mut builder: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    if flags.syn {
        builder = builder.syn();
    }
    if flags.ack {
        builder = builder.ack(2000);
    }
    if flags.fin {
        builder = builder.fin();
    }
    if flags.rst {
        builder = builder.rst();
    }
    if flags.psh {
        builder = builder.psh();
    }
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("writing to a Vec cannot fail");
    frame
}

/// `frame` (Ethernet, IPv4) with TTL `ttl`, its header checksum computed anew in full.
pub fn with_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
    frame[14 + 8] = ttl;
    let header_len = (usize::from(frame[14] & 0x0f) * 4).clamp(20, frame.len() - 14);
    frame[24..26].fill(0);
    let mut sum: u32 = frame[14..14 + header_len]
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    frame
}

/// `frame` as a router forwards it (NAT and FullNAT are routing hops): TTL one less.
pub fn routed(frame: Vec<u8>) -> Vec<u8> {
    let ttl = frame[14 + 8];
    with_ttl(frame, ttl - 1)
}

/// The IPv4 packet of `frame` (no options) cut into fragments of `chunk` bytes of its
/// payload (a multiple of 8), identification `ident`, each a whole frame with its header
/// checksum right (DF clear, as on every fragment).
pub fn fragmented(frame: &[u8], ident: u16, chunk: usize) -> Vec<Vec<u8>> {
    assert!(chunk > 0 && chunk.is_multiple_of(8), "fragments are cut at multiples of 8 bytes");
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let payload = &frame[34..14 + total];
    let count = payload.len().div_ceil(chunk);
    let mut out = Vec::new();
    for (index, piece) in payload.chunks(chunk).enumerate() {
        let mut fragment = frame[..34].to_vec();
        fragment.extend_from_slice(piece);
        fragment[16..18].copy_from_slice(&(20 + piece.len() as u16).to_be_bytes());
        fragment[18..20].copy_from_slice(&ident.to_be_bytes());
        let more = if index + 1 < count { 0x2000 } else { 0 };
        let flags_offset = more | (index * chunk / 8) as u16;
        fragment[20..22].copy_from_slice(&flags_offset.to_be_bytes());
        let ttl = fragment[14 + 8];
        out.push(with_ttl(fragment, ttl));
    }
    out
}

/// A UDP datagram in an Ethernet frame.
pub fn udp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("writing to a Vec cannot fail");
    frame
}

/// An ICMP echo request (`reply` false) or reply.
pub fn icmp_echo(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    reply: bool,
    payload: &[u8],
) -> Vec<u8> {
    let builder =
        PacketBuilder::ethernet2(src_mac.0, dst_mac.0).ipv4(src.octets(), dst.octets(), ttl);
    let echo = IcmpEchoHeader { id: 0x1234, seq: 7 };
    let builder = builder.icmpv4(if reply {
        Icmpv4Type::EchoReply(echo)
    } else {
        Icmpv4Type::EchoRequest(echo)
    });
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("writing to a Vec cannot fail");
    frame
}

/// An ICMP "fragmentation needed" error from `src` to `dst` quoting the IPv4 packet inside
/// `quoted_frame` (an Ethernet frame): its header and first `quote_l4_bytes` bytes.
pub fn icmp_frag_needed(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    mtu: u16,
    quoted_frame: &[u8],
    quote_l4_bytes: usize,
) -> Vec<u8> {
    let ip = &quoted_frame[14..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let quote = &ip[..(header_len + quote_l4_bytes).min(ip.len())];
    let builder = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ));
    let mut frame = Vec::with_capacity(builder.size(quote.len()));
    builder.write(&mut frame, quote).expect("writing to a Vec cannot fail");
    frame
}

/// An ICMP port unreachable from `src` to `dst` quoting `quoted_frame`'s IP header and the
/// first 8 bytes of its transport header.
pub fn icmp_port_unreachable(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    quoted_frame: &[u8],
) -> Vec<u8> {
    let ip = &quoted_frame[14..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let quote = &ip[..(header_len + 8).min(ip.len())];
    let builder =
        PacketBuilder::ethernet2(src_mac.0, dst_mac.0).ipv4(src.octets(), dst.octets(), 64).icmpv4(
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
        );
    let mut frame = Vec::with_capacity(builder.size(quote.len()));
    builder.write(&mut frame, quote).expect("writing to a Vec cannot fail");
    frame
}

/// An ARP packet for Ethernet/IPv4. Requests go to broadcast with a zero target MAC.
pub fn arp(
    request: bool,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let (operation, eth_dst, target_hw) = if request {
        (ArpOperation::REQUEST, MacAddr::BROADCAST, MacAddr::ZERO)
    } else {
        (ArpOperation::REPLY, target_mac, target_mac)
    };
    let packet = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        operation,
        &sender_mac.0,
        &sender_ip.octets(),
        &target_hw.0,
        &target_ip.octets(),
    )
    .expect("Ethernet/IPv4 address lengths are valid");
    let builder = PacketBuilder::ethernet2(sender_mac.0, eth_dst.0).arp(packet);
    let mut frame = Vec::with_capacity(builder.size());
    builder.write(&mut frame).expect("writing to a Vec cannot fail");
    frame
}

/// Pads a frame to the Ethernet minimum of 60 bytes (without FCS), as NICs deliver them.
pub fn padded(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
    frame
}

/// Captures the project ships: made by this code, so they can be regenerated and checked.
pub mod captures {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::time::Duration;

    use pcap_file::DataLink;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};

    use super::{ACK, FIN_ACK, Host, PSH_ACK, SYN, arp, icmp_echo, tcp, udp};
    use crate::control::Config;
    use crate::dataplane::{CoreSlot, Pipeline};
    use crate::snapshot::{IfaceId, Snapshot};
    use crate::time::Instant;
    use crate::wire::{ArpOperation, ArpPacket, EthernetFrame, MacAddr};

    /// The config of the seed's DR lab as xlb runs it (`examples/seed-dr.toml`).
    pub const SEED_DR_CONFIG: &str = include_str!("../examples/seed-dr.toml");

    /// A captured frame: when, and its bytes.
    pub type Frame = (Duration, Vec<u8>);

    const START: Duration = Duration::from_secs(1_795_478_400); // 2026-11-24 00:00:00 UTC
    const CLIENTS: u8 = 40;

    /// What xlb's interface would capture in the seed's lab: clients on the segment and one
    /// behind the gateway open HTTP connections to the VIP and send DNS queries, a client pings
    /// the VIP, and the real servers answer xlb's ARP requests for them. The real servers'
    /// replies go straight to the clients (DR), so they are not in the capture.
    ///
    /// The lab is simulated: each frame is fed to a pipeline as it is recorded, and whenever
    /// xlb asks for a real server's MAC, that server's ARP reply is recorded next.
    pub fn seed_dr_lab() -> Vec<Frame> {
        let config = Config::parse(SEED_DR_CONFIG, "examples/seed-dr.toml")
            .expect("the bundled config is valid");
        let snapshot = Arc::new(Snapshot::build(&config, 1).expect("the bundled config builds"));
        let lb = snapshot.interfaces[0].mac;
        let IpAddr::V4(vip) = snapshot.services[0].vip else { panic!("an IPv4 service") };
        let mut hosts: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
        for backend in &snapshot.backends {
            let IpAddr::V4(addr) = backend.addr else { panic!("an IPv4 backend") };
            hosts.insert(addr, MacAddr([0x02, 0, 0x0a, 0x01, 0x01, addr.octets()[3]]));
        }
        let gateway = Host::new([0x02, 0, 0x0a, 0x01, 0x01, 0x01], [10, 1, 1, 1]);

        let mut lab = Lab {
            pipeline: Pipeline::new(snapshot.clone(), CoreSlot::SINGLE),
            hosts,
            frames: Vec::new(),
            now: START,
        };
        let client = |i: u8| Host::new([0x02, 0, 0x0a, 0x01, 0x01, 100 + i], [10, 1, 1, 100 + i]);

        // The first client asks who has the VIP: xlb answers (the real servers, VIP on lo with
        // arp_ignore=1, stay silent).
        lab.record(arp(true, client(0).mac, client(0).ip, MacAddr::ZERO, vip));
        lab.record(icmp_echo(client(0).mac, lb, client(0).ip, vip, 64, false, b"xlb-ping"));
        for i in 0..CLIENTS {
            let host = client(i % 20);
            let from = (host.ip, 40000 + u16::from(i));
            let to = (vip, 80);
            let request = format!("GET /{i} HTTP/1.1\r\nHost: 10.1.1.10\r\n\r\n");
            lab.record(tcp(host.mac, lb, from, to, SYN, &[]));
            lab.record(tcp(host.mac, lb, from, to, ACK, &[]));
            lab.record(tcp(host.mac, lb, from, to, PSH_ACK, request.as_bytes()));
            lab.record(tcp(host.mac, lb, from, to, FIN_ACK, &[]));
            lab.record(tcp(host.mac, lb, from, to, ACK, &[]));
            if i % 4 == 0 {
                let query = [0x12, i, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
                lab.record(udp(host.mac, lb, (host.ip, 50000 + u16::from(i)), (vip, 53), &query));
            }
        }
        // A client behind the gateway.
        let remote = (Ipv4Addr::new(192, 0, 2, 7), 33000);
        lab.record(tcp(gateway.mac, lb, remote, (vip, 80), SYN, &[]));
        lab.record(tcp(gateway.mac, lb, remote, (vip, 80), ACK, &[]));
        // Not xlb's: ssh to the box itself, ARP for the box's own address.
        let box_ip = snapshot.interfaces[0].addr;
        lab.record(tcp(client(1).mac, lb, (client(1).ip, 50022), (box_ip, 22), SYN, &[]));
        lab.record(arp(true, client(1).mac, client(1).ip, MacAddr::ZERO, box_ip));
        // A fragment to the VIP: counted and dropped.
        let mut fragment = udp(client(2).mac, lb, (client(2).ip, 5353), (vip, 53), &[0; 32]);
        fragment[14 + 6] = 0x20;
        fix_ipv4_checksum(&mut fragment);
        lab.record(fragment);
        lab.frames
    }

    struct Lab {
        pipeline: Pipeline,
        hosts: HashMap<Ipv4Addr, MacAddr>,
        frames: Vec<Frame>,
        now: Duration,
    }

    impl Lab {
        /// Records a frame arriving at xlb, feeds it to the pipeline, and records the ARP
        /// replies of the simulated hosts xlb asks for.
        fn record(&mut self, frame: Vec<u8>) {
            self.now += Duration::from_micros(250);
            self.frames.push((self.now, frame.clone()));
            let mut working = frame;
            let now = Instant::from_nanos(self.now.as_nanos() as u64);
            self.pipeline.process(now, IfaceId(0), &mut working);
            let mut asked = Vec::new();
            self.pipeline.drain_emitted(|_, emitted| {
                let Ok(eth) = EthernetFrame::new_checked(emitted) else { return };
                let Ok(request) = ArpPacket::new_checked(eth.payload()) else { return };
                if request.operation() == ArpOperation::Request {
                    asked.push((
                        request.target_proto_addr(),
                        request.sender_hw_addr(),
                        request.sender_proto_addr(),
                    ));
                }
            });
            for (target, asker_mac, asker_ip) in asked {
                if let Some(mac) = self.hosts.get(&target).copied() {
                    self.record(arp(false, mac, target, asker_mac, asker_ip));
                }
            }
        }
    }

    fn fix_ipv4_checksum(frame: &mut [u8]) {
        frame[24] = 0;
        frame[25] = 0;
        let sum = crate::wire::checksum::sum(&frame[14..34], 0);
        let checksum = crate::wire::checksum::finish(sum);
        frame[24..26].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Writes frames as a classic pcap with an Ethernet link type.
    pub fn write_pcap(
        frames: &[Frame],
        out: impl std::io::Write,
    ) -> Result<(), pcap_file::PcapError> {
        let header =
            PcapHeader { datalink: DataLink::ETHERNET, snaplen: 65535, ..PcapHeader::default() };
        let mut writer = PcapWriter::with_header(out, header)?;
        for (timestamp, data) in frames {
            writer.write_packet(&PcapPacket::new(*timestamp, data.len() as u32, data))?;
        }
        Ok(())
    }

    /// The captures under `examples/`, by path relative to the repository root.
    pub fn bundled() -> Vec<(&'static str, Vec<Frame>)> {
        vec![("examples/seed-dr.pcap", seed_dr_lab())]
    }
}
