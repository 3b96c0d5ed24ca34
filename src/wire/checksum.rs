//! The Internet checksum: full sums (RFC 1071) and incremental updates (RFC 1624).
//!
//! A checksum is the one's complement of the one's-complement sum of the covered data taken
//! as big-endian 16-bit words (an odd trailing byte is padded with a zero). Building one is
//! `finish(sum(data, initial))`; TCP and UDP start from [`pseudo_header_sum`].
//!
//! [`sum`] adds 64-bit words with end-around carry, as Linux's `csum_partial` does: since
//! 2^16 ≡ 2^64 ≡ 1 (mod 0xffff), the folded result equals the sum over 16-bit words, and a
//! 64-bit accumulator with end-around carry cannot overflow however long the input.
//!
//! NAT changes a few fields and must not re-read the payload, so [`update_u16`] and friends
//! apply RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, in one's-complement arithmetic.
//!
//! # Invariant: an update equals a full recompute
//!
//! In one's-complement arithmetic 0x0000 (+0) and 0xffff (-0) are the same number. A full
//! recompute over data that is not all zeros always yields a folded sum in `1..=0xffff`, so
//! its checksum is never 0xffff. RFC 1624 §3 shows that eqn. 3 computed naively can yield
//! 0xffff where a recompute gives 0x0000 — for instance when the old checksum field held the
//! other zero. The helpers here therefore take the folded sum's non-zero representative:
//! whenever the old checksum verified and the new covered data is not all zeros, the result
//! is bit-for-bit what a full recompute gives. That precondition always holds where xlb uses
//! them: an IPv4 header has version 4 in its first byte, and a TCP/UDP pseudo-header carries
//! the protocol number. (The property tests check this against etherparse.)
//!
//! UDP reserves checksum 0 for "no checksum" (RFC 768): [`update_udp_u16`] and
//! [`update_udp_addr`] leave 0 alone and send a computed 0 as 0xffff.
//!
//! # IPv6
//!
//! TCP, UDP and ICMPv6 over IPv6 all cover the RFC 8200 §8.1 pseudo-header: source and
//! destination (16 bytes each), the upper-layer length as 32 bits, three zero bytes and the
//! next header (the upper-layer protocol, not the first extension header).
//! [`pseudo_header_sum_v6`], [`verifies_v6`] and [`compute_v6`] cover it; an address rewrite
//! is [`update_addr_v6`] (eight words, still one RFC 1624 update, so the invariant above
//! holds: the pseudo-header's next header is never 0 for TCP, UDP or ICMPv6). Over IPv6 a
//! UDP checksum of 0 is not allowed (RFC 8200 §8.1); [`update_udp_addr_v6`] still leaves a
//! received 0 alone — the packet is invalid either way, and a rewrite must not make it look
//! valid.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `b` to `a` with end-around carry (one's-complement addition over 64-bit words).
#[inline]
fn add_carry(a: u64, b: u64) -> u64 {
    let (sum, carry) = a.overflowing_add(b);
    // On overflow `sum < b <= u64::MAX`, so adding the carry back cannot overflow again.
    sum + u64::from(carry)
}

/// Folds a 64-bit one's-complement sum into 32 bits, keeping its value mod 0xffff and its
/// non-zeroness.
#[inline]
fn fold64(sum: u64) -> u32 {
    let (folded, carry) = ((sum >> 32) as u32).overflowing_add(sum as u32);
    folded + u32::from(carry)
}

/// The one's-complement partial sum of `data`, added to `initial` (another partial sum, e.g.
/// [`pseudo_header_sum`]).
///
/// An odd trailing byte counts as the high byte of a word padded with zero, so sums chain
/// (`sum(b, sum(a, 0)) == sum(a ++ b, 0)` after folding) only when `a` has even length.
/// The result is a 32-bit partial sum: [`fold`] or [`finish`] it.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = u64::from(initial);
    let mut rest = data;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        acc = add_carry(acc, u64::from_be_bytes(*word));
        rest = tail;
    }
    // Fewer than 8 bytes remain, at an even offset: pad them on the right, which also turns
    // an odd last byte into the high byte of its 16-bit word. Taken as 4, 2 and 1 bytes
    // rather than byte by byte: a 20-byte IPv4 header always leaves 4.
    let mut last = 0u64;
    if let Some((word, tail)) = rest.split_first_chunk::<4>() {
        last |= u64::from(u32::from_be_bytes(*word)) << 32;
        rest = tail;
    }
    let mut shift = if data.len() % 8 >= 4 { 16 } else { 48 };
    if let Some((word, tail)) = rest.split_first_chunk::<2>() {
        last |= u64::from(u16::from_be_bytes(*word)) << shift;
        rest = tail;
        shift -= 16;
    }
    if let Some(byte) = rest.first() {
        last |= u64::from(*byte) << (shift + 8);
    }
    fold64(add_carry(acc, last))
}

