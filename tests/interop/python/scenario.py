#!/usr/bin/env python3
"""The store/secret scenario as a Python service writes it: grpcio and the stubs protoc
generates from sealgate's proto/.

Generate the stubs once, into any directory, and put it on PYTHONPATH (from the repository
root; Debian: protobuf-compiler, protobuf-compiler-grpc, python3-grpcio, python3-protobuf):

    mkdir -p /tmp/sg-py
    protoc -Iproto -I/usr/include --python_out=/tmp/sg-py --grpc_out=/tmp/sg-py \\
        --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin proto/sealgate/v1/*.proto
    SEALGATE_API_KEY=osk_... PYTHONPATH=/tmp/sg-py python3 tests/interop/python/scenario.py

(`python -m grpc_tools.protoc` from pip's grpcio-tools makes the same modules.)

Environment: SEALGATE_ADDR (host:port, default 127.0.0.1:50051) and SEALGATE_API_KEY (an
organization's key, from `sealgate admin create-org`). The program makes three stores whose
names start with "interop-py-" and deletes them again. It prints one line per check and exits
0 when every check passed, 1 at the first unexpected outcome (saying what was expected and what
came back), 2 when it cannot start.
"""

import os
import re
import sys
import uuid

import grpc
from google.protobuf import field_mask_pb2

try:
    from sealgate.v1 import resources_pb2
    from sealgate.v1 import secret_pb2 as secrets_api
    from sealgate.v1 import secret_pb2_grpc
    from sealgate.v1 import secret_store_pb2 as stores_api
    from sealgate.v1 import secret_store_pb2_grpc
except ImportError as e:
    print("scenario.py: cannot import the sealgate.v1 stubs (%s): generate them with protoc "
          "and put their directory on PYTHONPATH (see the top of this file)" % e,
          file=sys.stderr)
    sys.exit(2)

ADDR = os.environ.get("SEALGATE_ADDR") or "127.0.0.1:50051"
API_KEY = os.environ.get("SEALGATE_API_KEY", "")
RPC_TIMEOUT_S = 10   # every call has a deadline: a hung server fails the run instead of hanging it
KIB = 1024

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class Unexpected(Exception):
    """The first outcome the scenario did not expect: ends the run with exit status 1."""


def ok(step, detail=""):
    print("ok  %s%s" % (step, ": " + detail if detail else ""), flush=True)


def check(step, condition, expected, got):
    if not condition:
        raise Unexpected("%s: expected %s, got %s" % (step, expected, got))


def one_line(message):
    return str(message).replace("\n", " ").strip()


class Client:
    """Both services on one channel, the API key on every call (none if api_key is empty)."""

    def __init__(self, channel, api_key):
        self.channel = channel
        self.metadata = [("authorization", "Bearer " + api_key)] if api_key else []
        self.stores = secret_store_pb2_grpc.SecretStoreServiceStub(channel)
        self.secrets = secret_pb2_grpc.SecretServiceStub(channel)
        self.last_method = None

    def call(self, method, request):
        """Calls `method` ("CreateSecretStore", "SetSecret", ...) with `request`."""
        self.last_method = method
        stub = self.stores if hasattr(self.stores, method) else self.secrets
        return getattr(stub, method)(request, metadata=self.metadata, timeout=RPC_TIMEOUT_S)

    def list_secrets_bytes(self, store_id):
        """ListSecrets once more, returning the response as the bytes that came off the wire."""
        self.last_method = "ListSecrets"
        raw = self.channel.unary_unary(
            "/sealgate.v1.SecretService/ListSecrets",
            request_serializer=secrets_api.ListSecretsRequest.SerializeToString,
            response_deserializer=None)
        return raw(secrets_api.ListSecretsRequest(store_id=store_id), metadata=self.metadata,
                   timeout=RPC_TIMEOUT_S)


def expect_error(step, code, call, field=None):
    """Runs call(), which must fail with status `code` and, given `field`, a message that names
    the field first ("name: ...")."""
    try:
        result = call()
    except grpc.RpcError as e:
        got = "%s %r" % (e.code().name, e.details())
        check(step, e.code() == code, code.name, got)
        if field is not None:
            check(step, (e.details() or "").startswith(field + ":"),
                  "%s naming the field %r" % (code.name, field), got)
        ok(step, "%s %r" % (code.name, e.details()))
        return
    raise Unexpected("%s: expected %s, the call succeeded: %s" % (step, code.name,
                                                                   one_line(result)))


