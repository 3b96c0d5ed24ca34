#!/usr/bin/env python3
"""Writes the frames of a pcap onto an interface, raw, one by one (lab/malformed).

An AF_PACKET socket sends each frame exactly as captured, whatever its headers say (no
scapy: it is slow and not needed). Frames go out at most RATE a second. Prints one line per
frame: "INDEX sent" or "INDEX unsent ERRNO_NAME" (the kernel refused it: shorter than an
Ethernet header, say, or over the interface's MTU), then a last line "# sent N unsent M".
"""

import argparse
import errno
import socket
import struct
import sys
import time


def frames(path: str):
    """The frames of a classic pcap (either byte order, any timestamp resolution)."""
    with open(path, "rb") as capture:
        header = capture.read(24)
        magic = header[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            order = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            order = ">"
        else:
            raise SystemExit(f"{path}: not a classic pcap")
        record = struct.Struct(order + "IIII")
        while True:
            head = capture.read(record.size)
            if len(head) < record.size:
                return
            _sec, _frac, incl_len, _orig_len = record.unpack(head)
            yield capture.read(incl_len)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pcap", required=True)
    parser.add_argument("--iface", required=True)
    parser.add_argument("--rate", type=float, default=500.0, help="frames a second at most")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    gap = 1.0 / args.rate
    sent = unsent = 0
    next_at = time.monotonic()
    for index, frame in enumerate(frames(args.pcap)):
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_at += gap
        try:
            sock.send(frame)
            sent += 1
            print(f"{index} sent", flush=True)
        except OSError as error:
            unsent += 1
            name = errno.errorcode.get(error.errno, str(error.errno))
            print(f"{index} unsent {name}", flush=True)
    print(f"# sent {sent} unsent {unsent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
