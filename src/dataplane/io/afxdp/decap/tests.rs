//! The real program through `BPF_PROG_TEST_RUN` (root): a table of frames, each with the
//! action, the exact frame out and the one counter that must move; every decapsulating
//! case cut at every length; attachment in a namespace.

use std::time::{Duration, Instant};

use super::*;
use crate::dataplane::io::afxdp::testns::Netns;
use crate::testkit::{self, SYN};
use crate::wire::MacAddr;

const LOCAL4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 11);
const OTHER4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 12);
const BALANCER4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x11);
const BALANCER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 7);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// The outer frame's MACs: the router's towards the real server.
const ROUTER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const SERVER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);
/// The inner packets' own frames have other MACs, which must not reappear.
const INNER_SRC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xc7]);
const INNER_DST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);
const GUE_PORT: u16 = DEFAULT_GUE_PORT;

/// True as root; otherwise skips (or fails under `XLB_REQUIRE_ROOT_TESTS=1`).
fn root(test: &str) -> bool {
    testkit::root_or_skip(test)
}

/// The IP packet of an inner TCP SYN client → VIP (no Ethernet header).
fn inner_tcp4() -> Vec<u8> {
    let frame = testkit::tcp(INNER_SRC_MAC, INNER_DST_MAC, (CLIENT4, 40000), (VIP4, 80), SYN, b"");
    frame[14..].to_vec()
}

fn inner_udp4() -> Vec<u8> {
    let frame = testkit::udp(INNER_SRC_MAC, INNER_DST_MAC, (CLIENT4, 40001), (VIP4, 53), b"query");
    frame[14..].to_vec()
}

fn inner_tcp6() -> Vec<u8> {
    let frame =
        testkit::tcp6(INNER_SRC_MAC, INNER_DST_MAC, (CLIENT6, 40000), (VIP6, 80), SYN, b"hi");
    frame[14..].to_vec()
}

/// The Ethernet header of the outer frame.
fn mac_header(ether_type: u16) -> Vec<u8> {
    let mut header = SERVER_MAC.0.to_vec();
    header.extend_from_slice(&ROUTER_MAC.0);
    header.extend_from_slice(&ether_type.to_be_bytes());
    header
}

/// An outer IPv4 frame (IHL 5, checksum right) from the balancer to `dst` carrying
/// `payload` as protocol `proto`.
fn outer4(dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&BALANCER4.octets());
    ip.extend_from_slice(&dst.octets());
    set_ip_checksum(&mut ip);
    let mut frame = mac_header(0x0800);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(payload);
    frame
}

/// Writes the checksum of the IPv4 header at the start of `ip` (its IHL's length).
fn set_ip_checksum(ip: &mut [u8]) {
    let length = usize::from(ip[0] & 0x0f) * 4;
    ip[10..12].fill(0);
    let sum = crate::wire::checksum::sum(&ip[..length], 0);
    ip[10..12].copy_from_slice(&(!crate::wire::checksum::fold(sum)).to_be_bytes());
}

/// An outer IPv6 frame from the balancer to `dst` carrying `payload` as `next`.
fn outer6(dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[next, 64]);
    ip.extend_from_slice(&BALANCER6.octets());
    ip.extend_from_slice(&dst.octets());
    let mut frame = mac_header(0x86dd);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(payload);
    frame
}

/// A UDP header (checksum 0: not checked) to `port` in front of `payload`.
fn udp(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = 50123u16.to_be_bytes().to_vec();
    datagram.extend_from_slice(&port.to_be_bytes());
    datagram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    datagram
}

/// A GUE variant 0 header (no options, no flags) for `proto` in front of `inner`.
fn gue0(proto: u8, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0, proto, 0, 0];
    payload.extend_from_slice(inner);
    payload
}

/// What the program must make of a decapsulated frame: the outer's MACs, the inner's type,
/// the inner packet (and whatever followed it in the frame).
fn decapsulated(ether_type: u16, inner: &[u8]) -> Vec<u8> {
    let mut frame = mac_header(ether_type);
    frame.extend_from_slice(inner);
    frame
}

/// One case: the frame in, and either the frame out (decapsulated) or `None` (passed
/// untouched), and the counter that moves.
struct Case {
    what: &'static str,
    frame: Vec<u8>,
    out: Option<Vec<u8>>,
    counter: &'static str,
}

