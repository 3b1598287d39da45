#!/usr/bin/env bash
# `make run` from this checkout: the pair starts on loopback with the test
# certificates, curl gets a page through it, and Ctrl-C (SIGINT to the whole
# foreground group) stops both processes.
set -euo pipefail
cd "$(dirname "$0")/.."

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
srv=$(free_port); loc=$(free_port); web=$(free_port)
work=$(mktemp -d)
cleanup() { kill -9 -- -"$group" 2>/dev/null || true; kill "$webpid" 2>/dev/null || true; rm -rf "$work"; }

echo "make run page" > "$work/index.html"
python3 -m http.server "$web" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 & webpid=$!

# A process group of its own with SIGINT at its default, as a terminal's
# foreground job has (a background job of a script starts with it ignored).
python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execvp(sys.argv[1], sys.argv[1:])' make -s run RUN_SERVER=127.0.0.1:$srv RUN_LOCAL=127.0.0.1:$loc \
  >"$work/run.log" 2>&1 </dev/null &
group=$!
trap cleanup EXIT

# Wait (bounded) until the server and the local are listening and the web server answers.
for _ in $(seq 1 600); do
  grep -q "listening on 127.0.0.1:$srv" "$work/run.log" 2>/dev/null &&
    grep -q "listening on 127.0.0.1:$loc" "$work/run.log" 2>/dev/null &&
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$web/" && break
  sleep 0.1
done
body=$(curl -s --max-time 10 --socks5-hostname 127.0.0.1:$loc "http://localhost:$web/index.html")
[ "$body" = "make run page" ] || { echo "make run: wrong page: $body"; cat "$work/run.log"; exit 1; }

kill -INT -- -"$group"
for _ in $(seq 1 100); do
  pgrep -g "$group" >/dev/null || break
  sleep 0.1
done
if pgrep -g "$group" >/dev/null; then
  echo "make run: Ctrl-C left processes running:"; pgrep -a -g "$group"; exit 1
fi
grep -q "closed client=" "$work/run.log" || { echo "make run: no connection logged"; cat "$work/run.log"; exit 1; }
echo "make run: 1 passed, 0 failed"
