#!/usr/bin/python3
"""grpcio side of proxy.sh: makes the stores and sandboxes the proxy rows use, writes the files
proxy_load and the mitmproxy addon read, and reads the substitution counts back.

usage:
  proxy_setup.py STUBS_DIR HOST:PORT setup OUT_DIR UPSTREAM_HOST MANY
  proxy_setup.py STUBS_DIR HOST:PORT usage OUT_DIR

The API key is taken from the environment (SEALGATE_API_KEY), not argv. STUBS_DIR holds the
modules protoc generated from proto/sealgate/v1/*.proto (as for stores_client.py).

setup: draws one secret value, then makes two stores, both with egress_allowlist
[UPSTREAM_HOST]: "one" holds BENCH_KEY only, "many" holds BENCH_KEY and MANY - 1 other secrets
(BENCH_FILL_0001, ...; random values); every secret's allowed_hosts is [UPSTREAM_HOST], so all
of them apply to that host. BENCH_KEY has the same value in both. Then one sandbox per store
(timeout 3600 s), whose env must hold a sealed token per secret. Writes into OUT_DIR (mode
0600 files):
  value                 the value (for the upstream check; never printed)
  direct.headers        "x-api-key: VALUE" (the request as the upstream should see it)
  NAME.headers          "x-api-key: TOKEN", the sandbox's sealed token for BENCH_KEY
  NAME.auth             "SANDBOX_ID:PROXY_TOKEN" from proxy.url (proxy_load's --proxy-auth-file)
  NAME.ca               the sandbox's proxy.ca_cert_pem
  NAME.store            the store id
  mitm.map              "TOKEN VALUE" of the "one" sandbox (for mitm_subst.py)
  mitm.auth             "bench:RANDOM", the credential mitmproxy is started with (proxyauth)
for NAME in one, many. Prints "NAME store=ID sandbox=ID secrets=N proxy=HOST:PORT" per sandbox.

usage: prints "NAME use_count=N" for BENCH_KEY in both stores (substitutions the proxy
counted; the audit writer counts them in batches).

Exits 0 on success; prints the problem and exits 1.
"""

import concurrent.futures
import os
import re
import secrets
import sys

import grpc

TIMEOUT = 30.0
SECRET = "BENCH_KEY"
HEADER = "x-api-key"
PARALLEL = 16  # SetSecret calls in flight while filling the "many" store


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read().strip()


class Api:
    def __init__(self, stubs_dir, target, key):
        sys.path.insert(0, stubs_dir)
        from sealgate.v1 import sandbox_pb2, sandbox_pb2_grpc, secret_pb2, secret_pb2_grpc
        from sealgate.v1 import secret_store_pb2, secret_store_pb2_grpc
        self.sandbox_pb2, self.secret_pb2, self.store_pb2 = sandbox_pb2, secret_pb2, secret_store_pb2
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=TIMEOUT)
        self.md = (("authorization", "Bearer " + key),)
        self.stores = secret_store_pb2_grpc.SecretStoreServiceStub(self.channel)
        self.secrets = secret_pb2_grpc.SecretServiceStub(self.channel)
        self.sandboxes = sandbox_pb2_grpc.SandboxServiceStub(self.channel)

    def create_store(self, name, host):
        return self.stores.CreateSecretStore(
            self.store_pb2.CreateSecretStoreRequest(name=name, egress_allowlist=[host]),
            metadata=self.md, timeout=TIMEOUT)

    def set_secret_future(self, store_id, name, value, host):
        return self.secrets.SetSecret.future(
            self.secret_pb2.SetSecretRequest(store_id=store_id, name=name, value=value,
                                             allowed_hosts=[host]),
            metadata=self.md, timeout=TIMEOUT)

    def create_sandbox(self, store_name):
        return self.sandboxes.CreateSandbox(
            self.sandbox_pb2.CreateSandboxRequest(secret_store=store_name, timeout_seconds=3600),
            metadata=self.md, timeout=TIMEOUT)

    def use_count(self, store_id, name):
        resp = self.secrets.ListSecrets(self.secret_pb2.ListSecretsRequest(store_id=store_id),
                                        metadata=self.md, timeout=TIMEOUT)
        for e in resp.secrets:
            if e.name == name:
                return e.use_count
        raise RuntimeError("secret %s not in ListSecrets of store %s" % (name, store_id))


