#!/usr/bin/env python3
"""What a new connection through the pair costs, per process.

Starts blocking-server and blocking-local (release builds, test
certificate, RUST_LOG=info as the benchmark runs them) on 127.0.0.1, once
with the local's default flags and once with --pool 0, and makes N short
connections one after another: SOCKS5 CONNECT to an echo target in this
script, 8 bytes there and back, close. Before each measured batch, WARM
connections let the first full handshake, thread creation and the pool's
growth happen outside it. Each figure is for the measured batch, divided by N:

  native, under `perf stat -p` (each process, threads it starts included):
    CPU (task-clock), context switches of its threads, wake-ups it issued
    (sched:sched_wakeup), system calls (raw_syscalls:sys_enter);
  native, under `strace -c -f -p`: the system calls each process makes most;
  native, under `perf record -p` (both processes): where CPU time goes,
    sorted into rough classes by symbol;
  under `valgrind --tool=callgrind` (zeroed after the warm-up, dumped after
    the batch): instructions executed in user space, reproducible from run
    to run, with the same classes.

  and, with the pair at rest, RSS of each process per connection held open
    (--held of them, each answered a 1-byte echo), as a cut must keep it.

Usage: benches/profile.py [--n N] [--warm N] [--held N] [--configs default,pool0]
       [--only perf,strace,record,callgrind,rss] [--keep DIR] [--bin DIR]
--bin takes blocking-server and blocking-local from DIR instead of target/release
(another build, to set its figures beside these).
Run by `make profile`, which builds the release binaries first; about a minute on
2 cores. Needs perf, strace and valgrind.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
CONFIGS = {"default": [], "pool0": ["--pool", "0"]}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def echo_server():
    """An echo target on 127.0.0.1, a thread per connection; returns its port."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(128)

    def serve(c):
        with c:
            while True:
                b = c.recv(4096)
                if not b:
                    return
                c.sendall(b)

    def loop():
        while True:
            c, _ = lst.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return lst.getsockname()[1]


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise IOError("closed after %d of %d bytes" % (len(buf), n))
        buf += b
    return buf


