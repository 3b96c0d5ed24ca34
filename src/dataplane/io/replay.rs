//! Offline replay: every frame of a capture goes through [`Pipeline::process`] in order, with
//! the capture's timestamps as `now`; every frame the pipeline transmits is written to an
//! output capture, in order.
//!
//! The output is a classic pcap with an Ethernet link type, readable by tcpdump, tshark and
//! scapy. The input may be pcap (any timestamp resolution or byte order) or pcapng with
//! Ethernet interfaces. Each input frame gets exactly one verdict; frames the pipeline sends
//! on its own (ARP requests, held frames released) follow the verdict of the frame that
//! caused them.
//!
//! A pcap has no notion of interfaces: a frame is taken to have arrived on the interface
//! whose MAC is its destination, else (broadcast) on the one whose subnet holds the address
//! it asks for, else on the first.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use serde::Serialize;

use crate::control::Snapshot;
use crate::dataplane::{CoreSlot, IfaceId, Pipeline, Stat, Verdict};
use crate::time::Instant;
use crate::wire::{ArpPacket, EtherType, EthernetFrame};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading the input capture: {0}")]
    Read(String),
    #[error("the input capture's link type is {0:?}; xlb replays Ethernet captures only")]
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
    /// Frames the pipeline sent on its own (ARP requests, released held frames).
    pub emitted: u64,
    /// Frames written to the output capture (`tx + emitted`).
    pub written: u64,
    pub drop_reasons: BTreeMap<String, u64>,
    /// Per backend `addr:port`, summed over the services that use it.
    pub backends: BTreeMap<String, BackendSummary>,
    /// Every other counter of the pipeline, by name.
    pub stats: BTreeMap<String, u64>,
    /// The verdict of every input frame, in order (`tx:0`, `pass`, `drop:<reason>`, `held`).
    #[serde(skip)]
    pub verdicts: Vec<Verdict>,
}

/// Replays the capture in `input` through a fresh single-core pipeline on `snapshot`,
/// writing transmitted frames to `output`.
pub fn replay(
    snapshot: Arc<Snapshot>,
    input: impl Read,
    output: impl Write,
) -> Result<ReplaySummary, ReplayError> {
    let frames = read_capture(input)?;
    let header =
        PcapHeader { datalink: DataLink::ETHERNET, snaplen: 65535, ..PcapHeader::default() };
    let mut writer =
        PcapWriter::with_header(output, header).map_err(|e| ReplayError::Write(e.to_string()))?;
    let mut pipeline = Pipeline::new(snapshot.clone(), CoreSlot::SINGLE);
    let mut summary = ReplaySummary::default();
    let mut write_error = None;
    for (timestamp, mut frame) in frames {
        let now = Instant::from_nanos(u64::try_from(timestamp.as_nanos()).unwrap_or(u64::MAX));
        let ingress = ingress_of(&snapshot, &frame);
        let verdict = pipeline.process(now, ingress, &mut frame);
        summary.verdicts.push(verdict);
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
    }
    if let Some(error) = write_error {
        return Err(ReplayError::Write(error));
    }
    summarize(&pipeline, &mut summary);
    Ok(summary)
}

/// Reads every frame of a pcap or pcapng capture into memory.
fn read_capture(mut input: impl Read) -> Result<Vec<(Duration, Vec<u8>)>, ReplayError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|e| ReplayError::Read(e.to_string()))?;
    let read_error = |e: pcap_file::PcapError| ReplayError::Read(e.to_string());
    let mut frames = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut reader = PcapNgReader::new(&bytes[..]).map_err(read_error)?;
        // Link types by interface id, as the interface description blocks declare them.
        let mut linktypes: Vec<DataLink> = Vec::new();
        let ethernet = |linktypes: &[DataLink], id: usize| match linktypes.get(id) {
            Some(DataLink::ETHERNET) => Ok(()),
            Some(other) => Err(ReplayError::LinkType(*other)),
            None => Err(ReplayError::Read(format!("a packet names undeclared interface {id}"))),
        };
        while let Some(block) = reader.next_block() {
            match block.map_err(read_error)? {
                Block::SectionHeader(_) => linktypes.clear(),
                Block::InterfaceDescription(interface) => linktypes.push(interface.linktype),
                Block::EnhancedPacket(packet) => {
                    ethernet(&linktypes, packet.interface_id as usize)?;
                    frames.push((packet.timestamp, packet.data.into_owned()));
                }
                Block::SimplePacket(packet) => {
                    ethernet(&linktypes, 0)?;
                    frames.push((Duration::ZERO, packet.data.into_owned()));
                }
                _ => {}
            }
        }
    } else {
        let mut reader = PcapReader::new(&bytes[..]).map_err(read_error)?;
        let datalink = reader.header().datalink;
        if datalink != DataLink::ETHERNET {
            return Err(ReplayError::LinkType(datalink));
        }
        while let Some(packet) = reader.next_packet() {
            let packet = packet.map_err(read_error)?;
            frames.push((packet.timestamp, packet.data.into_owned()));
        }
    }
    Ok(frames)
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

/// A verdict as the replay report spells it.
pub fn verdict_name(verdict: Verdict) -> String {
    match verdict {
        Verdict::Tx(iface) => format!("tx:{}", iface.0),
        Verdict::Pass => "pass".into(),
        Verdict::Drop(reason) => format!("drop:{}", reason.name()),
        Verdict::Held => "held".into(),
    }
}
