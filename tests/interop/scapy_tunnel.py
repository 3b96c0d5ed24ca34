"""Writes and checks a tunnel-mode capture (issue 14) with scapy, independent of xlb.

  scapy_tunnel.py write IN.pcap    craft the client's frames to IPIP and GUE services
  scapy_tunnel.py check OUT.pcap   check what xlb transmitted
  scapy_tunnel.py mutants OUT.pcap the check must reject each of a list of broken copies
                                   of a good output (so that it can fail)

Every client packet that fits must come out wrapped exactly once: outer IPv4 (checksum as
scapy computes it, TTL 64, TOS and DF of the inner packet, a fresh identification), IPIP
(protocol 4) or UDP to the service's GUE port with checksum 0 and a source port of 49152 and
up, then the client's IP packet byte for byte (TTL included), in an Ethernet frame from xlb
to the real server (on the link) or to the gateway (behind it). The outer source is the
interface's address, or an address of the service's tunnel_source that stays the same for a
flow and varies between flows; GUE's source port likewise. A DF packet too big for the MTU
once wrapped is answered with ICMP fragmentation needed from the VIP, announcing the MTU less
the overhead and quoting the packet; one without DF is cut into IPv4 fragments as a router
would (issue 15): each wrapped whole (the outer packet never a fragment) and fitting the MTU,
the client's header kept (identification, TTL, TOS, addresses) with its own length, offset,
more-fragments flag and a checksum scapy agrees with, the data a multiple of 8 bytes but in
the last piece; put back together by their offsets, the pieces are the client's packet.

The addresses match tests/interop/interop_tunnel.toml.
"""
import ipaddress
import sys

from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw, rdpcap, wrpcap
from scapy.utils import checksum

LB_MAC, LB = "02:00:0a:01:01:02", "10.1.1.2"
GATEWAY_MAC = "02:00:0a:01:01:01"
CLIENT_MAC, CLIENT = "02:00:0a:01:01:14", "10.1.1.20"
RS1_MAC, RS1 = "02:00:0a:01:01:0b", "10.1.1.11"
VIP_IPIP, VIP_GUE = "10.1.1.50", "10.1.1.51"
MTU = 1500
OVERHEAD = {"ipip": 20, "gue": 28}

# (vip, protocol, port) -> how xlb must wrap it (see interop_tunnel.toml).
SERVICES = {
    (VIP_IPIP, 6, 80): dict(encap="ipip", rs="192.0.2.11", mac=GATEWAY_MAC, source="10.9.0.0/24"),
    (VIP_IPIP, 17, 53): dict(encap="ipip", rs=RS1, mac=RS1_MAC, source=None),
    (VIP_GUE, 6, 80): dict(encap="gue", port=6080, rs=RS1, mac=RS1_MAC, source=None),
    (VIP_GUE, 17, 53): dict(encap="gue", port=5555, rs="192.0.2.12", mac=GATEWAY_MAC, source="10.9.1.0/28"),
}
FLOWS = 8


def client(vip, **ip):
    # TTL 57 and a TOS: both must reach the real server unchanged.
    return Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=vip, ttl=57, **ip)


def frames():
    for vip in (VIP_IPIP, VIP_GUE):
        for sport in range(41000, 41000 + FLOWS):
            yield client(vip, flags="DF", tos=0x28) / TCP(sport=sport, dport=80, flags="S", seq=1)
            yield client(vip, flags="DF", tos=0x28) / TCP(sport=sport, dport=80, flags="PA", seq=2, ack=1) / Raw(
                b"GET / HTTP/1.0\r\n\r\n"
            )
        for sport in range(5000, 5000 + FLOWS):
            yield client(vip) / UDP(sport=sport, dport=53) / Raw(b"\x00\x01query")
        # The largest packet that fits once wrapped (DF), and one byte more: with DF (answered
        # with fragmentation needed) and without (cut into fragments that fit).
        fits = MTU - OVERHEAD["ipip" if vip == VIP_IPIP else "gue"]
        for size, flags in ((fits, "DF"), (fits + 1, "DF"), (fits + 1, 0)):
            yield client(vip, flags=flags) / TCP(sport=42000, dport=80, flags="PA", seq=3, ack=1) / Raw(
                b"x" * (size - 40)
            )


