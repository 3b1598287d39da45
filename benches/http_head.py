#!/usr/bin/env python3
"""What reading an HTTP proxy request head costs blocking-local in CPU.

Starts blocking-local (with --user, --pool 0 and a --server nothing listens
on: no request gets past its login) on 127.0.0.1 and sends it HEADS
connections one after another, each a request head of SIZE bytes (the
request line and 64 header lines of padding) without credentials, which the
local reads to its end and answers 407; the client reads the answer and
closes. The local's CPU (utime + stime from /proc/PID/stat, every thread's,
in clock ticks) is read before and after each batch. The same is done with
heads of one line ("GET http://h.example/ HTTP/1.1" and the empty line),
what a connection costs besides its head. Each figure is the median of RUNS
batches, per head.

Usage: benches/http_head.py [--local PATH] [--heads N] [--runs N] [--size BYTES]
(PATH defaults to target/release/blocking-local; build it first.)
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def head_of(size):
    """A request head of exactly `size` bytes: 64 padding lines share what the request line leaves."""
    line = b"GET http://h.example/ HTTP/1.1\r\n"
    if size <= len(line) + 2:
        return line + b"\r\n"
    lines, left = 64, size - len(line) - 2
    head = line
    for i in range(lines):
        name = b"X-Pad-%02d: " % i
        n = left // (lines - i)
        head += name + b"a" * (n - len(name) - 2) + b"\r\n"
        left -= n
    head += b"\r\n"
    assert len(head) == size, len(head)
    return head


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def one(port, head):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head)
    answer = b""
    while True:
        got = s.recv(4096)
        if not got:
            break
        answer += got
    s.close()
    if not answer.startswith(b"HTTP/1.1 407 "):
        sys.exit(f"unexpected answer: {answer[:80]!r}")


def batch(pid, port, head, n):
    before = cpu_ticks(pid)
    for _ in range(n):
        one(port, head)
    return (cpu_ticks(pid) - before) / TICK / n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--local", default=os.path.join(ROOT, "target", "release", "blocking-local"))
    p.add_argument("--heads", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--size", type=int, default=16 * 1024)
    a = p.parse_args()
    port = free_port()
    args = [a.local, "--listen", f"127.0.0.1:{port}", "--server", f"127.0.0.1:{free_port()}",
            "--ca", os.path.join(ROOT, "certs", "ca.pem"), "--user", "alice:wonder", "--pool", "0"]
    local = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, RUST_LOG="error"))
    try:
        until = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > until:
                    sys.exit("blocking-local did not listen")
                time.sleep(0.05)
        big, small = head_of(a.size), head_of(0)
        one(port, big)  # warm-up
        per = {"big": [], "small": []}
        for _ in range(a.runs):
            per["big"].append(batch(local.pid, port, big, a.heads))
            per["small"].append(batch(local.pid, port, small, a.heads))
        b, s = statistics.median(per["big"]), statistics.median(per["small"])
        print(f"{a.local}: {a.heads} heads per batch, median of {a.runs} batches")
        print(f"  {len(big)}-byte head: {b * 1e6:8.1f} us CPU per connection   (batches: "
              + ", ".join(f"{x * 1e6:.0f}" for x in per["big"]) + ")")
        print(f"  {len(small)}-byte head: {s * 1e6:8.1f} us CPU per connection   (batches: "
              + ", ".join(f"{x * 1e6:.0f}" for x in per["small"]) + ")")
        print(f"  the {len(big)}-byte head itself: {(b - s) * 1e6:8.1f} us")
    finally:
        local.terminate()
        local.wait()


if __name__ == "__main__":
    main()
