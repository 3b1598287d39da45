# blocking-proxy: build, run the pair on loopback, test.
#
#   make          release build
#   make run      server on 127.0.0.1:9012 + local on 127.0.0.1:1081 (test certificates)
#   make test     every test (installs the Debian packages the tests need)
#   make soak     the memory soak test at full length (14 cycles of mixed load)
#   make lint     rustfmt --check + clippy -D warnings
#   make layers   what each module uses; fails if one uses a module above it
#   make certs    regenerate the test CA and server certificate in certs/
#   make fuzz     each protocol parser under libFuzzer for FUZZ_SECS seconds
#   make bench    the pair (default flags, --pool 8, routing by an ACL, DNS through the tunnel) next to no proxy at all (target/bench/report.txt)
#   make bench-peers  the same, with stunnel4+microsocks, trojan and shadowsocks-rust
#   make profile  what one new connection costs each process: instructions, wake-ups, system calls, profile
#   make install  the release binaries, stripped, to $(PREFIX)/bin (STRIP= keeps their
#                 debug info), the systemd units to $(PREFIX)/lib/systemd/system
#                 (PREFIX=/usr/local; DESTDIR for staging)
#   make verify-units  systemd-analyze verify on the units make install put there (staged or not)
#   make uninstall  remove exactly the files make install put there

CARGO      ?= cargo
BIN        := target/release
RUN_SERVER ?= 127.0.0.1:9012
RUN_LOCAL  ?= 127.0.0.1:1081
# Commands the tests run, and the Debian package that provides each.
TEST_TOOLS := curl:curl openssl:openssl python3:python3 trojan:trojan prlimit:util-linux nginx:nginx-light ip:iproute2 \
              systemd-analyze:systemd wget:wget haproxy:haproxy promtool:prometheus nft:nftables \
              dnsmasq:dnsmasq-base dig:bind9-dnsutils nc:netcat-openbsd chromium:chromium
# Python modules the tests import with Debian's /usr/bin/python3, and their packages.
TEST_PYTHON := socks:python3-socks
# nginx and haproxy live in /usr/sbin, which a user's PATH may lack.
export PATH := $(PATH):/usr/sbin:/sbin

.PHONY: all build run test soak deps certs lint layers fuzz bench bench-peers bench-deps profile install verify-units uninstall clean

all: build

build:
	$(CARGO) build --release

# The server uses its built-in test certificate and, as it listens on loopback only,
# may reach loopback and private targets. Both run in the background of a bash
# shell, each line tagged with its program by a sed that outlives Ctrl-C. Ctrl-C
# (SIGINT to the whole foreground group) reaches both programs, which drain and
# exit; the shell only waits, so neither gets a second signal. A SIGTERM to make
# reaches only this shell, which passes it on. If one program ends on its own (a
# port in use, say), the other is stopped; the first nonzero status is the recipe's.
run: SHELL := /bin/bash
run: build
	@echo "blocking-server on $(RUN_SERVER), SOCKS5/SOCKS4/HTTP proxy on $(RUN_LOCAL); Ctrl-C stops both"
	@tag() { trap '' INT; exec sed -u "s/^/$$1 | /"; }; \
	exec 3> >(tag "server"); tag_srv=$$!; exec 4> >(tag "local "); tag_loc=$$!; \
	$(BIN)/blocking-server --listen $(RUN_SERVER) --allow-private >&3 2>&3 3>&- 4>&- & srv=$$!; \
	$(BIN)/blocking-local --listen $(RUN_LOCAL) --server $(RUN_SERVER) --ca certs/ca.pem >&4 2>&4 3>&- 4>&- & loc=$$!; \
	exec 3>&- 4>&-; \
	signalled=; trap 'signalled=1' INT; trap 'signalled=1; kill -TERM $$srv $$loc 2>/dev/null' TERM; \
	first=; until [ -n "$$first" ]; do wait -n -p first $$srv $$loc; st=$$?; done; \
	other=$$srv; other_name=server; first_name=local; \
	if [ "$$first" = "$$srv" ]; then other=$$loc; other_name=local; first_name=server; fi; \
	if [ -z "$$signalled" ]; then \
	  echo "make run: $$first_name exited with status $$st; stopping $$other_name"; kill -TERM $$other 2>/dev/null; \
	fi; \
	while :; do wait $$other; st2=$$?; [ $$st2 -gt 128 ] && kill -0 $$other 2>/dev/null || break; done; \
	wait $$tag_srv $$tag_loc; \
	echo "make run: $$first_name exited $$st, $$other_name exited $$st2"; \
	[ $$st -ne 0 ] && exit $$st; exit $$st2