def sent_packets():
    """The client's IP packets, as bytes, each built once so scapy fills in the fields."""
    return [bytes(Ether(bytes(f)))[14:] for f in frames()]


def service_of(packet):
    ip = IP(packet)
    return SERVICES[(ip.dst, ip.proto, ip.payload.dport)]


def write(path):
    wrpcap(path, [Ether(bytes(f)) for f in frames()])


def header_checksum_ok(header):
    """The IPv4 header's checksum equals the one scapy computes from scratch."""
    fresh = IP(header)
    del fresh.chksum
    return IP(bytes(fresh)[: len(header)]).chksum == IP(header).chksum


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
    want_answered = {p: 0 for p in sent if p not in want_wrapped and IP(p).flags.DF}
    # The packets without DF too big to wrap whole: (offset, more fragments, data) of each
    # piece found, by (source, destination, protocol, identification).
    want_cut = {p: [] for p in sent if p not in want_wrapped and p not in want_answered}
    cut_of = {(IP(p).src, IP(p).dst, IP(p).proto, IP(p).id): p for p in want_cut}
    per_flow = {}  # (service key, inner 5-tuple) -> (outer source, GUE source port)
    idents = []
    for pkt in out:
        raw = bytes(pkt)
        problem = lambda text: problems.append(f"{text}: {pkt.summary()}")
        if Ether not in pkt or IP not in pkt or pkt[Ether].type != 0x0800:
            problem("not IPv4")
            continue
        if pkt[Ether].src != LB_MAC:
            problem("source MAC is not xlb's")
        outer = pkt[IP]
        packet = raw[14:]
        if outer.version != 4 or outer.ihl != 5 or outer.len != len(packet):
            problem(f"outer header: version {outer.version} ihl {outer.ihl} length {outer.len} of {len(packet)}")
            continue
        if not header_checksum_ok(packet[:20]):
            problem("outer IPv4 checksum differs from scapy's")
        if outer.frag != 0 or outer.flags.MF:
            problem("outer packet is a fragment")
        idents.append(outer.id)
        if outer.proto == 1:
            check_frag_needed(pkt, packet, want_answered, problem)
            continue
        if outer.ttl != 64:
            problem(f"outer TTL {outer.ttl}, want 64")
        if outer.proto == 4:
            encap, inner, sport = "ipip", packet[20:], None
        elif outer.proto == 17:
            udp = UDP(packet[20:28])
            encap, inner, sport = "gue", packet[28:], udp.sport
            if udp.chksum != 0:
                problem(f"GUE UDP checksum {udp.chksum:#x}, want 0")
            if udp.len != len(packet) - 20:
                problem(f"GUE UDP length {udp.len}, want {len(packet) - 20}")
            if not 49152 <= udp.sport <= 65535:
                problem(f"GUE source port {udp.sport} is not 49152 and up")
        else:
            problem(f"outer protocol {outer.proto}, want 4 or 17")
            continue
        client_ip = IP(inner)
        cut = cut_of.get((client_ip.src, client_ip.dst, client_ip.proto, client_ip.id))
        if inner not in want_wrapped and cut is not None and len(packet) <= MTU:
            check_piece(inner, cut, want_cut, problem)
            inner, client_ip = cut, IP(cut)
        elif inner not in want_wrapped:
            problem("inner packet is not one the client sent, byte for byte")
            continue
        else:
            want_wrapped[inner] += 1
        service = service_of(inner)
        if encap != service["encap"]:
            problem(f"wrapped in {encap}, want {service['encap']}")
        if encap == "gue" and udp.dport != service["port"]:
            problem(f"GUE to port {udp.dport}, want {service['port']}")
        if outer.dst != service["rs"] or pkt[Ether].dst != service["mac"]:
            problem(f"sent to {outer.dst} at {pkt[Ether].dst}, want {service['rs']} at {service['mac']}")
        if outer.tos != client_ip.tos or outer.flags.DF != client_ip.flags.DF:
            problem("outer TOS or DF is not the client's")
        if service["source"] is None:
            if outer.src != LB:
                problem(f"outer source {outer.src}, want the interface's {LB}")
        elif ipaddress.ip_address(outer.src) not in ipaddress.ip_network(service["source"]):
            problem(f"outer source {outer.src} is not in {service['source']}")
        l4 = client_ip.payload
        flow = (client_ip.dst, client_ip.proto, service["encap"], client_ip.src, l4.sport, l4.dport)
        seen = per_flow.setdefault(flow, (outer.src, sport))
        if seen != (outer.src, sport):
            problem(f"one flow, two outer headers: {seen} and {(outer.src, sport)}")
    for packet, n in want_wrapped.items():
        if n != 1:
            problems.append(f"wrapped {n} times, want once: {IP(packet).summary()}")
    for packet, n in want_answered.items():
        if n != 1:
            problems.append(f"answered {n} times, want once: {IP(packet).summary()}")
    for packet, pieces in want_cut.items():
        check_reassembly(packet, pieces, problems)
    if len(set(idents)) != len(idents):
        problems.append("two packets with one identification")
    check_spread(per_flow, problems)
    return problems


