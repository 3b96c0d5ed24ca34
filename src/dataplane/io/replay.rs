//! Offline replay: every frame of a capture goes through [`Pipeline::process`] in order, with
//! the capture's timestamps as `now`; every frame the pipeline transmits is written to an
//! output capture, in order.
//!
//! The output is a classic pcap with an Ethernet link type, readable by tcpdump, tshark and
//! scapy. The input may be pcap (any timestamp resolution or byte order) or pcapng, of
//! Ethernet or of Linux "cooked" frames (`LINUX_SLL` and `LINUX_SLL2`, what `tcpdump -i any`
//! writes). Each input frame gets exactly one [`Outcome`], handed to the caller as it is
//! given: the pipeline's verdict, or why it was skipped; frames the pipeline sends on its own
//! (ARP requests, held frames released) follow the verdict of the frame that caused them.
//!
//! A cooked frame becomes the Ethernet frame it was on the wire, as far as the capture
//! tells: the sender's MAC from the cooked header, the EtherType as it is, and a destination
//! MAC from the packet type: to this host → the MAC of the interface whose subnet holds the
//! sender's address (else the first interface), broadcast → ff:ff:ff:ff:ff:ff, multicast →
//! the group's MAC (IPv4 01:00:5e…, IPv6 33:33…), to another host → 00:00:00:00:00:00
//! (nobody's). Frames the capturing host sent (`outgoing`), frames of links that are not
//! Ethernet (loopback, TUN: `not_ethernet`) and cooked headers cut short (`truncated`) are
//! skipped, each counted by reason: they are not frames xlb would have received.
//!
//! Invariants:
//! - Streaming: frames are read, processed and written one at a time into one reused
//!   buffer, so memory does not grow with the capture (a capture of millions of frames
//!   replays in the memory of one frame plus the pipeline's tables). A capture that turns
//!   out bad part-way (a truncated block, a foreign link type) is an error once reached;
//!   what came before it has been replayed and written.
//! - Time: a pcapng packet's timestamp is counted in its interface's units, `if_tsresol`
//!   (10^-v s, or 2^-v s when the top bit is set; 10^-6 when the option is absent), plus the
//!   interface's `if_tsoffset` seconds. (The `pcap-file` crate hands the raw tick count over
//!   as nanoseconds whatever the resolution, so it is converted here.)
//!
//! A pcap has no notion of interfaces: a frame is taken to have arrived on the interface
//! whose MAC is its destination, else (broadcast) on the one whose subnet holds the address
//! it asks for, else on the first.

use std::collections::BTreeMap;
use std::io::{Chain, Cursor, Read, Write};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use serde::Serialize;

use crate::dataplane::{CoreSlot, Pipeline, Verdict};
use crate::family::V6;
use crate::report::Stat;
use crate::snapshot::{IfaceId, Snapshot};
use crate::time::Instant;
use crate::wire::{ArpPacket, EtherType, EthernetFrame};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading the input capture: {0}")]
    Read(String),
    #[error(
        "the input capture's link type is {0:?}; xlb replays Ethernet and Linux cooked \
         (LINUX_SLL, LINUX_SLL2: tcpdump -i any) captures only"
    )]
    LinkType(DataLink),
    #[error("writing the output capture: {0}")]
    Write(String),
}

/// One backend's figures in a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackendSummary {
    pub packets: u64,
    pub connections: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// What a replay did: the `--json` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    /// Input frames.
    pub packets: u64,
    /// Input frames transmitted (rewritten).
    pub tx: u64,
    pub pass: u64,
    pub drop: u64,
    /// Input frames held for a neighbour (they come out later as emitted frames, or expire).
    pub held: u64,
    /// Input frames forwarded wrapped (tunnel mode); their wrapped copies are in `emitted`.
    pub encapsulated: u64,
    /// Frames the pipeline sent on its own (ARP requests, released held frames, wrapped
    /// packets).
    pub emitted: u64,
    /// Frames written to the output capture (`tx + emitted`).
    pub written: u64,
    /// Input frames not handed to the pipeline, by [`Skip`] reason (cooked captures only).
    pub skipped: BTreeMap<String, u64>,
    pub drop_reasons: BTreeMap<String, u64>,
    /// Per backend `addr:port`, summed over the services that use it.
    pub backends: BTreeMap<String, BackendSummary>,
    /// Every other counter of the pipeline, by name.
    pub stats: BTreeMap<String, u64>,
}

