//! ARP packets (RFC 826) for IPv4 over Ethernet, the only kind xlb answers or sends.
//!
//! The layout is fixed once the hardware and protocol types are: 8 bytes of header
//! (htype 1, ptype 0x0800, hlen 6, plen 4, operation) and then sender MAC, sender IPv4,
//! target MAC, target IPv4 — 28 bytes in all. Anything else (another link type, IPv6-sized
//! addresses) is [`WireError::Unsupported`].
//!
//! Invariant: once [`ArpPacket::new_checked`] has returned `Ok`, the buffer holds all 28
//! bytes and the four type/length fields say Ethernet/IPv4; no accessor panics in any case
//! (see the [`wire`](super) module docs). Bytes past 28 (Ethernet padding) are ignored.

use std::net::Ipv4Addr;

use super::ethernet::{EtherType, MacAddr};
use super::{Result, WireError, read_array, read_u8, read_u16, write_array, write_u8, write_u16};

mod field {
    use crate::wire::Field;

    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// The length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = field::TPA.end;

/// ARP hardware type for Ethernet (RFC 826, IANA "Hardware Types").
pub const HTYPE_ETHERNET: u16 = 1;

/// The ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOperation {
    /// Who has the target protocol address? (1)
    Request,
    /// The sender hardware address has the sender protocol address. (2)
    Reply,
    /// Any other code (RARP, InARP, ...), kept as is.
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    #[inline]
    fn from(code: u16) -> Self {
        match code {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    #[inline]
    fn from(operation: ArpOperation) -> u16 {
        match operation {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(code) => code,
        }
    }
}

view! {
    /// A view over an Ethernet/IPv4 ARP packet.
    ArpPacket
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// The length of an Ethernet/IPv4 ARP packet.
    pub const LEN: usize = LEN;

    /// Wraps a buffer holding an Ethernet/IPv4 ARP packet: [`WireError::Truncated`] if it is
    /// shorter than 28 bytes, [`WireError::Unsupported`] if the hardware or protocol type or
    /// length is not Ethernet/IPv4.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        if packet.buffer.as_ref().len() < LEN {
            return Err(WireError::Truncated);
        }
        let ethernet_ipv4 = packet.hardware_type() == HTYPE_ETHERNET
            && packet.protocol_type() == EtherType::IPV4
            && packet.hardware_len() == 6
            && packet.protocol_len() == 4;
        if !ethernet_ipv4 {
            return Err(WireError::Unsupported);
        }
        Ok(packet)
    }