test: deps
	$(CARGO) test --release
	bash tests/make_run.sh

# The memory test (tests/e2e/memory.rs) at full length: 14 cycles of mixed load (about
# 3 minutes on 2 cores); resident memory after the last must stay within 10% of the
# second's, plus 12 MiB.
soak:
	SOAK_CYCLES=14 $(CARGO) test --release --test e2e memory:: -- --nocapture

# Installs, with apt-get (as root or through sudo), the Debian packages in $(1), a
# list of name:package pairs, whose names fail the check $(2) (with $$name set).
define install_missing
	@missing=""; for pair in $(1); do \
	  name=$${pair%%:*}; $(2) >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi
endef
HAS_COMMAND := command -v $$name
HAS_PYTHON_MODULE := /usr/bin/python3 -c "import $$name"

# Install whatever the tests need that this machine lacks.
deps:
	$(call install_missing,$(TEST_TOOLS),$(HAS_COMMAND))
	$(call install_missing,$(TEST_PYTHON),$(HAS_PYTHON_MODULE))

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings -W clippy::incompatible_msrv
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --locked

layers:
	python3 .ci/layers.py

# A test CA and a certificate for localhost, 127.0.0.1 and ::1 signed by it, valid 20 years.
certs:
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	  -keyout certs/ca.key -out certs/ca.pem -days 7300 -subj "/CN=blocking-proxy test CA" \
	  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	  -keyout certs/server.key -out certs/server.csr -subj "/CN=localhost"
	openssl x509 -req -in certs/server.csr -CA certs/ca.pem -CAkey certs/ca.key -CAcreateserial \
	  -days 7300 -out certs/server.crt -extfile certs/openssl.cnf -extensions server_ext
	cat certs/server.crt certs/ca.pem > certs/server.pem
	rm -f certs/server.csr certs/server.crt certs/ca.srl

FUZZ_SECS    ?= 60
FUZZ_TARGETS := socks5 seed trojan udp socks4 http http_body proxy_protocol x509 hello acl accounts dns sniff
CARGO_FUZZ   := target/tools/bin/cargo-fuzz

# cargo-fuzz, built once and kept under target/ (make clean removes it).
$(CARGO_FUZZ):
	$(CARGO) install --locked cargo-fuzz --root target/tools

# Each parser under libFuzzer for $(FUZZ_SECS) s, starting from fuzz/seeds/; stops at the
# first crash, which lands in fuzz/artifacts/<target>/. RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take the -Z flags cargo-fuzz passes (sanitizer, coverage).
fuzz: $(CARGO_FUZZ)
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECS)s"; \
	  mkdir -p fuzz/corpus/$$t; \
	  PATH="$(CURDIR)/target/tools/bin:$$PATH" RUSTC_BOOTSTRAP=1 \
	    $(CARGO) fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- -max_total_time=$(FUZZ_SECS) \
	    || { echo "fuzz: $$t found a crash, see fuzz/artifacts/$$t/"; exit 1; }; \
	done

# Benchmarks (benches/proxy.rs). Report, chart and proxy logs in target/bench/.
# The pair runs with default flags ("ours"; LOCAL_ARGS adds flags to its local),
# with --pool 8 ("ours-pool8") for comparison, and with a generated ACL that
# proxies the targets and one that sends them direct (LOCAL_ARGS too), and with
# --dns in front of dnsmasq on loopback (LOCAL_ARGS too; skipped without dnsmasq).
PEERS      := target/peers
SS_VERSION ?= 1.25.0
BENCH_ARGS ?=
LOCAL_ARGS ?=
# Commands the peer chains run, and the Debian package that provides each.
PEER_TOOLS := stunnel4:stunnel4 microsocks:microsocks trojan:trojan

# The pair next to no proxy at all, and routing by a generated ACL (about 3½ minutes on 2 cores).
bench:
	$(CARGO) bench --bench proxy -- --local-args "$(LOCAL_ARGS)" $(BENCH_ARGS)

