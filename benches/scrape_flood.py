#!/usr/bin/env python3
"""What a flood of metrics scrapes costs the proxy: the latency of new
connections through the pair (SOCKS5 to an echo target on loopback, one
byte there and back), quiet and while THREADS threads scrape the server's
--metrics endpoint from one address as fast as they can.

    python3 benches/scrape_flood.py [BIN_DIR] [THREADS]

BIN_DIR holds blocking-server and blocking-local (default target/release).
Prints p50 and p99 for each run, and how the scrapes were answered.
"""
import socket, subprocess, sys, threading, time, os, statistics

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release"
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
CA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "certs", "ca.pem")
N = 600

def echo_server():
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(128)
    def serve(c):
        with c:
            while (d := c.recv(4096)):
                c.sendall(d)
    def loop():
        while True:
            c, _ = ls.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return ls.getsockname()

def start(args, want):
    p = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    found = {}
    while len(found) < len(want):
        line = p.stderr.readline()
        if not line: raise SystemExit(f"{args[0]} exited")
        for key, marker in want.items():
            if marker in line:
                found[key] = line.split(marker, 1)[1].split()[0].removesuffix("/metrics")
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, found

def one(local, echo):
    t = time.perf_counter()
    s = socket.create_connection(local, timeout=10)
    s.sendall(b"\x05\x01\x00"); s.recv(2)
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(echo[0]) + echo[1].to_bytes(2, "big"))
    got = b""
    while len(got) < 10: got += s.recv(10 - len(got))
    s.sendall(b"x"); assert s.recv(1) == b"x"
    s.close()
    return (time.perf_counter() - t) * 1000

def latencies(local, echo):
    xs = sorted(one(local, echo) for _ in range(N))
    return statistics.median(xs), xs[int(len(xs) * 0.99)]

def cpu_ms(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK")

def flood(metrics, stop, counts):
    host, port = metrics.rsplit(":", 1)
    while not stop.is_set():
        try:
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while (d := s.recv(65536)): data += d
            s.close()
            key = data[9:12].decode() or "closed"
        except OSError as e:
            key = type(e).__name__
        counts[key] = counts.get(key, 0) + 1

echo = echo_server()
server, s = start([f"{BIN}/blocking-server", "--listen", "127.0.0.1:0", "--allow-private", "--metrics", "127.0.0.1:0"],
                  {"addr": "listening on ", "metrics": "metrics served on http://"})
local, l = start([f"{BIN}/blocking-local", "--server", s["addr"], "--ca", CA, "--listen", "127.0.0.1:0"],
                 {"addr": "listening on "})
lh, lp = l["addr"].rsplit(":", 1); laddr = (lh, int(lp))
try:
    latencies(laddr, echo)  # warm up
    p50, p99 = latencies(laddr, echo)
    print(f"{BIN}: quiet: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {N} connections")
    stop, counts = threading.Event(), {}
    ts = [threading.Thread(target=flood, args=(s["metrics"], stop, counts)) for _ in range(THREADS)]
    c0 = cpu_ms(server.pid); t0 = time.perf_counter(); [t.start() for t in ts]
    p50, p99 = latencies(laddr, echo)
    stop.set(); [t.join() for t in ts]; secs = time.perf_counter() - t0
    n = sum(counts.values()); used = cpu_ms(server.pid) - c0
    print(f"{BIN}: {THREADS} threads scraping: p50 {p50:.2f} ms, p99 {p99:.2f} ms; scrapes {n / secs:.0f}/s: {counts}; "
          f"server CPU {used / secs / 10:.0f}% of a core, {used * 1000 / n:.0f} us a scrape")
finally:
    local.kill(); server.kill()
