#!/usr/bin/env python3
"""Sends raw Ethernet frames out of an interface and prints the frames it receives, tags included.

For VLAN-tagged traffic where the kernel has no VLAN device (tests/appliance.rs): an
AF_PACKET socket sends each --send frame (hex) exactly as given, then listens for --seconds
(bounded) and prints one line per frame received (not one this host sent): its bytes in hex.
The kernel takes a received frame's outer VLAN tag out of the frame into the packet's
metadata before AF_PACKET sees it; PACKET_AUXDATA gives it back and it is put back after the
MACs, as tcpdump does, so a printed frame is the frame as it was on the wire. Stops early
after --count frames. The socket is bound before anything is sent, so no answer is missed;
a first line "# listening" says it is (for a sender elsewhere to wait for).
"""

import argparse
import socket
import struct
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid.
AUXDATA = struct.Struct("IIIHHHH")


def with_outer_tag(frame: bytes, ancillary) -> bytes:
    """`frame` with the outer tag the kernel took out of it put back, if it took one."""
    for level, kind, data in ancillary:
        if (level, kind) != (SOL_PACKET, PACKET_AUXDATA) or len(data) < AUXDATA.size:
            continue
        status, _len, _snap, _mac, _net, tci, tpid = AUXDATA.unpack(data[: AUXDATA.size])
        if status & TP_STATUS_VLAN_VALID:
            if not status & TP_STATUS_VLAN_TPID_VALID:
                tpid = 0x8100
            return frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
    return frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--send", action="append", default=[], help="a frame in hex")
    parser.add_argument("--seconds", type=float, default=1.0, help="how long to listen")
    parser.add_argument("--count", type=int, default=0, help="stop after this many (0: no)")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((args.iface, ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    print("# listening", flush=True)
    for frame in args.send:
        sock.send(bytes.fromhex(frame))
    deadline = time.monotonic() + min(args.seconds, 10.0)
    received = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (args.count and received >= args.count):
            break
        sock.settimeout(left)
        try:
            frame, ancillary, _flags, address = sock.recvmsg(65536, socket.CMSG_SPACE(64))
        except socket.timeout:
            break
        if address[2] == PACKET_OUTGOING:
            continue
        print(with_outer_tag(frame, ancillary).hex(), flush=True)
        received += 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