fn case(what: &'static str, frame: Vec<u8>, out: Option<Vec<u8>>, counter: &'static str) -> Case {
    Case { what, frame, out, counter }
}

fn cases() -> Vec<Case> {
    let (tcp4, udp4, tcp6) = (inner_tcp4(), inner_udp4(), inner_tcp6());
    let ipip = outer4(LOCAL4, 4, &tcp4);
    let gue = outer4(LOCAL4, 17, &udp(GUE_PORT, &tcp4));

    let mut padded_inner = udp4.clone();
    padded_inner.extend_from_slice(&[0; 6]);
    let mut padded = outer4(LOCAL4, 4, &udp4);
    padded.extend_from_slice(&[0; 6]);

    let mut fragment = ipip.clone();
    fragment[14 + 6] |= 0x20;
    set_ip_checksum(&mut fragment[14..]);
    let mut gue_fragment = gue.clone();
    gue_fragment[14 + 6] = 0x20;
    set_ip_checksum(&mut gue_fragment[14..]);
    let mut gue_later_fragment = gue.clone();
    gue_later_fragment[14 + 6..14 + 8].copy_from_slice(&[0, 0x10]);
    set_ip_checksum(&mut gue_later_fragment[14..]);

    let mut options = ipip[..34].to_vec();
    options.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP END
    options.extend_from_slice(&tcp4);
    options[14] = 0x46;
    let total = (24 + tcp4.len()) as u16;
    options[16..18].copy_from_slice(&total.to_be_bytes());
    set_ip_checksum(&mut options[14..]);

    let mut bad_checksum = ipip.clone();
    bad_checksum[14 + 10] ^= 0xff;
    let mut outer_too_long = ipip.clone();
    let long = (20 + tcp4.len() + 1) as u16;
    outer_too_long[16..18].copy_from_slice(&long.to_be_bytes());
    set_ip_checksum(&mut outer_too_long[14..]);
    let mut inner_too_long = tcp4.clone();
    let long = (tcp4.len() + 1) as u16;
    inner_too_long[2..4].copy_from_slice(&long.to_be_bytes());
    let mut inner_ihl_4 = tcp4.clone();
    inner_ihl_4[0] = 0x44;
    let mut udp_too_long = udp(GUE_PORT, &tcp4);
    udp_too_long[4..6].copy_from_slice(&((8 + tcp4.len() + 1) as u16).to_be_bytes());
    let mut gue_hlen = gue0(4, &tcp4);
    gue_hlen[0] = 1;
    let mut gue_flags = gue0(4, &tcp4);
    gue_flags[2] = 0x80;
    let mut vlan = ipip[..12].to_vec();
    vlan.extend_from_slice(&[0x81, 0, 0, 7]);
    vlan.extend_from_slice(&ipip[12..]);
    let mut hop_by_hop = vec![41, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.extend_from_slice(&tcp6);

    vec![
        case("ipip, tcp for us", ipip.clone(), Some(decapsulated(0x0800, &tcp4)), "ipip"),
        case(
            "ipip, udp for us",
            outer4(LOCAL4, 4, &udp4),
            Some(decapsulated(0x0800, &udp4)),
            "ipip",
        ),
        case(
            "ipip, ipv6 inside (protocol 41)",
            outer4(LOCAL4, 41, &tcp6),
            Some(decapsulated(0x86dd, &tcp6)),
            "ipip",
        ),
        case(
            "ipip with ethernet padding: the padding stays behind",
            padded,
            Some(decapsulated(0x0800, &padded_inner)),
            "ipip",
        ),
        case("gue, ipv4 inside", gue.clone(), Some(decapsulated(0x0800, &tcp4)), "gue"),
        case(
            "gue, ipv6 inside",
            outer4(LOCAL4, 17, &udp(GUE_PORT, &tcp6)),
            Some(decapsulated(0x86dd, &tcp6)),
            "gue",
        ),
        case(
            "gue variant 0, ipv4 inside",
            outer4(LOCAL4, 17, &udp(GUE_PORT, &gue0(4, &udp4))),
            Some(decapsulated(0x0800, &udp4)),
            "gue",
        ),
        case(
            "gue variant 0, ipv6 inside",
            outer4(LOCAL4, 17, &udp(GUE_PORT, &gue0(41, &tcp6))),
            Some(decapsulated(0x86dd, &tcp6)),
            "gue",
        ),
        case("ipv6 in ipv6", outer6(LOCAL6, 41, &tcp6), Some(decapsulated(0x86dd, &tcp6)), "ip6"),
        case("ipv4 in ipv6", outer6(LOCAL6, 4, &tcp4), Some(decapsulated(0x0800, &tcp4)), "ip6"),
        case(
            "gue over ipv6",
            outer6(LOCAL6, 17, &udp(GUE_PORT, &tcp6)),
            Some(decapsulated(0x86dd, &tcp6)),
            "gue",
        ),
        // Passed untouched: not a tunnel packet for us.
        case("gue to another port", outer4(LOCAL4, 17, &udp(6081, &tcp4)), None, "passed"),
        case("ipip to another host", outer4(OTHER4, 4, &tcp4), None, "passed"),
        case("gue to another host", outer4(OTHER4, 17, &udp(GUE_PORT, &tcp4)), None, "passed"),
        case("ipv6 in ipv6 to another host", outer6(VIP6, 41, &tcp6), None, "passed"),
        case(
            "plain tcp to us",
            testkit::tcp(ROUTER_MAC, SERVER_MAC, (CLIENT4, 40000), (LOCAL4, 22), SYN, b""),
            None,
            "passed",
        ),
        case("gre to us (protocol 47)", outer4(LOCAL4, 47, &tcp4), None, "passed"),
        case("vlan-tagged ipip", vlan, None, "passed"),
        case("ipv6 with a hop-by-hop header", outer6(LOCAL6, 0, &hop_by_hop), None, "passed"),
        case("gue, a later fragment (no port to read)", gue_later_fragment, None, "passed"),
        // Tunnel packets for us that are not decapsulated, counted by reason.
        case("ipip, outer first fragment", fragment, None, "fragment"),
        case("gue, outer first fragment", gue_fragment, None, "fragment"),
        case("ipip with outer options", options, None, "ip_options"),
        case("ipip, bad outer checksum", bad_checksum, None, "malformed"),
        case("ipip, outer longer than the frame", outer_too_long, None, "malformed"),
        case(
            "ipip, inner longer than the outer",
            outer4(LOCAL4, 4, &inner_too_long),
            None,
            "malformed",
        ),
        case("ipip, inner ihl 4", outer4(LOCAL4, 4, &inner_ihl_4), None, "malformed"),
        case("ipip (protocol 4) carrying ipv6", outer4(LOCAL4, 4, &tcp6), None, "malformed"),
        case("protocol 41 carrying ipv4", outer4(LOCAL4, 41, &tcp4), None, "malformed"),
        case("ipv6 next header 41 carrying ipv4", outer6(LOCAL6, 41, &tcp4), None, "malformed"),
        case(
            "gue, udp length beyond the packet",
            outer4(LOCAL4, 17, &udp_too_long),
            None,
            "malformed",
        ),
        case("gue, empty", outer4(LOCAL4, 17, &udp(GUE_PORT, b"")), None, "malformed"),
        case(
            "gue, not ip inside (variant 1, version 5)",
            outer4(LOCAL4, 17, &udp(GUE_PORT, &[0x50; 40])),
            None,
            "malformed",
        ),
        case(
            "gue variant 0 carrying udp (protocol 17)",
            outer4(LOCAL4, 17, &udp(GUE_PORT, &gue0(17, &tcp4))),
            None,
            "malformed",
        ),
        case(
            "gue variant 0 with options (hlen 1)",
            outer4(LOCAL4, 17, &udp(GUE_PORT, &gue_hlen)),
            None,
            "malformed",
        ),
        case(
            "gue variant 0 with flags",
            outer4(LOCAL4, 17, &udp(GUE_PORT, &gue_flags)),
            None,
            "malformed",
        ),
        case(
            "gue, reserved variant 2",
            outer4(LOCAL4, 17, &udp(GUE_PORT, &[0x80; 40])),
            None,
            "malformed",
        ),
    ]
}

fn load() -> DecapProgram {
    let program = DecapProgram::load().expect("load (verifier)");
    program.set_local_addrs(&[IpAddr::V4(LOCAL4), IpAddr::V6(LOCAL6)]).unwrap();
    program.set_gue_port(Some(GUE_PORT)).unwrap();
    program
}

/// Runs `frame`, checks the action is a pass, that the frame out is `expected` (`None`:
/// the frame in, untouched) and that exactly `counter` moved, by one. Returns the counter.
fn check_case(
    program: &DecapProgram,
    what: &str,
    frame: &[u8],
    expected: Option<&[u8]>,
) -> &'static str {
    let before = program.stats().unwrap();
    let (action, out) = program.test_run(frame).unwrap_or_else(|e| panic!("{what}: {e}"));
    let after = program.stats().unwrap();
    assert_eq!(action, XdpAction::Pass, "{what}");
    assert_eq!(out, expected.unwrap_or(frame), "{what}: the frame out");
    let moved: Vec<&'static str> = before
        .named()
        .iter()
        .zip(after.named())
        .filter(|((_, old), (_, new))| new != old)
        .map(|((name, old), (_, new))| {
            assert_eq!(new, old + 1, "{what}: {name} moved by one");
            *name
        })
        .collect();
    assert_eq!(moved.len(), 1, "{what}: one counter per frame, moved {moved:?}");
    moved[0]
}

