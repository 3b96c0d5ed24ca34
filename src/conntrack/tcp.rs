//! The per-flow TCP state machine: a simplified IPVS `tcp_states` table.
//!
//! A load balancer sees at most both directions of a connection (NAT, FullNAT) and often only
//! the client's (DR), so it cannot follow the RFC 793 state machine; like IPVS
//! (`net/netfilter/ipvs/ip_vs_proto_tcp.c`) it keeps just enough state to pick a timeout:
//!
//! | state         | entered by                                                          |
//! |---------------|---------------------------------------------------------------------|
//! | `SynSeen`     | a first packet that is a SYN without ACK; a SYN without ACK in the original direction on a `Closing`/`Closed` flow (port reuse) |
//! | `Established` | a first packet that is not such a SYN (mid-stream pickup); ACK without SYN in the original direction on a `SynSeen` flow |
//! | `Closing`     | a FIN in either direction (except on a `Closed` flow)               |
//! | `Closed`      | a RST in either direction                                           |
//! | `Udp`         | every UDP flow, for its whole life                                  |
//!
//! RST wins over every other flag in the same segment; FIN after RST leaves the flow `Closed`
//! (its short timeout must not be lengthened by a stray FIN). A mid-stream first packet is
//! taken as `Established` and then its own FIN or RST applies, so a picked-up RST does not hold
//! an entry for the established timeout.
//!
//! Every function here is a pure function of its arguments: the table calls them inside a
//! compare-and-swap loop, so they may run more than once per packet.

use super::{Direction, FlowState};
use crate::flow::Proto;

/// TCP flag bits as they sit in byte 13 of the TCP header.
pub(super) const FIN: u8 = 0x01;
/// See [`FIN`].
pub(super) const SYN: u8 = 0x02;
/// See [`FIN`].
pub(super) const RST: u8 = 0x04;
/// See [`FIN`].
pub(super) const ACK: u8 = 0x10;

/// True for a connection-opening segment: SYN without ACK (or RST, which wins).
const fn is_open(flags: u8) -> bool {
    flags & (SYN | ACK | RST) == SYN
}

/// The state a new flow starts in, from its protocol and the flags of its first packet.
pub(super) const fn initial_state(proto: Proto, tcp_flags: Option<u8>) -> FlowState {
    match (proto, tcp_flags) {
        (Proto::Udp, _) => FlowState::Udp,
        (Proto::Tcp, Some(flags)) if is_open(flags) => FlowState::SynSeen,
        (Proto::Tcp, flags) => next_state(FlowState::Established, Direction::Original, flags),
    }
}

/// The state after one more packet of the flow, seen in `direction` with `tcp_flags`
/// (None: no TCP header, the state does not move).
pub(super) const fn next_state(
    state: FlowState,
    direction: Direction,
    tcp_flags: Option<u8>,
) -> FlowState {
    let flags = match (state, tcp_flags) {
        (FlowState::Udp, _) | (_, None) => return state,
        (_, Some(flags)) => flags,
    };
    if is_quiet(state, flags) {
        return state;
    }
    moved_state(state, direction, flags)
}

/// True for the packets of the common case, which leave the state as it is: no SYN, FIN or
/// RST, on a flow past the handshake (only an ACK can move `SynSeen`). A short cut in front
/// of [`moved_state`], which gives the same answer for them (tested exhaustively).
#[inline]
const fn is_quiet(state: FlowState, flags: u8) -> bool {
    flags & (SYN | FIN | RST) == 0 && !matches!(state, FlowState::SynSeen)
}

