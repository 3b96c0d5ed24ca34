//! Flow identity: the transport protocol and the 5-tuple every table is keyed by.
//!
//! A [`FlowKey`] is generic over the address family ([`crate::family`]): `FlowKey<V4>` (the
//! default, so `FlowKey` is IPv4's key) and `FlowKey<V6>` differ only in their address fields.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::str::FromStr;

use crate::family::{Family, V4};

/// A transport protocol xlb balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IPv4 protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub const fn from_number(number: u8) -> Option<Proto> {
        match number {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }

    /// Lower-case name, as in the config (`"tcp"`, `"udp"`).
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(format!("unknown protocol {other:?}: expected \"tcp\" or \"udp\"")),
        }
    }
}

/// The 5-tuple of one direction of a flow, as it appears on the wire, in family `F`'s
/// addresses (IPv4 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey<F: Family = V4> {
    pub src_addr: F::Addr,
    pub dst_addr: F::Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: Proto,
}

impl<F: Family> FlowKey<F> {
    /// The key of the opposite direction.
    pub const fn reversed(&self) -> FlowKey<F> {
        FlowKey {
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }
}

// By hand: a derive would ask `F: Hash` of the family marker, which has no values to hash.
impl<F: Family> Hash for FlowKey<F> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.src_addr.hash(state);
        self.dst_addr.hash(state);
        self.src_port.hash(state);
        self.dst_port.hash(state);
        self.proto.hash(state);
    }
}

/// `tcp 10.0.0.1:40000 -> 10.0.0.2:80`; IPv6 addresses bracketed
/// (`tcp [2001:db8::1]:40000 -> [2001:db8::2]:80`).
impl<F: Family> fmt::Display for FlowKey<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.proto,
            SocketAddr::new(F::ip(self.src_addr), self.src_port),
            SocketAddr::new(F::ip(self.dst_addr), self.dst_port)
        )
    }
}

/// How a service's packets reach its real servers (LVS's `-g`, `-m`, `-i`, and DPVS's
/// FullNAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardMode {
    /// Direct routing: only the destination MAC changes; the real server holds the VIP on
    /// `lo` and answers the client directly.
    Dr,
    /// Destination NAT: VIP:port becomes backend:port; the backend's replies route through
    /// xlb, which rewrites their source back to VIP:port.
    Nat,
    /// Full NAT: destination and source are both rewritten (source to a local address and
    /// port of xlb's), so the backend needs no route back to the client.
    FullNat,
    /// IP tunnelling (LVS's IP TUN, Katran's only mode): the client's packet is kept whole
    /// and wrapped in an outer IPv4 header (IPIP) or IPv4 + UDP (GUE) to the real server,
    /// which may sit behind routers; it decapsulates, holds the VIP and answers the client
    /// directly, as in DR.
    Tunnel,
}

impl ForwardMode {
    pub const fn name(self) -> &'static str {
        match self {
            ForwardMode::Dr => "dr",
            ForwardMode::Nat => "nat",
            ForwardMode::FullNat => "fullnat",
            ForwardMode::Tunnel => "tunnel",
        }
    }

    /// Whether the client's IP packet reaches the real server unchanged (DR: only the
    /// Ethernet header changes; tunnel: wrapped whole), its TTL included: no routing hop,
    /// no tracked replies.
    pub const fn keeps_packet(self) -> bool {
        matches!(self, ForwardMode::Dr | ForwardMode::Tunnel)
    }

    /// ipvsadm's name for the mode in the `Forward` column of `-L -n`.
    pub const fn ipvsadm_name(self) -> &'static str {
        match self {
            ForwardMode::Dr => "Route",
            ForwardMode::Nat => "Masq",
            ForwardMode::FullNat => "FullNat",
            ForwardMode::Tunnel => "Tunnel",
        }
    }
}

impl fmt::Display for ForwardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ForwardMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dr" => Ok(ForwardMode::Dr),
            "nat" => Ok(ForwardMode::Nat),
            "fullnat" => Ok(ForwardMode::FullNat),
            "tunnel" => Ok(ForwardMode::Tunnel),
            other => Err(format!(
                "unknown forward mode {other:?}: expected \"dr\", \"nat\", \"fullnat\" or \"tunnel\""
            )),
        }
    }
}

/// How a tunnel service wraps a packet (`encap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// IP in IP of the service's family: IPv4 in IPv4 (protocol 4, RFC 2003), 20 bytes of
    /// overhead; IPv6 in IPv6 (next header 41, RFC 2473, as IPVS and ip6tnl), 40 bytes.
    Ipip,
    /// GUE's direct IP-in-UDP form (variant 1, draft-ietf-intarea-gue §4): the inner IP
    /// packet right after a UDP header to the given port, no GUE header; what Linux's `fou`
    /// with `ipproto 4` (IPv6: `ipproto 41`) decodes. 28 bytes of overhead (IPv6: 48).
    Gue { port: u16 },
}

impl Encap {
    /// GUE's default destination port (Katran's and the Linux `fou` examples').
    pub const GUE_PORT: u16 = 6080;

    /// The config's name (`"ipip"`, `"gue"`).
    pub const fn name(self) -> &'static str {
        match self {
            Encap::Ipip => "ipip",
            Encap::Gue { .. } => "gue",
        }
    }

    /// Bytes the outer headers add to the client's IP packet when the outer IP header is
    /// `ip_header` bytes (20 for IPv4, 40 for IPv6).
    pub const fn overhead(self, ip_header: usize) -> usize {
        match self {
            Encap::Ipip => ip_header,
            Encap::Gue { .. } => ip_header + 8,
        }
    }
}