/// True if the one's-complement sum of `data` is negative zero (0xffff after folding): the
/// test a received header with its checksum field in place must pass. Same answer as
/// `fold(sum(data, 0)) == 0xffff`, for any `data`.
///
/// Faster than that: it sums the words in the machine's byte order, without swapping each
/// one. RFC 1071 §2(B): a byte-swapped sum is the swapped sum of the byte-swapped words,
/// and swapping maps 0xffff to itself and nothing else to it (a swap multiplies by 2^8 mod
/// 0xffff, which is invertible), so the verdict does not depend on the order. A 20-byte
/// header (IPv4 without options) is summed as two 64-bit words and one 32-bit word, with no
/// loop, and tested without folding: every end-around carry keeps the sum's value mod 0xffff
/// (2^64 and 2^32 are 1 mod 0xffff) and its non-zeroness, and a non-zero sum folds to 0xffff
/// exactly when it is a multiple of 0xffff (folding keeps the value mod 0xffff and gives
/// `1..=0xffff` for it), so the test is `acc != 0 && acc % 0xffff == 0`: one multiplication
/// and one compare ([`nonzero_multiple_of_ffff`]).
#[inline]
pub fn verifies(data: &[u8]) -> bool {
    if let Some((a, rest)) = data.split_first_chunk::<8>()
        && let Some((b, rest)) = rest.split_first_chunk::<8>()
        && let Ok(c) = <[u8; 4]>::try_from(rest)
    {
        let (a, b) = (u64::from_ne_bytes(*a), u64::from_ne_bytes(*b));
        let acc = add_carry(add_carry(a, b), u64::from(u32::from_ne_bytes(c)));
        return nonzero_multiple_of_ffff(acc);
    }
    let mut acc = 0u64;
    let mut chunks = data.chunks_exact(8);
    for word in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        acc = add_carry(acc, u64::from_ne_bytes(bytes));
    }
    // The tail sits at an even offset: padding it with zeros on the right in memory pads
    // an odd last byte as the high byte of its word, as `sum` does.
    let mut bytes = [0u8; 8];
    let rest = chunks.remainder();
    if let Some(slot) = bytes.get_mut(..rest.len()) {
        slot.copy_from_slice(rest);
    }
    acc = add_carry(acc, u64::from_ne_bytes(bytes));
    fold(fold64(acc)) == 0xffff
}

/// The inverse of 0xffff modulo 2^64 (0xffff is odd): Newton's iteration `x * (2 - d * x)`
/// doubles the bits that are right, from the 3 that `x = d` has (d * d = 1 mod 8).
const FFFF_INVERSE: u64 = {
    let mut inverse: u64 = 0xffff;
    let mut round = 0;
    while round < 5 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(0xffff_u64.wrapping_mul(inverse)));
        round += 1;
    }
    inverse
};

/// `value != 0 && value % 0xffff == 0` in one multiplication and one compare: multiplying by
/// the inverse of 0xffff maps the multiples `k * 0xffff` to `k` (`0..=u64::MAX / 0xffff`) and
/// every other value above that range (the map is a bijection); subtracting 1 moves 0 to the
/// top.
#[inline(always)]
fn nonzero_multiple_of_ffff(value: u64) -> bool {
    value.wrapping_mul(FFFF_INVERSE).wrapping_sub(1) < u64::MAX / 0xffff
}

/// Folds the carries of a partial sum into 16 bits, without complementing.
///
/// The result is 0 only if `sum` is 0; otherwise it lies in `1..=0xffff`.
#[inline]
pub fn fold(sum: u32) -> u16 {
    // The two halves added with end-around carry in one addition: the high half of
    // `sum + sum.rotate_left(16)` is high + low + the carry out of low + high.
    (sum.wrapping_add(sum.rotate_left(16)) >> 16) as u16
}

