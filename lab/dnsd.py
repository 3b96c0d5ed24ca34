#!/usr/bin/env python3
"""The checks lab's DNS service and its client (no DNS library: a query and an answer built
and read by hand, RFC 1035).

serve: answers every query on 0.0.0.0:PORT with rcode NOERROR and two A records for the
       name asked: ANSWER (the address the health check expects) and 127.0.0.N for server
       number N, so a client can tell who answered; from the address the query was sent to
       (IP_PKTINFO), as a DR real server holding the VIP on lo must. With --servfail FILE,
       answers SERVFAIL (no records) while FILE exists: a sick DNS server that still answers.
ask:   COUNT queries, each from a fresh socket on a port neither this run nor an earlier one
       of the same lab used (lab/udp.py's fresh_socket and LAB_UDP_PORTS), each waiting at
       most TIMEOUT s; one line per query: "ok rsN CLIENT_PORT" (N from the 127.0.0.N record)
       or "fail REASON CLIENT_PORT".
"""

import argparse
import os
import socket
import struct
import sys

from udp import fresh_socket, remember_ports, remembered_ports

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IN_PKTINFO = struct.Struct("=I4s4s")


def question_end(packet: bytes) -> int:
    """Where the first question (name, type, class) ends; raises on a malformed one."""
    at = 12
    while True:
        length = packet[at]
        if length == 0:
            return at + 1 + 4
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        at += 1 + length


def serve(port: int, answer: str, number: int, servfail: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind(("0.0.0.0", port))
    records = [socket.inet_aton(answer), socket.inet_aton(f"127.0.0.{number}")]
    while True:
        query, ancillary, _, peer = sock.recvmsg(1500, 256)
        try:
            end = question_end(query)
        except (IndexError, ValueError):
            continue
        sick = bool(servfail) and os.path.exists(servfail)
        flags = 0x8182 if sick else 0x8180  # QR, RD, RA; rcode 2 or 0
        count = 0 if sick else len(records)
        reply = query[:2] + struct.pack("!HHHHH", flags, 1, count, 0, 0) + query[12:end]
        if not sick:
            for address in records:
                # A pointer to the question's name, type A, class IN, TTL 0, 4 bytes.
                reply += struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + address
        source = None
        for level, kind, data in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                _, spec_dst, _ = IN_PKTINFO.unpack(data[: IN_PKTINFO.size])
                source = spec_dst
        info = [(socket.IPPROTO_IP, IP_PKTINFO, IN_PKTINFO.pack(0, source, b"\0" * 4))] if source else []
        sock.sendmsg([reply], info, 0, peer)
        print(f"{peer[0]}:{peer[1]} -> {'SERVFAIL' if sick else 'NOERROR'}", flush=True)


def ask(addr: str, port: int, count: int, timeout: float) -> None:
    earlier = remembered_ports()
    used = set(earlier)
    try:
        for n in range(count):
            print(ask_once(addr, port, timeout, used, (n * 7919 + 1) & 0xFFFF), flush=True)
    finally:
        remember_ports(used - earlier)


def ask_once(addr: str, port: int, timeout: float, used: set, ident: int) -> str:
    """One query from a fresh socket: "ok rsN CLIENT_PORT" or "fail REASON CLIENT_PORT"."""
    sock = None
    local = "-"
    try:
        sock = fresh_socket(addr, port, used)
        local = sock.getsockname()[1]
        sock.settimeout(timeout)
        name = b"\x03lab\x00"
        sock.send(struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1))
        reply = sock.recv(1500)
        got, flags, _, _ = struct.unpack("!HHHH", reply[:8])
        if got != ident:
            return f"fail wrong-id {local}"
        if flags & 0xF:
            return f"fail rcode-{flags & 0xF} {local}"
        server = next(
            (f"rs{reply[i + 3]}" for i in range(len(reply) - 3) if reply[i : i + 3] == b"\x7f\x00\x00"),
            None,
        )
        return f"ok {server} {local}" if server else f"fail no-server-record {local}"
    except OSError as error:
        return f"fail {type(error).__name__} {local}"
    finally:
        if sock is not None:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--answer", required=True)
    s.add_argument("--number", type=int, required=True)
    s.add_argument("--servfail", default="")
    a = sub.add_parser("ask")
    a.add_argument("--addr", required=True)
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.answer, args.number, args.servfail)
    else:
        ask(args.addr, args.port, args.count, args.timeout)
    sys.exit(0)


if __name__ == "__main__":
    main()
