#!/usr/bin/env python3
"""The labs' UDP service and its client.

serve: answers every datagram with "NAME <the datagram>", sent from the address the datagram
       was sent to (IP_PKTINFO), as a real UDP service bound to 0.0.0.0 must: a DR real server
       receives requests for the VIP (held on `lo`) and must answer from the VIP, not from its
       own address. With --family 6, the same on [::] (IPv6 only, IPV6_PKTINFO).
ask:   COUNT request/responses, each from a fresh connected socket on a source port this run
       has not used before (so each is a new flow: the kernel's random ephemeral port can repeat
       within a few dozen sockets), nor an earlier run of the same lab (the file LAB_UDP_PORTS
       names, which lab/lib.sh sets: a port an earlier round used may still have its flow in
       xlb, to the real server it picked then, as an operator's drained server keeps its
       flows; 1 lab run in 100 failed so), each waiting at most TIMEOUT seconds. A connected socket only accepts replies
       from the address and port it sent to, so a reply from the wrong source counts as lost.
       Prints one line per request: "ok NAME CLIENT_PORT" or "fail REASON" (with --stamps,
       after its start and end times); --until FILE stops early once FILE exists; --interval
       paces the requests; --size pads each request with random bytes to SIZE bytes (a
       datagram above the MTU leaves fragmented, and its answer, NAME and the whole request,
       comes back fragmented too: checked byte for byte); --source-port sends every request
       from that one port instead (a resolver's fixed query port: one flow for them all). An
       ADDR with a colon is IPv6.
"""

import argparse
import os
import socket
import struct
import sys
import time

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux <linux/in.h>
IN_PKTINFO = struct.Struct("=I4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)  # Linux <linux/in6.h>
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IN6_PKTINFO = struct.Struct("=16sI")  # ipi6_addr, ipi6_ifindex


def serve(name: str, port: int, family: int) -> None:
    if family == 6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        sock.bind(("::", port))
        level, kind, info = socket.IPPROTO_IPV6, IPV6_PKTINFO, IN6_PKTINFO
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind(("0.0.0.0", port))
        level, kind, info = socket.IPPROTO_IP, IP_PKTINFO, IN_PKTINFO
    prefix = name.encode() + b" "
    while True:
        data, ancillary, _flags, peer = sock.recvmsg(65535, socket.CMSG_SPACE(info.size))
        reply_from = []
        to = None
        for got_level, got_kind, value in ancillary:
            if (got_level, got_kind) == (level, kind):
                if family == 6:
                    to, _ifindex = IN6_PKTINFO.unpack(value[: info.size])
                    answer = IN6_PKTINFO.pack(to, 0)
                else:
                    _ifindex, _local, to = IN_PKTINFO.unpack(value[: info.size])
                    answer = IN_PKTINFO.pack(0, to, bytes(4))
                reply_from = [(level, kind, answer)]
        shown = socket.inet_ntop(sock.family, to) if to else "?"
        print(f"{peer[0]}:{peer[1]} -> {shown}", flush=True)
        sock.sendmsg([prefix + data], reply_from, 0, peer)


def remembered_ports() -> set:
    """The source ports earlier clients of this lab used (from the file LAB_UDP_PORTS names,
    if any; forgotten past 20,000, when ports must come round again)."""
    path = os.environ.get("LAB_UDP_PORTS", "")
    try:
        with open(path) as file:
            ports = {int(word) for word in file.read().split()}
    except (OSError, ValueError):
        return set()
    return ports if len(ports) <= 20000 else set()


def remember_ports(ports: set) -> None:
    """Adds `ports` to the file LAB_UDP_PORTS names, if any, for this lab's later clients."""
    path = os.environ.get("LAB_UDP_PORTS", "")
    if path and ports:
        with open(path, "a") as file:
            file.write("".join(f"{p}\n" for p in sorted(ports)))


def fixed_socket(addr: str, port: int, source_port: int) -> socket.socket:
    """A UDP socket connected to addr:port from source_port (bound again for each request)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", source_port))
    sock.connect((addr, port))
    return sock


def fresh_socket(addr: str, port: int, used: set) -> socket.socket:
    """A UDP socket connected to addr:port from a source port not in `used` (then added)."""
    while True:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.connect((addr, port))
        local_port = sock.getsockname()[1]
        if local_port not in used:
            used.add(local_port)
            return sock
        sock.close()


def ask(
    addr: str,
    port: int,
    count: int,
    timeout: float,
    until: str,
    stamps: bool,
    interval: float,
    size: int,
    source_port: int = 0,
) -> None:
    earlier = remembered_ports()
    used_ports: set = set(earlier)
    if source_port:
        used_ports.add(source_port)
    try:
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
            request = b"request %d" % i
            if size > len(request):
                request += os.urandom(size - len(request))
            line = ask_once(addr, port, timeout, used_ports, request, source_port)
            print(f"{start:.6f} {time.time():.6f} {line}" if stamps else line, flush=True)
    finally:
        remember_ports(used_ports - earlier)


def ask_once(
    addr: str, port: int, timeout: float, used_ports: set, request: bytes, source_port: int = 0
) -> str:
    """One request/response from a fresh socket (from source_port if set): "ok NAME
    CLIENT_PORT" or "fail REASON"."""
    sock = None
    try:
        if source_port:
            sock = fixed_socket(addr, port, source_port)
        else:
            sock = fresh_socket(addr, port, used_ports)
        sock.settimeout(timeout)
        sock.send(request)
        reply = sock.recv(65535)
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
    s.add_argument("--family", type=int, choices=(4, 6), default=4)
    a = sub.add_parser("ask", help="COUNT request/responses, one flow each")
    a.add_argument("--addr", required=True)
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--timeout", type=float, default=2.0)
    a.add_argument("--until", default="", help="stop early once this file exists")
    a.add_argument("--stamps", action="store_true", help="start and end time before each line")
    a.add_argument("--interval", type=float, default=0.0, help="seconds from one request to the next")
    a.add_argument("--size", type=int, default=0, help="pad each request with random bytes to SIZE")
    a.add_argument("--source-port", type=int, default=0, help="send every request from this port")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.name, args.port, args.family)
    else:
        ask(
            args.addr,
            args.port,
            args.count,
            args.timeout,
            args.until,
            args.stamps,
            args.interval,
            args.size,
            args.source_port,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
