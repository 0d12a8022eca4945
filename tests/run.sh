#!/usr/bin/env bash
# Runs every test from a fresh clone: installs the Debian packages the tests need, builds,
# runs the whole suite (Criterion units, end-to-end tests with real gRPC peers), then builds
# again under AddressSanitizer + UndefinedBehaviorSanitizer and runs the suite a second time,
# then runs each libFuzzer harness of tests/fuzz briefly (clang, ASan + UBSan).
#   tests/run.sh            everything
#   tests/run.sh --quick    the plain build only
#   SEALGATE_FUZZ_SECONDS=N how long each fuzzer runs (default 30; tests/fuzz/run.sh for more)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

deploy/install-deps.sh test

# The Node interop client's npm packages, exactly as tests/interop/node/package-lock.json pins
# them: installed when missing or when the lock file changed since the last install.
node_client=tests/interop/node
if ! cmp -s "$node_client/package-lock.json" "$node_client/node_modules/.installed-lock.json"
then
  (cd "$node_client" && npm ci --no-audit --no-fund --ignore-scripts &&
    cp package-lock.json node_modules/.installed-lock.json)
fi

run_suite() { # build dir, extra meson options...
  local dir=$1
  shift
  [ -d "$dir" ] || meson setup "$dir" "$@" >/dev/null
  ninja -C "$dir"
  rm -rf "$dir/hygiene" # what e2e/log_hygiene sweeps: this run's logs only
  meson test -C "$dir" --print-errorlogs --num-processes 2
}

echo "== plain build =="
run_suite build

if [ "$quick" -eq 0 ]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer =="
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false

  echo "== fuzzing (libFuzzer, ${SEALGATE_FUZZ_SECONDS:-30} s per harness) =="
  tests/fuzz/run.sh "${SEALGATE_FUZZ_SECONDS:-30}" build-fuzz
fi
echo "all tests passed"
