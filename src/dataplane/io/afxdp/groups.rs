//! The solicited-node multicast groups of xlb's IPv6 addresses, joined on the interfaces
//! xlb serves, so that a real NIC lets neighbour solicitations for a VIP through to XDP.
//!
//! A host resolving an IPv6 VIP sends its neighbour solicitation to the VIP's solicited-node
//! group, `ff02::1:ffXX:XXXX` with the VIP's low 24 bits (RFC 4291 §2.7.1), which is the
//! Ethernet multicast address `33:33:ff:XX:XX:XX` (RFC 2464 §7). A NIC hands the driver —
//! and so XDP — only the multicast addresses someone asked it for; the kernel asks for the
//! groups of its own addresses, not for VIPs it does not hold. Unless xlb joins the group,
//! the solicitation is filtered in hardware and the VIP never resolves (Cilium shipped NDP for
//! VIPs without this, and it did not work on real NICs; a veth passes every frame, which is
//! why tests on veth alone do not show the problem).
//!
//! How: by default the IPv6 group is joined on the interface with `IPV6_JOIN_GROUP` on a UDP
//! socket that is never bound (so it receives nothing). The kernel then does what it does for
//! its own addresses: it adds the group's MAC to the device's filter *and* reports the
//! membership with MLD, so a switch or Linux bridge that snoops MLD forwards the
//! solicitations to this port too. A link-layer membership alone (`AF_PACKET`,
//! `PACKET_ADD_MEMBERSHIP` of `33:33:ff:XX:XX:XX`) programs the filter but sends no MLD
//! report; it is the fallback where the kernel has no IPv6 at all (booted with
//! `ipv6.disable=1`: no `AF_INET6` socket can be made), on an `AF_PACKET` socket of protocol
//! 0 (it receives nothing). Joining needs no address on the interface, and works with
//! `disable_ipv6` set on it.
//!
//! A membership lasts as long as the socket that made it: the kernel drops it when
//! [`SolicitedGroups`] drops, or when the process dies, even by `SIGKILL`. [`SolicitedGroups::sync`]
//! follows the running snapshot's addresses (start, reload), leaving the groups no longer
//! needed and joining the new ones; a group that stays is never left, not even for a moment.
//!
//! Invariants:
//! - Each group is joined once per interface (several VIPs may share one: the kernel counts
//!   memberships per socket, so joining twice would need leaving twice).
//! - At most [`GROUPS_PER_SOCKET`] groups on one UDP socket: each membership takes socket
//!   option memory, which `net.core.optmem_max` bounds per socket.
//! - `unsafe` only for the link-layer membership's `setsockopt`, with its `packet_mreq`
//!   initialised in full and passed with its exact size.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::mem;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Socket, Type};

use crate::wire::ndp::{multicast_mac, solicited_node};

/// The most groups joined on one UDP socket (a membership takes about 40 bytes of the
/// socket's option memory; `net.core.optmem_max` is 20 KiB at the least).
pub const GROUPS_PER_SOCKET: usize = 64;

/// Why a group could not be joined or left.
#[derive(Debug, thiserror::Error)]
#[error("interface index {ifindex}: {action} solicited-node group {group}: {error}")]
pub struct GroupError {
    /// The interface.
    pub ifindex: u32,
    /// "joining" or "leaving".
    pub action: &'static str,
    /// The group (`ff02::1:ffXX:XXXX`).
    pub group: Ipv6Addr,
    /// What the kernel said.
    pub error: io::Error,
}

/// How the groups are joined on one interface.
#[derive(Debug)]
enum Way {
    /// IPv6 memberships (MLD reported), on as many UDP sockets as needed, each with the
    /// groups it joined.
    Ipv6(Vec<(Socket, BTreeSet<Ipv6Addr>)>),
    /// Link-layer memberships of the groups' MACs on one `AF_PACKET` socket.
    LinkLayer(Socket, BTreeSet<Ipv6Addr>),
}

/// The solicited-node groups xlb holds on one interface. See the module docs.
#[derive(Debug)]
pub struct SolicitedGroups {
    ifindex: u32,
    way: Way,
}

