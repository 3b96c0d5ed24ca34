"""Writes and checks an IPv6 tunnel-mode capture (issue 12) with scapy, independent of xlb.

  scapy_tunnel6.py write IN.pcap    craft the client's IPv6 frames to IPIP and GUE services
  scapy_tunnel6.py check OUT.pcap   check what xlb transmitted
  scapy_tunnel6.py mutants OUT.pcap the check must reject each of a list of broken copies
                                    of a good output (so that it can fail)

Every client packet that fits must come out wrapped exactly once: outer IPv6 (version 6,
hop limit 64, traffic class of the inner packet, a non-zero flow label that stays the same
for a flow and varies between flows, payload length right), next header 41 (IPv6-in-IPv6) or
UDP to the service's GUE port with a source port of 49152 and up and a UDP checksum that
scapy computes the same over the IPv6 pseudo-header (never 0), then the client's IPv6 packet
byte for byte (hop limit included), in an Ethernet frame from xlb to the real server (on the
link) or to the gateway (behind it). The outer source is the interface's addr6, or an address
of the service's tunnel_source that stays the same for a flow. A packet too big for the MTU
once wrapped is answered with ICMPv6 Packet Too Big from the VIP to the client, announcing
the MTU less 40 (48 for GUE), quoting the packet's start, checksum as scapy computes it.

The addresses match tests/interop/interop_tunnel6.toml.
"""
import ipaddress
import sys

from scapy.all import UDP, Ether, IPv6, Raw, TCP, rdpcap, wrpcap
from scapy.layers.inet6 import ICMPv6PacketTooBig, in6_chksum

LB_MAC, LB = "02:00:0a:01:01:02", "2001:db8:1::2"
GATEWAY_MAC = "02:00:0a:01:01:01"
CLIENT_MAC, CLIENT = "02:00:0a:01:01:14", "2001:db8:1::20"
RS1_MAC, RS1 = "02:00:0a:01:01:0b", "2001:db8:1::11"
VIP_IPIP, VIP_GUE = "2001:db8:1::50", "2001:db8:1::51"
MTU = 1500
OVERHEAD = {"ipip": 40, "gue": 48}

# (vip, next header, port) -> how xlb must wrap it (see interop_tunnel6.toml).
SERVICES = {
    (VIP_IPIP, 6, 80): dict(encap="ipip", rs="2001:db8:2::11", mac=GATEWAY_MAC, source="2001:db8:9::/64"),
    (VIP_IPIP, 17, 53): dict(encap="ipip", rs=RS1, mac=RS1_MAC, source=None),
    (VIP_GUE, 6, 80): dict(encap="gue", port=6080, rs=RS1, mac=RS1_MAC, source=None),
    (VIP_GUE, 17, 53): dict(encap="gue", port=5555, rs="2001:db8:2::12", mac=GATEWAY_MAC, source="2001:db8:9:1::/120"),
}
FLOWS = 8


def client(vip):
    # Hop limit 57 and a traffic class: both must reach the real server unchanged.
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src=CLIENT, dst=vip, hlim=57, tc=0x28)


def frames():
    for vip in (VIP_IPIP, VIP_GUE):
        for sport in range(41000, 41000 + FLOWS):
            yield client(vip) / TCP(sport=sport, dport=80, flags="S", seq=1)
            yield client(vip) / TCP(sport=sport, dport=80, flags="PA", seq=2, ack=1) / Raw(b"GET / HTTP/1.0\r\n\r\n")
        for sport in range(5000, 5000 + FLOWS):
            yield client(vip) / UDP(sport=sport, dport=53) / Raw(b"\x00\x01query")
        # The largest packet that fits once wrapped, and one byte more (Packet Too Big).
        fits = MTU - OVERHEAD["ipip" if vip == VIP_IPIP else "gue"]
        for size in (fits, fits + 1):
            yield client(vip) / TCP(sport=42000, dport=80, flags="PA", seq=3, ack=1) / Raw(b"x" * (size - 60))


def sent_packets():
    """The client's IPv6 packets, as bytes, each built once so scapy fills in the fields."""
    return [bytes(Ether(bytes(f)))[14:] for f in frames()]


def service_of(packet):
    ip = IPv6(packet)
    return SERVICES[(ip.dst, ip.nh, ip.payload.dport)]


def write(path):
    wrpcap(path, [Ether(bytes(f)) for f in frames()])


def check(path):
    out = rdpcap(path)
    problems = problems_in(out)
    for p in problems:
        print(p)
    print(f"scapy checked {len(out)} frames: {len(problems)} problems")
    sys.exit(1 if problems else 0)


