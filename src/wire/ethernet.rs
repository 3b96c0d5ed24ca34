//! Ethernet II frames (IEEE 802.3 with an EtherType) and MAC addresses.
//!
//! [`EthernetFrame`] is a view over destination, source and EtherType (14 bytes) followed by
//! the payload. It does not interpret VLAN tags: a tagged frame shows
//! [`EtherType::VLAN`]/[`EtherType::QINQ`] and the tag at the start of its payload. The FCS
//! is not part of the buffer (NICs and AF_XDP strip it).
//!
//! Invariant: once [`EthernetFrame::new_checked`] has returned `Ok`, the buffer holds a whole
//! header; no accessor panics in any case (see the [`wire`](super) module docs).

use core::fmt;
use core::str::FromStr;

use super::{Field, Result, WireError, read_array, read_u16, write_array, write_u16};

mod field {
    use crate::wire::Field;

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// The length of an Ethernet II header: two addresses and the EtherType.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`, e.g. the unknown target of an ARP request.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Whether this is the broadcast address.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit (the least significant bit of the first octet) is set; true of
    /// broadcast too.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is an individual (unicast) address: not multicast, not broadcast.
    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The six octets, in transmission order.
    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl From<[u8; 6]> for MacAddr {
    #[inline]
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl fmt::Display for MacAddr {
    /// Lower-case hex octets separated by colons: `02:00:00:00:00:01`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;

    /// Parses six hex octets (one or two digits each, either case) separated all by `:` or
    /// all by `-`: `02:00:00:00:00:01`, `02-00-00-00-00-01`.
    fn from_str(text: &str) -> core::result::Result<Self, Self::Err> {
        let error = || {
            format!(
                "invalid MAC address {text:?}: expected six hex octets separated by ':' or '-', \
                 like 02:00:00:00:00:01"
            )
        };
        let separator = if text.contains(':') { ':' } else { '-' };
        let mut octets = [0u8; 6];
        let mut parts = text.split(separator);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(error)?;
            let valid =
                (1..=2).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                return Err(error());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| error())?;
        }
        match parts.next() {
            None => Ok(MacAddr(octets)),
            Some(_) => Err(error()),
        }
    }
}

/// Parses a MAC address written as six two-digit hex bytes separated by `:` or `-` (one
/// separator throughout), in either case: `02:00:00:00:00:01`, `02-00-00-00-00-0A`.
///
/// The strict form the config, the sysfs `address` files and `xlb bench`'s arguments are
/// read with; [`MacAddr`]'s `FromStr` also takes one-digit octets (`2:0:0:0:0:1`).
pub fn parse_mac(s: &str) -> core::result::Result<[u8; 6], String> {
    let expected = || {
        format!(
            "bad MAC address {s:?}: expected six two-digit hex bytes separated by ':' or '-', \
             like 02:00:00:00:00:01"
        )
    };
    let separator = match s.as_bytes().get(2) {
        Some(b':') => ':',
        Some(b'-') => '-',
        _ => return Err(expected()),
    };
    let mut mac = [0u8; 6];
    let mut parts = s.split(separator);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(expected)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(expected());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| expected())?;
    }
    match parts.next() {
        None => Ok(mac),
        Some(_) => Err(expected()),
    }
}

/// EtherType values xlb recognises (IEEE 802 numbers). Constants only: the field is a plain
/// `u16` so unknown types pass through untouched.
#[derive(Debug, Clone, Copy)]
pub struct EtherType;

impl EtherType {
    /// Internet Protocol version 4.
    pub const IPV4: u16 = 0x0800;
    /// Address Resolution Protocol.
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad (Q-in-Q) service tag.
    pub const QINQ: u16 = 0x88a8;
    /// Internet Protocol version 6.
    pub const IPV6: u16 = 0x86dd;
}