/// The TCP transition table proper: the state after a packet with `flags`.
const fn moved_state(state: FlowState, direction: Direction, flags: u8) -> FlowState {
    let original = matches!(direction, Direction::Original);
    if flags & RST != 0 {
        FlowState::Closed
    } else if original && is_open(flags) && matches!(state, FlowState::Closing | FlowState::Closed)
    {
        FlowState::SynSeen
    } else if flags & FIN != 0 {
        match state {
            FlowState::Closed => FlowState::Closed,
            _ => FlowState::Closing,
        }
    } else if original && flags & (SYN | ACK) == ACK && matches!(state, FlowState::SynSeen) {
        FlowState::Established
    } else {
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Original, Reply};
    use FlowState::*;

    #[test]
    fn first_packet_sets_initial_state() {
        let cases = [
            (Proto::Tcp, Some(SYN), SynSeen),
            (Proto::Tcp, Some(SYN | ACK), Established),
            (Proto::Tcp, Some(ACK), Established),
            (Proto::Tcp, Some(ACK | FIN), Closing),
            (Proto::Tcp, Some(RST), Closed),
            (Proto::Tcp, Some(SYN | RST), Closed),
            (Proto::Tcp, None, Established),
            (Proto::Udp, None, Udp),
            (Proto::Udp, Some(SYN), Udp),
        ];
        for (proto, flags, expected) in cases {
            assert_eq!(initial_state(proto, flags), expected, "{proto} {flags:?}");
        }
    }

    #[test]
    fn transitions_follow_the_table() {
        // (state, direction, flags, expected)
        let cases = [
            // The handshake: only the client's ACK establishes.
            (SynSeen, Reply, SYN | ACK, SynSeen),
            (SynSeen, Original, SYN, SynSeen),
            (SynSeen, Original, ACK, Established),
            (SynSeen, Reply, ACK, SynSeen),
            (SynSeen, Original, SYN | ACK, SynSeen),
            // Data, then the close, from either side.
            (Established, Original, ACK, Established),
            (Established, Reply, ACK | FIN, Closing),
            (Established, Original, ACK | FIN, Closing),
            (SynSeen, Original, FIN, Closing),
            (Closing, Original, ACK, Closing),
            (Closing, Reply, FIN | ACK, Closing),
            // RST from anywhere, and it wins over other flags.
            (Established, Reply, RST, Closed),
            (SynSeen, Original, RST | ACK, Closed),
            (Closing, Original, RST | FIN, Closed),
            (Closed, Reply, FIN, Closed),
            (Closed, Original, ACK, Closed),
            // Port reuse: only a client's bare SYN reopens.
            (Closed, Original, SYN, SynSeen),
            (Closing, Original, SYN, SynSeen),
            (Closed, Reply, SYN, Closed),
            (Closed, Original, SYN | ACK, Closed),
            // A SYN on a live connection does not reset it.
            (Established, Original, SYN, Established),
        ];
        for (state, direction, flags, expected) in cases {
            assert_eq!(
                next_state(state, direction, Some(flags)),
                expected,
                "{state:?} {direction:?} {flags:#04x}"
            );
        }
    }

    #[test]
    fn no_flags_and_udp_never_move() {
        for state in FlowState::ALL {
            assert_eq!(next_state(state, Original, None), state);
        }
        for flags in 0..=u8::MAX {
            assert_eq!(next_state(Udp, Original, Some(flags)), Udp);
            assert_eq!(next_state(Udp, Reply, Some(flags)), Udp);
        }
    }

    #[test]
    fn quiet_packets_are_exactly_a_short_cut() {
        let mut quiet = 0;
        for state in FlowState::ALL {
            for direction in [Original, Reply] {
                for flags in 0..=u8::MAX {
                    if is_quiet(state, flags) {
                        quiet += 1;
                        assert_eq!(moved_state(state, direction, flags), state, "{flags:#04x}");
                    }
                }
            }
        }
        // Established, Closing, Closed, Udp x 2 directions x the 32 flag bytes without SYN,
        // FIN or RST.
        assert_eq!(quiet, 4 * 2 * 32);
    }

    #[test]
    fn tcp_never_becomes_udp() {
        for state in [SynSeen, Established, Closing, Closed] {
            for direction in [Original, Reply] {
                for flags in 0..=u8::MAX {
                    assert_ne!(next_state(state, direction, Some(flags)), Udp);
                }
            }
        }
    }
}