/// Why an input frame was not handed to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A cooked frame the capturing host sent (packet type 4): not a frame xlb receives.
    Outgoing,
    /// A cooked frame of a link that is not Ethernet (loopback, TUN, …).
    NotEthernet,
    /// A cooked frame shorter than its cooked header.
    Truncated,
}

impl Skip {
    pub const fn name(self) -> &'static str {
        match self {
            Skip::Outgoing => "outgoing",
            Skip::NotEthernet => "not_ethernet",
            Skip::Truncated => "truncated",
        }
    }
}

/// What became of one input frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The pipeline's verdict.
    Verdict(Verdict),
    /// Not handed to the pipeline.
    Skipped(Skip),
}

/// Replays the capture in `input` through a fresh single-core pipeline on `snapshot`,
/// writing transmitted frames to `output` and handing each input frame's outcome, in order,
/// to `on_outcome`.
pub fn replay(
    snapshot: Arc<Snapshot>,
    input: impl Read,
    output: impl Write,
    mut on_outcome: impl FnMut(Outcome),
) -> Result<ReplaySummary, ReplayError> {
    let mut capture = Capture::open(input)?;
    let header =
        PcapHeader { datalink: DataLink::ETHERNET, snaplen: 65535, ..PcapHeader::default() };
    let mut writer =
        PcapWriter::with_header(output, header).map_err(|e| ReplayError::Write(e.to_string()))?;
    let mut pipeline = Pipeline::new(snapshot.clone(), CoreSlot::SINGLE);
    let mut summary = ReplaySummary::default();
    let mut write_error = None;
    let mut frame = Vec::new();
    while let Some((timestamp, link)) = capture.next_frame(&mut frame)? {
        if let Err(skip) = to_ethernet(link, &snapshot, &mut frame) {
            *summary.skipped.entry(skip.name().to_string()).or_default() += 1;
            on_outcome(Outcome::Skipped(skip));
            continue;
        }
        let now = Instant::from_nanos(u64::try_from(timestamp.as_nanos()).unwrap_or(u64::MAX));
        let ingress = ingress_of(&snapshot, &frame);
        let verdict = pipeline.process(now, ingress, &mut frame);
        on_outcome(Outcome::Verdict(verdict));
        let mut write = |data: &[u8]| {
            let packet = PcapPacket::new(timestamp, data.len() as u32, data);
            if let Err(e) = writer.write_packet(&packet) {
                write_error.get_or_insert(e.to_string());
            }
        };
        if let Verdict::Tx(_) = verdict {
            write(&frame);
            summary.written += 1;
        }
        summary.written += pipeline.drain_emitted(|_, data| write(data)) as u64;
        pipeline.maintain(now);
        if let Some(error) = write_error.take() {
            return Err(ReplayError::Write(error));
        }
    }
    summarize(&pipeline, &mut summary);
    Ok(summary)
}

/// A pcapng interface, as its description block declares it.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: DataLink,
    /// `if_tsresol`: 10^-v s per tick, or 2^-(v & 0x7f) s when the top bit is set.
    tsresol: u8,
    /// `if_tsoffset`: seconds added to every timestamp (signed).
    tsoffset: i64,
}

impl Interface {
    /// The pcapng default: microseconds, no offset.
    const DEFAULT_TSRESOL: u8 = 6;

    /// The time of a packet stamped `ticks` on this interface.
    fn timestamp(&self, ticks: u64) -> Duration {
        let ticks = u128::from(ticks);
        let nanos = if self.tsresol & 0x80 != 0 {
            (ticks * 1_000_000_000) >> (self.tsresol & 0x7f)
        } else if self.tsresol <= 9 {
            ticks * 10u128.pow(u32::from(9 - self.tsresol))
        } else {
            10u128.checked_pow(u32::from(self.tsresol - 9)).map_or(0, |divisor| ticks / divisor)
        };
        let time = Duration::new(
            u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
            (nanos % 1_000_000_000) as u32,
        );
        let offset = Duration::from_secs(self.tsoffset.unsigned_abs());
        if self.tsoffset >= 0 { time.saturating_add(offset) } else { time.saturating_sub(offset) }
    }
}