/// Turns a partial sum into the checksum to put on the wire: `!fold(sum)`.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// The partial sum of the IPv4 pseudo-header TCP and UDP checksums cover (RFC 793 §3.1,
/// RFC 768): source, destination, zero, protocol, and the transport length in bytes.
#[inline]
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    let (src, dst) = (src.to_bits(), dst.to_bits());
    (src >> 16)
        + (src & 0xffff)
        + (dst >> 16)
        + (dst & 0xffff)
        + u32::from(protocol)
        + u32::from(length)
}

/// Completes an RFC 1624 update: `sum` is `~HC + ~m + m'`. Takes the folded sum's non-zero
/// representative (0 and 0xffff are both zero) so the result matches a full recompute.
#[inline]
fn finish_update(sum: u32) -> u16 {
    match fold(sum) {
        0 => 0, // -0: the checksum of a non-zero sum that is ≡ 0 is !0xffff.
        folded => !folded,
    }
}

/// The new checksum after one 16-bit word it covers changed from `old` to `new` (RFC 1624
/// eqn. 3). Exact when `checksum` was correct and the new data is not all zeros.
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    finish_update(u32::from(!checksum) + u32::from(!old) + u32::from(new))
}

/// The new checksum after an aligned 32-bit value it covers changed from `old` to `new`.
#[inline]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    finish_update(
        u32::from(!checksum)
            + u32::from(!(old >> 16) as u16)
            + u32::from(!old as u16)
            + (new >> 16)
            + (new & 0xffff),
    )
}

/// The new checksum after an IPv4 address it covers (in the IP header or the TCP/UDP
/// pseudo-header) changed from `old` to `new`.
#[inline]
pub fn update_addr(checksum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(checksum, old.to_bits(), new.to_bits())
}

/// Maps an updated checksum to UDP's wire form: `0` stays `0` ("no checksum"), and a
/// computed 0 is sent as 0xffff (RFC 768).
#[inline]
fn udp_form(checksum: u16, update: impl FnOnce(u16) -> u16) -> u16 {
    match checksum {
        0 => 0,
        present => match update(present) {
            0 => 0xffff,
            updated => updated,
        },
    }
}

/// [`update_u16`] for a UDP checksum, where 0 means "no checksum": 0 stays 0, and a
/// computed 0 is sent as 0xffff.
#[inline]
pub fn update_udp_u16(checksum: u16, old: u16, new: u16) -> u16 {
    udp_form(checksum, |present| update_u16(present, old, new))
}

/// [`update_addr`] for a UDP checksum, where 0 means "no checksum": 0 stays 0, and a
/// computed 0 is sent as 0xffff.
#[inline]
pub fn update_udp_addr(checksum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    udp_form(checksum, |present| update_addr(present, old, new))
}