def one(socks_port, echo_port):
    with socket.create_connection(("127.0.0.1", socks_port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"\x05\x01\x00")
        if recv_exact(s, 2) != b"\x05\x00":
            raise IOError("socks5 method refused")
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", echo_port))
        if recv_exact(s, 10)[1] != 0:
            raise IOError("socks5 connect refused")
        s.sendall(b"12345678")
        if recv_exact(s, 8) != b"12345678":
            raise IOError("echo mismatch")


def batch(n, socks_port, echo_port):
    for _ in range(n):
        one(socks_port, echo_port)


def wait_port(port, proc, limit=120):
    until = time.time() + limit
    while time.time() < until:
        if proc.poll() is not None:
            sys.exit("a proxy exited at start; see its log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit("port %d never opened" % port)


class Pair:
    """blocking-server and blocking-local, each optionally under a wrapper command."""

    def __init__(self, work, local_args, wrap=None):
        self.sport, self.lport = free_port(), free_port()
        env = dict(os.environ, RUST_LOG="info")
        wrap = wrap or (lambda name: [])
        self.logs = []

        def start(name, args):
            log = open(os.path.join(work, name + ".log"), "w")
            self.logs.append(log)
            return subprocess.Popen(wrap(name) + args, env=env, stdout=log, stderr=log)

        self.server = start("server", [os.path.join(BIN, "blocking-server"), "--listen",
                                       "127.0.0.1:%d" % self.sport, "--allow-private"])
        wait_port(self.sport, self.server)
        self.local = start("local", [os.path.join(BIN, "blocking-local"), "--listen",
                                     "127.0.0.1:%d" % self.lport, "--server", "127.0.0.1:%d" % self.sport,
                                     "--ca", os.path.join(ROOT, "certs", "ca.pem")] + local_args)
        wait_port(self.lport, self.local)
        self.procs = {"local": self.local, "server": self.server}

    def stop(self):
        for p in (self.local, self.server):
            p.send_signal(signal.SIGTERM)
        for p in (self.local, self.server):
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()


def settle():
    """Lets the pool refill and the last connections close before a reading."""
    time.sleep(0.5)


def watchers(cmd_for, pair):
    """Starts one watcher process per proxy; returns {name: Popen}."""
    out = {}
    for name, p in pair.procs.items():
        out[name] = subprocess.Popen(cmd_for(name, p.pid), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
    time.sleep(1.0)  # attaching to every thread takes a moment
    return out


def stop_watchers(ws):
    res = {}
    for name, w in ws.items():
        w.send_signal(signal.SIGINT)
    for name, w in ws.items():
        res[name] = w.communicate(timeout=60)[1]
    return res


PERF_EVENTS = ["task-clock", "context-switches", "sched:sched_wakeup", "raw_syscalls:sys_enter"]


def watched_batch(work, args, o, echo, cmd_for):
    """A batch of o.n connections after o.warm warm-up ones, each process of
    the pair watched by the command cmd_for(name, pid) gives; their outputs."""
    pair = Pair(work, args)
    try:
        batch(o.warm, pair.lport, echo)
        settle()
        ws = watchers(cmd_for, pair)
        batch(o.n, pair.lport, echo)
        settle()
        return stop_watchers(ws)
    finally:
        pair.stop()


def perf_stat(work, args, o, echo):
    out = watched_batch(work, args, o, echo,
                        lambda name, pid: ["perf", "stat", "-x", ",", "-e", ",".join(PERF_EVENTS), "-p", str(pid)])
    res = {}
    for name, text in out.items():
        vals = {}
        for line in text.splitlines():
            f = line.split(",")
            if len(f) > 3 and f[2] in PERF_EVENTS:
                vals[f[2]] = float(f[0]) if f[0] not in ("<not counted>", "<not supported>") else float("nan")
        res[name] = vals
    return res


def strace(work, args, o, echo):
    out = watched_batch(work, args, o, echo, lambda name, pid: ["strace", "-c", "-f", "-p", str(pid)])
    res = {}
    for name, text in out.items():
        calls = {}
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                calls[f[-1]] = int(f[3])
        res[name] = calls
    return res


# Rough classes of a symbol, first match wins: (class, regex on "dso symbol").
CLASSES = [
    ("crypto", r"aws_lc|aws-lc|sha256|sha512|keccak|mlkem|ml_kem|x25519|curve25519|fiat_|ecp_nistz|p256|"
               r"bn_|ec_|aes|gcm|ghash|hkdf|hmac|chacha|poly1305|\bSHA|\bEVP_|\bBN_|\bEC_|OPENSSL|CRYPTO_|"
               r"ring_core|ecdsa|x509|webpki"),
    ("rustls", r"rustls"),
    ("kernel: scheduler, wake-ups, futex, locks", r"\[k\].*(schedul|switch|wake|ttwu|enqueue|dequeue|pick_next|"
                                          r"update_curr|update_load|futex|spin_unlock_irq|_raw_spin|spin_lock|"
                                          r"select_task|idle|cpuidle|hrtimer|timer|tick|rcu|sched)"),
    ("kernel: threads, stacks, memory", r"\[k\].*(clone|copy_process|exit|mmap|munmap|mprotect|madvise|"
                                       r"page|fault|pte|pmd|vma|tlb|mm_|memcg|zap|unmap|lru|folio|"
                                       r"alloc_pages|free_pages|kmem_cache|kmalloc|kfree|slab|__slab)"),
    ("kernel: tcp and sockets", r"\[k\].*(tcp|ip_|inet|sock|skb|net_|netif|loopback|dev_|sk_|__sys_|"
                                r"poll|epoll|fib|nf_|neigh|csum|lock_sock|release_sock|ipv4|ipv6)"),
    ("kernel: syscall entry and other", r"\[k\]"),
    ("malloc/free", r"malloc|_int_free|\bfree\b|cfree|realloc|calloc|memalign|tcache|arena_|sysmalloc|"
                    r"systrim|unlink_chunk|malloc_consolidate|__libc_free"),
    ("threads (user)", r"pthread|start_thread|std::thread|workers|Condvar|futex|lll_|__clone|Mutex|"
                       r"sys::sync|thread::park|_dl_|tls_get_addr|__GI___"),
    ("logging, formatting", r"core::fmt|alloc::fmt|env_logger|\blog::|write_fmt|Formatter|fmt::"),
    ("memcpy/memset", r"memcpy|memmove|memset|memcmp|bcmp"),
]


def classify(text):
    for name, rx in CLASSES:
        if re.search(rx, text, re.IGNORECASE):
            return name
    return "other"


def perf_record(work, args, o, echo):
    pair = Pair(work, args)
    data = os.path.join(work, "perf.data")
    try:
        batch(o.warm, pair.lport, echo)
        settle()
        pids = ",".join(str(p.pid) for p in pair.procs.values())
        rec = subprocess.Popen(["perf", "record", "-F", "4999", "-g", "-o", data, "-p", pids],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        batch(o.n, pair.lport, echo)
        settle()
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=60)
    finally:
        pair.stop()
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio",
                          "-g", "none", "--percent-limit", "0", "-q"], capture_output=True, text=True).stdout
    shares, tops = {}, []
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+(\S+)\s+(.*)$", line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(3) + " " + m.group(4).strip()
        shares[classify(sym)] = shares.get(classify(sym), 0) + pct
        tops.append((pct, m.group(4).strip()))
    return shares, tops


def self_costs(path):
    """Instructions by function, self cost only, from a callgrind output file."""
    names, costs, fn, after_call = {}, {}, None, False
    with open(path) as f:
        for line in f:
            if line.startswith(("fn=", "cfn=", "fl=", "fi=", "fe=", "cfi=", "cfl=", "ob=", "cob=")):
                key, _, rest = line.rstrip("\n").partition("=")
                m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
                if m and m.group(2) is not None:
                    names[(key[-2:], m.group(1))] = m.group(2)
                if key == "fn":
                    fn = names.get(("fn", m.group(1)), rest) if m else rest
                continue
            if line.startswith("calls="):
                after_call = True
                continue
            if line[:1] in "0123456789+-*" and fn is not None:
                parts = line.split()
                if len(parts) >= 2 and not after_call:
                    costs[fn] = costs.get(fn, 0) + int(parts[1])
                after_call = False
    return costs


def callgrind(work, args, o, echo):
    def wrap(name):
        return ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + os.path.join(work, "cg." + name)]

    pair = Pair(work, args, wrap)
    try:
        batch(o.warm, pair.lport, echo)
        settle()
        time.sleep(2.0)
        for p in pair.procs.values():
            subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, capture_output=True)
        batch(o.n, pair.lport, echo)
        settle()
        time.sleep(2.0)
        for p in pair.procs.values():
            subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True)
    finally:
        pair.stop()
    res = {}
    for name in pair.procs:
        dumps = sorted(f for f in os.listdir(work) if f.startswith("cg." + name + "."))
        # The first dump after the zeroing holds the batch; later ones come from the exit.
        path = os.path.join(work, dumps[0])
        total = 0
        with open(path) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    total = int(line.split()[1])
        shares, tops = {}, []
        for sym, ir in sorted(self_costs(path).items(), key=lambda kv: -kv[1]):
            c = classify(sym)
            shares[c] = shares.get(c, 0) + ir
            tops.append((ir, sym))
        res[name] = (total, shares, tops)
    return res


