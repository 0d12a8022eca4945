#!/usr/bin/python3
"""grpcio side of stores.sh: creates the store and the secret the h2load rows
call, writes the h2load request bodies, and reads the secret's version back.

usage:
  stores_client.py STUBS_DIR HOST:PORT setup OUT_DIR SECRET_NAME VALUE_BYTES
  stores_client.py STUBS_DIR HOST:PORT version STORE_ID SECRET_NAME

The API key is taken from the environment (SEALGATE_API_KEY), not argv.
STUBS_DIR holds the modules protoc generated from proto/sealgate/v1/*.proto
(--python_out and --grpc_out with grpc_python_plugin); it is put on sys.path
(the generated top-level package is `sealgate`, which does not clash with
grpcio).

setup: CreateSecretStore (name "bench-<random>"), one SetSecret (version 1),
one GetSecretStore; writes OUT_DIR/get.grpc (5-byte gRPC prefix +
GetSecretStoreRequest{store_id}) and OUT_DIR/set.grpc (prefix +
SetSecretRequest{store_id, SECRET_NAME, VALUE_BYTES hex characters}); prints
"store_id=ID version=1".

version: ListSecrets on the store; prints the version of SECRET_NAME.

Exits 0 on success; prints the problem and exits 1.
"""

import os
import secrets
import sys

import grpc

TIMEOUT = 10.0


def frame(msg):
    body = msg.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


def main():
    if len(sys.argv) < 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    sys.path.insert(0, sys.argv[1])
    from sealgate.v1 import secret_pb2, secret_pb2_grpc
    from sealgate.v1 import secret_store_pb2, secret_store_pb2_grpc

    target, cmd, args = sys.argv[2], sys.argv[3], sys.argv[4:]
    key = os.environ.get("SEALGATE_API_KEY", "")
    if not key:
        print("SEALGATE_API_KEY is not set")
        return 1
    md = (("authorization", "Bearer " + key),)

    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        except grpc.FutureTimeoutError:
            print(f"channel to {target} not ready within {TIMEOUT}s")
            return 1
        stores = secret_store_pb2_grpc.SecretStoreServiceStub(channel)
        secrets_svc = secret_pb2_grpc.SecretServiceStub(channel)
        try:
            if cmd == "setup" and len(args) == 3:
                out_dir, name, size = args[0], args[1], int(args[2])
                store = stores.CreateSecretStore(
                    secret_store_pb2.CreateSecretStoreRequest(name="bench-" + secrets.token_hex(4)),
                    metadata=md, timeout=TIMEOUT)
                value = secrets.token_hex((size + 1) // 2)[:size]
                set_req = secret_pb2.SetSecretRequest(store_id=store.id, name=name, value=value)
                entry = secrets_svc.SetSecret(set_req, metadata=md, timeout=TIMEOUT)
                if entry.version != 1:
                    print(f"first SetSecret returned version {entry.version}, expected 1")
                    return 1
                get_req = secret_store_pb2.GetSecretStoreRequest(store_id=store.id)
                got = stores.GetSecretStore(get_req, metadata=md, timeout=TIMEOUT)
                if got.id != store.id:
                    print(f"GetSecretStore returned id {got.id!r}, expected {store.id!r}")
                    return 1
                with open(os.path.join(out_dir, "get.grpc"), "wb") as f:
                    f.write(frame(get_req))
                with open(os.path.join(out_dir, "set.grpc"), "wb") as f:
                    f.write(frame(set_req))
                print(f"store_id={store.id} version={entry.version}")
                return 0
            if cmd == "version" and len(args) == 2:
                store_id, name = args
                resp = secrets_svc.ListSecrets(secret_pb2.ListSecretsRequest(store_id=store_id),
                                               metadata=md, timeout=TIMEOUT)
                for e in resp.secrets:
                    if e.name == name:
                        print(e.version)
                        return 0
                print(f"secret {name} not in ListSecrets")
                return 1
        except grpc.RpcError as err:
            print(f"{cmd}: {err.code()} {err.details()}")
            return 1
    print(__doc__.strip().splitlines()[2], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