def problems_in(out):
    """What is wrong with xlb's output frames `out` (scapy packets), one line each."""
    problems = []
    sent = sent_packets()
    want_wrapped = {p: 0 for p in sent if len(p) + OVERHEAD[service_of(p)["encap"]] <= MTU}
    want_answered = {p: 0 for p in sent if p not in want_wrapped}
    per_flow = {}  # inner 5-tuple and service -> (outer source, flow label, GUE source port)
    for pkt in out:
        raw = bytes(pkt)
        problem = lambda text: problems.append(f"{text}: {pkt.summary()}")
        if Ether not in pkt or pkt[Ether].type != 0x86DD:
            problem("not IPv6")
            continue
        if pkt[Ether].src != LB_MAC:
            problem("source MAC is not xlb's")
        packet = raw[14:]
        outer = IPv6(packet[:40])
        if outer.version != 6 or outer.plen != len(packet) - 40:
            problem(f"outer header: version {outer.version} payload length {outer.plen} of {len(packet) - 40}")
            continue
        if outer.nh == 58:
            check_packet_too_big(pkt, packet, want_answered, problem)
            continue
        if outer.hlim != 64:
            problem(f"outer hop limit {outer.hlim}, want 64")
        if outer.nh == 41:
            encap, inner, sport = "ipip", packet[40:], None
        elif outer.nh == 17:
            udp = UDP(packet[40:48])
            encap, inner, sport = "gue", packet[48:], udp.sport
            if udp.chksum == 0:
                problem("GUE UDP checksum 0 over IPv6")
            elif in6_chksum(17, IPv6(packet), packet[40:46] + b"\0\0" + packet[48:]) != udp.chksum:
                problem(f"GUE UDP checksum {udp.chksum:#x} differs from scapy's")
            if udp.len != len(packet) - 40:
                problem(f"GUE UDP length {udp.len}, want {len(packet) - 40}")
            if not 49152 <= udp.sport <= 65535:
                problem(f"GUE source port {udp.sport} is not 49152 and up")
        else:
            problem(f"outer next header {outer.nh}, want 41 or 17")
            continue
        if inner not in want_wrapped:
            problem("inner packet is not one the client sent, byte for byte")
            continue
        want_wrapped[inner] += 1
        service = service_of(inner)
        client_ip = IPv6(inner)
        if encap != service["encap"]:
            problem(f"wrapped in {encap}, want {service['encap']}")
        if encap == "gue" and udp.dport != service["port"]:
            problem(f"GUE to port {udp.dport}, want {service['port']}")
        if outer.dst != service["rs"] or pkt[Ether].dst != service["mac"]:
            problem(f"sent to {outer.dst} at {pkt[Ether].dst}, want {service['rs']} at {service['mac']}")
        if outer.tc != client_ip.tc:
            problem(f"outer traffic class {outer.tc:#x}, want the client's {client_ip.tc:#x}")
        if outer.fl == 0:
            problem("outer flow label 0")
        if service["source"] is None:
            if outer.src != LB:
                problem(f"outer source {outer.src}, want the interface's {LB}")
        elif ipaddress.ip_address(outer.src) not in ipaddress.ip_network(service["source"]):
            problem(f"outer source {outer.src} is not in {service['source']}")
        l4 = client_ip.payload
        flow = (client_ip.dst, client_ip.nh, client_ip.src, l4.sport, l4.dport)
        seen = per_flow.setdefault(flow, (outer.src, outer.fl, sport))
        if seen != (outer.src, outer.fl, sport):
            problem(f"one flow, two outer headers: {seen} and {(outer.src, outer.fl, sport)}")
    for packet, n in want_wrapped.items():
        if n != 1:
            problems.append(f"wrapped {n} times, want once: {IPv6(packet).summary()}")
    for packet, n in want_answered.items():
        if n != 1:
            problems.append(f"answered {n} times, want once: {IPv6(packet).summary()}")
    check_spread(per_flow, problems)
    return problems


