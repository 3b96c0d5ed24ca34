#!/usr/bin/env python3
"""Long-lived HTTP/1.1 keep-alive connections to a VIP (lab/failover, lab/restart).

Opens CONNS connections and, on each (a thread each, so a connection that hangs holds up no
other), sends `GET /` every INTERVAL seconds and reads the answer (a real server's name),
until the file UNTIL exists or SECONDS have passed. A connection is
never reopened: when a request on it fails (reset, closed, no answer within TIMEOUT) it is
broken for good, so every broken connection is counted. Each request is logged:

    TIME CONN ok NAME          the connection's real server answered
    TIME CONN broken REASON    the connection broke (and is used no more)
    TIME CONN moved NAME       another real server answered on the same connection

and at the end one line per connection: `# CONN NAME REQUESTS ok|broken|moved [WHEN]`.
"""

import argparse
import http.client
import os
import sys
import threading
import time


class Held:
    def __init__(self, index: int, addr: str, port: int, timeout: float):
        self.index = index
        self.conn = http.client.HTTPConnection(addr, port, timeout=timeout)
        self.conn.connect()
        self.local = self.conn.sock.getsockname()
        self.name = ""
        self.requests = 0
        self.state = "ok"
        self.when = ""

    def ask(self) -> str:
        """One request; returns the log line's tail."""
        try:
            if self.conn.sock is None or self.conn.sock.getsockname() != self.local:
                raise ConnectionError("reopened")
            self.conn.request("GET", "/")
            response = self.conn.getresponse()
            body = response.read().decode(errors="replace").strip()
            if response.status != 200:
                raise ConnectionError(f"status-{response.status}")
        except (OSError, http.client.HTTPException) as error:
            self.state = "broken"
            self.when = f"{time.time():.6f}"
            self.conn.close()
            return f"broken {type(error).__name__}"
        self.requests += 1
        if not self.name:
            self.name = body
        elif body != self.name:
            self.state = "moved"
            self.when = f"{time.time():.6f}"
            return f"moved {body}"
        return f"ok {body}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--conns", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--until", default="")
    parser.add_argument("--ports", default="", help="file to write `CONN LOCAL_PORT` lines to")
    args = parser.parse_args()
    started = time.monotonic()
    held = []
    for index in range(args.conns):
        try:
            held.append(Held(index, args.addr, args.port, args.timeout))
        except OSError as error:
            print(f"# could not open connection {index}: {error}", flush=True)
            return 1
    if args.ports:
        with open(args.ports, "w", encoding="ascii") as ports:
            for h in held:
                ports.write(f"{h.index} {h.local[1]}\n")
    lock = threading.Lock()

    def run(h: Held) -> None:
        while h.state == "ok" and time.monotonic() - started < args.seconds:
            if args.until and os.path.exists(args.until):
                break
            line = h.ask()
            with lock:
                print(f"{time.time():.6f} {h.index} {line}", flush=True)
            time.sleep(args.interval)

    threads = [threading.Thread(target=run, args=(h,)) for h in held]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for h in held:
        print(f"# {h.index} {h.name or '-'} {h.requests} {h.state} {h.when}".rstrip(), flush=True)
        h.conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