view! {
    /// A view over an Ethernet II frame.
    EthernetFrame
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// The length of the header: two addresses and the EtherType.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Wraps a buffer that holds at least a whole header (else [`WireError::Truncated`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    #[inline]
    fn addr(&self, field: Field) -> MacAddr {
        MacAddr(read_array(self.buffer.as_ref(), field))
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        self.addr(field::DESTINATION)
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        self.addr(field::SOURCE)
    }

    /// The EtherType, compare with the [`EtherType`] constants.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the header (empty if the buffer is shorter).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::PAYLOAD..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        write_array(self.buffer.as_mut(), field::DESTINATION, addr.0);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        write_array(self.buffer.as_mut(), field::SOURCE, addr.0);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }

    /// Everything after the header, writable (empty if the buffer is shorter).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(field::PAYLOAD..).unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    fn udp_frame() -> Vec<u8> {
        let builder =
            PacketBuilder::ethernet2(SRC, DST).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1, 2);
        let mut out = Vec::new();
        builder.write(&mut out, b"hi").unwrap();
        out
    }

    #[test]
    fn getters_on_a_known_frame() {
        let bytes = udp_frame();
        let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr(DST));
        assert_eq!(frame.src_addr(), MacAddr(SRC));
        assert_eq!(frame.ethertype(), EtherType::IPV4);
        assert_eq!(frame.payload().len(), 20 + 8 + 2);
        assert_eq!(frame.payload()[0], 0x45);
        assert_eq!(frame.as_ref(), &bytes[..]);
    }

    #[test]
    fn setters_round_trip() {
        let mut bytes = udp_frame();
        let mut frame = EthernetFrame::new_checked(&mut bytes[..]).unwrap();
        frame.set_dst_addr(MacAddr::BROADCAST);
        frame.set_src_addr(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]));
        frame.set_ethertype(EtherType::ARP);
        frame.payload_mut()[0] = 0x99;
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(frame.src_addr(), MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]));
        assert_eq!(frame.ethertype(), EtherType::ARP);
        assert_eq!(frame.payload()[0], 0x99);
        let bytes = frame.into_inner();
        assert_eq!(bytes[..6], [0xff; 6]);
        assert_eq!(bytes[12..14], [0x08, 0x06]);
    }

    #[test]
    fn new_checked_rejects_a_short_buffer() {
        assert_eq!(EthernetFrame::new_checked(&[0u8; 13][..]).unwrap_err(), WireError::Truncated);
        assert!(EthernetFrame::new_checked(&[0u8; 14][..]).unwrap().payload().is_empty());
    }

    #[test]
    fn unchecked_short_buffer_reads_zero_and_ignores_writes() {
        let mut bytes = [0xffu8; 8];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        assert_eq!(frame.ethertype(), 0);
        assert_eq!(frame.src_addr(), MacAddr::ZERO);
        frame.set_src_addr(MacAddr([1; 6]));
        assert!(frame.payload_mut().is_empty());
        assert_eq!(bytes, [0xff; 8]);
    }

    #[test]
    fn mac_display_and_parse() {
        let mac = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
        assert_eq!(mac.to_string(), "02:00:00:00:00:01");
        assert_eq!(format!("{mac:?}"), "02:00:00:00:00:01");
        assert_eq!(MacAddr([0xAB; 6]).to_string(), "ab:ab:ab:ab:ab:ab");
        assert_eq!("02:00:00:00:00:01".parse::<MacAddr>(), Ok(mac));
        assert_eq!("02-00-00-00-00-01".parse::<MacAddr>(), Ok(mac));
        assert_eq!("2:0:0:0:0:1".parse::<MacAddr>(), Ok(mac));
        assert_eq!("AA:bb:CC:dd:EE:ff".parse::<MacAddr>().unwrap().0[0], 0xaa);
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02:00:00:00:00:001",
            "02:00:00-00:00:01",
            "02:00:00:00:00:0g",
            "02:00:00:00::01",
            "+2:00:00:00:00:01",
            "020000000001",
        ] {
            let err = bad.parse::<MacAddr>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn parse_mac_takes_colons_or_dashes_in_either_case() {
        let mac = [0x02, 0xab, 0xCD, 0x00, 0x10, 0xff];
        assert_eq!(parse_mac("02:ab:cd:00:10:ff"), Ok(mac));
        assert_eq!(parse_mac("02-AB-CD-00-10-FF"), Ok(mac));
        for bad in [
            "",
            "02:ab:cd:00:10",
            "02:ab:cd:00:10:ff:00",
            "02:ab-cd:00:10:ff",
            "2:ab:cd:00:10:ff0",
            "02:ab:cd:00:10:fg",
            "02:ab:cd:00:10:+f",
            "02ab.cd00.10ff",
            "02:ab:cd:00:10:ff:",
        ] {
            let error = parse_mac(bad).expect_err(bad);
            assert!(error.contains("02:00:00:00:00:01"), "{error}");
        }
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_broadcast());
        assert!(MacAddr(SRC).is_unicast());
        assert!(!MacAddr::ZERO.is_multicast());
        assert_eq!(MacAddr(SRC).octets(), SRC);
    }

    proptest! {
        #[test]
        fn mac_display_parses_back(octets in any::<[u8; 6]>()) {
            let mac = MacAddr(octets);
            prop_assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
            prop_assert_eq!(mac.to_string().replace(':', "-").parse::<MacAddr>(), Ok(mac));
        }

        #[test]
        fn parse_mac_round_trips(mac in any::<[u8; 6]>(), dash in any::<bool>(), upper in any::<bool>()) {
            let separator = if dash { "-" } else { ":" };
            let text = mac.map(|b| if upper { format!("{b:02X}") } else { format!("{b:02x}") }).join(separator);
            prop_assert_eq!(parse_mac(&text), Ok(mac));
        }

        #[test]
        fn parse_mac_never_panics(text in "\\PC{0,24}") {
            let _ = parse_mac(&text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = bytes;
            match EthernetFrame::new_checked(&mut bytes[..]) {
                Ok(mut frame) => {
                    prop_assert!(frame.payload().len() + HEADER_LEN == frame.as_ref().len());
                    let _ = (frame.dst_addr(), frame.src_addr(), frame.ethertype());
                    frame.set_ethertype(EtherType::IPV6);
                    frame.set_dst_addr(MacAddr::ZERO);
                    frame.set_src_addr(MacAddr::BROADCAST);
                    let _ = frame.payload_mut();
                }
                Err(e) => prop_assert_eq!(e, WireError::Truncated),
            }
        }
    }
}
