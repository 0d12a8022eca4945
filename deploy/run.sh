#!/usr/bin/env bash
# Runs a sealgate gateway on this machine from a fresh clone: installs what it needs, builds
# an optimized binary, and serves gRPC on 127.0.0.1:50051 (h2c) until Ctrl-C.
# Extra arguments go to `sealgate serve` (see `build-release/server/sealgate serve --help`),
# e.g. deploy/run.sh --grpc-listen 0.0.0.0:50051 --threads 4
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh build
[ -d build-release ] || meson setup build-release --buildtype=release >/dev/null
ninja -C build-release >/dev/null

exec build-release/server/sealgate serve "$@"