def check_piece(inner, packet, want_cut, problem):
    """A piece `inner` of the client's too-big packet `packet` (no DF): its header the
    packet's but for length, offset, more fragments and checksum; noted for reassembly."""
    piece, whole = IP(inner), IP(packet)
    if not header_checksum_ok(inner[:20]):
        problem("inner fragment's IPv4 checksum differs from scapy's")
    if piece.len != len(inner) or piece.ihl != 5:
        problem(f"inner fragment's length {piece.len} of {len(inner)}")
    if (piece.tos, piece.ttl, piece.flags.DF) != (whole.tos, whole.ttl, whole.flags.DF):
        problem("inner fragment's TOS, TTL or DF is not the client's")
    want_cut[packet].append((piece.frag * 8, bool(piece.flags.MF), inner[20:]))


def check_reassembly(packet, pieces, problems):
    """The pieces of `packet`, by offset, cover its data once, each but the last a multiple
    of 8 bytes with more fragments set."""
    what = IP(packet).summary()
    if len(pieces) < 2:
        problems.append(f"cut into {len(pieces)} pieces, want 2 or more: {what}")
        return
    pieces = sorted(pieces)
    data, at = b"", 0
    for index, (offset, more, chunk) in enumerate(pieces):
        last = index + 1 == len(pieces)
        if offset != at or more == last or (not last and len(chunk) % 8):
            problems.append(f"piece at {offset} (more {more}) out of place: {what}")
        data += chunk
        at = offset + len(chunk)
    if data != packet[20:]:
        problems.append(f"pieces put together are not the client's data: {what}")


def check_frag_needed(pkt, packet, want_answered, problem):
    """An ICMP fragmentation-needed answer to a too-big DF packet of the client's."""
    ip, icmp = pkt[IP], packet[20:]
    quoted = icmp[8:]
    original = next((p for p in want_answered if quoted == p[:28]), None)
    if original is None:
        problem("ICMP quoting no too-big DF packet of the client's (IP header and 8 bytes)")
        return
    want_answered[original] += 1
    service = service_of(original)
    if pkt[Ether].dst != CLIENT_MAC or ip.src != IP(original).dst or ip.dst != CLIENT:
        problem(f"ICMP from {ip.src} to {ip.dst} at {pkt[Ether].dst}: want from the VIP to the client")
    if icmp[0] != 3 or icmp[1] != 4:
        problem(f"ICMP type {icmp[0]} code {icmp[1]}, want 3/4 (fragmentation needed)")
    mtu = int.from_bytes(icmp[6:8], "big")
    if mtu != MTU - OVERHEAD[service["encap"]]:
        problem(f"ICMP announces MTU {mtu}, want {MTU - OVERHEAD[service['encap']]}")
    # scapy's checksum over the bytes as sent (rebuilding the ICMP layer would re-serialize
    # the quoted, truncated TCP header whole).
    if checksum(icmp[:2] + b"\0\0" + icmp[4:]) != pkt[ICMP].chksum:
        problem("ICMP checksum differs from scapy's")


def check_spread(per_flow, problems):
    """Flows of one service leave with different outer sources (prefix) or GUE ports: more
    distinct values than half the flows (the hash is pinned; a /28 for 9 flows has collisions)."""
    for key, service in SERVICES.items():
        headers = [h for f, h in per_flow.items() if (f[0], f[1], f[5]) == key]
        sources, ports = len({src for src, _ in headers}), len({port for _, port in headers})
        if service["source"] is not None and sources * 2 <= len(headers):
            problems.append(f"{key}: {len(headers)} flows from only {sources} outer sources")
        if service["encap"] == "gue" and ports * 2 <= len(headers):
            problems.append(f"{key}: {len(headers)} flows from only {ports} GUE source ports")


