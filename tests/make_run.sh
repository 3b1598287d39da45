#!/usr/bin/env bash
# `make run` from this checkout, as a person runs it in a terminal: the pair
# starts on loopback with the test certificates, curl gets a page through it,
# a second client holds a connection open, and Ctrl-C (SIGINT to the whole
# foreground group) stops both processes. What the terminal showed is
# printed, and checked: every line tagged with its program, no warning but
# the test certificate's (no "SIGTERM again"), the local's drain waiting for its one connection, which
# then ends, and both programs exiting 0.
set -euo pipefail
cd "$(dirname "$0")/.."

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
srv=$(free_port); loc=$(free_port); web=$(free_port)
work=$(mktemp -d)
group=""; webpid=""; holder=""
cleanup() {
  [ -n "$group" ] && kill -9 -- -"$group" 2>/dev/null || true
  [ -n "$holder" ] && kill "$holder" 2>/dev/null || true
  [ -n "$webpid" ] && kill "$webpid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "make run: $*"; echo "--- make run printed:"; cat "$work/run.log"; exit 1; }

# Waits (bounded: 60 s) until the command succeeds.
await() {
  for _ in $(seq 1 600); do "$@" && return 0; sleep 0.1; done
  return 1
}

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

# The first make run compiles; then both listen and the web server answers.
await grep -q "listening on 127.0.0.1:$srv" "$work/run.log" || fail "the server never listened"
await grep -q "listening on 127.0.0.1:$loc" "$work/run.log" || fail "the local never listened"
await curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$web/" || fail "the web server never answered"
body=$(curl -s --max-time 10 --socks5-hostname 127.0.0.1:$loc "http://localhost:$web/index.html")
[ "$body" = "make run page" ] || fail "wrong page: $body"

# A client that holds a SOCKS5 connection to the web server open until its
# standard input (a FIFO the script holds) closes.
mkfifo "$work/hold"
python3 -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
s.sendall(b"\x05\x01\x00"); assert s.recv(2) == b"\x05\x00"
port = int(sys.argv[2])
s.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))
assert s.recv(10)[:2] == b"\x05\x00"
print("held", flush=True)
sys.stdin.read()
s.close()' "$loc" "$web" <"$work/hold" >"$work/holder.log" 2>&1 &
holder=$!
exec 5>"$work/hold"
await grep -q held "$work/holder.log" || fail "the holding client got no tunnel: $(cat "$work/holder.log")"

# Ctrl-C: SIGINT to the whole group, as a terminal sends it.
kill -INT -- -"$group"
await grep -q "^local  | .*listener closed; waiting up to .* for 1 connection$" "$work/run.log" ||
  fail "the local did not wait for its one connection"
await grep -q "^server | .*listener closed; waiting up to" "$work/run.log" ||
  fail "the server did not drain"
# The held connection ends within the drain: both programs then exit.
exec 5>&-
await bash -c "! pgrep -g $group >/dev/null" || fail "Ctrl-C left processes running: $(pgrep -a -g "$group")"
status=0; wait "$group" || status=$?

echo "--- make run printed (Ctrl-C after one request, one connection held open):"
cat "$work/run.log"
echo "--- make exited $status"

# make itself ends by the SIGINT it got, as any interrupted make does (130),
# after its recipe has ended; the recipe's last line gives both programs' statuses.
[ "$status" = 0 ] || [ "$status" = 130 ] || fail "make exited $status"
grep -q "^make run: \(server\|local\) exited 0, \(server\|local\) exited 0$" "$work/run.log" ||
  fail "a program did not exit 0"
untagged=$(grep -v -e '^server | ' -e '^local  | ' -e '^make run: ' -e '^blocking-server on .*Ctrl-C stops both$' \
  "$work/run.log" | grep -v -e '^ *Compiling ' -e '^ *Finished ' || true)
[ -z "$untagged" ] || fail "lines without their program's tag: $untagged"
# The one warning expected: the server's built-in test certificate.
warnings=$(grep "WARN" "$work/run.log" | grep -v "no --cert/--key: using the built-in test certificate" || true)
[ -z "$warnings" ] || fail "warnings: $warnings"
grep -q "^blocking-server on 127.0.0.1:$srv, SOCKS5/SOCKS4/HTTP proxy on 127.0.0.1:$loc; Ctrl-C stops both$" \
  "$work/run.log" || fail "no banner"
grep -q "^local  | .*closed client=.* end=eof proto=socks5 route=proxy$" "$work/run.log" ||
  fail "the held connection did not end cleanly"
echo "make run: 1 passed, 0 failed"
