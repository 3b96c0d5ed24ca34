//! The null forwarder: the same I/O as xlb (the [`Port`]s of `dataplane/worker.rs`, AF_XDP sockets
//! in `xlb bench null`) with no load balancing at all. Every frame that arrives on the
//! receiving port gets fixed Ethernet addresses and leaves by the other port; nothing is
//! parsed, nothing tracked. It measures the I/O ceiling of the machine, the row every xlb
//! figure of the side-by-side benchmark is compared with.
//!
//! One iteration: receive a batch on `rx` (the rewrite runs inside the port's batch
//! callback, as the pipeline does in a worker), copy each frame to `tx` (xlb's two-armed
//! forwarding copies too: the sockets have a UMEM each), flush both ports. Frames shorter
//! than an Ethernet header are dropped (counted).
//!
//! Under preferred busy polling (`xlb bench null --busy-poll`, as `xlb run`) it spins
//! instead of waiting and polls the sending port too, so that both sockets drive their
//! NAPI: the same configuration as a busy-polling worker, for like-for-like rows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dataplane::Verdict;
use crate::dataplane::worker::Port;
use crate::report::{DropReason, PortStats};
use crate::snapshot::IfaceId;
use crate::wire::MacAddr;

/// The interface the null forwarder sends by, as its verdicts name it.
const TX_IFACE: IfaceId = IfaceId(1);
const RX_IFACE: IfaceId = IfaceId(0);
/// Empty iterations before the forwarder waits for frames, and how long it waits at most
/// (the worker's values).
pub const SPIN_ROUNDS: u32 = 256;
pub const IDLE_WAIT: Duration = Duration::from_millis(1);

/// Gives `frame` the Ethernet addresses `dst`, `src`; false (untouched) if it is shorter
/// than an Ethernet header.
pub fn rewrite(frame: &mut [u8], dst: MacAddr, src: MacAddr) -> bool {
    if frame.len() < 14 {
        return false;
    }
    frame[..6].copy_from_slice(&dst.0);
    frame[6..12].copy_from_slice(&src.0);
    true
}

/// What a null forwarder did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NullStats {
    /// Frames forwarded.
    pub forwarded: u64,
    /// Frames received and not forwarded (too short, or no room to send).
    pub dropped: u64,
    /// The receiving and sending ports' own counters.
    pub rx: PortStats,
    pub tx: PortStats,
}

/// A forwarder from `rx` to `tx` that only rewrites Ethernet addresses.
#[derive(Debug)]
pub struct NullForwarder<P: Port> {
    rx: P,
    tx: P,
    dst_mac: MacAddr,
    src_mac: MacAddr,
    forwarded: u64,
    /// Never wait when idle (busy polling: the forwarder runs the NAPI itself).
    spin: bool,
}

impl<P: Port> NullForwarder<P> {
    /// Frames arriving on `rx` leave by `tx` from `src_mac` (tx's own) to `dst_mac`.
    pub fn new(rx: P, tx: P, dst_mac: MacAddr, src_mac: MacAddr) -> Self {
        NullForwarder { rx, tx, dst_mac, src_mac, forwarded: 0, spin: false }
    }

    /// Spin instead of waiting when idle, as a busy-polling worker does.
    pub fn with_spin(mut self, spin: bool) -> Self {
        self.spin = spin;
        self
    }

    /// One iteration; returns the frames received.
    pub fn step(&mut self) -> usize {
        let NullForwarder { rx, tx, dst_mac, src_mac, forwarded, spin } = self;
        let (dst, src) = (*dst_mac, *src_mac);
        let received = rx.poll(
            &mut |frames, verdicts| {
                for (frame, verdict) in frames.iter_mut().zip(verdicts.iter_mut()) {
                    *verdict = if rewrite(frame, dst, src) {
                        Verdict::Tx(TX_IFACE)
                    } else {
                        Verdict::Drop(DropReason::Truncated)
                    };
                }
            },
            RX_IFACE,
            &mut |_, frame| *forwarded += u64::from(tx.send(frame)),
        );
        if *spin {
            // Busy polling: a port drives its NAPI when polled, and nothing else polls the
            // sending one (it receives nothing: no XSKMAP entry).
            tx.poll(&mut |_, _| {}, TX_IFACE, &mut |_, _| {});
        }
        tx.flush();
        rx.flush();
        received
    }