def fill_store(api, store_id, names_values, host):
    """SetSecret for every (name, value), PARALLEL at a time; every one must be version 1."""
    pending = list(names_values)
    while pending:
        batch, pending = pending[:PARALLEL], pending[PARALLEL:]
        futures = [api.set_secret_future(store_id, n, v, host) for n, v in batch]
        for (n, _), fut in zip(batch, futures):
            if fut.result().version != 1:
                raise RuntimeError("SetSecret %s: version is not 1" % n)


def setup(api, out, host, many):
    value = "sk-bench-" + secrets.token_hex(17)  # 43 characters, as long as a sealed token
    write_private(os.path.join(out, "value"), value + "\n")
    write_private(os.path.join(out, "direct.headers"), "%s: %s\n" % (HEADER, value))
    suffix = secrets.token_hex(4)
    for name, count in (("one", 1), ("many", many)):
        store_name = "bench-proxy-%s-%s" % (name, suffix)
        store = api.create_store(store_name, host)
        fill = [(SECRET, value)] + [("BENCH_FILL_%04d" % i, "fill-" + secrets.token_hex(16))
                                    for i in range(1, count)]
        fill_store(api, store.id, fill, host)
        sb = api.create_sandbox(store_name)
        tokens = {k: v for k, v in sb.env.items() if v.startswith("osb_sealed_")}
        if len(tokens) != count or SECRET not in tokens:
            raise RuntimeError("sandbox %s holds %d sealed tokens, expected %d" %
                               (sb.id, len(tokens), count))
        m = re.match(r"^http://([^:@/]+):([^@/]+)@([^/]+)/?$", sb.proxy.url)
        if not m or m.group(1) != sb.id:
            raise RuntimeError("unexpected proxy.url form for sandbox %s" % sb.id)
        write_private(os.path.join(out, name + ".headers"), "%s: %s\n" % (HEADER, tokens[SECRET]))
        write_private(os.path.join(out, name + ".auth"), "%s:%s\n" % (m.group(1), m.group(2)))
        write_private(os.path.join(out, name + ".ca"), sb.proxy.ca_cert_pem)
        write_private(os.path.join(out, name + ".store"), store.id + "\n")
        if name == "one":
            write_private(os.path.join(out, "mitm.map"), "%s %s\n" % (tokens[SECRET], value))
        print("%s store=%s sandbox=%s secrets=%d proxy=%s" % (name, store.id, sb.id, count,
                                                              m.group(3)))
    write_private(os.path.join(out, "mitm.auth"), "bench:%s\n" % secrets.token_hex(16))


def main():
    if len(sys.argv) < 5:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    stubs, target, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    key = os.environ.get("SEALGATE_API_KEY", "")
    if not key:
        print("SEALGATE_API_KEY is not set")
        return 1
    try:
        api = Api(stubs, target, key)
    except grpc.FutureTimeoutError:
        print("channel to %s not ready within %ss" % (target, TIMEOUT))
        return 1
    try:
        if cmd == "setup" and len(args) == 3:
            setup(api, args[0], args[1], int(args[2]))
            return 0
        if cmd == "usage" and len(args) == 1:
            for name in ("one", "many"):
                store_id = read(os.path.join(args[0], name + ".store"))
                print("%s use_count=%d" % (name, api.use_count(store_id, SECRET)))
            return 0
    except grpc.RpcError as err:
        print("%s: %s %s" % (cmd, err.code(), err.details()))
        return 1
    except RuntimeError as err:
        print("%s: %s" % (cmd, err))
        return 1
    finally:
        api.channel.close()
    print(__doc__.strip().splitlines()[2], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
