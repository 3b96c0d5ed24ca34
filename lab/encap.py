#!/usr/bin/env python3
"""A stand-in for a tunnel-mode balancer, for lab/decap: COUNT UDP request/responses to
VIP:PORT, each wrapped on its way to a real server's own address and answered directly.

Each request is a UDP datagram from this host's address (--src) and a fresh port to
VIP:PORT, wrapped as --encap says and sent to --server:
  ipip: in an IPv4 header of protocol 4 (a raw socket: the kernel writes the outer header);
  gue:  as the payload of a UDP datagram to --gue-port (GUE's direct IP-in-UDP form);
  gue0: the same behind a 4-byte GUE variant 0 header (no options, proto 4).
The answer comes back unwrapped, from the VIP, to a UDP socket bound to the request's source
port. Prints one line per request: "ok NAME CLIENT_PORT" (NAME: the answer's first word) or
"fail REASON", as lab/udp.py does.
"""

import argparse
import socket
import struct


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def inner_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet with both checksums right."""
    src_b, dst_b = socket.inet_aton(src), socket.inet_aton(dst)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    pseudo = src_b + dst_b + struct.pack("!BBH", 0, 17, len(udp))
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src_b, dst_b)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--vip", required=True)
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--encap", choices=["ipip", "gue", "gue0"], default="ipip")
    parser.add_argument("--gue-port", type=int, default=6080)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()

    if args.encap == "ipip":
        out = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
        target = (args.server, 0)
    else:
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = (args.server, args.gue_port)
    for index in range(args.count):
        answer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        answer.bind((args.src, 0))
        answer.settimeout(args.timeout)
        port = answer.getsockname()[1]
        packet = inner_packet(args.src, args.vip, port, args.port, f"request {index}".encode())
        if args.encap == "gue0":
            packet = bytes([0, 4, 0, 0]) + packet
        out.sendto(packet, target)
        try:
            data, peer = answer.recvfrom(2048)
            if peer != (args.vip, args.port):
                print(f"fail answer from {peer[0]}:{peer[1]}", flush=True)
            else:
                print(f"ok {data.split()[0].decode()} {port}", flush=True)
        except socket.timeout:
            print("fail timeout", flush=True)
        answer.close()


if __name__ == "__main__":
    main()