#[test]
fn decapsulates_tunnels_for_us_and_passes_the_rest_untouched() {
    if !root("decapsulates_tunnels_for_us_and_passes_the_rest_untouched") {
        return;
    }
    let program = load();
    for case in cases() {
        let moved = check_case(&program, case.what, &case.frame, case.out.as_deref());
        assert_eq!(moved, case.counter, "{}", case.what);
    }
}

#[test]
fn every_truncation_is_passed_untouched() {
    if !root("every_truncation_is_passed_untouched") {
        return;
    }
    let program = load();
    for case in cases().into_iter().filter(|case| case.out.is_some()) {
        // The kernel refuses to test-run frames shorter than an Ethernet header; from the
        // outer packet's own length on (Ethernet padding), the frame is whole.
        let frame = &case.frame;
        let whole = if frame[12..14] == [0x08, 0x00] {
            14 + usize::from(u16::from_be_bytes([frame[16], frame[17]]))
        } else {
            14 + 40 + usize::from(u16::from_be_bytes([frame[18], frame[19]]))
        };
        for length in 14..whole {
            let what = format!("{} cut to {length} bytes", case.what);
            let moved = check_case(&program, &what, &case.frame[..length], None);
            assert!(!["ipip", "ip6", "gue"].contains(&moved), "{what}: counted as {moved}");
        }
    }
}

