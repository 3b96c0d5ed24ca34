#!/usr/bin/env python3
"""The labs' UDP service and its client.

serve: answers every datagram with "NAME <the datagram>", sent from the address the datagram
       was sent to (IP_PKTINFO), as a real UDP service bound to 0.0.0.0 must: a DR real server
       receives requests for the VIP (held on `lo`) and must answer from the VIP, not from its
       own address.
ask:   COUNT request/responses, each from a fresh connected socket on a source port this run
       has not used before (so each is a new flow: the kernel's random ephemeral port can repeat
       within a few dozen sockets), each waiting at most TIMEOUT seconds. A connected socket only accepts replies
       from the address and port it sent to, so a reply from the wrong source counts as lost.
       Prints one line per request: "ok NAME CLIENT_PORT" or "fail REASON" (with --stamps,
       after its start and end times); --until FILE stops early once FILE exists; --interval
       paces the requests.
"""

import argparse
import os
import socket
import struct
import sys
import time

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux <linux/in.h>
IN_PKTINFO = struct.Struct("=I4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr


def serve(name: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind(("0.0.0.0", port))
    prefix = name.encode() + b" "
    while True:
        data, ancillary, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(IN_PKTINFO.size))
        reply_from = []
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                _ifindex, _local, to = IN_PKTINFO.unpack(value[: IN_PKTINFO.size])
                reply_from = [(socket.IPPROTO_IP, IP_PKTINFO, IN_PKTINFO.pack(0, to, bytes(4)))]
        print(f"{peer[0]}:{peer[1]} -> {socket.inet_ntoa(to) if reply_from else '?'}", flush=True)
        sock.sendmsg([prefix + data], reply_from, 0, peer)


def fresh_socket(addr: str, port: int, used: set) -> socket.socket:
    """A UDP socket connected to addr:port from a source port not in `used` (then added)."""
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((addr, port))
        local_port = sock.getsockname()[1]
        if local_port not in used:
            used.add(local_port)
            return sock
        sock.close()


def ask(
    addr: str, port: int, count: int, timeout: float, until: str, stamps: bool, interval: float
) -> None:
    used_ports: set = set()
    next_at = time.monotonic()
    for i in range(count):
        if until and i % 100 == 0 and os.path.exists(until):
            break
        if interval:
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if len(used_ports) > 20000:
            used_ports.clear()  # a long run: ports come round again, after a while
        start = time.time()
        line = ask_once(addr, port, timeout, used_ports, b"request %d" % i)
        print(f"{start:.6f} {time.time():.6f} {line}" if stamps else line, flush=True)


def ask_once(addr: str, port: int, timeout: float, used_ports: set, request: bytes) -> str:
    """One request/response from a fresh socket: "ok NAME CLIENT_PORT" or "fail REASON"."""
    sock = None
    try:
        sock = fresh_socket(addr, port, used_ports)
        sock.settimeout(timeout)
        sock.send(request)
        reply = sock.recv(2048)
        name, _, echoed = reply.partition(b" ")
        if echoed != request:
            return "fail wrong-reply"
        client_port = sock.getsockname()[1]
        return f"ok {name.decode(errors='replace')} {client_port}"
    except socket.timeout:
        return "fail timeout"
    except OSError as error:
        return f"fail {type(error).__name__}"
    finally:
        if sock is not None:
            sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="answer every datagram with NAME")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, required=True)
    a = sub.add_parser("ask", help="COUNT request/responses, one flow each")
    a.add_argument("--addr", required=True)
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--timeout", type=float, default=2.0)
    a.add_argument("--until", default="", help="stop early once this file exists")
    a.add_argument("--stamps", action="store_true", help="start and end time before each line")
    a.add_argument("--interval", type=float, default=0.0, help="seconds from one request to the next")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.name, args.port)
    else:
        ask(args.addr, args.port, args.count, args.timeout, args.until, args.stamps, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