    /// The hardware type (1 for Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    /// The protocol type, an EtherType (0x0800 for IPv4).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE)
    }

    /// The hardware address length in bytes.
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::HLEN)
    }

    /// The protocol address length in bytes.
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::PLEN)
    }

    /// The operation.
    #[inline]
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(read_u16(self.buffer.as_ref(), field::OPER))
    }

    /// The sender hardware address.
    #[inline]
    pub fn sender_hw_addr(&self) -> MacAddr {
        MacAddr(read_array(self.buffer.as_ref(), field::SHA))
    }

    /// The sender protocol address.
    #[inline]
    pub fn sender_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::SPA))
    }

    /// The target hardware address (zero in a request).
    #[inline]
    pub fn target_hw_addr(&self) -> MacAddr {
        MacAddr(read_array(self.buffer.as_ref(), field::THA))
    }

    /// The target protocol address.
    #[inline]
    pub fn target_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the Ethernet/IPv4 header fields: htype 1, ptype 0x0800, hlen 6, plen 4.
    #[inline]
    pub fn fill_header(&mut self) {
        let buffer = self.buffer.as_mut();
        write_u16(buffer, field::HTYPE, HTYPE_ETHERNET);
        write_u16(buffer, field::PTYPE, EtherType::IPV4);
        write_u8(buffer, field::HLEN, 6);
        write_u8(buffer, field::PLEN, 4);
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, operation: ArpOperation) {
        write_u16(self.buffer.as_mut(), field::OPER, operation.into());
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sender_hw_addr(&mut self, addr: MacAddr) {
        write_array(self.buffer.as_mut(), field::SHA, addr.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_sender_proto_addr(&mut self, addr: Ipv4Addr) {
        write_array(self.buffer.as_mut(), field::SPA, addr.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hw_addr(&mut self, addr: MacAddr) {
        write_array(self.buffer.as_mut(), field::THA, addr.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_proto_addr(&mut self, addr: Ipv4Addr) {
        write_array(self.buffer.as_mut(), field::TPA, addr.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        ArpEthIpv4Packet, ArpHardwareId, ArpOperation as EpOperation, ArpPacket as EpArp,
    };
    use proptest::prelude::*;

    const SHA: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const SPA: [u8; 4] = [10, 0, 0, 1];
    const TPA: [u8; 4] = [10, 0, 0, 9];

    fn request() -> Vec<u8> {
        let arp = ArpEthIpv4Packet {
            operation: EpOperation::REQUEST,
            sender_mac: SHA,
            sender_ipv4: SPA,
            target_mac: [0; 6],
            target_ipv4: TPA,
        };
        EpArp::from(arp).to_bytes().to_vec()
    }

    #[test]
    fn getters_on_a_known_request() {
        let bytes = request();
        assert_eq!(bytes.len(), LEN);
        let arp = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(arp.hardware_type(), ArpHardwareId::ETHERNET.0);
        assert_eq!(arp.protocol_type(), EtherType::IPV4);
        assert_eq!((arp.hardware_len(), arp.protocol_len()), (6, 4));
        assert_eq!(arp.operation(), ArpOperation::Request);
        assert_eq!(arp.sender_hw_addr(), MacAddr(SHA));
        assert_eq!(arp.sender_proto_addr(), Ipv4Addr::from(SPA));
        assert_eq!(arp.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(arp.target_proto_addr(), Ipv4Addr::from(TPA));
    }

    #[test]
    fn building_a_reply_matches_etherparse() {
        let mut bytes = [0u8; LEN];
        let mut arp = ArpPacket::new_unchecked(&mut bytes[..]);
        arp.fill_header();
        arp.set_operation(ArpOperation::Reply);
        arp.set_sender_hw_addr(MacAddr(SHA));
        arp.set_sender_proto_addr(Ipv4Addr::from(TPA));
        arp.set_target_hw_addr(MacAddr([0x02, 0, 0, 0, 0, 0x02]));
        arp.set_target_proto_addr(Ipv4Addr::from(SPA));
        assert!(ArpPacket::new_checked(&bytes[..]).is_ok());
        let expected = EpArp::from(ArpEthIpv4Packet {
            operation: EpOperation::REPLY,
            sender_mac: SHA,
            sender_ipv4: TPA,
            target_mac: [0x02, 0, 0, 0, 0, 0x02],
            target_ipv4: SPA,
        });
        assert_eq!(bytes[..], expected.to_bytes()[..]);
    }

    #[test]
    fn operation_codes() {
        for code in 0..=u16::MAX {
            assert_eq!(u16::from(ArpOperation::from(code)), code);
        }
        assert_eq!(ArpOperation::from(3), ArpOperation::Unknown(3));
        let mut bytes = request();
        let mut arp = ArpPacket::new_checked(&mut bytes[..]).unwrap();
        arp.set_operation(ArpOperation::Unknown(9));
        assert_eq!(arp.operation(), ArpOperation::Unknown(9));
    }

    #[test]
    fn new_checked_errors() {
        let good = request();
        assert_eq!(ArpPacket::new_checked(&good[..27]).unwrap_err(), WireError::Truncated);
        // Each of htype, ptype, hlen, plen wrong in turn.
        for (at, value) in [(1, 6u8), (2, 0x86), (4, 16), (5, 16)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert_eq!(ArpPacket::new_checked(&bad[..]).unwrap_err(), WireError::Unsupported);
        }
        // Ethernet padding after the packet is fine.
        let mut padded = good.clone();
        padded.resize(46, 0);
        assert_eq!(
            ArpPacket::new_checked(&padded[..]).unwrap().target_proto_addr(),
            Ipv4Addr::from(TPA)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = bytes;
            if let Ok(mut arp) = ArpPacket::new_checked(&mut bytes[..]) {
                let _ = (arp.operation(), arp.sender_hw_addr(), arp.sender_proto_addr());
                let _ = (arp.target_hw_addr(), arp.target_proto_addr());
                arp.set_operation(ArpOperation::Reply);
                arp.set_target_proto_addr(Ipv4Addr::BROADCAST);
                prop_assert_eq!(arp.target_proto_addr(), Ipv4Addr::BROADCAST);
            }
            // Unchecked views do not panic either, even on short buffers.
            let mut arp = ArpPacket::new_unchecked(&mut bytes[..]);
            let _ = (arp.operation(), arp.sender_hw_addr(), arp.target_proto_addr());
            arp.fill_header();
            arp.set_sender_hw_addr(MacAddr::BROADCAST);
        }
    }
}