/// Where a tunnel's outer source comes from (`tunnel_source = "10.9.0.0/24"`, or
/// `"2001:db8:9::/64"` for an IPv6 service): a prefix the network routes back to the box and
/// lets through its uRPF checks. A flow's outer source is the prefix with its host bits taken
/// from the flow hash (Katran's way), so the real server's NIC spreads flows over its receive
/// queues; a /32 (IPv6: /128) is one fixed address. Every address of the prefix may appear,
/// its all-zeros and all-ones hosts included. An IPv4 prefix is /8 to /32 and takes the low
/// 32 bits of the hash; an IPv6 one is /64 to /128 and takes the low 64 (config checks both).
/// A prefix is of one family; the family's `source_*` is `None` for the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelSource {
    /// The prefix's network address (host bits zero).
    pub network: std::net::IpAddr,
    /// 8 to 32 (IPv4), 64 to 128 (IPv6).
    pub prefix_len: u8,
}

impl TunnelSource {
    /// The outer IPv4 source of a flow with this flow hash; `None` for an IPv6 prefix.
    #[inline]
    pub fn source_v4(self, hash: u64) -> Option<std::net::Ipv4Addr> {
        let std::net::IpAddr::V4(network) = self.network else { return None };
        let host_mask = u32::MAX.checked_shr(u32::from(self.prefix_len)).unwrap_or(0);
        Some(std::net::Ipv4Addr::from_bits(network.to_bits() | (hash as u32 & host_mask)))
    }

    /// The outer IPv6 source of a flow with this flow hash; `None` for an IPv4 prefix.
    #[inline]
    pub fn source_v6(self, hash: u64) -> Option<std::net::Ipv6Addr> {
        let std::net::IpAddr::V6(network) = self.network else { return None };
        let host_mask = u128::MAX.checked_shr(u32::from(self.prefix_len)).unwrap_or(0);
        Some(std::net::Ipv6Addr::from_bits(network.to_bits() | (u128::from(hash) & host_mask)))
    }
}

impl fmt::Display for TunnelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// A tunnel service's settings (`encap`, `gue_port`, `tunnel_source`, `mss_clamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// IPIP (default) or GUE to a port (default [`Encap::GUE_PORT`]).
    pub encap: Encap,
    /// The outer source prefix, of the service's family; none: the egress interface's
    /// `tunnel_source`, else its own address (an IPv6 service: the interface's `addr6`).
    pub source: Option<TunnelSource>,
    /// Lower the MSS option of TCP SYNs to the real servers to at most this.
    pub mss_clamp: Option<u16>,
}

impl Default for Tunnel {
    fn default() -> Self {
        Tunnel { encap: Encap::Ipip, source: None, mss_clamp: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::V6;
    use std::net::Ipv4Addr;

    #[test]
    fn keys_print_ipv6_addresses_bracketed() {
        let v4 = FlowKey::<V4> {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 40000,
            dst_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(v4.to_string(), "tcp 10.0.0.1:40000 -> 10.0.0.2:80");
        let v6 = FlowKey::<V6> {
            src_addr: "2001:db8::1".parse().unwrap(),
            dst_addr: "2001:db8::2".parse().unwrap(),
            src_port: 40000,
            dst_port: 80,
            proto: Proto::Udp,
        };
        assert_eq!(v6.to_string(), "udp [2001:db8::1]:40000 -> [2001:db8::2]:80");
        assert_eq!(v6.reversed().reversed(), v6);
    }

    #[test]
    fn tunnel_sources_keep_the_prefix_and_take_host_bits_from_the_hash() {
        let prefix = TunnelSource { network: Ipv4Addr::new(10, 9, 0, 0).into(), prefix_len: 24 };
        assert_eq!(prefix.source_v4(0x1234_5678_9abc_def1), Some(Ipv4Addr::new(10, 9, 0, 0xf1)));
        assert_eq!(prefix.source_v4(0x42), Some(Ipv4Addr::new(10, 9, 0, 0x42)));
        assert_eq!(prefix.source_v6(0x42), None, "an IPv4 prefix has no IPv6 source");
        let one = TunnelSource { network: Ipv4Addr::new(10, 9, 0, 7).into(), prefix_len: 32 };
        assert_eq!(one.source_v4(u64::MAX), Some(Ipv4Addr::new(10, 9, 0, 7)));
        assert_eq!(prefix.to_string(), "10.9.0.0/24");
        let network: std::net::Ipv6Addr = "2001:db8:9::".parse().unwrap();
        let six = TunnelSource { network: network.into(), prefix_len: 64 };
        let expected: std::net::Ipv6Addr = "2001:db8:9:0:1234:5678:9abc:def1".parse().unwrap();
        assert_eq!(six.source_v6(0x1234_5678_9abc_def1), Some(expected));
        assert_eq!(six.source_v4(1), None);
        let narrow = TunnelSource { network: network.into(), prefix_len: 120 };
        let expected: std::net::Ipv6Addr = "2001:db8:9::f1".parse().unwrap();
        assert_eq!(narrow.source_v6(0x1234_5678_9abc_def1), Some(expected));
        let host = TunnelSource { network: network.into(), prefix_len: 128 };
        assert_eq!(host.source_v6(u64::MAX), Some(network));
        assert_eq!(six.to_string(), "2001:db8:9::/64");
    }
}