/// Several changes to the data a checksum covers, applied in one RFC 1624 update: the sum
/// `~m + m'` of every change, added to `~HC` and folded once.
///
/// Bit for bit the same as applying [`update_u16`], [`update_addr`] (or their UDP forms) one
/// change at a time, whatever the old checksum: each of those results depends only on the
/// one's-complement value it computes (0 when that value is zero, its complement otherwise),
/// so folding once at the end gives the same value, and the same representative, as folding
/// after every change.
///
/// A 32-bit change is added as one 64-bit term, `~m + m'` over the whole word, not as two
/// 16-bit ones: since 2^16 ≡ 1 (mod 0xffff) it has the same value. A 64-bit change is one
/// term too, folded to 32 bits ([`Delta::u64`]). Only the sum's value modulo 0xffff matters:
/// [`Delta::apply`]'s result is the complement of that value's representative in
/// `1..=0xffff` (both zeros give the same checksum, [`finish_update`]'s choice). The
/// accumulator is 64 bits wide and every term below 2^33: no number of changes a packet can
/// have overflows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    /// No change yet.
    pub const NONE: Delta = Delta(0);

    /// Adds a 16-bit word's change from `old` to `new`.
    #[inline]
    #[must_use]
    pub fn u16(self, old: u16, new: u16) -> Delta {
        Delta(self.0 + u64::from(!old) + u64::from(new))
    }

    /// Adds an aligned 32-bit value's change (two words).
    #[inline]
    #[must_use]
    pub fn u32(self, old: u32, new: u32) -> Delta {
        Delta(self.0 + u64::from(!old) + u64::from(new))
    }

    /// Adds an aligned 64-bit value's change (four words: two IPv4 addresses side by side):
    /// `~old + new` over the whole word with end-around carry (2^64 ≡ 1 mod 0xffff, so the
    /// value is the four words' changes'), folded to 32 bits: seven instructions where the
    /// two halves' 32-bit changes took nine.
    #[inline]
    #[must_use]
    pub fn u64(self, old: u64, new: u64) -> Delta {
        Delta(self.0 + u64::from(fold64(add_carry(!old, new))))
    }

    /// Adds an IPv4 address's change (in a header or a TCP/UDP pseudo-header).
    #[inline]
    #[must_use]
    pub fn addr(self, old: Ipv4Addr, new: Ipv4Addr) -> Delta {
        self.u32(old.to_bits(), new.to_bits())
    }

    /// Both changes.
    #[inline]
    #[must_use]
    pub fn and(self, other: Delta) -> Delta {
        Delta(self.0 + other.0)
    }

    /// The change folded into 16 bits, its one's-complement value kept (0 or 0xffff when
    /// it is zero): what a flow record stores of the change NAT makes to a packet's
    /// addresses (`conntrack::layout`). [`Delta::of_folded`] of it updates any checksum as
    /// the change itself does, since an update's result depends only on that value.
    #[inline]
    pub fn folded(self) -> u16 {
        fold(fold64(self.0))
    }

    /// The change of one's-complement value `folded` (a [`Delta::folded`]); `!folded` is the
    /// opposite change, the one that undoes it.
    #[inline(always)]
    pub const fn of_folded(folded: u16) -> Delta {
        Delta(folded as u64)
    }

    /// The new checksum: `checksum` updated for every change added.
    ///
    /// [`finish_update`]'s result without its test: 0xffff (a zero) is added to the sum, which
    /// is then never 0, so its fold is the representative in `1..=0xffff` (folding keeps a
    /// sum's value and its non-zeroness) and the checksum that fold's complement (0 for a
    /// sum ≡ 0, as `finish_update` gives).
    #[inline]
    pub fn apply(self, checksum: u16) -> u16 {
        !fold(fold64(u64::from(!checksum) + 0xffff + self.0))
    }

    /// [`Delta::apply`] for a UDP checksum: 0 ("no checksum") stays 0, and a computed 0 is
    /// sent as 0xffff.
    #[inline]
    pub fn apply_udp(self, checksum: u16) -> u16 {
        udp_form(checksum, |present| self.apply(present))
    }
}

/// The partial sum of the IPv6 pseudo-header (RFC 8200 §8.1) that TCP, UDP and ICMPv6
/// checksums over IPv6 cover: source, destination, the upper-layer `length` in bytes (32
/// bits) and `next_header` (the upper-layer protocol, e.g. 58 for ICMPv6).
#[inline]
pub fn pseudo_header_sum_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u32 {
    // Sixteen 16-bit words of at most 0xffff each, plus three more: far below u32::MAX.
    let words = |addr: Ipv6Addr| addr.segments().iter().map(|&w| u32::from(w)).sum::<u32>();
    words(src) + words(dst) + (length >> 16) + (length & 0xffff) + u32::from(next_header)
}

/// Whether `data` (a whole TCP segment, UDP datagram or ICMPv6 message, checksum field in
/// place) carries the right checksum over the IPv6 pseudo-header with `src`, `dst`,
/// `next_header` and `data.len()` as the length. Either form of zero verifies.
#[inline]
pub fn verifies_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, data: &[u8]) -> bool {
    let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
    fold(sum(data, pseudo_header_sum_v6(src, dst, next_header, length))) == 0xffff
}

/// The checksum to put on the wire for `data` (a whole upper-layer packet whose checksum field
/// holds 0) over the IPv6 pseudo-header with `src`, `dst`, `next_header` and `data.len()`.
/// For UDP, a result of 0 must be sent as 0xffff (RFC 8200 §8.1).
#[inline]
pub fn compute_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, data: &[u8]) -> u16 {
    let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
    finish(sum(data, pseudo_header_sum_v6(src, dst, next_header, length)))
}

