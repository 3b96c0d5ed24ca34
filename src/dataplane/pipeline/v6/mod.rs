//! IPv6 through the pipeline: the per-family steps of issue 12, beside IPv4's.
//!
//! IPv4's hot path (the batch's one-pass classification) stays IPv4-only; an IPv6 frame goes
//! the step-by-step way, like IPv4's uncommon frames: [`parse`] (the fixed header's checks
//! with their exact drop reasons, the TCP/UDP view), then the flow step, [`rewrite`] (NAT and
//! FullNAT translation with the hop limit, echo replies, translated ICMPv6 errors) and
//! [`ndp`] (neighbour discovery for xlb's addresses, the IPv6 neighbour table and hold
//! queue, [`Core6`]).
//!
//! What IPv6 the pipeline forwards: TCP, UDP and ICMPv6 directly after the fixed header.
//! A packet to a VIP (or from a NAT backend) whose next header is an extension header —
//! hop-by-hop, routing, destination options, ESP, AH... — is dropped as `ipv6_ext_headers`
//! (one with a fragment header first as `fragment`): IPVS and Katran do not balance them
//! either, and fixed offsets keep the rewrites simple and exact.

// Wired into `CoreState::process` once the family-generic conntrack and snapshot land.
#![allow(dead_code, unused_imports)]

pub(super) mod ndp;
pub(super) mod parse;
pub(super) mod rewrite;

pub(super) use ndp::{Core6, Link6, Side6};
