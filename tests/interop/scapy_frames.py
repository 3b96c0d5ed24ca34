"""Writes and checks captures with scapy, an implementation independent of xlb's.

  scapy_frames.py write IN.pcap    craft the input capture
  scapy_frames.py check OUT.pcap   check what xlb transmitted

The addresses match tests/interop/interop.toml.
"""
import sys

from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, Raw, rdpcap, wrpcap

LB = "02:00:0a:01:01:02"
CLIENT_MAC, CLIENT = "02:00:0a:01:01:14", "10.1.1.20"
RS1_MAC, RS1 = "02:00:0a:01:01:0b", "10.1.1.11"
RS2_MAC, RS2 = "02:00:0a:01:01:0c", "10.1.1.12"
VIP, NAT_VIP, FULLNAT_VIP, LOCAL = "10.1.1.10", "10.1.1.30", "10.1.1.40", "10.1.1.200"


def frames():
    c = Ether(src=CLIENT_MAC, dst=LB) / IP(src=CLIENT, dst=VIP)
    yield Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=CLIENT_MAC, psrc=CLIENT, pdst=VIP)
    for sport in range(41000, 41010):
        yield c / TCP(sport=sport, dport=80, flags="S", seq=1)
        yield c / TCP(sport=sport, dport=80, flags="PA", seq=2, ack=1) / Raw(b"GET / HTTP/1.0\r\n\r\n")
    yield c / UDP(sport=5000, dport=53) / Raw(b"\x00\x01query")
    yield c / ICMP(type=8, id=1, seq=1) / Raw(b"ping")
    # NAT: request and the real server's reply.
    yield Ether(src=CLIENT_MAC, dst=LB) / IP(src=CLIENT, dst=NAT_VIP) / TCP(sport=42000, dport=80, flags="S")
    yield Ether(src=RS1_MAC, dst=LB) / IP(src=RS1, dst=CLIENT) / TCP(sport=8080, dport=42000, flags="SA")
    # FullNAT request (the reply needs the chosen local port: checked in the Rust tests).
    yield Ether(src=CLIENT_MAC, dst=LB) / IP(src=CLIENT, dst=FULLNAT_VIP) / TCP(sport=43000, dport=80, flags="S")
    # A first fragment (it has the ports): balanced, DR to rs2 (issue 15).
    yield Ether(src=CLIENT_MAC, dst=LB) / IP(src=CLIENT, dst=VIP, flags="MF") / UDP(sport=1, dport=53)
    # Malformed and foreign frames: a later fragment whose first never came.
    yield Ether(src=CLIENT_MAC, dst=LB) / IP(src=CLIENT, dst=VIP, id=77, frag=185, proto=17) / Raw(b"later")
    yield Ether(src=CLIENT_MAC, dst=LB) / IP(src=CLIENT, dst=VIP, ihl=6, options=b"\x01\x01\x01\x01") / TCP(dport=80)
    yield Ether(src=CLIENT_MAC, dst=LB) / IP(src=CLIENT, dst="10.1.1.2") / TCP(dport=22, flags="S")


def write(path):
    # Build each frame so scapy fills in lengths and checksums.
    wrpcap(path, [Ether(bytes(f)) for f in frames()])


def checksums_ok(pkt):
    """True if the IP and L4 checksums equal what scapy computes from scratch."""
    ip = pkt[IP]
    fresh = IP(bytes(ip))
    del fresh.chksum
    for layer in (TCP, UDP, ICMP):
        if layer in fresh:
            del fresh[layer].chksum
    fresh = IP(bytes(fresh))
    if fresh.chksum != ip.chksum:
        return False
    for layer in (TCP, UDP, ICMP):
        if layer in ip and fresh[layer].chksum != ip[layer].chksum:
            return False
    return True


def check(path):
    out = rdpcap(path)
    problems, seen = [], {"dr": 0, "dr_udp": 0, "nat_in": 0, "nat_out": 0, "fullnat": 0, "arp": 0, "echo": 0}
    for pkt in out:
        if ARP in pkt:
            a = pkt[ARP]
            if a.op == 2 and a.psrc == VIP and a.hwsrc == LB and a.pdst == CLIENT:
                seen["arp"] += 1
            continue
        ip = pkt[IP]
        if not checksums_ok(pkt):
            problems.append("bad checksum: " + pkt.summary())
        if pkt[Ether].src != LB:
            problems.append("source MAC is not xlb's: " + pkt.summary())
        if TCP in pkt and ip.dst == VIP and pkt[Ether].dst in (RS1_MAC, RS2_MAC):
            seen["dr"] += 1
        elif UDP in pkt and ip.dst == VIP and pkt[Ether].dst == RS2_MAC:
            seen["dr_udp"] += 1
        elif ICMP in pkt and ip.src == VIP and pkt[ICMP].type == 0:
            seen["echo"] += 1
        elif TCP in pkt and ip.dst == RS1 and pkt[TCP].dport == 8080 and ip.src == CLIENT:
            seen["nat_in"] += 1
        elif TCP in pkt and ip.src == NAT_VIP and pkt[TCP].sport == 80 and ip.dst == CLIENT:
            seen["nat_out"] += 1
        elif TCP in pkt and ip.src == LOCAL and ip.dst == RS2 and pkt[TCP].dport == 8080:
            seen["fullnat"] += 1
        else:
            problems.append("unexpected: " + pkt.summary())
    want = {"dr": 20, "dr_udp": 2, "nat_in": 1, "nat_out": 1, "fullnat": 1, "arp": 1, "echo": 1}
    if seen != want:
        problems.append(f"saw {seen}, want {want}")
    for p in problems:
        print(p)
    print(f"scapy checked {len(out)} frames: {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1]](sys.argv[2])