/// `~m + m'` over the eight words of an IPv6 address that changed from `old` to `new`.
#[inline]
fn addr_v6_change(old: Ipv6Addr, new: Ipv6Addr) -> u64 {
    let (old, new) = (old.to_bits(), new.to_bits());
    // Four 32-bit halves of each: the same value mod 0xffff as eight 16-bit words, and zero
    // exactly when every word's term is (see [`Delta`] on 32-bit changes).
    (0..4)
        .map(|i| {
            let shift = 32 * i;
            u64::from(!((old >> shift) as u32)) + u64::from((new >> shift) as u32)
        })
        .sum()
}

/// The new checksum after an IPv6 address it covers (in a TCP, UDP or ICMPv6 pseudo-header)
/// changed from `old` to `new`: the IPv6 twin of [`update_addr`], with the same exactness.
#[inline]
pub fn update_addr_v6(checksum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    Delta::NONE.addr_v6(old, new).apply(checksum)
}

/// [`update_addr_v6`] for a UDP checksum: 0 stays 0, and a computed 0 is sent as 0xffff.
#[inline]
pub fn update_udp_addr_v6(checksum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    udp_form(checksum, |present| update_addr_v6(present, old, new))
}

impl Delta {
    /// Adds an IPv6 address's change (in a TCP, UDP or ICMPv6 pseudo-header).
    #[inline]
    #[must_use]
    pub fn addr_v6(self, old: Ipv6Addr, new: Ipv6Addr) -> Delta {
        Delta(self.0 + addr_v6_change(old, new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook definition, one 16-bit word at a time: the oracle for [`sum`].
    fn reference_fold(data: &[u8], initial: u32) -> u16 {
        let mut acc = u64::from(initial);
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u64::from(b));
            acc += hi | lo;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    fn words_to_bytes(words: &[u16]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    fn full_checksum(words: &[u16]) -> u16 {
        finish(sum(&words_to_bytes(words), 0))
    }

    proptest! {
        #[test]
        fn delta_is_the_updates_one_at_a_time(
            checksum in any::<u16>(),
            addrs in proptest::collection::vec((any::<u32>(), any::<u32>()), 0..3),
            words in proptest::collection::vec((any::<u16>(), any::<u16>()), 0..3),
            quads in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..3),
            edge in 0..3u8,
            quad_edge in 0..4u8,
        ) {
            // Also the edges: both zeros as the old checksum, and a 64-bit change whose
            // end-around carry is all there is (every word from 0xffff to 0, and back).
            let checksum = match edge { 0 => 0, 1 => 0xffff, _ => checksum };
            let mut quads = quads;
            match quad_edge {
                0 => quads.push((u64::MAX, 0)),
                1 => quads.push((0, u64::MAX)),
                _ => {}
            }
            let (mut one, mut udp, mut delta) = (checksum, checksum, Delta::NONE);
            for &(old, new) in &addrs {
                let (old, new) = (Ipv4Addr::from_bits(old), Ipv4Addr::from_bits(new));
                one = update_addr(one, old, new);
                udp = update_udp_addr(udp, old, new);
                delta = delta.addr(old, new);
            }
            // A 64-bit change is its four 16-bit words' (any order: the sum does not care).
            for &(old, new) in &quads {
                for shift in [0, 16, 32, 48] {
                    let (old, new) = ((old >> shift) as u16, (new >> shift) as u16);
                    one = update_u16(one, old, new);
                    udp = update_udp_u16(udp, old, new);
                }
                delta = delta.u64(old, new);
            }
            for &(old, new) in &words {
                one = update_u16(one, old, new);
                udp = update_udp_u16(udp, old, new);
                delta = delta.u16(old, new);
            }
            if addrs.is_empty() && words.is_empty() && quads.is_empty() {
                // No update at all: nothing to compare with one at a time.
                prop_assert_eq!(delta, Delta::NONE);
            } else {
                prop_assert_eq!(delta.apply(checksum), one);
                prop_assert_eq!(delta.apply_udp(checksum), udp);
            }
        }

        /// A change folded into 16 bits updates a checksum as the change itself does (with
        /// more changes added), and its complement as the opposite change (new back to old).
        #[test]
        fn a_folded_change_updates_as_the_change_and_its_complement_as_the_opposite(
            checksum in any::<u16>(),
            changes in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..4),
            more in (any::<u32>(), any::<u32>()),
            edge in 0..4u8,
        ) {
            let checksum = match edge { 0 => 0, 1 => 0xffff, _ => checksum };
            let mut change = Delta::NONE;
            let mut opposite = Delta::NONE;
            for &(old, new) in &changes {
                change = change.u64(old, new);
                opposite = opposite.u64(new, old);
            }
            let folded = change.folded();
            let more = Delta::NONE.u32(more.0, more.1);
            for (whole, folded) in
                [(change, Delta::of_folded(folded)), (opposite, Delta::of_folded(!folded))]
            {
                prop_assert_eq!(folded.and(more).apply(checksum), whole.and(more).apply(checksum));
                prop_assert_eq!(
                    folded.and(more).apply_udp(checksum),
                    whole.and(more).apply_udp(checksum)
                );
            }
        }
    }

    #[test]
    fn verifies_a_correct_ipv4_header_and_nothing_else() {
        // RFC 1071-style example header with its checksum (0xb861) in place.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verifies(&header));
        header[11] ^= 1;
        assert!(!verifies(&header));
        assert!(!verifies(&[0; 20]));
        assert!(verifies(&[0xff; 20]));
    }

    proptest! {
        #[test]
        fn verifies_is_fold_of_sum_is_minus_zero(
            mut data in proptest::collection::vec(any::<u8>(), 0..80),
            fix in any::<bool>(),
        ) {
            // Half the cases: put the right checksum in bytes 10..12 so the answer is true.
            if fix && data.len() >= 12 {
                data[10] = 0;
                data[11] = 0;
                let checksum = finish(sum(&data, 0));
                data[10..12].copy_from_slice(&checksum.to_be_bytes());
            }
            prop_assert_eq!(verifies(&data), fold(sum(&data, 0)) == 0xffff);
        }
    }

    #[test]
    fn nonzero_multiple_of_ffff_is_the_remainder_test() {
        assert_eq!(0xffff_u64.wrapping_mul(FFFF_INVERSE), 1);
        let limit = u64::MAX / 0xffff;
        for value in [0, 1, 0xfffe, 0xffff, 0x1_0000, 0x1_fffe, limit * 0xffff, u64::MAX]
            .into_iter()
            .chain((0..=4).flat_map(|k: u64| [k * 0xffff, k * 0xffff + 1, (limit - k) * 0xffff]))
        {
            assert_eq!(
                nonzero_multiple_of_ffff(value),
                value != 0 && value % 0xffff == 0,
                "{value:#x}"
            );
        }
    }

    proptest! {
        #[test]
        fn nonzero_multiple_of_ffff_agrees_with_the_remainder(value in any::<u64>(), k in any::<u64>()) {
            prop_assert_eq!(nonzero_multiple_of_ffff(value), value != 0 && value % 0xffff == 0);
            let multiple = (k % (u64::MAX / 0xffff + 1)) * 0xffff;
            prop_assert_eq!(nonzero_multiple_of_ffff(multiple), multiple != 0);
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 after folding.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(finish(sum(&data, 0)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_the_last_byte_on_the_right() {
        assert_eq!(fold(sum(&[0x01], 0)), 0x0100);
        // 0xabcd + 0xef00 = 0x1_9acd, which folds to 0x9ace.
        assert_eq!(fold(sum(&[0xab, 0xcd, 0xef], 0)), 0x9ace);
        // Nine bytes: one full 64-bit word, then a lone byte.
        let data = [0, 0, 0, 0, 0, 0, 0, 1, 0x80];
        assert_eq!(fold(sum(&data, 0)), 0x8001);
    }

    #[test]
    fn fold_and_finish() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(u32::MAX), 0xffff);
        assert_eq!(finish(0x1_fffe), 0);
        assert_eq!(finish(0), 0xffff);
    }

    #[test]
    fn pseudo_header_sum_adds_every_word() {
        let sum = pseudo_header_sum(
            Ipv4Addr::new(0x0a, 0x01, 0x02, 0x03),
            Ipv4Addr::new(0xc0, 0xa8, 0x00, 0x01),
            17,
            8,
        );
        assert_eq!(sum, 0x0a01 + 0x0203 + 0xc0a8 + 0x0001 + 17 + 8);
    }

    #[test]
    fn rfc1624_example_gives_plus_zero() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555, m' = 0x3285. Eqn. 3 gives 0x0000, the value a
        // recompute gives; eqn. 2 would have given 0xffff.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn update_from_the_other_zero_matches_a_recompute() {
        // The words sum to 0x1_fffe, which folds to 0xffff: the checksum is 0x0000, and
        // 0xffff verifies as well.
        let words = [0xffff, 0x0001, 0xfffe];
        assert_eq!(full_checksum(&words), 0x0000);
        let after = [0x0000, 0x0001, 0xfffe];
        let expected = full_checksum(&after);
        assert_eq!(expected, 0x0000);
        assert_eq!(update_u16(0x0000, 0xffff, 0x0000), expected);
        // Naively, ~(~0xffff + ~0xffff + 0) = ~0 = 0xffff: the -0 trap RFC 1624 warns of.
        assert_eq!(update_u16(0xffff, 0xffff, 0x0000), expected);
    }

    #[test]
    fn udp_zero_means_absent_and_computed_zero_is_sent_as_ffff() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(update_udp_addr(0, a, b), 0);
        assert_eq!(update_udp_u16(0, 1, 2), 0);
        // A checksum that becomes 0 after the update goes out as 0xffff.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0);
        assert_eq!(update_udp_u16(0xdd2f, 0x5555, 0x3285), 0xffff);
        assert_eq!(update_udp_u16(0xffff, 0x1234, 0x1234), 0xffff);
    }

    proptest! {
        #[test]
        fn sum_matches_the_word_by_word_definition(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            initial in any::<u32>(),
        ) {
            prop_assert_eq!(fold(sum(&data, initial)), reference_fold(&data, initial));
        }

        #[test]
        fn sums_chain_over_even_prefixes(
            a in proptest::collection::vec(any::<[u8; 2]>(), 0..40),
            b in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let a: Vec<u8> = a.concat();
            let whole: Vec<u8> = a.iter().chain(&b).copied().collect();
            prop_assert_eq!(fold(sum(&b, sum(&a, 0))), fold(sum(&whole, 0)));
        }

        #[test]
        fn update_u16_matches_a_full_recompute(
            mut words in proptest::collection::vec(any::<u16>(), 1..32),
            at in any::<prop::sample::Index>(),
            new in any::<u16>(),
            other_zero in any::<bool>(),
        ) {
            let at = at.index(words.len());
            let mut checksum = full_checksum(&words);
            if checksum == 0 && other_zero {
                checksum = 0xffff; // -0 verifies too: the update must still be exact.
            }
            let old = words[at];
            words[at] = new;
            prop_assume!(words.iter().any(|&w| w != 0));
            prop_assert_eq!(update_u16(checksum, old, new), full_checksum(&words));
        }

        #[test]
        fn update_u32_matches_a_full_recompute(
            mut words in proptest::collection::vec(any::<u16>(), 2..32),
            at in any::<prop::sample::Index>(),
            new in any::<u32>(),
        ) {
            let at = at.index(words.len() - 1);
            let checksum = full_checksum(&words);
            let old = (u32::from(words[at]) << 16) | u32::from(words[at + 1]);
            words[at] = (new >> 16) as u16;
            words[at + 1] = new as u16;
            prop_assume!(words.iter().any(|&w| w != 0));
            prop_assert_eq!(update_u32(checksum, old, new), full_checksum(&words));
            prop_assert_eq!(
                update_addr(checksum, Ipv4Addr::from_bits(old), Ipv4Addr::from_bits(new)),
                full_checksum(&words)
            );
        }

        #[test]
        fn udp_updates_match_a_full_recompute_in_udp_form(
            mut words in proptest::collection::vec(any::<u16>(), 2..32),
            new in any::<u32>(),
        ) {
            let udp = |words: &[u16]| match full_checksum(words) {
                0 => 0xffff,
                c => c,
            };
            let checksum = udp(&words);
            let old = (u32::from(words[0]) << 16) | u32::from(words[1]);
            words[0] = (new >> 16) as u16;
            words[1] = new as u16;
            prop_assume!(words.iter().any(|&w| w != 0));
            let by_addr =
                update_udp_addr(checksum, Ipv4Addr::from_bits(old), Ipv4Addr::from_bits(new));
            let by_words = update_udp_u16(
                update_udp_u16(checksum, (old >> 16) as u16, (new >> 16) as u16),
                old as u16,
                new as u16,
            );
            prop_assert_eq!(by_addr, udp(&words));
            prop_assert_eq!(by_words, udp(&words));
        }
    }
}

/// The IPv6 helpers against the word-by-word definition and a full recompute.
#[cfg(test)]
mod v6_tests {
    use super::*;
    use proptest::prelude::*;

    /// The RFC 8200 §8.1 pseudo-header, as bytes.
    fn pseudo_bytes(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        out.extend_from_slice(&src.octets());
        out.extend_from_slice(&dst.octets());
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, next_header]);
        out
    }