/// The first bytes of the input, read to tell pcapng from pcap, then the rest of it.
type Peeked<R> = Chain<Cursor<Vec<u8>>, R>;

/// A capture read one frame at a time.
enum Capture<R: Read> {
    Pcap(PcapReader<Peeked<R>>),
    PcapNg {
        reader: PcapNgReader<Peeked<R>>,
        /// The current section's interfaces, by id.
        interfaces: Vec<Interface>,
    },
}

impl<R: Read> Capture<R> {
    fn open(mut input: R) -> Result<Self, ReplayError> {
        let read_error = |e: pcap_file::PcapError| ReplayError::Read(e.to_string());
        let mut magic = Vec::with_capacity(4);
        (&mut input)
            .take(4)
            .read_to_end(&mut magic)
            .map_err(|e| ReplayError::Read(e.to_string()))?;
        let pcapng = magic == [0x0a, 0x0d, 0x0d, 0x0a];
        let input = Cursor::new(magic).chain(input);
        if pcapng {
            let reader = PcapNgReader::new(input).map_err(read_error)?;
            return Ok(Capture::PcapNg { reader, interfaces: Vec::new() });
        }
        let reader = PcapReader::new(input).map_err(read_error)?;
        let datalink = reader.header().datalink;
        if !replayable(datalink) {
            return Err(ReplayError::LinkType(datalink));
        }
        Ok(Capture::Pcap(reader))
    }

    /// Reads the next frame into `frame` (its old contents replaced) and returns its time
    /// and link type; `None` at the end of the capture.
    fn next_frame(
        &mut self,
        frame: &mut Vec<u8>,
    ) -> Result<Option<(Duration, DataLink)>, ReplayError> {
        let read_error = |e: pcap_file::PcapError| ReplayError::Read(e.to_string());
        frame.clear();
        match self {
            Capture::Pcap(reader) => {
                let datalink = reader.header().datalink;
                match reader.next_packet() {
                    None => Ok(None),
                    Some(packet) => {
                        let packet = packet.map_err(read_error)?;
                        frame.extend_from_slice(&packet.data);
                        Ok(Some((packet.timestamp, datalink)))
                    }
                }
            }
            Capture::PcapNg { reader, interfaces } => {
                let ethernet = |interfaces: &[Interface], id: usize| match interfaces.get(id) {
                    Some(interface) if replayable(interface.linktype) => Ok(*interface),
                    Some(other) => Err(ReplayError::LinkType(other.linktype)),
                    None => {
                        Err(ReplayError::Read(format!("a packet names undeclared interface {id}")))
                    }
                };
                while let Some(block) = reader.next_block() {
                    match block.map_err(read_error)? {
                        Block::SectionHeader(_) => interfaces.clear(),
                        Block::InterfaceDescription(description) => {
                            let mut interface = Interface {
                                linktype: description.linktype,
                                tsresol: Interface::DEFAULT_TSRESOL,
                                tsoffset: 0,
                            };
                            for option in &description.options {
                                match option {
                                    InterfaceDescriptionOption::IfTsResol(v) => {
                                        interface.tsresol = *v
                                    }
                                    InterfaceDescriptionOption::IfTsOffset(v) => {
                                        interface.tsoffset = *v as i64;
                                    }
                                    _ => {}
                                }
                            }
                            interfaces.push(interface);
                        }
                        Block::EnhancedPacket(packet) => {
                            let interface = ethernet(interfaces, packet.interface_id as usize)?;
                            // pcap-file hands the raw tick count over as nanoseconds.
                            let ticks =
                                u64::try_from(packet.timestamp.as_nanos()).unwrap_or(u64::MAX);
                            frame.extend_from_slice(&packet.data);
                            return Ok(Some((interface.timestamp(ticks), interface.linktype)));
                        }
                        Block::SimplePacket(packet) => {
                            let interface = ethernet(interfaces, 0)?;
                            frame.extend_from_slice(&packet.data);
                            return Ok(Some((Duration::ZERO, interface.linktype)));
                        }
                        _ => {}
                    }
                }
                Ok(None)
            }
        }
    }
}

/// True for the link types replay reads.
fn replayable(link: DataLink) -> bool {
    matches!(link, DataLink::ETHERNET | DataLink::LINUX_SLL | DataLink::LINUX_SLL2)
}