def fix_outer_checksum(frame):
    frame[24:26] = b"\0\0"
    frame[24:26] = checksum(bytes(frame[14:34])).to_bytes(2, "big")


def first(frames, protocol, source=None):
    """The index of the first frame whose outer protocol is `protocol` (and outer source
    starts with the bytes `source`)."""
    return next(
        i for i, f in enumerate(frames) if f[23] == protocol and (source is None or f[26:].startswith(source))
    )


def set_bytes(protocol, offset, value, source=None, fix=True):
    """A mutation: bytes at `offset` of the first such frame set to `value`."""

    def mutate(frames):
        frame = frames[first(frames, protocol, source)]
        frame[offset : offset + len(value)] = value
        if fix:
            fix_outer_checksum(frame)

    return mutate


def every(protocol, source, offset, value):
    """A mutation: bytes at `offset` of every such frame set to `value`."""

    def mutate(frames):
        for frame in frames:
            if frame[23] == protocol and frame[26:].startswith(source):
                frame[offset : offset + len(value)] = value
                fix_outer_checksum(frame)

    return mutate


def inner_payload_changed(frames):
    frames[first(frames, GUE)][-1] ^= 0xFF


def dropped(frames):
    del frames[first(frames, 17)]


def duplicated(frames):
    frames.append(bytearray(frames[first(frames, 4)]))


def same_ident(frames):
    frames[1][18:20] = frames[0][18:20]
    fix_outer_checksum(frames[1])


IPIP, GUE, ICMP_ = 4, 17, 1
PREFIX, BOX = bytes([10, 9, 0]), bytes([10, 1, 1, 2])
# Broken copies of a good output: byte offsets in the Ethernet frame (outer IPv4 at 14, its
# payload at 34). Each must be rejected.
MUTANTS = {
    "inner TTL lowered": set_bytes(IPIP, 34 + 8, b"\x38"),
    "inner payload changed": inner_payload_changed,
    "outer checksum wrong": set_bytes(GUE, 24, b"\x00\x01", fix=False),
    "outer TTL 63": set_bytes(IPIP, 22, b"\x3f"),
    "outer TOS not the client's": set_bytes(IPIP, 15, b"\x00"),
    "outer source outside the prefix": set_bytes(IPIP, 27, b"\x08", source=PREFIX),
    "outer source not the box's": set_bytes(GUE, 29, b"\x03", source=BOX),
    "one outer source for all flows": every(IPIP, PREFIX, 29, b"\x07"),
    "one GUE source port for all flows": every(GUE, BOX, 34, (50000).to_bytes(2, "big")),
    "GUE checksum not 0": set_bytes(GUE, 40, b"\x12"),
    "GUE to another port": set_bytes(GUE, 36, (6081).to_bytes(2, "big")),
    "IPIP sent as protocol 41": set_bytes(IPIP, 23, b"\x29"),
    "MAC of the real server for the gateway's": set_bytes(IPIP, 0, bytes.fromhex("02000a01010b"), source=PREFIX),
    "ICMP announces the MTU itself": set_bytes(ICMP_, 34 + 6, (1500).to_bytes(2, "big")),
    "ICMP from the box, not the VIP": set_bytes(ICMP_, 26, BOX),
    "ICMP type 3 code 3": set_bytes(ICMP_, 34 + 1, b"\x03"),
    "a wrapped packet missing": dropped,
    "a wrapped packet twice": duplicated,
    "two packets with one identification": same_ident,
}


def mutants(path):
    good = [bytearray(bytes(p)) for p in rdpcap(path)]
    accepted = []
    for name, mutate in MUTANTS.items():
        frames = [bytearray(f) for f in good]
        mutate(frames)
        problems = problems_in([Ether(bytes(f)) for f in frames])
        print(f"{name}: {problems[0] if problems else 'ACCEPTED'}")
        if not problems:
            accepted.append(name)
    print(f"scapy rejected {len(MUTANTS) - len(accepted)} of {len(MUTANTS)} broken outputs")
    sys.exit(1 if accepted else 0)


if __name__ == "__main__":
    {"write": write, "check": check, "mutants": mutants}[sys.argv[1]](sys.argv[2])