#[test]
fn gue_port_is_configurable_and_gue_can_be_off() {
    if !root("gue_port_is_configurable_and_gue_can_be_off") {
        return;
    }
    let program = load();
    let tcp4 = inner_tcp4();
    let on_7000 = outer4(LOCAL4, 17, &udp(7000, &tcp4));
    let on_default = outer4(LOCAL4, 17, &udp(GUE_PORT, &tcp4));
    let ipip = outer4(LOCAL4, 4, &tcp4);
    let stripped = decapsulated(0x0800, &tcp4);

    program.set_gue_port(Some(7000)).unwrap();
    assert_eq!(check_case(&program, "gue to 7000", &on_7000, Some(&stripped)), "gue");
    assert_eq!(check_case(&program, "gue to 6080", &on_default, None), "passed");

    program.set_gue_port(None).unwrap();
    assert_eq!(check_case(&program, "gue off", &on_7000, None), "passed");
    assert_eq!(check_case(&program, "ipip with gue off", &ipip, Some(&stripped)), "ipip");

    // The local addresses are the map's, and only them.
    program.set_local_addrs(&[IpAddr::V4(OTHER4)]).unwrap();
    assert_eq!(check_case(&program, "ipip to a former address", &ipip, None), "passed");
    let to_other = outer4(OTHER4, 4, &tcp4);
    assert_eq!(check_case(&program, "ipip to the new one", &to_other, Some(&stripped)), "ipip");
    assert_eq!(program.stats().unwrap().decapsulated(), 3);
}

