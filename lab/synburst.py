#!/usr/bin/env python3
"""Sends bursts of identical bare SYNs from this host's own address (an unruly client).

Every second, for SECONDS seconds, PORTS fresh source ports each send the same SYN (same
sequence number) COPIES times: to xlb each copy after the first is a SYN sent again on a flow
the backend has not answered yet, the weakest passive health sign, which any client can
fake at will without spoofing. The host's kernel answers the backends' SYN-ACKs with RSTs
(no socket), so no connection is ever made. Bounded: SECONDS * PORTS * COPIES packets.
Source ports start at FIRST_PORT, below the kernel's ephemeral range, so that
real connections from the same host never share a flow with a burst. Prints "sent N" at the end.
"""

import argparse
import random
import socket
import struct
import time


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    """A bare TCP SYN header (no options) with its checksum; the kernel adds the IP header."""
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, 20)
    sum_ = checksum(pseudo + header)
    return header[:16] + struct.pack("!H", sum_) + header[18:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="this host's address")
    parser.add_argument("--dst", required=True, help="the VIP")
    parser.add_argument("--dport", type=int, required=True)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--ports", type=int, default=16)
    parser.add_argument("--copies", type=int, default=7)
    parser.add_argument("--first-port", type=int, default=20000)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    sock.bind((args.src, 0))
    sent = 0
    for second in range(args.seconds):
        started = time.monotonic()
        for i in range(args.ports):
            sport = args.first_port + (second * args.ports + i) % 10000
            packet = syn(args.src, args.dst, sport, args.dport, random.getrandbits(32))
            for _ in range(args.copies):
                sock.sendto(packet, (args.dst, 0))
                sent += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
