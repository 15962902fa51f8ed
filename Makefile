# tcpserver — two commands on a fresh Debian/Ubuntu machine: `make run` and `make test`.
SHELL := /bin/bash
SWIFT ?= swift
PORT ?= 4000
# Debian packages the build and the tests need (headers for the C shims, tools for tests).
APT_PACKAGES := liburing-dev libnuma-dev liblz4-dev libzstd-dev libhiredis-dev libssl-dev redis-server chromium curl pkg-config python3
SERVER_SOURCES := Sources/CLinux Sources/Primitives Sources/UringServer Sources/UringServerTesting Sources/tcpserver Sources/tcpserver-cli Sources/VoiceWire Sources/VoiceRelay Sources/tcpserver-voice

.PHONY: run run-voice test build release deps check-no-foundation clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# The WebSocket interop test's independent client (PyPI: Debian 12's python3-websockets is 10.4).
	@python3 -c 'import websockets' 2>/dev/null || python3 -m pip install -q websockets 2>/dev/null \
	  || python3 -m pip install -q --break-system-packages websockets

build: deps check-no-foundation
	$(SWIFT) build

# Release builds link the Swift runtime statically: only the parts the server uses are mapped,
# which takes ~2.3 MB off the idle RSS (docs/performance.md, "Memory").
RELEASE_FLAGS ?= --static-swift-stdlib

# Builds every product: tcpserver, tcpserver-cli (the command-line client), the bench and soak tools.
release: deps check-no-foundation
	$(SWIFT) build -c release $(RELEASE_FLAGS)

run: release
	@echo "client: .build/release/tcpserver-cli --port $(PORT)   (from another terminal; --help for more)"
	.build/release/tcpserver --port $(PORT)

# The server with voice: tcpserver-voice (UDP relay, docs/deployment.md "Voice") beside it,
# sharing VOICE_SECRET. Demo from another terminal: python3 scripts/voice_demo.py --port $(PORT)
VOICE_PORT ?= 4100
VOICE_SECRET ?= change-me-voice-secret
run-voice: release
	@echo "voice relay on udp 127.0.0.1:$(VOICE_PORT) (stats: curl -s localhost:4101/stats); demo: python3 scripts/voice_demo.py --port $(PORT)"
	.build/release/tcpserver-voice --port $(VOICE_PORT) --secret $(VOICE_SECRET) & relay=$$!; \
	  trap "kill $$relay 2>/dev/null" EXIT INT TERM; \
	  .build/release/tcpserver --port $(PORT) --voice-secret $(VOICE_SECRET) --voice-relays 127.0.0.1:$(VOICE_PORT)

# The server targets (and the CLI client) must not import Foundation (RSS: ~17 MB with it, ~7.5 MB without).
check-no-foundation:
	@if grep -rnE '^\s*(@_exported\s+)?import\s+(Foundation|FoundationEssentials)\b' $(SERVER_SOURCES); then \
	  echo "error: server targets must not import Foundation"; exit 1; fi

# Every test, in both io modes: the Swift suites (unit, integration over real sockets, ops,
# limits, cluster with real redis-servers, the dashboard in headless chromium), an independent
# Python client, the shipped (release) binary with its defaults under light load (never
# overloaded, nothing shed, presence throughout), the Autobahn WebSocket suite against the
# release binary (~40 s for both modes; skipped with a message where Python 2's wstest cannot
# be had), a short fuzz run (every CI run fuzzes) and a short soak.
FUZZ_SECONDS ?= 30
SOAK_SECONDS ?= 20
test: build
	ulimit -n 65536 2>/dev/null || true; $(SWIFT) test 2>&1 | tee .build/test.log; exit $${PIPESTATUS[0]}
	python3 scripts/conformance_client.py .build/debug/tcpserver --messages 500
	$(SWIFT) build -c release $(RELEASE_FLAGS) --product tcpserver
	python3 scripts/light_load_check.py .build/release/tcpserver --io uring
	python3 scripts/light_load_check.py .build/release/tcpserver --io epoll
	bash scripts/autobahn.sh .build/release/tcpserver
	bash scripts/fuzz.sh $(FUZZ_SECONDS)
	bash scripts/soak.sh $(SOAK_SECONDS)
	@n=$$(grep -oE "Test run with [0-9]+ tests" .build/test.log | grep -oE "[0-9]+" | tail -1); \
	  echo "conformance client, fuzz and soak: OK (both io modes)"; echo "swift tests: $$n passed, 0 failed"

# libFuzzer over the frame scanner, the JSON codec and protocol dispatch (Fuzz/ package).
SECONDS ?= 300
.PHONY: fuzz soak test-sanitizers test-websocket
# The WebSocket conformance run alone: Autobahn fuzzingclient, both io modes (make test runs it).
test-websocket: deps
	$(SWIFT) build -c release $(RELEASE_FLAGS) --product tcpserver
	bash scripts/autobahn.sh .build/release/tcpserver

fuzz: deps
	bash scripts/fuzz.sh $(SECONDS)

# Many clients connecting, vanishing, joining, sending; checks exactly-once in-order delivery,
# fd and RSS back to baseline, ping latency bounded. `make soak SECONDS=600`.
soak: deps
	bash scripts/soak.sh $(SECONDS)

# The integration tests under AddressSanitizer and ThreadSanitizer.
test-sanitizers: deps
	bash scripts/sanitizers.sh

clean:
	rm -rf .build

