#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS]: builds the libFuzzer target (the Fuzz/ package: frame scanner, JSON
# codec, protocol dispatch through ProtocolHarness) with -sanitize=fuzzer,address and fuzzes it
# for SECONDS (default 300). Prints the executions; exits non-zero on a crash, leak, timeout or
# build failure, leaving the crashing input in .build-fuzz/artifacts/.
#
#   FUZZ_CONFIG=debug   build unoptimized (default release: ~3x the execs/s, same checks)
#   FUZZ_ARGS="..."     extra libFuzzer flags (e.g. -jobs=2 -workers=2, -seed=1)
#   FUZZ_SCRATCH=dir    scratch path (default .build-fuzz)
# Reproduce a crash:  .build-fuzz/<config>/tcpserver-fuzz .build-fuzz/artifacts/crash-…
# Minimize it:        .build-fuzz/<config>/tcpserver-fuzz -minimize_crash=1 -runs=20000 <file>
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_SECONDS=${1:-300}
CONFIG=${FUZZ_CONFIG:-release}
SCRATCH=${FUZZ_SCRATCH:-.build-fuzz}
BIN=$SCRATCH/$CONFIG/tcpserver-fuzz
mkdir -p "$SCRATCH"
LOG=$SCRATCH/fuzz-build.log

t0=$(date +%s)
echo "fuzz: building ($CONFIG, -sanitize=fuzzer,address) …"
if ! swift build --package-path Fuzz --scratch-path "$SCRATCH" -c "$CONFIG" \
        -Xswiftc -sanitize=fuzzer,address --product tcpserver-fuzz >"$LOG" 2>&1; then
    grep -E "error:" "$LOG" | head -20 || true
    tail -20 "$LOG"
    echo "fuzz: build FAILED (log: $LOG)"
    exit 2
fi
t1=$(date +%s)
echo "fuzz: build took $((t1 - t0)) s"

# New inputs go to the working corpus (kept between runs); the committed seeds are read-only.
mkdir -p "$SCRATCH/corpus" "$SCRATCH/artifacts"
RUN_LOG=$SCRATCH/fuzz-run.log
set +e
# shellcheck disable=SC2086
"$BIN" -max_total_time="$RUN_SECONDS" -max_len=16384 -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$SCRATCH/artifacts/" ${FUZZ_ARGS:-} \
    "$SCRATCH/corpus" Fuzz/corpus >"$RUN_LOG" 2>&1
rc=$?
set -e
t2=$(date +%s)

done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$RUN_LOG" | tail -1 || true)
execs=$(grep -E '^stat::number_of_executed_units:' "$RUN_LOG" | tail -1 | awk '{print $2}')
[ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$RUN_LOG" | tail -1 | tr -d '#')
rate=$(grep -E '^stat::average_exec_per_sec:' "$RUN_LOG" | tail -1 | awk '{print $2}')
[ -n "$done_line" ] && echo "fuzz: $done_line"
echo "fuzz: ${execs:-0} executions in $((t2 - t1)) s (${rate:-?} exec/s), rc=$rc, log: $RUN_LOG"

if [ $rc -ne 0 ]; then
    echo "fuzz: FAILED"
    grep -E "fuzz invariant violated|Fatal error|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|SUMMARY" "$RUN_LOG" | head -10 || true
    grep -E "Test unit written to|artifact_prefix" "$RUN_LOG" | tail -3 || true
    exit 1
fi
echo "fuzz: OK (no crash)"
