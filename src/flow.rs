//! Flow identity: the transport protocol and the 5-tuple every table is keyed by.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

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

/// The 5-tuple of one direction of a flow, as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: Proto,
}

impl FlowKey {
    /// The key of the opposite direction.
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}:{} -> {}:{}",
            self.proto, self.src_addr, self.src_port, self.dst_addr, self.dst_port
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