def scenario(api):
    prefix = "interop-py-" + uuid.uuid4().hex[:8]

    # --- A store with an egress allowlist: create, get, list -----------------------------------
    allowlist = ["api.stripe.com", "*.openai.com"]
    store = api.call("CreateSecretStore", stores_api.CreateSecretStoreRequest(
        name=prefix, egress_allowlist=allowlist))
    step = "CreateSecretStore"
    check(step, store.name == prefix, "name %r" % prefix, repr(store.name))
    check(step, list(store.egress_allowlist) == allowlist, allowlist,
          list(store.egress_allowlist))
    check(step, UUID.match(store.id), "a UUID id", repr(store.id))
    check(step, RFC3339_UTC.match(store.created_at), "an RFC 3339 UTC created_at",
          repr(store.created_at))
    ok(step, "%s id=%s egress_allowlist=%s" % (store.name, store.id, allowlist))

    got = api.call("GetSecretStore", stores_api.GetSecretStoreRequest(store_id=store.id))
    check("GetSecretStore", got == store, "the store as created", one_line(got))
    ok("GetSecretStore", "%s created_at=%s" % (got.name, got.created_at))

    # Two more stores, so that pages of 2 take more than one page.
    others = [api.call("CreateSecretStore",
                       stores_api.CreateSecretStoreRequest(name="%s-%d" % (prefix, i)))
              for i in (2, 3)]
    step = "ListSecretStores"
    listed, pages, token = [], 0, ""
    while True:
        page = api.call("ListSecretStores",
                        stores_api.ListSecretStoresRequest(page_size=2, page_token=token))
        pages += 1
        check(step, len(page.secret_stores) <= 2, "at most 2 stores a page",
              len(page.secret_stores))
        listed += [s.id for s in page.secret_stores]
        token = page.next_page_token
        if not token:
            break
        check(step, pages < 10000, "the listing to end", "%d pages so far" % pages)
    check(step, pages >= 2, "more than one page of 2", "%d page(s)" % pages)
    check(step, len(listed) == len(set(listed)), "each store listed once", listed)
    check(step, {store.id} | {s.id for s in others} <= set(listed), "the 3 new stores listed",
          listed)
    ok(step, "page_size=2: %d stores over %d pages" % (len(listed), pages))

    # --- Update: rename (only the masked path changes), then clear the allowlist --------------
    new_name = prefix + "-renamed"
    renamed = api.call("UpdateSecretStore", stores_api.UpdateSecretStoreRequest(
        store_id=store.id, name=new_name, egress_allowlist=["not.masked.example.com"],
        update_mask=field_mask_pb2.FieldMask(paths=["name"])))
    step = "UpdateSecretStore rename"
    check(step, renamed.name == new_name, repr(new_name), repr(renamed.name))
    check(step, list(renamed.egress_allowlist) == allowlist, "the allowlist unchanged",
          list(renamed.egress_allowlist))
    ok(step, "update_mask=[name] -> %s" % renamed.name)

    cleared = api.call("UpdateSecretStore", stores_api.UpdateSecretStoreRequest(
        store_id=store.id, update_mask=field_mask_pb2.FieldMask(paths=["egress_allowlist"])))
    step = "UpdateSecretStore clear allowlist"
    check(step, list(cleared.egress_allowlist) == [], "an empty allowlist",
          list(cleared.egress_allowlist))
    check(step, cleared.name == new_name, "the name kept", repr(cleared.name))
    ok(step, "update_mask=[egress_allowlist] -> []")

    # --- Secrets: versions 1 and 2 of one, a second one, list, delete -------------------------
    values = ["tok-v1-" + uuid.uuid4().hex, "tok-v2-" + uuid.uuid4().hex,
              "whsec-" + uuid.uuid4().hex]
    for version, value in [(1, values[0]), (2, values[1])]:
        entry = api.call("SetSecret", secrets_api.SetSecretRequest(
            store_id=store.id, name="API_TOKEN", value=value, allowed_hosts=["api.stripe.com"]))
        step = "SetSecret version %d" % version
        check(step, entry.version == version, "version %d" % version, entry.version)
        check(step, entry.store_id == store.id, "store_id " + store.id, entry.store_id)
        ok(step, "API_TOKEN allowed_hosts=%s" % list(entry.allowed_hosts))
    api.call("SetSecret", secrets_api.SetSecretRequest(
        store_id=store.id, name="WEBHOOK_SECRET", value=values[2]))

    step = "ListSecrets"
    entries = api.call("ListSecrets", secrets_api.ListSecretsRequest(store_id=store.id)).secrets
    versions = {e.name: e.version for e in entries}
    check(step, versions == {"API_TOKEN": 2, "WEBHOOK_SECRET": 1},
          "API_TOKEN v2 and WEBHOOK_SECRET v1", versions)
    # No value anywhere: not in the bytes on the wire, and no field that could carry one.
    raw = api.list_secrets_bytes(store.id)
    check(step, b"API_TOKEN" in raw, "the response to name API_TOKEN", raw[:80])
    check(step, not any(v.encode() in raw for v in values), "no secret value in the response",
          "a value in the response bytes")
    fields = [f.name for f in resources_pb2.SecretEntry.DESCRIPTOR.fields]
    check(step, not any("value" in f for f in fields), "no value field in SecretEntry", fields)
    ok(step, "API_TOKEN v2, WEBHOOK_SECRET v1, no value in the %d response bytes" % len(raw))

    api.call("DeleteSecret", secrets_api.DeleteSecretRequest(store_id=store.id,
                                                             name="WEBHOOK_SECRET"))
    left = [e.name for e in api.call(
        "ListSecrets", secrets_api.ListSecretsRequest(store_id=store.id)).secrets]
    check("DeleteSecret", left == ["API_TOKEN"], "only API_TOKEN left", left)
    ok("DeleteSecret", "WEBHOOK_SECRET; left: %s" % left)

    # --- What a client can get wrong, and the status it gets back ------------------------------
    expect_error("duplicate store name", grpc.StatusCode.ALREADY_EXISTS, lambda: api.call(
        "CreateSecretStore", stores_api.CreateSecretStoreRequest(name=new_name)))
    expect_error("bad store name", grpc.StatusCode.INVALID_ARGUMENT, lambda: api.call(
        "CreateSecretStore", stores_api.CreateSecretStoreRequest(name="no spaces/slashes")),
        field="name")
    expect_error("unknown store", grpc.StatusCode.NOT_FOUND, lambda: api.call(
        "GetSecretStore", stores_api.GetSecretStoreRequest(store_id=str(uuid.uuid4()))))
    anonymous = Client(api.channel, api_key="")
    expect_error("no API key", grpc.StatusCode.UNAUTHENTICATED, lambda: anonymous.call(
        "ListSecretStores", stores_api.ListSecretStoresRequest()))
    expect_error("bad update_mask path", grpc.StatusCode.INVALID_ARGUMENT, lambda: api.call(
        "UpdateSecretStore", stores_api.UpdateSecretStoreRequest(
            store_id=store.id, name=prefix + "-x",
            update_mask=field_mask_pb2.FieldMask(paths=["egress"]))),
        field="update_mask")
    expect_error("value too large", grpc.StatusCode.INVALID_ARGUMENT, lambda: api.call(
        "SetSecret", secrets_api.SetSecretRequest(
            store_id=store.id, name="API_TOKEN", value="x" * (64 * KIB + 1))),
        field="value")

    step = "errors changed nothing"
    now = api.call("GetSecretStore", stores_api.GetSecretStoreRequest(store_id=store.id))
    check(step, now.name == new_name and not now.egress_allowlist, "the store as last updated",
          one_line(now))
    entries = api.call("ListSecrets", secrets_api.ListSecretsRequest(store_id=store.id)).secrets
    check(step, [(e.name, e.version) for e in entries] == [("API_TOKEN", 2)],
          "API_TOKEN still at version 2", [(e.name, e.version) for e in entries])
    ok(step)

    # --- Delete the stores: they leave the API's view ------------------------------------------
    for s in [store] + others:
        api.call("DeleteSecretStore", stores_api.DeleteSecretStoreRequest(store_id=s.id))
    ok("DeleteSecretStore", "3 stores")
    expect_error("GetSecretStore after delete", grpc.StatusCode.NOT_FOUND, lambda: api.call(
        "GetSecretStore", stores_api.GetSecretStoreRequest(store_id=store.id)))


def main():
    if not API_KEY:
        print("scenario.py: set SEALGATE_API_KEY to an organization's API key", file=sys.stderr)
        return 2
    print("sealgate store/secret scenario: Python grpcio %s -> %s" % (grpc.__version__, ADDR),
          flush=True)
    with grpc.insecure_channel(ADDR) as channel:
        api = Client(channel, API_KEY)
        try:
            scenario(api)
        except Unexpected as e:
            print("FAIL " + str(e), file=sys.stderr)
            return 1
        except grpc.RpcError as e:
            print("FAIL %s: unexpected %s %r" % (api.last_method, e.code().name, e.details()),
                  file=sys.stderr)
            return 1
    print("scenario passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