/// `ARPHRD_ETHER`: the cooked header's link type for Ethernet.
const ARPHRD_ETHER: u16 = 1;

/// Turns a frame of link type `link` into the Ethernet frame it was on the wire (see the
/// module docs), in place; Ethernet frames are left as they are.
fn to_ethernet(link: DataLink, snapshot: &Snapshot, frame: &mut Vec<u8>) -> Result<(), Skip> {
    // (header length, packet type, link type, address length, address, EtherType)
    let (header, packet_type, hatype, halen, addr, ethertype) = match link {
        DataLink::LINUX_SLL => {
            // packet type (2), ARPHRD (2), address length (2), address (8), protocol (2)
            let h = frame.get(..16).ok_or(Skip::Truncated)?;
            let be = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
            (16, be(0), be(2), be(4), &h[6..14], [h[14], h[15]])
        }
        DataLink::LINUX_SLL2 => {
            // protocol (2), reserved (2), ifindex (4), ARPHRD (2), packet type (1),
            // address length (1), address (8)
            let h = frame.get(..20).ok_or(Skip::Truncated)?;
            let hatype = u16::from_be_bytes([h[8], h[9]]);
            (20, u16::from(h[10]), hatype, u16::from(h[11]), &h[12..20], [h[0], h[1]])
        }
        _ => return Ok(()),
    };
    if hatype != ARPHRD_ETHER || halen != 6 {
        return Err(Skip::NotEthernet);
    }
    let src: [u8; 6] = addr[..6].try_into().expect("six bytes");
    let payload = &frame[header..];
    let dst: [u8; 6] = match packet_type {
        0 => host_mac(snapshot, u16::from_be_bytes(ethertype), payload),
        1 => [0xff; 6],
        2 => group_mac(u16::from_be_bytes(ethertype), payload).unwrap_or([0xff; 6]),
        3 => [0; 6],
        4 => return Err(Skip::Outgoing),
        // Packet types Linux does not write in captures (loopback, user, kernel): taken as
        // to another host, which xlb leaves alone.
        _ => [0; 6],
    };
    let mut ethernet = [0u8; 14];
    ethernet[..6].copy_from_slice(&dst);
    ethernet[6..12].copy_from_slice(&src);
    ethernet[12..].copy_from_slice(&ethertype);
    frame.splice(..header, ethernet);
    Ok(())
}

/// The MAC of the interface a cooked frame "to this host" arrived on: the one whose subnet
/// holds the sender's IPv4 or IPv6 address, else the first.
fn host_mac(snapshot: &Snapshot, ethertype: u16, payload: &[u8]) -> [u8; 6] {
    let on_link = |i: &crate::snapshot::Interface| match ethertype {
        0x0800 => payload.get(12..16).is_some_and(|a| {
            i.contains(Ipv4Addr::from(<[u8; 4]>::try_from(a).expect("four bytes")))
        }),
        0x86dd => payload.get(8..24).is_some_and(|a| {
            let source = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(a).expect("16 bytes"));
            i.subnet::<V6>().is_some_and(|subnet| subnet.contains(source))
        }),
        _ => false,
    };
    let interface =
        snapshot.interfaces.iter().find(|i| on_link(i)).or_else(|| snapshot.interfaces.first());
    interface.map_or([0; 6], |i| i.mac.0)
}

/// The Ethernet group address of an IPv4 or IPv6 multicast packet (RFC 1112, RFC 2464).
fn group_mac(ethertype: u16, payload: &[u8]) -> Option<[u8; 6]> {
    match ethertype {
        0x0800 => {
            let d = payload.get(16..20)?;
            Some([0x01, 0x00, 0x5e, d[1] & 0x7f, d[2], d[3]])
        }
        0x86dd => {
            let d = payload.get(36..40)?;
            Some([0x33, 0x33, d[0], d[1], d[2], d[3]])
        }
        _ => None,
    }
}

