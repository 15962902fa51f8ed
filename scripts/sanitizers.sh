#!/usr/bin/env bash
# scripts/sanitizers.sh [address|thread ...]: runs the integration tests (swift test --filter
# Integration) under AddressSanitizer and ThreadSanitizer, each with its own scratch path
# (.build-asan, .build-tsan). Prints the time each takes; exits non-zero if either fails or a
# sanitizer reports anything. Logs: .build-asan/sanitizer.log, .build-tsan/sanitizer.log.
#   FILTER=...   test filter (default Integration)
set -uo pipefail
cd "$(dirname "$0")/.."
SANS=${*:-"address thread"}
FILTER=${FILTER:-Integration}
ulimit -n 65536 2>/dev/null || true
# halt_on_error: the first report fails the run; LSan runs at exit under ASan.
# Suppressions (known false positives / test-process leaks, each explained in its file):
# scripts/sanitizers-tsan.supp, scripts/sanitizers-lsan.supp.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/sanitizers-lsan.supp:print_suppressions=0}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/sanitizers-tsan.supp}
failed=0
for san in $SANS; do
    case $san in
        address) scratch=.build-asan ;;
        thread) scratch=.build-tsan ;;
        *) echo "sanitizers: unknown sanitizer $san (address|thread)"; exit 2 ;;
    esac
    mkdir -p "$scratch"
    log=$scratch/sanitizer.log
    t0=$(date +%s)
    echo "sanitizers[$san]: building tests …"
    if ! swift build --build-tests --sanitize="$san" --scratch-path "$scratch" >"$scratch/build.log" 2>&1; then
        grep -E "error:" "$scratch/build.log" | head -20
        echo "sanitizers[$san]: build FAILED ($scratch/build.log)"; failed=1; continue
    fi
    t1=$(date +%s)
    echo "sanitizers[$san]: build $((t1 - t0)) s; running swift test --filter $FILTER …"
    swift test --skip-build --sanitize="$san" --scratch-path "$scratch" --filter "$FILTER" >"$log" 2>&1
    rc=$?
    t2=$(date +%s)
    reports=$(grep -cE "^(==[0-9]+==ERROR|WARNING: ThreadSanitizer|ERROR: (Address|Leak|Thread)Sanitizer)" "$log")
    summary=$(grep -E "Test run with|Executed [0-9]+ tests" "$log" | tail -2 | tr '\n' ' ')
    echo "sanitizers[$san]: tests $((t2 - t1)) s, total $((t2 - t0)) s, rc=$rc, sanitizer reports=$reports; $summary"
    if [ "$reports" -gt 0 ]; then
        grep -E -A12 "^(==[0-9]+==ERROR|WARNING: ThreadSanitizer)" "$log" | head -60
        grep -E "^SUMMARY: " "$log" | sort | uniq -c | head -20
    fi
    if [ $rc -ne 0 ] || [ "$reports" -gt 0 ]; then
        grep -E "✘|failed|error:" "$log" | head -20
        echo "sanitizers[$san]: FAILED (log: $log)"; failed=1
    else
        echo "sanitizers[$san]: OK"
    fi
done
exit $failed
