#!/usr/bin/env python3
"""Opens COUNT TCP connections to a TCP echo, checks that each one answers, holds them all
open for HOLD seconds, then closes them. Used by tests/bench/ztunnel.sh inside a lab pod to
measure the tunnel's memory per open connection.

Bounded: every connect and read has a timeout, the whole opening phase has a deadline, and
the process never holds more than COUNT sockets. Prints `HELD <n> <seconds>` once every
connection is open and echoed (the caller samples memory then), and `CLOSED <n>` at the end.
"""

import argparse
import resource
import socket
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to hold them open")
    parser.add_argument("--deadline", type=float, default=120.0, help="limit on opening them all")
    args = parser.parse_args()
    if not 0 < args.count <= 50000:
        print("count must be between 1 and 50000", file=sys.stderr)
        return 2

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            print(f"the open-file limit ({hard}) is below {want}", file=sys.stderr)
            return 2
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    sockets = []
    start = time.monotonic()
    try:
        for i in range(args.count):
            if time.monotonic() - start > args.deadline:
                print(f"deadline passed after {i} connections", file=sys.stderr)
                return 1
            s = socket.create_connection((args.host, args.port), timeout=5)
            sockets.append(s)
            # One byte there and back proves the connection reaches the app end to end
            # (through both tunnels when the namespace is in the mesh).
            s.sendall(b"x")
            if s.recv(1) != b"x":
                print(f"connection {i} did not echo", file=sys.stderr)
                return 1
        print(f"HELD {len(sockets)} {time.monotonic() - start:.1f}", flush=True)
        time.sleep(args.hold)
    except OSError as error:
        print(f"after {len(sockets)} connections: {error}", file=sys.stderr)
        return 1
    finally:
        for s in sockets:
            s.close()
    print(f"CLOSED {len(sockets)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