/// The interface a captured frame is taken to have arrived on.
fn ingress_of(snapshot: &Snapshot, frame: &[u8]) -> IfaceId {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return IfaceId(0) };
    if let Some(index) = snapshot.interfaces.iter().position(|i| i.mac == eth.dst_addr()) {
        return IfaceId(index as u8);
    }
    let asked: Option<Ipv4Addr> = match eth.ethertype() {
        EtherType::ARP => ArpPacket::new_checked(eth.payload()).ok().map(|a| a.target_proto_addr()),
        _ => None,
    };
    asked
        .and_then(|ip| snapshot.interfaces.iter().position(|i| i.contains(ip)))
        .map_or(IfaceId(0), |index| IfaceId(index as u8))
}

fn summarize(pipeline: &Pipeline, summary: &mut ReplaySummary) {
    let counters = pipeline.counters();
    summary.packets = counters.get(Stat::RxPackets);
    summary.tx = counters.get(Stat::TxPackets);
    summary.pass = counters.get(Stat::PassPackets);
    summary.drop = counters.get(Stat::DropPackets);
    summary.held = counters.get(Stat::HeldPackets);
    summary.encapsulated = counters.get(Stat::TunnelledPackets);
    summary.emitted = counters.get(Stat::EmittedPackets);
    summary.drop_reasons =
        counters.drop_reasons().map(|(reason, n)| (reason.name().to_string(), n)).collect();
    summary.stats = Stat::ALL.iter().map(|s| (s.name().to_string(), counters.get(*s))).collect();
    for (backend, figures) in pipeline.snapshot().backends.iter().zip(&counters.backends) {
        let entry =
            summary.backends.entry(format!("{}:{}", backend.addr, backend.port)).or_default();
        entry.connections += figures.connections;
        entry.in_packets += figures.in_packets;
        entry.out_packets += figures.out_packets;
        entry.in_bytes += figures.in_bytes;
        entry.out_bytes += figures.out_bytes;
        entry.packets = entry.in_packets + entry.out_packets;
    }
}

/// A verdict as the replay report spells it (`tx:0`, `pass`, `drop:REASON`, `held`).
pub fn verdict_name(verdict: Verdict) -> String {
    match verdict {
        Verdict::Tx(iface) => format!("tx:{}", iface.0),
        Verdict::Pass => "pass".into(),
        Verdict::Drop(reason) => format!("drop:{}", reason.name()),
        Verdict::Held => "held".into(),
        Verdict::Encapsulated => "encapsulated".into(),
    }
}