/// Runs `test` in a thread inside `netns` (the calling thread stays where it is).
fn in_netns(netns: &Netns, test: impl FnOnce() + Send) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                netns.enter();
                test();
            })
            .join()
            .map_err(std::panic::resume_unwind)
            .ok();
    });
}

/// Waits (up to 2 s) for `device` to show an XDP program or not.
fn wait_attached(netns: &Netns, device: &str, attached: bool) {
    let shown = || netns.ip(&["link", "show", "dev", device]).contains("xdp");
    let deadline = Instant::now() + Duration::from_secs(2);
    while shown() != attached && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(shown(), attached, "{device}: xdp attached");
}

#[test]
fn stats_are_read_from_the_attached_program_and_detached_mode_stays() {
    if !root("stats_are_read_from_the_attached_program_and_detached_mode_stays") {
        return;
    }
    let netns = Netns::create(format!("xlb-{}-decap", std::process::id()));
    // No IPv6 on the veths: their router solicitations and MLD reports would reach the
    // attached program between two reads of its counters (seen once: `passed` 0 then 1).
    let sysctl = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"];
    netns.run("ip", &["netns", "exec", &netns.name, "sysctl", "-qw", sysctl[0], sysctl[1]]);
    netns.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth1"]);
    netns.ip(&["link", "set", "veth0", "up"]);
    netns.ip(&["link", "set", "veth1", "up"]);
    let program = load();
    let ipip = outer4(LOCAL4, 4, &inner_tcp4());
    in_netns(&netns, || {
        // SAFETY: the name is NUL-terminated.
        let ifindex = unsafe { libc::if_nametoindex(c"veth0".as_ptr()) };
        assert_ne!(ifindex, 0);
        assert_eq!(attached_stats(ifindex).unwrap(), None, "nothing attached yet");

        let attachment = program.attach(ifindex, XdpMode::Generic).expect("attach");
        wait_attached(&netns, "veth0", true);
        program.test_run(&ipip).unwrap();
        let stats = attached_stats(ifindex).unwrap().expect("found by its name");
        assert_eq!(stats, program.stats().unwrap());
        assert_eq!(stats.ipip, 1);
        assert!(!remove_detached(ifindex).unwrap(), "a live link is left alone");
        drop(attachment);
        wait_attached(&netns, "veth0", false);

        program.attach_detached(ifindex, XdpMode::Generic).expect("attach detached");
        assert!(
            program.attach_detached(ifindex, XdpMode::Generic).is_err(),
            "never replaces a program"
        );
        assert_eq!(attached_stats(ifindex).unwrap().map(|s| s.ipip), Some(1));
        assert!(remove_detached(ifindex).unwrap());
        wait_attached(&netns, "veth0", false);
        assert_eq!(attached_stats(ifindex).unwrap(), None);
    });
}

#[test]
fn device_addrs_lists_both_families_without_link_local() {
    if !root("device_addrs_lists_both_families_without_link_local") {
        return;
    }
    let netns = Netns::create(format!("xlb-{}-decap-addrs", std::process::id()));
    netns.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth1"]);
    netns.ip(&["addr", "add", "10.2.0.11/24", "dev", "veth0"]);
    netns.ip(&["addr", "add", "10.2.0.12/24", "dev", "veth0"]);
    netns.ip(&["addr", "add", "2001:db8:2::11/64", "dev", "veth0", "nodad"]);
    netns.ip(&["addr", "add", "10.9.0.1/24", "dev", "veth1"]);
    netns.ip(&["link", "set", "veth0", "up"]);
    netns.ip(&["link", "set", "veth1", "up"]);
    in_netns(&netns, || {
        let addrs = device_addrs("veth0").unwrap();
        let expected: Vec<IpAddr> = vec![LOCAL4.into(), OTHER4.into(), LOCAL6.into()];
        assert_eq!(addrs, expected);
        assert!(device_addrs("no-such-device").unwrap().is_empty());
    });
}

#[test]
fn stats_name_every_counter_in_the_program_order() {
    let stats = DecapStats::from_totals([1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(stats.named().map(|(_, count)| count), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(stats.named().map(|(name, _)| name), STATS);
    assert_eq!((stats.gue, stats.malformed, stats.decapsulated()), (3, 7, 6));
}
