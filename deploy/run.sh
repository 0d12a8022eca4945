#!/usr/bin/env bash
# Runs a sealgate gateway on this machine from a fresh clone, with everything it needs kept in
# a local data folder (default ./.data; set SEALGATE_DATA_DIR to move it):
#   - a private PostgreSQL cluster (deploy/pg-local.sh: Unix socket only, no system service),
#   - a root key (root.key, mode 0600, generated once),
#   - the schema (sealgate migrate),
#   - a first organization, whose API key is printed once, the first time,
#   - node/: the proxy CA (made at first start) and, since this runs the local process
#     runtime (--local-runtime), every sandbox's working directory.
# Run again, it reuses all of them and just starts. Serves gRPC on 127.0.0.1:50051 (h2c) until
# Ctrl-C, then stops the cluster too. Extra arguments go to `sealgate serve`, e.g.
#   deploy/run.sh --grpc-listen 0.0.0.0:50051 --threads 4
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

deploy/install-deps.sh run
[ -d build-release ] || meson setup build-release --buildtype=release >/dev/null
ninja -C build-release server/sealgate client/sealctl >/dev/null
sealgate=$repo/build-release/server/sealgate

data=${SEALGATE_DATA_DIR:-$repo/.data}
mkdir -p "$data"
# Private, but as root the cluster runs as `postgres`, which must be able to pass through.
if [ "$(id -u)" -eq 0 ]; then chmod 711 "$data"; else chmod 700 "$data"; fi

db=$(deploy/pg-local.sh start "$data/pg")
trap 'deploy/pg-local.sh stop "$data/pg"' EXIT

if [ ! -f "$data/root.key" ]; then
  (umask 077 && openssl rand -hex 32 >"$data/root.key")
  echo "sealgate: generated a root key in $data/root.key: back it up; without it no secret"
  echo "          stored here can be read again"
fi

"$sealgate" migrate --db "$db" >/dev/null

if [ ! -f "$data/org-id" ]; then
  out=$("$sealgate" admin create-org default --db "$db" --json)
  org=$(printf '%s' "$out" | sed -n 's/.*"org_id": "\([^"]*\)".*/\1/p')
  key=$(printf '%s' "$out" | sed -n 's/.*"api_key": "\([^"]*\)".*/\1/p')
  printf '%s\n' "$org" >"$data/org-id"
  cat <<MSG

  First organization: $org
  API key (shown once, not stored anywhere): $key

  export SEALGATE_API_KEY=$key

MSG
fi

"$sealgate" serve --db "$db" --root-key-file "$data/root.key" --data-dir "$data/node" \
  --local-runtime --proxy-listen 127.0.0.1:3128 "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
set +e
wait $pid
rc=$?
# A signal interrupts the first wait: wait again for the graceful shutdown to finish.
kill -0 $pid 2>/dev/null && wait $pid && rc=$?
exit $rc
