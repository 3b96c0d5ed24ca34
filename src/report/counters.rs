//! Per-core counters: plain arrays indexed by an enum, written only by their core.
//!
//! Every verdict the pipeline gives is counted once, and every drop has a reason, so that
//! `rx == tx + pass + drop + held` holds for each core at any batch boundary.

use std::fmt;

macro_rules! counted_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            pub const COUNT: usize = $name::ALL.len();

            /// The snake_case name used in JSON, metrics and logs.
            pub const fn name(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

counted_enum! {
    /// Why a frame was dropped.
    pub enum DropReason {
        /// Shorter than the headers it claims (Ethernet, IPv4, ICMP).
        Truncated => "truncated",
        BadIpVersion => "bad_ip_version",
        BadIpHeaderLen => "bad_ip_header_len",
        BadIpTotalLen => "bad_ip_total_len",
        BadIpChecksum => "bad_ip_checksum",
        /// IPv4 options on a packet to a VIP (Katran drops these too).
        IpOptions => "ip_options",
        /// Fragments xlb does not balance (IPv4 and IPv6): ICMP and ICMPv6, a first
        /// fragment without its ports (TCP: its whole header), TCP at offset 1 (RFC 1858),
        /// two fragment headers in one IPv6 chain (fragments to a VIP otherwise follow
        /// their first fragment's flow, tunnel services' included).
        Fragment => "fragment",
        /// A later fragment to a VIP whose first fragment was not forwarded just before
        /// (it came later, or its entry in the core's fragment table was taken by another
        /// datagram or timed out, or its flow is gone).
        FragmentNoFirst => "fragment_no_first",
        /// IPv6 to a VIP with an extension header the pipeline does not walk past: ESP,
        /// AH, mobility, HIP, shim6 or experimental (253, 254), directly or ending a chain
        /// (a balancer can neither read past ESP nor rewrite under AH). Hop-by-hop,
        /// destination options and routing headers are walked to the TCP/UDP/ICMPv6 after
        /// them, and to a fragment header (fragments follow their first fragment's flow).
        Ipv6ExtHeaders => "ipv6_ext_headers",
        /// IPv6 to a VIP with a routing header whose segments left is not 0: the VIP is
        /// not the packet's final destination (RFC 8200 §4.4), so it is not xlb's to
        /// balance.
        Ipv6SegmentsLeft => "ipv6_segments_left",
        /// IPv6 to a VIP whose extension headers go on past the walk's bounds (more than
        /// 8 headers, or ending more than 1024 bytes into the payload).
        Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
        /// IPv6 to a VIP with a malformed extension header: one whose length runs past the
        /// payload, or a hop-by-hop header anywhere but first (RFC 8200 §4.1).
        BadIpv6ExtHeader => "bad_ipv6_ext_header",
        /// NAT/FullNAT (a routing hop) got a packet with TTL 0 or 1: it expires here, as in
        /// any router (no ICMP time exceeded is sent). DR, an L2 forward, keeps the TTL.
        TtlExceeded => "ttl_exceeded",
        /// A malformed TCP or UDP header.
        BadL4Header => "bad_l4_header",
        /// An ARP packet for an address of ours that is truncated or malformed.
        BadArp => "bad_arp",
        /// ARP from a sender no reply may go to: a broadcast, multicast or zero sender MAC
        /// (Ethernet source or ARP sender), or a broadcast, multicast, loopback or subnet
        /// broadcast sender address. (Sender 0.0.0.0 from a unicast MAC is an RFC 5227 probe
        /// and is answered.)
        ArpBadSender => "arp_bad_sender",
        /// ARP from another host claiming an address xlb owns (a VIP or local address): the
        /// sender address is ours, the sender MAC is not. Also counted in `arp_conflicts`.
        ArpConflict => "arp_conflict",
        /// A neighbour solicitation or advertisement about a VIP or local address that RFC
        /// 4861 §7.1 says to discard (bad checksum, hop limit not 255, malformed options...),
        /// or whose answer could only go to a group (a multicast solicitor MAC).
        BadNdp => "bad_ndp",
        /// NDP from another host claiming an address xlb owns (advertising a VIP or local
        /// address, or soliciting from one). Also counted in `ndp_conflicts`.
        NdpConflict => "ndp_conflict",
        /// Not an error: a neighbour solicitation for a VIP or local address whose answer is
        /// longer than the solicitation (a duplicate address detection probe, or one without
        /// a source link-layer option), so the answer left as a frame of its own (emitted)
        /// and the solicitation ends here.
        NdpAnswerEmitted => "ndp_answer_emitted",
        /// A tunnel service's packet too big for the egress MTU once wrapped, with DF set:
        /// answered with ICMP fragmentation needed (emitted) carrying the MTU less the
        /// tunnel's overhead.
        TunnelFragNeeded => "tunnel_frag_needed",
        /// A tunnel service's packet too big for the egress MTU once wrapped, without DF
        /// (xlb does not fragment), or with DF but no known way back to the client.
        TunnelTooBig => "tunnel_too_big",
        /// A tunnel service's packet wrapped with no room left in the emit queue (also
        /// counted in `emit_overflow`).
        TunnelEmitFull => "tunnel_emit_full",
        /// To a VIP, but no service listens on that port and protocol.
        NoService => "no_service",
        /// To a VIP, with an IP protocol xlb does not balance.
        UnsupportedProto => "unsupported_proto",
        /// ICMP to a VIP that is neither an echo request nor an error.
        UnsupportedIcmp => "unsupported_icmp",
        /// An ICMP error about a flow xlb does not track.
        IcmpNoFlow => "icmp_no_flow",
        /// Every backend of the service has weight 0 (or there are none).
        NoBackend => "no_backend",
        /// FullNAT: every local address:port tried towards that backend is held by a flow
        /// that may not be evicted (established TCP, replied UDP).
        NoLocalPort => "no_local_port",
        /// A reply to a FullNAT local address with no flow behind it.
        NoFlow => "no_flow",
        /// A reply of a tracked NAT/FullNAT flow (from its backend's address:port) that arrived
        /// on another interface than the one its backend is reached by: forged from the
        /// client side. It is dropped before it touches the flow.
        ReplyWrongInterface => "reply_wrong_interface",
        /// NAT/FullNAT flow refused: the conntrack table (or the flow's bucket) holds no flow
        /// it may evict (only established TCP and replied UDP flows).
        ConntrackFull => "conntrack_full",
        /// NAT/FullNAT SYN refused by the SYN-flood policy: the embryonic bound is reached
        /// and no embryonic flow is there to evict (a tiny table, or the oldest ones all
        /// completed their handshakes on other cores a moment ago).
        Flood => "flood",
        /// No interface or gateway reaches the destination.
        NoRoute => "no_route",
        /// The next hop's MAC is unknown and its hold queue is full.
        NeighborHoldFull => "neighbor_hold_full",
        /// The next hop's MAC is unknown and the frame is too large to hold.
        NeighborFrameTooLarge => "neighbor_frame_too_large",
        /// Received on an interface the snapshot does not know.
        UnknownInterface => "unknown_interface",
        /// A VLAN-tagged frame cut inside its tags or before the EtherType after them.
        VlanTruncated => "vlan_truncated",
        /// A frame with more than two VLAN tags (xlb parses an outer 802.1ad or 802.1Q tag
        /// and an inner 802.1Q one).
        VlanTooManyTags => "vlan_too_many_tags",
        /// To a VIP while the box is the standby of a VRRP pair (`[fleet] mode = "vrrp"`):
        /// the active box forwards the VIPs' traffic, a standby never does.
        Standby => "standby",
    }
}

counted_enum! {
    /// Everything else a core counts.
    pub enum Stat {
        RxPackets => "rx_packets",
        RxBytes => "rx_bytes",
        TxPackets => "tx_packets",
        PassPackets => "pass_packets",
        DropPackets => "drop_packets",
        /// Frames held waiting for a neighbour (their verdict was `Held`).
        HeldPackets => "held_packets",
        /// Held frames sent once their neighbour resolved.
        ReleasedPackets => "released_packets",
        /// Held frames given up because their neighbour never answered.
        HeldExpired => "held_expired",
        /// Frames forwarded wrapped for a tunnel service's real server (their verdict was
        /// `Encapsulated`): the wrapped copy leaves as a frame of the pipeline's own, counted
        /// in `emitted_packets` too. A wrapped packet held for its next hop is counted in
        /// `held_packets` instead.
        TunnelledPackets => "tunnelled_packets",
        /// Tunnelled IPv4 packets (or fragments) without DF too big for the tunnel's
        /// egress, cut into fragments that fit before they were wrapped, as a router on the
        /// way would cut them (each piece leaves in `emitted_packets`; the real server
        /// reassembles after decapsulation).
        TunnelRefragmented => "tunnel_refragmented",
        /// Frames the pipeline sent on its own (ARP requests, released frames).
        EmittedPackets => "emitted_packets",
        /// Frames the pipeline wanted to send on its own but had no room for.
        EmitOverflow => "emit_overflow",
        ArpRepliesSent => "arp_replies_sent",
        ArpRequestsSent => "arp_requests_sent",
        GratuitousArpSent => "gratuitous_arp_sent",
        NeighborsLearned => "neighbors_learned",
        /// ARP that would have taught a neighbour, refused because the table is full.
        NeighborTableFull => "neighbor_table_full",
        /// Learned neighbours pushed out of a full table to make room (the oldest that no
        /// backend or gateway needs), and stale ones forgotten by age.
        NeighborsEvicted => "neighbors_evicted",
        /// Relayed ARP a core refused to learn: a sender off every interface's subnet, or one
        /// no reply may go to (control relays only next hops xlb needs in the first place).
        NeighborsIgnored => "neighbors_ignored",
        /// ARP from another host claiming a VIP or local address (see `arp_conflict`).
        ArpConflicts => "arp_conflicts",
        /// ARP probes (RFC 5227, sender 0.0.0.0) sent for a VIP or local address before
        /// announcing it.
        ArpProbesSent => "arp_probes_sent",
        /// Neighbour advertisements answering solicitations for VIPs and local addresses.
        NdpAdvertsSent => "ndp_adverts_sent",
        /// Neighbour solicitations xlb sent for next hops (from the box's own address).
        NdpSolicitsSent => "ndp_solicits_sent",
        /// Unsolicited neighbour advertisements announcing VIPs and local addresses.
        UnsolicitedNdpSent => "unsolicited_ndp_sent",
        /// NDP from another host claiming a VIP or local address (see `ndp_conflict`).
        NdpConflicts => "ndp_conflicts",
        /// Duplicate address detection probes (RFC 4862, source `::`) sent for a VIP or
        /// local address before announcing it.
        NdpProbesSent => "ndp_probes_sent",
        IcmpEchoReplies => "icmp_echo_replies",
        IcmpErrorsForwarded => "icmp_errors_forwarded",
        NewFlows => "new_flows",
        /// A SYN reopening a closing or closed flow's 5-tuple (port reuse): scheduled anew
        /// as a new connection, as IPVS does (`conn_reuse_mode`).
        ReusedFlows => "reused_flows",
        /// A client's packet of a flow whose backend its health check took out of the
        /// service (`on_failure = "remove"`): the flow scheduled anew, as IPVS's
        /// `expire_nodest_conn`.
        RescheduledFlows => "rescheduled_flows",
        /// A client's bare SYN on an embryonic or established flow whose backend is drained
        /// (weight 0) or down: scheduled anew, so the drained backend gets no new connection
        /// through an old entry (a retransmission it never answered, or a port the client
        /// reused after a connection the backend refused or reset, whose RST DR never sees).
        RedirectedSyns => "redirected_syns",
        /// DR packets forwarded by consistent hashing alone: TCP packets of no tracked flow
        /// that open nothing (mid-stream pickup, a spoofed-ACK flood), and flows conntrack
        /// refused (flood policy, full bucket).
        StatelessPackets => "stateless_packets",
        /// Replies found in another core's table.
        CrossCoreHits => "cross_core_hits",
        /// TCP SYNs of tunnel services whose MSS option was lowered to `mss_clamp`.
        MssClamped => "mss_clamped",
        ExpiredFlows => "expired_flows",
        /// New connections of a persistent service sent where the client's template said.
        PersistentFollowed => "persistent_followed",
        /// New connections of a persistent service scheduled without a template: every
        /// slot the client's template could take holds another client's live one.
        PersistentTableFull => "persistent_table_full",
        /// The same because another core was still writing the client's template.
        PersistentBusy => "persistent_busy",
        /// Grown IPv6 connection tables a core refused (a reload added the first IPv6
        /// service, `Pipeline::grow_conntrack6`) because its small table held flows or the
        /// grown one was keyed unlike it: the core keeps its table; the other cores and
        /// `-L -n -c` then miss its flows. Zero unless an invariant broke.
        Ipv6TableRefused => "ipv6_table_refused",
    }
}

/// ipvsadm's per-destination statistics.
///
/// The packet counts lie apart from the byte counts: a forwarded packet adds to one count of
/// each (`CoreState::count_forwarded`), two scalar additions to memory; side by side, LLVM
/// paired them into a vector load, add and store with a constant loaded (ten instructions
/// a packet instead of about five).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendCounters {
    pub connections: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl BackendCounters {
    pub fn add(&mut self, other: &BackendCounters) {
        self.connections += other.connections;
        self.in_packets += other.in_packets;
        self.in_bytes += other.in_bytes;
        self.out_packets += other.out_packets;
        self.out_bytes += other.out_bytes;
    }
}

/// Signs of a backend's health seen in the traffic itself, for passive health checks
/// (NAT and FullNAT: xlb sees the backend's side only there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassiveCounters {
    /// Handshakes the backend answered: its SYN-ACK (NAT, FullNAT) or the client's ACK that
    /// completes the handshake (every mode).
    pub answered: u64,
    /// Client SYNs sent again on a flow still waiting for the backend's answer (every mode).
    pub unanswered: u64,
    /// Flows the backend reset.
    pub resets: u64,
    /// ICMP destination-unreachable errors on the way back from the backend's side.
    pub unreachable: u64,
}