    /// Runs until `stop` is set or `duration` has passed. After [`SPIN_ROUNDS`] empty
    /// iterations it waits on `rx` (at most [`IDLE_WAIT`]) as a worker does, so that a
    /// receive thread sharing the core gets to run; unless it spins ([`Self::with_spin`]).
    pub fn run(&mut self, stop: &AtomicBool, duration: Duration) -> NullStats {
        let started = Instant::now();
        let mut rounds = 0u32;
        let mut idle = 0u32;
        while !stop.load(Ordering::Relaxed) {
            if self.step() > 0 {
                idle = 0;
            } else {
                idle = idle.saturating_add(1);
                if idle >= SPIN_ROUNDS && !self.spin {
                    self.rx.wait(IDLE_WAIT);
                }
            }
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(1024) && started.elapsed() >= duration {
                break;
            }
        }
        self.stats()
    }

    /// The figures so far.
    pub fn stats(&self) -> NullStats {
        let rx = self.rx.stats();
        let dropped = rx.rx_packets.saturating_sub(self.forwarded);
        NullStats { forwarded: self.forwarded, dropped, rx, tx: self.tx.stats() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::worker::testing::MemPort;
    use crate::report::BATCH;

    const DST: MacAddr = MacAddr([2, 0, 0, 0, 0, 4]);
    const SRC: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);

    #[test]
    fn rewrites_only_the_ethernet_addresses() {
        let mut frame: Vec<u8> = (0..60).collect();
        assert!(rewrite(&mut frame, DST, SRC));
        assert_eq!(&frame[..6], &DST.0);
        assert_eq!(&frame[6..12], &SRC.0);
        assert_eq!(frame[12..], (12..60).collect::<Vec<u8>>()[..]);
        let mut short = vec![0u8; 13];
        assert!(!rewrite(&mut short, DST, SRC));
        assert_eq!(short, [0u8; 13], "a frame shorter than a header is left as it was");
        assert!(!rewrite(&mut [0u8; 3], DST, SRC), "no panic on a runt");
    }

    #[test]
    fn forwards_every_frame_out_of_the_other_port() {
        let mut rx = MemPort::default();
        for n in 0..(BATCH as u8 + 5) {
            rx.inbox.push_back(vec![n; 60]);
        }
        rx.inbox.push_back(vec![0; 10]);
        let mut null = NullForwarder::new(rx, MemPort::default(), DST, SRC);
        let stop = AtomicBool::new(false);
        while null.step() > 0 {}
        let stats = null.run(&stop, Duration::ZERO);
        assert_eq!(stats.forwarded, BATCH as u64 + 5);
        assert_eq!(stats.dropped, 1, "the runt");
        assert_eq!(stats.tx.tx_packets, BATCH as u64 + 5);
        assert!(null.rx.wire.is_empty(), "nothing goes back out of the receiving port");
        for (n, frame) in null.tx.wire.iter().enumerate() {
            assert_eq!(&frame[..12], &[DST.0, SRC.0].concat()[..]);
            assert!(frame[12..].iter().all(|&b| b == n as u8), "payload untouched");
        }
    }

    /// Busy polling: the sending port is polled every step too (its socket then runs its
    /// NAPI); in interrupt mode it is left alone.
    #[test]
    fn spinning_polls_the_sending_port_too() {
        for spin in [false, true] {
            let mut tx = MemPort::default();
            tx.inbox.push_back(vec![0; 60]); // a poll would take it
            let mut null = NullForwarder::new(MemPort::default(), tx, DST, SRC).with_spin(spin);
            null.step();
            assert_eq!(null.tx.stats.rx_packets, u64::from(spin), "spin {spin}");
            assert!(null.tx.wire.is_empty(), "nothing received there is sent");
        }
    }
}
