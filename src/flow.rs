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

/// How a service's packets reach its real servers (LVS's `-g`, `-m`, and DPVS's FullNAT).
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
}

impl ForwardMode {
    pub const fn name(self) -> &'static str {
        match self {
            ForwardMode::Dr => "dr",
            ForwardMode::Nat => "nat",
            ForwardMode::FullNat => "fullnat",
        }
    }

    /// ipvsadm's name for the mode in the `Forward` column of `-L -n`.
    pub const fn ipvsadm_name(self) -> &'static str {
        match self {
            ForwardMode::Dr => "Route",
            ForwardMode::Nat => "Masq",
            ForwardMode::FullNat => "FullNat",
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
            other => Err(format!(
                "unknown forward mode {other:?}: expected \"dr\", \"nat\" or \"fullnat\""
            )),
        }
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
}