/// One core's counters.
#[derive(Debug, Clone)]
pub struct Counters {
    stats: [u64; Stat::COUNT],
    drops: [u64; DropReason::COUNT],
    /// Indexed like [`crate::snapshot::Snapshot::backends`].
    pub backends: Vec<BackendCounters>,
    /// Indexed like `backends`.
    pub passive: Vec<PassiveCounters>,
}

impl Counters {
    pub fn new(backends: usize) -> Self {
        Counters {
            stats: [0; Stat::COUNT],
            drops: [0; DropReason::COUNT],
            backends: vec![BackendCounters::default(); backends],
            passive: vec![PassiveCounters::default(); backends],
        }
    }

    #[inline]
    pub fn add(&mut self, stat: Stat, n: u64) {
        self.stats[stat as usize] += n;
    }

    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
        self.stats[Stat::DropPackets as usize] += 1;
    }

    pub fn get(&self, stat: Stat) -> u64 {
        self.stats[stat as usize]
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Non-zero drop counts by reason.
    pub fn drop_reasons(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.drops(*r))).filter(|(_, n)| *n > 0)
    }

    #[inline]
    pub fn backend(&mut self, index: usize) -> Option<&mut BackendCounters> {
        self.backends.get_mut(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indices_dense() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.extend(Stat::ALL.iter().map(|s| s.name()));
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn drops_count_by_reason_and_in_total() {
        let mut counters = Counters::new(1);
        counters.drop(DropReason::Fragment);
        counters.drop(DropReason::Fragment);
        counters.drop(DropReason::NoRoute);
        assert_eq!(counters.get(Stat::DropPackets), 3);
        let reasons: Vec<_> = counters.drop_reasons().collect();
        assert_eq!(reasons, [(DropReason::Fragment, 2), (DropReason::NoRoute, 1)]);
    }
}
