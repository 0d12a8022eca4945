#!/usr/bin/env bash
# Installs the Debian 12 packages sealgate needs, only those missing, so it is quick to rerun.
#   deploy/install-deps.sh build   compilers and -dev libraries
#   deploy/install-deps.sh test    build + test peers (Criterion, Python grpcio, curl, ...)
#   deploy/install-deps.sh bench   test + benchmark peers (h2load, nghttpd, grpc C++)
set -euo pipefail

build=(build-essential pkg-config meson ninja-build
       protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev grpc-proto
       libnghttp2-dev libevent-dev libssl-dev zlib1g-dev)
test=("${build[@]}" libcriterion-dev python3 python3-grpcio python3-protobuf curl openssl
      procps)
bench=("${test[@]}" nghttp2-client nghttp2-server libgrpc++-dev protobuf-compiler-grpc g++)

case "${1:-build}" in
  build) want=("${build[@]}") ;;
  test) want=("${test[@]}") ;;
  bench) want=("${bench[@]}") ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
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
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