/// An outcome as the replay report spells it: a verdict's name, or `skip:REASON`.
pub fn outcome_name(outcome: Outcome) -> String {
    match outcome {
        Outcome::Verdict(verdict) => verdict_name(verdict),
        Outcome::Skipped(skip) => format!("skip:{}", skip.name()),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::net::Ipv4Addr;

    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };

    use super::*;
    use crate::control::Config;
    use crate::snapshot::IfaceId;
    use crate::testkit::{self, Host};

    const LB: Host = Host::new([0x02, 0, 0, 0, 0, 0x10], [10, 1, 1, 10]);
    const CLIENT: Host = Host::new([0x02, 0, 0, 0, 0, 0x20], [10, 1, 1, 20]);
    const RS1: Host = Host::new([0x02, 0, 0, 0, 0, 0x11], [10, 1, 1, 11]);

    /// A NAT UDP service: a backend's answer is translated while its flow lives (the default
    /// `udp_timeout`, 300 s) and passed to the kernel once the flow has expired.
    const NAT_UDP: &str = r#"
[[interface]]
name = "eth0"
addr = "10.1.1.10/24"
mac = "02:00:00:00:00:10"

[[neighbor]]
ip = "10.1.1.11"
mac = "02:00:00:00:00:11"
[[neighbor]]
ip = "10.1.1.20"
mac = "02:00:00:00:00:20"

[[service]]
vip = "10.1.1.101"
port = 53
proto = "udp"
forward = "nat"
[[service.backend]]
addr = "10.1.1.11"
port = 5353
"#;

    fn snapshot() -> Arc<Snapshot> {
        let config = Config::parse(NAT_UDP, "nat-udp.toml").unwrap();
        Arc::new(Snapshot::build(&config, 1).unwrap())
    }

    /// A query, then the backend's answer `gap` later, as a pcapng whose interface declares
    /// `if_tsresol` = `tsresol` (none: the default, microseconds) and `if_tsoffset` =
    /// `offset` seconds.
    fn pcapng(tsresol: Option<u8>, offset: Option<u64>, gap: Duration) -> Vec<u8> {
        let query = testkit::udp(
            CLIENT.mac,
            LB.mac,
            (CLIENT.ip, 40000),
            (Ipv4Addr::new(10, 1, 1, 101), 53),
            b"query",
        );
        let answer = testkit::udp(RS1.mac, LB.mac, (RS1.ip, 5353), (CLIENT.ip, 40000), b"answer");
        let ticks_per_second: f64 = match tsresol.unwrap_or(6) {
            r if r & 0x80 == 0 => 10f64.powi(i32::from(r)),
            r => 2f64.powi(i32::from(r & 0x7f)),
        };
        let start = Duration::from_secs(1_795_478_400 - offset.unwrap_or(0));
        let mut writer = PcapNgWriter::new(Vec::new()).unwrap();
        let mut options = Vec::new();
        options.extend(tsresol.map(InterfaceDescriptionOption::IfTsResol));
        options.extend(offset.map(InterfaceDescriptionOption::IfTsOffset));
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0,
                options,
            })
            .unwrap();
        for (at, frame) in [(start, query), (start + gap, answer)] {
            // The block stores `timestamp.as_nanos()` as the raw tick count.
            let ticks = (at.as_secs_f64() * ticks_per_second).round() as u64;
            writer
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::from_nanos(ticks),
                    original_len: frame.len() as u32,
                    data: Cow::Owned(frame),
                    options: Vec::new(),
                })
                .unwrap();
        }
        writer.into_inner()
    }

    #[test]
    fn pcapng_timestamps_follow_the_interface_resolution() {
        const TX: Verdict = Verdict::Tx(IfaceId(0));
        for tsresol in [None, Some(6), Some(9), Some(3), Some(0x80 | 20)] {
            for offset in [None, Some(1_000_000)] {
                for (gap, answer) in [(200, TX), (400, Verdict::Pass)] {
                    let capture = pcapng(tsresol, offset, Duration::from_secs(gap));
                    let mut verdicts = Vec::new();
                    replay(snapshot(), &capture[..], Vec::new(), |v| verdicts.push(v)).unwrap();
                    assert_eq!(
                        verdicts,
                        [Outcome::Verdict(TX), Outcome::Verdict(answer)],
                        "if_tsresol {tsresol:?}, if_tsoffset {offset:?}: an answer {gap} s \
                         after the query (udp_timeout 300 s)"
                    );
                }
            }
        }
    }

    /// `frame` (Ethernet) as `tcpdump -i any` writes it: a `LINUX_SLL` (v1) or `LINUX_SLL2`
    /// cooked header of packet type `packet_type` and link type `hatype`, then the payload.
    fn cooked(link: DataLink, packet_type: u8, hatype: u16, frame: &[u8]) -> Vec<u8> {
        let (src, ethertype, payload) = (&frame[6..12], &frame[12..14], &frame[14..]);
        let mut out = Vec::new();
        if link == DataLink::LINUX_SLL {
            out.extend_from_slice(&u16::from(packet_type).to_be_bytes());
            out.extend_from_slice(&hatype.to_be_bytes());
            out.extend_from_slice(&6u16.to_be_bytes());
            out.extend_from_slice(src);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(ethertype);
        } else {
            out.extend_from_slice(ethertype);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&7u32.to_be_bytes()); // ifindex
            out.extend_from_slice(&hatype.to_be_bytes());
            out.extend_from_slice(&[packet_type, 6]);
            out.extend_from_slice(src);
            out.extend_from_slice(&[0, 0]);
        }
        out.extend_from_slice(payload);
        out
    }

    fn pcap_of(link: DataLink, frames: &[Vec<u8>]) -> Vec<u8> {
        let header = PcapHeader { datalink: link, snaplen: 65535, ..PcapHeader::default() };
        let mut writer = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (i, frame) in frames.iter().enumerate() {
            let at = Duration::from_millis(1_000 + i as u64);
            writer.write_packet(&PcapPacket::new(at, frame.len() as u32, frame)).unwrap();
        }
        writer.into_writer()
    }

    fn replayed(capture: &[u8]) -> (Vec<Outcome>, Vec<u8>, ReplaySummary) {
        let mut outcomes = Vec::new();
        let mut output = Vec::new();
        let summary = replay(snapshot(), capture, &mut output, |o| outcomes.push(o)).unwrap();
        (outcomes, output, summary)
    }

    /// A client's query to the NAT VIP, an ARP request for the VIP (broadcast), the backend's
    /// answer: what a capture on the box's interface holds.
    fn exchange() -> Vec<Vec<u8>> {
        let vip = Ipv4Addr::new(10, 1, 1, 101);
        vec![
            testkit::arp(true, CLIENT.mac, CLIENT.ip, crate::wire::MacAddr::ZERO, vip),
            testkit::udp(CLIENT.mac, LB.mac, (CLIENT.ip, 40000), (vip, 53), b"query"),
            testkit::udp(RS1.mac, LB.mac, (RS1.ip, 5353), (CLIENT.ip, 40000), b"answer"),
        ]
    }

    #[test]
    fn cooked_captures_replay_like_the_interface_capture() {
        let ethernet = exchange();
        let (want, want_output, _) = replayed(&pcap_of(DataLink::ETHERNET, &ethernet));
        assert!(
            want.iter().all(|o| matches!(o, Outcome::Verdict(Verdict::Tx(_)))),
            "the Ethernet capture is answered and forwarded whole: {want:?}"
        );
        for link in [DataLink::LINUX_SLL, DataLink::LINUX_SLL2] {
            // The ARP request was a broadcast (1), the rest to this host (0).
            let frames: Vec<Vec<u8>> = ethernet
                .iter()
                .enumerate()
                .map(|(i, f)| cooked(link, if i == 0 { 1 } else { 0 }, ARPHRD_ETHER, f))
                .collect();
            let (outcomes, output, summary) = replayed(&pcap_of(link, &frames));
            assert_eq!(outcomes, want, "{link:?}");
            assert_eq!(output, want_output, "{link:?}: the same frames written");
            assert!(summary.skipped.is_empty(), "{link:?}: {summary:?}");
        }
    }

    #[test]
    fn cooked_frames_xlb_would_not_receive_are_skipped_and_counted() {
        let query = exchange().swap_remove(1);
        for link in [DataLink::LINUX_SLL, DataLink::LINUX_SLL2] {
            let frames = vec![
                cooked(link, 4, ARPHRD_ETHER, &query), // sent by the capturing host
                cooked(link, 0, 772, &query),          // ARPHRD_LOOPBACK
                cooked(link, 0, 65534, &query),        // ARPHRD_NONE (a TUN device)
                cooked(link, 0, ARPHRD_ETHER, &query)[..15].to_vec(), // cut in the header
                cooked(link, 3, ARPHRD_ETHER, &query), // to another host: xlb's not
            ];
            let (outcomes, output, summary) = replayed(&pcap_of(link, &frames));
            assert_eq!(
                outcomes[..4],
                [
                    Outcome::Skipped(Skip::Outgoing),
                    Outcome::Skipped(Skip::NotEthernet),
                    Outcome::Skipped(Skip::NotEthernet),
                    Outcome::Skipped(Skip::Truncated),
                ],
                "{link:?}"
            );
            assert!(
                matches!(outcomes[4], Outcome::Verdict(Verdict::Pass | Verdict::Drop(_))),
                "{link:?}: a frame to another host's MAC is not forwarded: {:?}",
                outcomes[4]
            );
            assert!(output.len() <= 24, "{link:?}: nothing written but the pcap header");
            let skipped: Vec<(&str, u64)> =
                summary.skipped.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            assert_eq!(skipped, [("not_ethernet", 2), ("outgoing", 1), ("truncated", 1)]);
            assert_eq!(summary.packets, 1, "{link:?}: only the last reached the pipeline");
        }
    }

    #[test]
    fn multicast_frames_get_their_group_mac() {
        let mut v4 = vec![0u8; 20];
        v4[16..20].copy_from_slice(&[224, 129, 2, 3]);
        assert_eq!(group_mac(0x0800, &v4), Some([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]));
        let mut v6 = vec![0u8; 40];
        v6[24..40]
            .copy_from_slice(&"ff02::1:ff00:10".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(group_mac(0x86dd, &v6), Some([0x33, 0x33, 0xff, 0x00, 0x00, 0x10]));
        assert_eq!(group_mac(0x0800, &v4[..19]), None, "cut short: no group");
    }
}
