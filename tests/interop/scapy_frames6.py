"""Writes and checks IPv6 captures with scapy, an implementation independent of xlb's.

  scapy_frames6.py write IN.pcap    craft the input capture
  scapy_frames6.py check OUT.pcap   check what xlb transmitted

The addresses match tests/interop/interop6.toml (issue 12).
"""
import sys

from scapy.all import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    TCP,
    UDP,
    Ether,
    Raw,
    rdpcap,
    wrpcap,
)

LB = "02:00:0a:01:01:02"
CLIENT_MAC, CLIENT = "02:00:0a:01:01:14", "2001:db8:1::20"
RS1_MAC, RS1 = "02:00:0a:01:01:0b", "2001:db8:1::11"
RS2_MAC, RS2 = "02:00:0a:01:01:0c", "2001:db8:1::12"
VIP, NAT_VIP, FULLNAT_VIP = "2001:db8:1::10", "2001:db8:1::30", "2001:db8:1::40"
LOCAL, BOX = "2001:db8:1::200", "2001:db8:1::2"
# The solicited-node group of the VIP and its MAC.
VIP_GROUP, VIP_GROUP_MAC = "ff02::1:ff00:10", "33:33:ff:00:00:10"


def frames():
    c = Ether(src=CLIENT_MAC, dst=LB) / IPv6(src=CLIENT, dst=VIP)
    yield (
        Ether(src=CLIENT_MAC, dst=VIP_GROUP_MAC)
        / IPv6(src=CLIENT, dst=VIP_GROUP, hlim=255)
        / ICMPv6ND_NS(tgt=VIP)
        / ICMPv6NDOptSrcLLAddr(lladdr=CLIENT_MAC)
    )
    for sport in range(41000, 41010):
        yield c / TCP(sport=sport, dport=80, flags="S", seq=1)
        yield c / TCP(sport=sport, dport=80, flags="PA", seq=2, ack=1) / Raw(b"GET / HTTP/1.0\r\n\r\n")
    yield c / UDP(sport=5000, dport=53) / Raw(b"\x00\x01query")
    yield c / ICMPv6EchoRequest(id=1, seq=1) / Raw(b"ping")
    # NAT: request and the real server's reply.
    yield Ether(src=CLIENT_MAC, dst=LB) / IPv6(src=CLIENT, dst=NAT_VIP) / TCP(sport=42000, dport=80, flags="S")
    yield Ether(src=RS1_MAC, dst=LB) / IPv6(src=RS1, dst=CLIENT) / TCP(sport=8080, dport=42000, flags="SA")
    # FullNAT request (the reply needs the chosen local port: checked in the Rust tests).
    yield Ether(src=CLIENT_MAC, dst=LB) / IPv6(src=CLIENT, dst=FULLNAT_VIP) / TCP(sport=43000, dport=80, flags="S")
    # Extension headers: a first fragment (balanced as its flow's packet, issue 15), and the
    # ones xlb forwards as they are (DR; NAT both ways, the ports and checksum rewritten
    # after them); the box's own address.
    yield c / IPv6ExtHdrFragment(m=1, offset=0, id=7) / UDP(sport=1, dport=53)
    yield c / IPv6ExtHdrHopByHop() / TCP(sport=44000, dport=80, flags="S")
    yield c / IPv6ExtHdrRouting(segleft=0) / IPv6ExtHdrDestOpt() / TCP(sport=44001, dport=80, flags="S")
    nat = Ether(src=CLIENT_MAC, dst=LB) / IPv6(src=CLIENT, dst=NAT_VIP)
    yield nat / IPv6ExtHdrDestOpt() / TCP(sport=42001, dport=80, flags="S")
    reply = Ether(src=RS1_MAC, dst=LB) / IPv6(src=RS1, dst=CLIENT)
    yield reply / IPv6ExtHdrHopByHop() / TCP(sport=8080, dport=42001, flags="SA")
    yield Ether(src=CLIENT_MAC, dst=LB) / IPv6(src=CLIENT, dst=BOX) / TCP(dport=22, flags="S")


def write(path):
    # Build each frame so scapy fills in lengths and checksums.
    wrpcap(path, [Ether(bytes(f)) for f in frames()])


def upper(ip):
    """The upper layer of `ip`: past its hop-by-hop, routing, destination options and
    fragment headers (the one fragment here is a first fragment: its UDP header follows)."""
    layer = ip.payload
    while isinstance(layer, (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment)):
        layer = layer.payload
    return layer


def checksum_ok(pkt):
    """True if the upper layer's checksum equals what scapy computes from scratch (over
    the pseudo-header, past any extension headers)."""
    ip = pkt[IPv6]
    fresh = IPv6(bytes(ip))
    layer = upper(fresh)
    # TCP and UDP name the field chksum, ICMPv6 cksum; anything else is not checked, and
    # fails.
    field = next((f for f in ("chksum", "cksum") if f in layer.fields), None)
    if field is None:
        return False
    delattr(layer, field)
    return getattr(upper(IPv6(bytes(fresh))), field) == getattr(upper(ip), field)


def check(path):
    out = rdpcap(path)
    problems = []
    seen = {"dr": 0, "dr_udp": 0, "nat_in": 0, "nat_out": 0, "fullnat": 0, "na": 0, "echo": 0, "ext": 0}
    for pkt in out:
        if IPv6 not in pkt:
            problems.append("not IPv6: " + pkt.summary())
            continue
        ip = pkt[IPv6]
        if upper(ip) is not ip.payload:
            seen["ext"] += 1
        if not checksum_ok(pkt):
            problems.append("bad checksum: " + pkt.summary())
        if pkt[Ether].src != LB:
            problems.append("source MAC is not xlb's: " + pkt.summary())
        if ICMPv6ND_NA in pkt:
            na = pkt[ICMPv6ND_NA]
            ll = pkt[ICMPv6NDOptDstLLAddr].lladdr if ICMPv6NDOptDstLLAddr in pkt else None
            if (na.tgt, ip.src, ip.dst, ip.hlim, na.S, na.O, na.R, ll) == (VIP, VIP, CLIENT, 255, 1, 1, 0, LB):
                seen["na"] += 1
            else:
                problems.append("odd advertisement: " + pkt.summary())
        elif TCP in pkt and ip.dst == VIP and pkt[Ether].dst in (RS1_MAC, RS2_MAC) and ip.hlim == 64:
            seen["dr"] += 1
        elif UDP in pkt and ip.dst == VIP and pkt[Ether].dst == RS2_MAC:
            seen["dr_udp"] += 1
        elif ICMPv6EchoReply in pkt and ip.src == VIP and ip.dst == CLIENT:
            seen["echo"] += 1
        elif TCP in pkt and ip.dst == RS1 and pkt[TCP].dport == 8080 and ip.src == CLIENT and ip.hlim == 63:
            seen["nat_in"] += 1
        elif TCP in pkt and ip.src == NAT_VIP and pkt[TCP].sport == 80 and ip.dst == CLIENT and ip.hlim == 63:
            seen["nat_out"] += 1
        elif TCP in pkt and ip.src == LOCAL and ip.dst == RS2 and pkt[TCP].dport == 8080 and ip.hlim == 63:
            seen["fullnat"] += 1
        else:
            problems.append("unexpected: " + pkt.summary())
    want = {"dr": 22, "dr_udp": 2, "nat_in": 2, "nat_out": 2, "fullnat": 1, "na": 1, "echo": 1, "ext": 5}
    if seen != want:
        problems.append(f"saw {seen}, want {want}")
    for p in problems:
        print(p)
    print(f"scapy checked {len(out)} frames: {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1]](sys.argv[2])
