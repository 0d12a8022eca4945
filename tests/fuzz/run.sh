#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang, ASan and UBSan, replays each harness's committed
# regressions, then fuzzes each for SECONDS (one at a time) on a scratch copy of its seed
# corpus, and prints a summary. Exits non-zero if any harness crashed, leaked, timed out, hit
# an invariant or a UBSan report, or could not be built.
#
#   tests/fuzz/run.sh [SECONDS] [BUILD_DIR]      (defaults: 20, build-fuzz)
#   FUZZ_HARNESSES="http1 scan" tests/fuzz/run.sh 600   # a subset, longer
#   FUZZ_KEEP=1 ...        keep the scratch directory (grown corpora, crash artifacts)
#
# A crash leaves its input in the scratch directory; copy it to tests/fuzz/regressions/<name>/
# once fixed, so this script and `meson test --suite fuzz-replay` replay it from then on.
set -u -o pipefail

seconds=${1:-20}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${2:-build-fuzz}
case $build in /*) ;; *) build=$root/$build ;; esac
harnesses=${FUZZ_HARNESSES:-frame metadata http1 host scan redact seal request}

if [ ! -f "$build/build.ninja" ]; then
  CC=clang meson setup "$build" "$root" -Dfuzz=true -Db_sanitize=address,undefined \
    -Db_lundef=false || exit 1
else
  meson configure "$build" -Dfuzz=true >/dev/null || exit 1
fi
targets=()
for h in $harnesses; do targets+=("tests/fuzz/fuzz_$h"); done
ninja -C "$build" "${targets[@]}" || exit 1

work=$(mktemp -d "${TMPDIR:-/tmp}/sealgate-fuzz.XXXXXX")
if [ "${FUZZ_KEEP:-0}" = 1 ]; then
  echo "scratch directory: $work"
else
  trap 'rm -rf "$work"' EXIT
fi

# Any sanitizer report is a failure: UBSan aborts instead of printing and going on.
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}

failed=0
rows=()
for h in $harnesses; do
  exe=$build/tests/fuzz/fuzz_$h
  log=$work/$h.log
  result=ok
  # Regressions first: each input once.
  regs=()
  if [ -d "$here/regressions/$h" ]; then
    while IFS= read -r -d '' f; do regs+=("$f"); done \
      < <(find "$here/regressions/$h" -type f ! -name '.*' -print0 | sort -z)
  fi
  if [ ${#regs[@]} -gt 0 ] && ! "$exe" "${regs[@]}" >"$work/$h.replay.log" 2>&1; then
    echo "== $h: a regression input fails again:" >&2
    tail -n 40 "$work/$h.replay.log" >&2
    result="REGRESSION"
  fi
  corpus=$work/corpus-$h
  mkdir -p "$corpus" "$work/artifacts"
  cp -r "$here/corpus/$h/." "$corpus/" 2>/dev/null || true
  dict=()
  [ -f "$here/$h.dict" ] && dict=("-dict=$here/$h.dict")
  echo "== fuzz_$h: ${seconds}s (${#regs[@]} regressions replayed)"
  "$exe" "$corpus" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/$h-" >"$log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    result="FAIL (exit $rc)"
    grep -E "^(==[0-9]+==ERROR|SUMMARY|.*invariant failed|.*runtime error)" "$log" | head -n 5 >&2
    grep -E "^artifact_prefix|Test unit written to" "$log" >&2
  elif [ "$result" = ok ]; then
    result=ok
  fi
  [ "$result" = ok ] || failed=1
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
  rows+=("$(printf '%-10s %12s  %-20s %s' "$h" "${runs:-?}" "${cov:-?}" "$result")")
done

echo
printf '%-10s %12s  %-20s %s\n' harness runs coverage result
for r in "${rows[@]}"; do echo "$r"; done
if [ $failed -ne 0 ]; then
  echo "fuzzing found failures: logs and inputs in $work" >&2
  trap - EXIT
  exit 1
fi