# Benchmarks: tcpserver (uring, epoll) against redis-server and nats-server, the same loads in
# one run (scripts/bench.py; results in bench/results.json, docs/performance-table.md,
# docs/performance.png). `make bench-check` compares a fresh run with bench/baseline.json
# (BENCH_FRESH=0 compares the bench/results.json already there instead).
BENCH_SCRATCH ?= .build
BENCH_ARGS ?=
BENCH_FRESH ?= 1
BENCH_BUILD = bash scripts/bench-deps.sh && \
	$(SWIFT) build -c release $(RELEASE_FLAGS) --scratch-path $(BENCH_SCRATCH) --product tcpserver && \
	$(SWIFT) build -c release $(RELEASE_FLAGS) --scratch-path $(BENCH_SCRATCH) --product tcpserver-bench

.PHONY: bench bench-quick bench-check bench-history
bench: deps
	$(BENCH_BUILD)
	ulimit -n $$(ulimit -Hn) 2>/dev/null; python3 scripts/bench.py --bin $(BENCH_SCRATCH)/release $(BENCH_ARGS)
	python3 scripts/bench_history.py --bin $(BENCH_SCRATCH)/release --out bench/history.json
	python3 scripts/bench_cluster.py --bin $(BENCH_SCRATCH)/release
	python3 scripts/bench_cluster_offsets.py --bin $(BENCH_SCRATCH)/release --out bench/cluster_offsets.json \
	  $(if $(BENCH_BEFORE_BIN),--before-bin $(BENCH_BEFORE_BIN))

# Cluster mode, cross-node deliveries/s over a Redis Cluster vs a single Redis, alternating
# rounds (scripts/bench_cluster.py; bench/cluster.json, docs/performance.md "Cluster mode").
.PHONY: bench-cluster
bench-cluster: deps
	$(BENCH_BUILD)
	python3 scripts/bench_cluster.py --bin $(BENCH_SCRATCH)/release $(BENCH_ARGS)


# Cluster offsets (issue #15): publish→deliver across two nodes with offsets from the chat
# script; BENCH_BEFORE_BIN=DIR (a build of main) adds alternating rounds of the plain PUBLISH.
.PHONY: bench-cluster-offsets
bench-cluster-offsets: deps
	$(BENCH_BUILD)
	python3 scripts/bench_cluster_offsets.py --bin $(BENCH_SCRATCH)/release --out bench/cluster_offsets.json \
	  $(if $(BENCH_BEFORE_BIN),--before-bin $(BENCH_BEFORE_BIN))

# Room history rows (issue #15): fan-out with history on vs off per server CPU-s, replay of 100
# missed lines, history memory per stored message (scripts/bench_history.py, bench/history.json;
# BENCH_BASE_BIN=DIR adds a build without the room log to the fan-out rounds).
bench-history: deps
	$(BENCH_BUILD)
	python3 scripts/bench_history.py --bin $(BENCH_SCRATCH)/release --out bench/history.json \
	  $(if $(BENCH_BASE_BIN),--base-bin $(BENCH_BASE_BIN))

bench-quick: deps
	$(BENCH_BUILD)
	ulimit -n $$(ulimit -Hn) 2>/dev/null; python3 scripts/bench.py --quick --bin $(BENCH_SCRATCH)/release \
	  --out bench/results-quick.json --table bench/performance-table-quick.md --chart bench/performance-quick.png $(BENCH_ARGS)

# The voice relay (uring, epoll) against coturn, same loads, one run (scripts/bench_voice.py;
# bench/voice.json, table on stdout; docs/performance.md, "Voice relay").
.PHONY: bench-voice
bench-voice: deps
	@command -v turnserver >/dev/null || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; $$SUDO apt-get install -y -qq coturn >/dev/null; }
	$(SWIFT) build -c release $(RELEASE_FLAGS) --scratch-path $(BENCH_SCRATCH) --product tcpserver-voice
	$(SWIFT) build -c release $(RELEASE_FLAGS) --scratch-path $(BENCH_SCRATCH) --product tcpserver-bench
	python3 scripts/bench_voice.py --bin $(BENCH_SCRATCH)/release $(BENCH_ARGS)

# Exit 3 from bench.py (tcpserver missed deliveries) still goes on to the check, which fails on it.
bench-check: deps
	@if [ "$(BENCH_FRESH)" = 1 ]; then $(BENCH_BUILD) && { ulimit -n $$(ulimit -Hn) 2>/dev/null; \
	  python3 scripts/bench.py --bin $(BENCH_SCRATCH)/release $(BENCH_ARGS); rc=$$?; [ $$rc = 0 ] || [ $$rc = 3 ]; }; fi
	python3 scripts/bench_check.py --results bench/results.json --baseline bench/baseline.json

# Profiling and the dashboard (docs/profiling.md). `make profile`: perf (cpu-clock) of tcpserver
# --io uring under the fan-out load (PROFILE_LOAD="ping --conns 100 --inflight 8" for another
# tcpserver-bench load, PROFILE_IO=epoll) → profile/report.txt, profile/flame.svg. `make
# dashboard-check`: the dashboard in headless chromium (Swift test "Dashboard: browser", screenshot
# in .build/artifacts/dashboard.png), then the cost of polling /stats once a second under load.
PROFILE_SCRATCH ?= .build
.PHONY: profile dashboard-check
profile: deps
	PROFILE_SCRATCH=$(PROFILE_SCRATCH) bash scripts/profile.sh

dashboard-check: deps
	SCRATCH=$(PROFILE_SCRATCH) bash scripts/dashboard-check.sh
