#!/usr/bin/env bash
# Installs the Debian 12 packages sealgate needs, only those missing, so it is quick to rerun.
#   deploy/install-deps.sh build   compilers and -dev libraries
#   deploy/install-deps.sh run     build + PostgreSQL server binaries (for deploy/run.sh)
#   deploy/install-deps.sh test    run + test peers (Criterion, Python grpcio, grpc C++, curl, ...)
#   deploy/install-deps.sh bench   test + benchmark peers (h2load, nghttpd, nginx, mitmproxy, hey)
set -euo pipefail

build=(build-essential pkg-config meson ninja-build
       protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev grpc-proto
       libnghttp2-dev libevent-dev libssl-dev zlib1g-dev libpq-dev)
# The server binaries of PostgreSQL (initdb, pg_ctl, psql, pgbench) for the private cluster of
# deploy/pg-local.sh; no system cluster is created (see below).
run=("${build[@]}" postgresql-15 openssl)
# libgrpc++-dev and g++: tests/client builds the grpc C++ health server of tests/bench as a peer
# for the C client library. python3-h2: the HTTP/2 upstream of the proxy suite (tests/e2e).
# nginx: the grpc_pass load balancer of deploy/local-cluster.sh (tests/cluster); python3-yaml,
# yamllint and systemd (systemd-analyze): the checks of deploy/'s manifests and unit.
# clang and its runtimes (libFuzzer, ASan, UBSan): the fuzzers of tests/fuzz.
test=("${run[@]}" libcriterion-dev python3 python3-grpcio python3-protobuf python3-cryptography
      python3-h2 protobuf-compiler-grpc libgrpc++-dev g++ curl procps
      nginx python3-yaml yamllint systemd clang libclang-rt-14-dev)
# Node and npm for the Node interop client (tests/interop/node), unless a node with its own npm
# is there already (NodeSource's nodejs bundles npm and conflicts with Debian's npm package).
command -v npm >/dev/null || test+=(nodejs npm)
bench=("${test[@]}" nghttp2-client nghttp2-server nginx mitmproxy hey)

case "${1:-build}" in
  build) want=("${build[@]}") ;;
  run) want=("${run[@]}") ;;
  test) want=("${test[@]}") ;;
  bench) want=("${bench[@]}") ;;
  *) echo "usage: $0 build|run|test|bench" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Debian's postgresql package would create and start a system cluster ("15 main"): sealgate
# runs its own private one, so tell postgresql-common not to.
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  $sudo mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold \
  "${missing[@]}" >/dev/null