def short(sym, width=60):
    sym = re.sub(r"^\S+:", "", sym) if "???" not in sym else sym
    sym = re.sub(r" \[[^\]]*\]$", "", sym)
    return sym if len(sym) <= width else sym[: width - 1] + "…"


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def held(work, args, o, echo):
    """RSS of both processes per connection held open (each answered a 1-byte echo)."""
    pair = Pair(work, args)
    conns = []
    try:
        batch(20, pair.lport, echo)
        time.sleep(2.5)  # connection threads park for up to 2 s
        before = {n: rss_kib(p.pid) for n, p in pair.procs.items()}
        for _ in range(o.held):
            s = socket.create_connection(("127.0.0.1", pair.lport), timeout=60)
            s.sendall(b"\x05\x01\x00")
            recv_exact(s, 2)
            s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", echo))
            recv_exact(s, 10)
            s.sendall(b"x")
            recv_exact(s, 1)
            conns.append(s)
        settle()
        after = {n: rss_kib(p.pid) for n, p in pair.procs.items()}
    finally:
        for s in conns:
            s.close()
        pair.stop()
    return [(after[n] - before[n]) / o.held for n in ("local", "server")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--warm", type=int, default=40)
    ap.add_argument("--held", type=int, default=500)
    ap.add_argument("--only", default="perf,strace,record,callgrind,rss")
    ap.add_argument("--configs", default="default,pool0")
    ap.add_argument("--keep", help="keep logs, perf.data and callgrind files here")
    ap.add_argument("--bin", help="the directory of the binaries (default target/release)")
    o = ap.parse_args()
    if o.bin:
        global BIN
        BIN = os.path.abspath(o.bin)
    only = set(o.only.split(","))
    for tool in ["perf", "strace", "valgrind", "callgrind_control"]:
        if not shutil.which(tool):
            sys.exit("profile: %s is not installed" % tool)
    echo = echo_server()
    for cfg in o.configs.split(","):
        args = CONFIGS[cfg]
        print("== %s (blocking-local %s), per new connection, N=%d after %d warm-up"
              % (cfg, " ".join(args) or "with default flags", o.n, o.warm))
        base = o.keep and os.path.join(o.keep, cfg)
        if base:
            os.makedirs(base, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            work = base or tmp
            rows = []
            if "perf" in only:
                st = perf_stat(work, args, o, echo)
                for label, ev, scale in [("CPU, µs (task-clock)", "task-clock", 1e3),
                                         ("context switches", "context-switches", 1),
                                         ("wake-ups issued", "sched:sched_wakeup", 1),
                                         ("system calls", "raw_syscalls:sys_enter", 1)]:
                    rows.append((label, [st[p].get(ev, float("nan")) * scale / o.n for p in ("local", "server")]))
            if "callgrind" in only:
                cg = callgrind(work, args, o, echo)
                rows.insert(0, ("instructions, k (callgrind)", [cg[p][0] / o.n / 1e3 for p in ("local", "server")]))
            if "rss" in only:
                rows.append(("RSS per held connection, KiB", held(work, args, o, echo)))
            if rows:
                print("%-30s %10s %10s" % ("", "local", "server"))
                for label, (a, b) in rows:
                    print("%-30s %10.1f %10.1f" % (label, a, b))
            if "strace" in only:
                sc = strace(work, args, o, echo)
                for p in ("local", "server"):
                    top = sorted(sc[p].items(), key=lambda kv: -kv[1])[:9]
                    print("syscalls %-6s (strace) %5.1f: %s" % (p, sum(sc[p].values()) / o.n, ", ".join(
                        "%s %.1f" % (k, v / o.n) for k, v in top)))
            if "callgrind" in only:
                for p in ("local", "server"):
                    total, shares, tops = cg[p]
                    print("instructions %-6s by class: %s" % (p, ", ".join(
                        "%s %.0f%%" % (k, 100 * v / total) for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))))
                    print("  top: " + "; ".join("%s %.1f%%" % (short(s, 48), 100 * v / total) for v, s in tops[:6]))
            if "record" in only:
                shares, tops = perf_record(work, args, o, echo)
                print("CPU (perf record, both processes) by class: " + ", ".join(
                    "%s %.0f%%" % (k, v) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])))
                print("  top: " + "; ".join("%s %.1f%%" % (short(s, 40), v) for v, s in tops[:8]))
        print()


if __name__ == "__main__":
    main()