    fn addr(bits: u128) -> Ipv6Addr {
        Ipv6Addr::from_bits(bits)
    }

    #[test]
    fn all_ones_addresses_do_not_overflow() {
        let max = addr(u128::MAX);
        let sum = pseudo_header_sum_v6(max, max, 255, u32::MAX);
        assert_eq!(fold(sum), fold(super::sum(&pseudo_bytes(max, max, 255, u32::MAX), 0)));
    }

    proptest! {
        #[test]
        fn pseudo_header_sum_is_the_sum_of_its_bytes(
            src in any::<u128>(),
            dst in any::<u128>(),
            next_header in any::<u8>(),
            length in any::<u32>(),
        ) {
            let (src, dst) = (addr(src), addr(dst));
            let bytes = pseudo_bytes(src, dst, next_header, length);
            prop_assert_eq!(
                fold(pseudo_header_sum_v6(src, dst, next_header, length)),
                fold(sum(&bytes, 0))
            );
        }

        #[test]
        fn compute_then_verify(
            src in any::<u128>(),
            dst in any::<u128>(),
            mut data in proptest::collection::vec(any::<u8>(), 4..80),
            flip in any::<u16>(),
        ) {
            let (src, dst) = (addr(src), addr(dst));
            data[2] = 0;
            data[3] = 0;
            let checksum = compute_v6(src, dst, 58, &data);
            data[2..4].copy_from_slice(&checksum.to_be_bytes());
            prop_assert!(verifies_v6(src, dst, 58, &data));
            let wrong = checksum ^ flip;
            data[2..4].copy_from_slice(&wrong.to_be_bytes());
            let same_number = flip == 0 || (checksum == 0 && wrong == 0xffff)
                || (checksum == 0xffff && wrong == 0);
            prop_assert_eq!(verifies_v6(src, dst, 58, &data), same_number);
        }

        #[test]
        fn address_updates_match_a_full_recompute(
            src in any::<u128>(),
            dst in any::<u128>(),
            new_src in any::<u128>(),
            new_dst in any::<u128>(),
            next_header in prop::sample::select(vec![6u8, 17, 58]),
            mut data in proptest::collection::vec(any::<u8>(), 8..80),
            edge in 0..4u8,
        ) {
            // Edges: an address to itself, and to or from all zeros.
            let (src, dst) = (addr(src), addr(dst));
            let new_src = match edge { 0 => src, 1 => Ipv6Addr::UNSPECIFIED, _ => addr(new_src) };
            let new_dst = addr(new_dst);
            data[6] = 0;
            data[7] = 0;
            let before = compute_v6(src, dst, next_header, &data);
            let updated = update_addr_v6(update_addr_v6(before, src, new_src), dst, new_dst);
            let delta = Delta::NONE.addr_v6(src, new_src).addr_v6(dst, new_dst).apply(before);
            let after = compute_v6(new_src, new_dst, next_header, &data);
            prop_assert_eq!(updated, after);
            prop_assert_eq!(delta, after);
            // The UDP form: 0 stays 0, anything else is the recompute in UDP form.
            let udp = |c: u16| if c == 0 { 0xffff } else { c };
            prop_assert_eq!(update_udp_addr_v6(0, src, new_src), 0);
            let by_udp = update_udp_addr_v6(update_udp_addr_v6(udp(before), src, new_src), dst, new_dst);
            prop_assert_eq!(by_udp, udp(after));
        }
    }
}