def check_packet_too_big(pkt, packet, want_answered, problem):
    """An ICMPv6 Packet Too Big answer to a too-big packet of the client's."""
    ip, icmp = IPv6(packet[:40]), packet[40:]
    quoted = icmp[8:]
    original = next((p for p in want_answered if p.startswith(quoted)), None)
    if original is None or len(quoted) < 48:
        problem("ICMPv6 quoting no too-big packet of the client's")
        return
    want_answered[original] += 1
    service = service_of(original)
    if pkt[Ether].dst != CLIENT_MAC or ip.src != IPv6(original).dst or ip.dst != CLIENT:
        problem(f"ICMPv6 from {ip.src} to {ip.dst} at {pkt[Ether].dst}: want from the VIP to the client")
    if len(packet) > 1280:
        problem(f"ICMPv6 error of {len(packet)} bytes, more than 1280")
    if icmp[0] != 2 or icmp[1] != 0:
        problem(f"ICMPv6 type {icmp[0]} code {icmp[1]}, want 2/0 (Packet Too Big)")
    mtu = int.from_bytes(icmp[4:8], "big")
    if mtu != MTU - OVERHEAD[service["encap"]]:
        problem(f"Packet Too Big announces MTU {mtu}, want {MTU - OVERHEAD[service['encap']]}")
    if in6_chksum(58, IPv6(packet), icmp[:2] + b"\0\0" + icmp[4:]) != pkt[ICMPv6PacketTooBig].cksum:
        problem("ICMPv6 checksum differs from scapy's")


def check_spread(per_flow, problems):
    """Flows of one service leave with different flow labels, outer sources (prefix) and GUE
    ports: more distinct values than half the flows."""
    for key, service in SERVICES.items():
        headers = [h for f, h in per_flow.items() if (f[0], f[1], f[4]) == key]
        sources, labels, ports = (len({h[i] for h in headers}) for i in range(3))
        if labels * 2 <= len(headers):
            problems.append(f"{key}: {len(headers)} flows with only {labels} flow labels")
        if service["source"] is not None and sources * 2 <= len(headers):
            problems.append(f"{key}: {len(headers)} flows from only {sources} outer sources")
        if service["encap"] == "gue" and ports * 2 <= len(headers):
            problems.append(f"{key}: {len(headers)} flows from only {ports} GUE source ports")


def first(frames, next_header):
    """The index of the first frame whose outer next header is `next_header`."""
    return next(i for i, f in enumerate(frames) if f[20] == next_header)


def set_bytes(next_header, offset, value):
    """A mutation: bytes at `offset` of the first such frame set to `value`."""

    def mutate(frames):
        frame = frames[first(frames, next_header)]
        frame[offset : offset + len(value)] = value

    return mutate


def every(next_header, offset, value):
    """A mutation: bytes at `offset` of every such frame set to `value`."""

    def mutate(frames):
        for frame in frames:
            if frame[20] == next_header:
                frame[offset : offset + len(value)] = value

    return mutate


def flipped(next_header, offset):
    """A mutation: one bit of the byte at `offset` of the first such frame flipped."""

    def mutate(frames):
        frames[first(frames, next_header)][offset] ^= 1

    return mutate


def dropped(frames):
    del frames[first(frames, 17)]


def duplicated(frames):
    frames.append(bytearray(frames[first(frames, 41)]))


MUTANTS = {
    "inner hop limit changed": set_bytes(41, 14 + 40 + 7, b"\x40"),
    "outer hop limit 63": set_bytes(41, 14 + 7, b"\x3f"),
    "outer traffic class 0": set_bytes(41, 14, b"\x60\x00"),
    "flow label 0": set_bytes(41, 14, b"\x62\x80\x00\x00"),
    "GUE checksum 0": set_bytes(17, 14 + 40 + 6, b"\x00\x00"),
    "GUE checksum off by one": flipped(17, 14 + 47),
    "one flow label for all flows": every(41, 14 + 1, b"\x80\x00\x01"),
    "a gateway's MAC to the link's real server": every(17, 0, bytes.fromhex("02000a010101")),
    "a wrapped packet dropped": dropped,
    "a wrapped packet sent twice": duplicated,
    "Packet Too Big announcing 1500": set_bytes(58, 14 + 40 + 4, (1500).to_bytes(4, "big")),
}


def mutants(path):
    good = [bytearray(bytes(p)) for p in rdpcap(path)]
    assert not problems_in([Ether(bytes(f)) for f in good]), "the output itself has problems"
    missed = []
    for name, mutate in MUTANTS.items():
        frames = [bytearray(f) for f in good]
        mutate(frames)
        if not problems_in([Ether(bytes(f)) for f in frames]):
            missed.append(name)
    for name in missed:
        print(f"the check accepted a broken output: {name}")
    print(f"scapy rejected {len(MUTANTS) - len(missed)} of {len(MUTANTS)} broken outputs")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    mode, path = sys.argv[1], sys.argv[2]
    {"write": write, "check": check, "mutants": mutants}[mode](path)