# The same, with stunnel4+microsocks, trojan and shadowsocks-rust alongside (about 11 minutes).
bench-peers: bench-deps
	$(CARGO) bench --bench proxy -- --peers --local-args "$(LOCAL_ARGS)" $(BENCH_ARGS)

# What a new connection costs each process, with the local's default flags and with
# --pool 0: callgrind, perf stat, strace -c and perf record (benches/profile.py;
# about two and a half minutes on 2 cores). PROFILE_ARGS passes options, e.g. "--only perf --n 500".
PROFILE_ARGS ?=
profile: build
	python3 benches/profile.py $(PROFILE_ARGS)

# What the peer chains need and this machine lacks: Debian packages and
# shadowsocks-rust, built once into target/peers.
bench-deps:
	$(call install_missing,$(PEER_TOOLS),$(HAS_COMMAND))
	@if [ ! -x $(PEERS)/bin/sslocal ] || [ ! -x $(PEERS)/bin/ssserver ]; then \
	  echo "building shadowsocks-rust $(SS_VERSION) into $(PEERS)"; \
	  $(CARGO) install --locked shadowsocks-rust@$(SS_VERSION) --root $(PEERS); \
	fi

# Installs what `make` built (it does not build, so `make && sudo make install`
# leaves no root-owned files in target/): both binaries, stripped of their debug
# info (31 MB each with it, 6 without; `make install STRIP=` keeps it, for
# backtraces with line numbers and for perf), and the systemd units from
# dist/systemd/ with @BINDIR@ replaced by where the binaries go. Units go to
# $(PREFIX)/lib/systemd/system, which systemd reads for /usr/local and /usr.
# STRIP is set here, not taken from the environment (where a toolchain's STRIP
# names its strip program); only the command line changes it.
PREFIX     ?= /usr/local
DESTDIR    ?=
STRIP      := -s
BINDIR     := $(PREFIX)/bin
UNITDIR    := $(PREFIX)/lib/systemd/system
PROGRAMS   := blocking-server blocking-local
UNITS      := $(PROGRAMS:%=%.service)

install:
	@for p in $(PROGRAMS); do \
	  [ -x $(BIN)/$$p ] || { echo "install: no $(BIN)/$$p; run make first" >&2; exit 1; }; \
	done
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR)
	install -m 755 $(STRIP) $(PROGRAMS:%=$(BIN)/%) $(DESTDIR)$(BINDIR)/
	@for u in $(UNITS); do \
	  echo "install dist/systemd/$$u -> $(DESTDIR)$(UNITDIR)/$$u (@BINDIR@ = $(BINDIR))"; \
	  sed 's|@BINDIR@|$(BINDIR)|g' dist/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u.tmp && \
	  chmod 644 $(DESTDIR)$(UNITDIR)/$$u.tmp && \
	  mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done

# systemd-analyze verify on the units make install put under $(DESTDIR) (the same
# PREFIX and DESTDIR). verify wants each ExecStart's binary where the unit names
# it, $(BINDIR), which a staged install has under $(DESTDIR) instead: it checks
# copies of the units whose $(BINDIR)/ is $(DESTDIR)$(BINDIR)/ (without DESTDIR,
# the units as installed). Unknown keys and bad values are warnings: read them.
verify-units:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	for u in $(UNITS); do \
	  [ -f $(DESTDIR)$(UNITDIR)/$$u ] || { echo "verify-units: no $(DESTDIR)$(UNITDIR)/$$u; run make install first" >&2; exit 1; }; \
	  sed 's|=$(BINDIR)/|=$(abspath $(DESTDIR)$(BINDIR))/|' $(DESTDIR)$(UNITDIR)/$$u > "$$tmp/$$u" || exit 1; \
	done && \
	echo "systemd-analyze verify $(UNITS) (from $(DESTDIR)$(UNITDIR), binaries in $(abspath $(DESTDIR)$(BINDIR)))" && \
	systemd-analyze verify $(UNITS:%="$$tmp/%")

uninstall:
	rm -f $(PROGRAMS:%=$(DESTDIR)$(BINDIR)/%) $(UNITS:%=$(DESTDIR)$(UNITDIR)/%)

clean:
	$(CARGO) clean