impl SolicitedGroups {
    /// No groups yet on interface `ifindex` (of the calling thread's network namespace):
    /// IPv6 memberships where the kernel has IPv6, else link-layer ones.
    pub fn new(ifindex: u32) -> io::Result<SolicitedGroups> {
        match Socket::new(Domain::IPV6, Type::DGRAM, None) {
            Ok(_) => Ok(SolicitedGroups { ifindex, way: Way::Ipv6(Vec::new()) }),
            Err(error) if error.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                SolicitedGroups::link_layer(ifindex)
            }
            Err(error) => Err(error),
        }
    }

    /// No groups yet, joined as link-layer memberships (the fallback of [`new`](Self::new)).
    /// Needs `CAP_NET_RAW`.
    pub fn link_layer(ifindex: u32) -> io::Result<SolicitedGroups> {
        // Protocol 0: the socket receives no frame; it only holds memberships.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        Ok(SolicitedGroups { ifindex, way: Way::LinkLayer(socket, BTreeSet::new()) })
    }

    /// Whether the memberships are link-layer ones (no MLD report).
    pub fn is_link_layer(&self) -> bool {
        matches!(self.way, Way::LinkLayer(..))
    }

    /// The groups joined, sorted.
    pub fn groups(&self) -> Vec<Ipv6Addr> {
        match &self.way {
            Way::Ipv6(sockets) => {
                let all: BTreeSet<Ipv6Addr> =
                    sockets.iter().flat_map(|(_, groups)| groups.iter().copied()).collect();
                all.into_iter().collect()
            }
            Way::LinkLayer(_, groups) => groups.iter().copied().collect(),
        }
    }

    /// Holds exactly the solicited-node groups of `addrs`: leaves the groups no longer
    /// needed, then joins the new ones. A failure does not stop the others; the first is
    /// returned (what succeeded stays done, and the next call tries the rest again).
    pub fn sync(&mut self, addrs: impl IntoIterator<Item = Ipv6Addr>) -> Result<(), GroupError> {
        let wanted: BTreeSet<Ipv6Addr> = addrs.into_iter().map(solicited_node).collect();
        let held: BTreeSet<Ipv6Addr> = self.groups().into_iter().collect();
        let mut first_error = None;
        for &group in held.difference(&wanted) {
            if let Err(error) = self.leave(group) {
                first_error.get_or_insert(self.error("leaving", group, error));
            }
        }
        for &group in wanted.difference(&held) {
            if let Err(error) = self.join(group) {
                first_error.get_or_insert(self.error("joining", group, error));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn error(&self, action: &'static str, group: Ipv6Addr, error: io::Error) -> GroupError {
        GroupError { ifindex: self.ifindex, action, group, error }
    }

    fn join(&mut self, group: Ipv6Addr) -> io::Result<()> {
        let ifindex = self.ifindex;
        match &mut self.way {
            Way::Ipv6(sockets) => {
                if sockets.last().is_none_or(|(_, groups)| groups.len() >= GROUPS_PER_SOCKET) {
                    sockets.push((Socket::new(Domain::IPV6, Type::DGRAM, None)?, BTreeSet::new()));
                }
                let Some((socket, groups)) = sockets.last_mut() else { unreachable!("pushed") };
                socket.join_multicast_v6(&group, ifindex)?;
                groups.insert(group);
            }
            Way::LinkLayer(socket, groups) => {
                link_membership(socket, ifindex, group, libc::PACKET_ADD_MEMBERSHIP)?;
                groups.insert(group);
            }
        }
        Ok(())
    }

    fn leave(&mut self, group: Ipv6Addr) -> io::Result<()> {
        let ifindex = self.ifindex;
        match &mut self.way {
            Way::Ipv6(sockets) => {
                for (socket, groups) in sockets.iter_mut() {
                    if groups.contains(&group) {
                        socket.leave_multicast_v6(&group, ifindex)?;
                        groups.remove(&group);
                    }
                }
                // A socket with no group left holds nothing: closed, unless it is the one
                // that takes the next joins.
                let last = sockets.len().saturating_sub(1);
                let mut index = 0;
                sockets.retain(|(_, groups)| {
                    let keep = !groups.is_empty() || index == last;
                    index += 1;
                    keep
                });
            }
            Way::LinkLayer(socket, groups) => {
                link_membership(socket, ifindex, group, libc::PACKET_DROP_MEMBERSHIP)?;
                groups.remove(&group);
            }
        }
        Ok(())
    }
}

/// Per interface index, the groups of `addrs` (address, interface index): what each
/// interface's [`SolicitedGroups::sync`] takes.
pub fn by_interface(addrs: &[(Ipv6Addr, u32)]) -> BTreeMap<u32, Vec<Ipv6Addr>> {
    let mut map: BTreeMap<u32, Vec<Ipv6Addr>> = BTreeMap::new();
    for &(addr, ifindex) in addrs {
        map.entry(ifindex).or_default().push(addr);
    }
    map
}

/// Adds or drops (`option`: `PACKET_ADD_MEMBERSHIP`, `PACKET_DROP_MEMBERSHIP`) the
/// link-layer membership of `group`'s MAC on `ifindex`.
fn link_membership(socket: &Socket, ifindex: u32, group: Ipv6Addr, option: i32) -> io::Result<()> {
    let mac = multicast_mac(group).0;
    let mut address = [0u8; 8];
    address[..6].copy_from_slice(&mac);
    let request = libc::packet_mreq {
        mr_ifindex: ifindex as libc::c_int,
        mr_type: libc::PACKET_MR_MULTICAST as libc::c_ushort,
        mr_alen: 6,
        mr_address: address,
    };
    // SAFETY: `request` is a fully initialised `packet_mreq` that lives across the call, and
    // its exact size is passed, so the kernel reads nothing beyond it; the fd is open (owned
    // by `socket`).
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            (&raw const request).cast(),
            mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::io::afxdp::testns::Netns;

    /// True as root; otherwise skips (or fails under `XLB_REQUIRE_ROOT_TESTS=1`).
    fn root() -> bool {
        crate::testkit::root_or_skip("solicited-node groups on a veth")
    }

    fn vip(low: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, low)
    }

    #[test]
    fn addresses_group_by_interface() {
        let map = by_interface(&[(vip(1), 3), (vip(2), 4), (vip(3), 3)]);
        assert_eq!(map[&3], [vip(1), vip(3)]);
        assert_eq!(map[&4], [vip(2)]);
    }

    /// The addresses of `kind` ("link", "inet6") that `ip maddr` lists for `device`.
    fn maddrs(netns: &Netns, device: &str, kind: &str) -> Vec<String> {
        netns
            .ip(&["maddr", "show", "dev", device])
            .lines()
            .filter_map(|line| line.trim().strip_prefix(kind))
            .map(|addr| addr.split_whitespace().next().unwrap_or_default().to_string())
            .collect()
    }

    fn link_groups(netns: &Netns, device: &str) -> Vec<String> {
        maddrs(netns, device, "link ")
    }

    /// Joins the groups of three VIPs (two sharing one) on a veth in a namespace of the
    /// test's own, both ways, and checks that `ip maddr` lists them, that a sync leaves
    /// only what went, and that dropping leaves everything.
    #[test]
    fn groups_appear_on_the_interface_and_go_on_drop() {
        if !root() {
            return;
        }
        let pid = std::process::id();
        let netns = Netns::create(format!("xlb-{pid}-groups"));
        let device = format!("xlb-{pid}a");
        let peer = format!("xlb-{pid}b");
        netns.ip(&["link", "add", &device, "type", "veth", "peer", "name", &peer]);
        netns.ip(&["link", "set", &device, "up"]);
        netns.ip(&["link", "set", &peer, "up"]);
        // 2001:db8::a:100 and 2001:db8::b:a:100 share the group ff02::1:ff0a:100.
        let shared = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0x0b, 0x0a, 0x100);
        let (first, second) = (vip(0x100), vip(0x200));
        let first_mac = "33:33:ff:0a:01:00".to_string();
        let second_mac = "33:33:ff:0a:02:00".to_string();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    netns.enter();
                    // (Not `Netdev::open`: sysfs shows the namespace it was mounted in.)
                    let name = std::ffi::CString::new(device.as_str()).unwrap();
                    // SAFETY: `name` is NUL-terminated and lives across the call.
                    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                    assert_ne!(ifindex, 0, "{device}");
                    for link_layer in [false, true] {
                        let what = if link_layer { "link-layer" } else { "IPv6" };
                        let mut groups = if link_layer {
                            SolicitedGroups::link_layer(ifindex).unwrap()
                        } else {
                            SolicitedGroups::new(ifindex).unwrap()
                        };
                        assert_eq!(groups.is_link_layer(), link_layer);
                        groups.sync([first, second, shared]).unwrap();
                        assert_eq!(
                            groups.groups(),
                            [solicited_node(first), solicited_node(second)],
                            "{what}"
                        );
                        let macs = link_groups(&netns, &device);
                        assert!(macs.contains(&first_mac), "{what}: {macs:?}");
                        assert!(macs.contains(&second_mac), "{what}: {macs:?}");
                        let joined_ipv6 = maddrs(&netns, &device, "inet6 ")
                            .contains(&"ff02::1:ff0a:100".to_string());
                        assert_eq!(joined_ipv6, !link_layer, "{what}: only IPv6 joins report MLD");

                        // The shared group stays while one of its VIPs does.
                        groups.sync([shared, second]).unwrap();
                        groups.sync([shared]).unwrap();
                        let macs = link_groups(&netns, &device);
                        assert!(macs.contains(&first_mac), "{what}: {macs:?}");
                        assert!(!macs.contains(&second_mac), "{what}: left: {macs:?}");

                        drop(groups);
                        let macs = link_groups(&netns, &device);
                        assert!(!macs.contains(&first_mac), "{what}: gone on drop: {macs:?}");
                    }

                    // More groups than one socket holds.
                    let mut groups = SolicitedGroups::new(ifindex).unwrap();
                    let many: Vec<Ipv6Addr> =
                        (0..GROUPS_PER_SOCKET as u16 * 2 + 1).map(|i| vip(0x1000 + i)).collect();
                    groups.sync(many.iter().copied()).unwrap();
                    assert_eq!(groups.groups().len(), many.len());
                    assert_eq!(
                        link_groups(&netns, &device)
                            .iter()
                            .filter(|m| m.starts_with("33:33:ff:0a:1"))
                            .count(),
                        many.len()
                    );
                    groups.sync([]).unwrap();
                    assert!(groups.groups().is_empty());
                    assert!(
                        !link_groups(&netns, &device)
                            .iter()
                            .any(|m| m.starts_with("33:33:ff:0a:1"))
                    );
                })
                .join()
                .map_err(std::panic::resume_unwind)
                .ok();
        });
    }
}
