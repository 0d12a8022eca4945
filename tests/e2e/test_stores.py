"""End-to-end: secret stores and secrets as real clients see them (SPEC §2 "Semantics", §4).

A real grpcio client with protoc-generated stubs talks to sealgate-test-server over a real
PostgreSQL cluster (deploy/pg-local.sh), and the sealgate binary's own commands (migrate,
admin, rotate-root-key, serve) run as an operator would run them.

  1. SPEC §2's rules for stores and secrets: one test per rule, generated from SPEC_RULES.
  2. Isolation between organizations: another organization's ids are NOT_FOUND, for every method.
  3. Keyset pagination of ListSecretStores.
  4. At rest (§4): what PostgreSQL holds, read back with an envelope decryptor written here
     from the formats in server/crypto/{keys,seal}.c (an independent check of both); tampering;
     root keys; root-key rotation; a database that logs every statement.
  5. Resilience: PostgreSQL stopped and restarted under a running server.
  6. Revocation of an API key.
  7. The store/secret scenario as a Python service writes it (the README's example).
  8. The command line: migrate, serve's refusals, admin create-org.

Most tests share one server and the process's shared cluster (helpers.shared_db); tests that
stop PostgreSQL, log its statements or rotate root keys get a cluster or a database of their own.

Server bugs these tests found (all fixed; each test stays as its regression test):
  - A NUL byte ended every string field: "ab\\0 c" was accepted as the store name "ab" and a
    value "a\\0b" was sealed as "a". Strings with NUL (or invalid UTF-8) are now refused with
    INVALID_ARGUMENT naming the field, before any handler sees them.
  - A page_token that decoded well but carried an impossible timestamp or a non-UUID id came
    back as INTERNAL "database error"; now INVALID_ARGUMENT.
  - serve on a never-migrated database failed with a raw SQL error instead of saying to run
    `sealgate migrate`.
"""

import base64
import concurrent.futures
import datetime
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402  (after the path tweak, so the helpers module is found)
from google.protobuf import field_mask_pb2  # noqa: E402

import helpers  # noqa: E402

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    HAVE_CRYPTOGRAPHY = True
except ImportError:  # Debian: python3-cryptography
    HAVE_CRYPTOGRAPHY = False
needs_decryptor = unittest.skipUnless(
    HAVE_CRYPTOGRAPHY, "the offline envelope decryptor needs the Python `cryptography` module "
    "(apt-get install python3-cryptography)")

# Generous upper bound for any single RPC; it only keeps a hung server from hanging the suite.
RPC_TIMEOUT_S = 10.0
# SPEC: a revoked key stops working on every node within this.
REVOCATION_BOUND_S = 5.0

OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
INTERNAL = grpc.StatusCode.INTERNAL

KIB = 1024

S = None        # generated stubs (helpers.Stubs)
SHARED = None   # the server most tests use


def setUpModule():
    global S, SHARED
    S = helpers.stubs()
    # The database sessions run in a time zone far from UTC (+05:45), so that a timestamp or a
    # page token that forgot to say UTC shows up as a wrong time instead of passing by luck.
    helpers.shared_db().psql("ALTER ROLE CURRENT_USER SET timezone = 'Asia/Kathmandu'")
    SHARED = helpers.Server("--threads", "2")


def tearDownModule():
    if SHARED is not None:
        SHARED.cleanup()


# ----------------------------------------------------------------------------------------------
# Client-side helpers

class Api:
    """One organization's view of the API: the generated stubs on `channel`, its API key on
    every call."""

    def __init__(self, channel, api_key):
        self.channel = channel
        self.metadata = (("authorization", "Bearer " + api_key),)
        self.stores = S.secret_store_grpc.SecretStoreServiceStub(channel)
        self.secrets = S.secret_grpc.SecretServiceStub(channel)

    def _call(self, method, request):
        return method(request, metadata=self.metadata, timeout=RPC_TIMEOUT_S)

    def create_store(self, name, egress_allowlist=()):
        request = S.secret_store_pb2.CreateSecretStoreRequest(
            name=name, egress_allowlist=list(egress_allowlist))
        return self._call(self.stores.CreateSecretStore, request)

    def get_store(self, store_id):
        return self._call(self.stores.GetSecretStore,
                          S.secret_store_pb2.GetSecretStoreRequest(store_id=store_id))

    def list_stores(self, page_size=0, page_token=""):
        request = S.secret_store_pb2.ListSecretStoresRequest(
            page_size=page_size, page_token=page_token)
        return self._call(self.stores.ListSecretStores, request)

    def update_store(self, store_id, paths, name="", egress_allowlist=()):
        request = S.secret_store_pb2.UpdateSecretStoreRequest(
            store_id=store_id, name=name, egress_allowlist=list(egress_allowlist),
            update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
        return self._call(self.stores.UpdateSecretStore, request)

    def delete_store(self, store_id):
        return self._call(self.stores.DeleteSecretStore,
                          S.secret_store_pb2.DeleteSecretStoreRequest(store_id=store_id))

    def set_secret(self, store_id, name, value, allowed_hosts=()):
        request = S.secret_pb2.SetSecretRequest(
            store_id=store_id, name=name, value=value, allowed_hosts=list(allowed_hosts))
        return self._call(self.secrets.SetSecret, request)

    def list_secrets(self, store_id):
        """The store's SecretEntry list."""
        return list(self._call(self.secrets.ListSecrets,
                               S.secret_pb2.ListSecretsRequest(store_id=store_id)).secrets)

    def delete_secret(self, store_id, name):
        return self._call(self.secrets.DeleteSecret,
                          S.secret_pb2.DeleteSecretRequest(store_id=store_id, name=name))

    def all_store_ids(self):
        """Every store id ListSecretStores shows, across all pages."""
        ids, token = [], ""
        for _ in range(1000):
            page = self.list_stores(page_size=1000, page_token=token)
            ids += [s.id for s in page.secret_stores]
            token = page.next_page_token
            if not token:
                return ids
        raise AssertionError("ListSecretStores never ended")


class Org:
    """An organization of database `db` and one of its API keys."""

    def __init__(self, db, org_id, key):
        self.db, self.id, self.key = db, org_id, key

    @classmethod
    def create(cls, db, name="e2e"):
        """A new organization, made with `sealgate admin create-org`."""
        return cls(db, *db.create_org(name))

    def connect(self, server):
        """An Api for this organization on `server`, on a channel of its own that the caller
        closes (api.channel.close())."""
        return Api(grpc.insecure_channel(server.target), self.key)


unique = helpers.unique
wait_until = helpers.wait_until
status_of = helpers.status_of


def assert_no_sanitizer_report(test, completed):
    """A sealgate command that fails on purpose must still fail cleanly: its exit status would
    hide a sanitizer's, so its stderr is checked (the suite also runs on a sanitizer build)."""
    for marker in helpers.SANITIZER_MARKERS:
        test.assertNotIn(marker, completed.stderr)


class ApiTestCase(helpers.StatusAssertions):
    """Status assertions shared by the API tests."""

    def assertInvalid(self, field, fn, *args, **kwargs):
        """The call fails with INVALID_ARGUMENT and a message that starts by naming `field`
        ("name: ...", "egress_allowlist[1]: ...")."""
        e = self.assertFails(INVALID_ARGUMENT, fn, *args, **kwargs)
        self.assertTrue(e.details().startswith(field + ":"),
                        "the message should name %r: %r" % (field, e.details()))
        return e


class SharedServerTest(ApiTestCase):
    """Base for tests on the shared server, each class with an organization of its own."""

    @classmethod
    def setUpClass(cls):
        cls.org = Org.create(helpers.shared_db(), cls.__name__)
        cls.api = cls.org.connect(SHARED)

    @classmethod
    def tearDownClass(cls):
        cls.api.channel.close()

    def new_store(self, prefix="store", egress_allowlist=()):
        return self.api.create_store(unique(prefix), egress_allowlist)


# ----------------------------------------------------------------------------------------------
# 1. SPEC §2 "Semantics", stores and secrets: one test per rule (the table SPEC_RULES below)

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class SpecRulesTest(SharedServerTest):
    """Each check below is one rule of SPEC §2; SPEC_RULES pairs it with the spec's words and
    makes it a test (test_NN_<check>, the rule as its description)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.other_org = Org.create(helpers.shared_db(), "other")
        cls.other_api = cls.other_org.connect(SHARED)

    @classmethod
    def tearDownClass(cls):
        cls.other_api.channel.close()
        super().tearDownClass()

    def api_with_header(self, value):
        """An Api whose calls carry `authorization: value` (None: no such metadata)."""
        api = Api(self.api.channel, "")
        api.metadata = () if value is None else (("authorization", value),)
        return api

    def assertAllMethodsUnauthenticated(self, api):
        store = self.new_store()
        calls = {
            "CreateSecretStore": lambda: api.create_store(unique("nokey")),
            "ListSecretStores": lambda: api.list_stores(),
            "GetSecretStore": lambda: api.get_store(store.id),
            "UpdateSecretStore": lambda: api.update_store(store.id, ["name"], unique("nokey")),
            "DeleteSecretStore": lambda: api.delete_store(store.id),
            "SetSecret": lambda: api.set_secret(store.id, "TOKEN", "v"),
            "ListSecrets": lambda: api.list_secrets(store.id),
            "DeleteSecret": lambda: api.delete_secret(store.id, "TOKEN"),
        }
        for method, call in calls.items():
            with self.subTest(method=method):
                self.assertFails(UNAUTHENTICATED, call)
        # ... and none of them did anything.
        self.assertEqual(self.api.get_store(store.id), store)
        self.assertEqual(self.api.list_secrets(store.id), [])

    # --- Authentication -----------------------------------------------------------------------

    def every_method_without_a_key_is_unauthenticated(self):
        self.assertAllMethodsUnauthenticated(self.api_with_header(None))

    def a_bad_key_is_unauthenticated(self):
        key = self.org.key
        typo = key[:20] + ("A" if key[20] != "A" else "B") + key[21:]
        # A well-formed key sealgate no longer knows: issued, then its row removed.
        forgotten = self.org.db.create_api_key(self.org.id)
        self.org.db.psql("DELETE FROM api_keys WHERE prefix = '%s'" % forgotten[:12])
        # ("Bearer " with its trailing space is no test of sealgate: HTTP/2 forbids a field
        # value that ends in whitespace, so nghttp2 resets the stream before any handler runs.)
        for header in ["Bearer", "Bearer nope", "Bearer " + typo,
                       "Bearer osk_" + "A" * 49, "Bearer " + key + "x", "Basic " + key, key,
                       "Bearer " + forgotten]:
            with self.subTest(authorization=header):
                self.assertFails(UNAUTHENTICATED, self.api_with_header(header).list_stores)

    def a_revoked_key_is_unauthenticated(self):
        key = self.org.db.create_api_key(self.org.id)
        self.org.db.revoke_api_key(key)
        self.assertAllMethodsUnauthenticated(self.api_with_header("Bearer " + key))

    # --- Store names --------------------------------------------------------------------------

    def store_names_of_1_to_128_allowed_characters_are_accepted(self):
        tag = uuid.uuid4().hex[:8]
        for name in ["a", "Z", "7", ".", "_", "-", "A.b_c-9" + tag, (tag + "x" * 128)[:128]]:
            with self.subTest(name=name):
                self.assertEqual(self.api.create_store(name).name, name)
        store = self.new_store()
        renamed = (tag + "y" * 128)[:128]
        self.assertEqual(self.api.update_store(store.id, ["name"], name=renamed).name, renamed)

    def bad_store_names_are_invalid_argument_naming_the_field(self):
        store = self.new_store()
        for name in ["", "x" * 129, "a b", "a/b", "a:b", "a*", "a@b", "a\tb", "é", "ä" * 10,
                     "a\nb", "name;DROP"]:
            with self.subTest(name=name):
                self.assertInvalid("name", self.api.create_store, name)
                self.assertInvalid("name", self.api.update_store, store.id, ["name"], name=name)
        self.assertEqual(self.api.get_store(store.id), store)

    def nul_byte_in_a_name_or_host_is_invalid_argument(self):
        """A NUL in a name or host pattern is refused with the field's name (regression: the
        field used to be cut at the NUL, so name="ab\\0 c d" made a store named "ab")."""
        store = self.new_store()
        cases = [
            ("name", self.api.create_store, (unique("ab") + "\x00 c d",)),
            ("name", self.api.update_store, (store.id, ["name"], unique("ab") + "\x00 c d")),
            ("egress_allowlist[0]", self.api.create_store,
             (unique("nul"), ["api.example.com\x00/evil"])),
            ("name", self.api.set_secret, (store.id, "TOKEN\x00 -", "v")),
            ("allowed_hosts[0]", self.api.set_secret,
             (store.id, "TOKEN", "v", ["api.example.com\x00:8443"])),
        ]
        for field, call, args in cases:
            with self.subTest(field=field, call=call.__name__):
                self.assertInvalid(field, call, *args)

    # --- Unique names -------------------------------------------------------------------------

    def a_duplicate_store_name_is_already_exists(self):
        store = self.new_store()
        self.assertFails(ALREADY_EXISTS, self.api.create_store, store.name)

    def renaming_onto_a_taken_store_name_is_already_exists(self):
        first, second = self.new_store(), self.new_store()
        self.assertFails(ALREADY_EXISTS, self.api.update_store, second.id, ["name"],
                         name=first.name)
        self.assertEqual(self.api.get_store(second.id), second)

    def store_names_are_unique_per_organization_only(self):
        store = self.new_store()
        self.assertEqual(self.other_api.create_store(store.name).name, store.name)

    def a_deleted_stores_name_can_be_reused_by_a_new_empty_store(self):
        store = self.new_store()
        self.api.set_secret(store.id, "TOKEN", "v")
        self.api.delete_store(store.id)
        again = self.api.create_store(store.name)
        self.assertNotEqual(again.id, store.id)
        self.assertEqual(self.api.list_secrets(again.id), [])

    # --- Secret names -------------------------------------------------------------------------

    def secret_names_that_are_env_var_names_are_accepted(self):
        store = self.new_store()
        for name in ["A", "a", "_", "_1", "Z9_z", "A" * 128, "_" + "9" * 127]:
            with self.subTest(name=name):
                self.assertEqual(self.api.set_secret(store.id, name, "v").name, name)

    def bad_secret_names_are_invalid_argument_naming_the_field(self):
        store = self.new_store()
        for name in ["", "1A", "9", "A-B", "A.B", "A B", "A$", "É", "A" * 129, "_" + "9" * 128]:
            with self.subTest(name=name):
                self.assertInvalid("name", self.api.set_secret, store.id, name, "v")
                self.assertInvalid("name", self.api.delete_secret, store.id, name)
        self.assertEqual(self.api.list_secrets(store.id), [])

    # --- Values -------------------------------------------------------------------------------

    def values_of_1_byte_to_64_kib_are_accepted(self):
        store = self.new_store()
        for label, value in [("1 byte", "x"), ("64 KiB", "x" * (64 * KIB)),
                             ("64 KiB of 2-byte characters", "é" * (32 * KIB))]:
            with self.subTest(value=label):
                self.api.set_secret(store.id, "TOKEN", value)

    def empty_and_over_64_kib_values_are_invalid_argument_naming_the_field(self):
        store = self.new_store()
        for label, value in [("empty", ""), ("64 KiB + 1", "x" * (64 * KIB + 1)),
                             ("64 KiB + 1 in 2-byte characters", "é" * (32 * KIB) + "x")]:
            with self.subTest(value=label):
                self.assertInvalid("value", self.api.set_secret, store.id, "TOKEN", value)
        self.assertEqual(self.api.list_secrets(store.id), [])

    # --- UpdateSecretStore --------------------------------------------------------------------

    def update_changes_only_the_paths_in_the_mask(self):
        store = self.new_store(egress_allowlist=["api.example.com"])
        renamed = self.api.update_store(store.id, ["name"], name=unique("renamed"),
                                        egress_allowlist=["other.example.com"])
        self.assertNotEqual(renamed.name, store.name)
        self.assertEqual(list(renamed.egress_allowlist), ["api.example.com"])
        widened = self.api.update_store(store.id, ["egress_allowlist"], name=unique("ignored"),
                                        egress_allowlist=["api.example.com", "*.example.org"])
        self.assertEqual(widened.name, renamed.name)
        self.assertEqual(list(widened.egress_allowlist), ["api.example.com", "*.example.org"])
        self.assertEqual(self.api.get_store(store.id), widened)
        self.assertEqual((widened.id, widened.org_id, widened.created_at),
                         (store.id, store.org_id, store.created_at))

    def a_masked_path_with_an_empty_list_clears_it(self):
        store = self.new_store(egress_allowlist=["api.example.com", "*.example.org"])
        cleared = self.api.update_store(store.id, ["egress_allowlist"])
        self.assertEqual(list(cleared.egress_allowlist), [])
        self.assertEqual(cleared.name, store.name)
        self.assertEqual(list(self.api.get_store(store.id).egress_allowlist), [])

    def an_unknown_mask_path_is_invalid_argument(self):
        store = self.new_store(egress_allowlist=["api.example.com"])
        for paths in [["egress"], ["Name"], ["name", "id"], ["org_id"], ["created_at"], [""]]:
            with self.subTest(paths=paths):
                self.assertInvalid("update_mask", self.api.update_store, store.id, paths,
                                   name=unique("x"))
        self.assertEqual(self.api.get_store(store.id), store)

    def an_empty_mask_is_invalid_argument(self):
        # The spec leaves an empty mask open; sealgate refuses it rather than guess (AIP-134
        # would read it as "every field", which here would clear the allowlist).
        store = self.new_store(egress_allowlist=["api.example.com"])
        self.assertInvalid("update_mask", self.api.update_store, store.id, [], name=unique("x"))
        self.assertEqual(self.api.get_store(store.id), store)

    # --- SetSecret versions -------------------------------------------------------------------

    def set_secret_upserts_making_versions_1_2_3(self):
        store = self.new_store()
        first = self.api.set_secret(store.id, "TOKEN", "one", ["a.example.com"])
        versions = [first.version] + [
            self.api.set_secret(store.id, "TOKEN", value, ["b.example.com"]).version
            for value in ("two", "three")]
        self.assertEqual(versions, [1, 2, 3])
        [entry] = self.api.list_secrets(store.id)
        self.assertEqual((entry.id, entry.name, entry.version), (first.id, "TOKEN", 3))
        self.assertEqual(list(entry.allowed_hosts), ["b.example.com"])

    def concurrent_set_secret_calls_each_make_their_own_version(self):
        # Eight writers: SetSecret retries a lost race up to 8 times, and each of a writer's
        # losses is another writer's win, so all eight succeed (at 20 some get ABORTED).
        store = self.new_store()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(self.api.set_secret, store.id, "TOKEN", "value %d" % i)
                       for i in range(8)]
            versions = sorted(f.result().version for f in futures)
        self.assertEqual(versions, list(range(1, 9)))
        self.assertEqual([e.version for e in self.api.list_secrets(store.id)], [8])

    def a_deleted_then_recreated_secret_continues_the_numbering(self):
        store = self.new_store()
        self.api.set_secret(store.id, "TOKEN", "one")
        self.api.set_secret(store.id, "TOKEN", "two")
        self.api.delete_secret(store.id, "TOKEN")
        self.assertEqual(self.api.list_secrets(store.id), [])
        self.assertFails(NOT_FOUND, self.api.delete_secret, store.id, "TOKEN")
        self.assertEqual(self.api.set_secret(store.id, "TOKEN", "three").version, 3)

    # --- DeleteSecretStore --------------------------------------------------------------------

    def a_deleted_store_and_its_secrets_leave_the_api_view(self):
        store = self.new_store()
        self.api.set_secret(store.id, "TOKEN", "v")
        self.api.delete_store(store.id)
        gone = {
            "GetSecretStore": lambda: self.api.get_store(store.id),
            "UpdateSecretStore": lambda: self.api.update_store(store.id, ["name"], unique("x")),
            "DeleteSecretStore": lambda: self.api.delete_store(store.id),
            "SetSecret": lambda: self.api.set_secret(store.id, "OTHER", "v"),
            "ListSecrets": lambda: self.api.list_secrets(store.id),
            "DeleteSecret": lambda: self.api.delete_secret(store.id, "TOKEN"),
        }
        for method, call in gone.items():
            with self.subTest(method=method):
                self.assertFails(NOT_FOUND, call)
        self.assertNotIn(store.id, self.api.all_store_ids())

    # --- Host patterns ------------------------------------------------------------------------

    def host_patterns_are_stored_normalized(self):
        given = ["API.Example.COM", "api.example.net.", "*.OpenAI.com.", "*"]
        normal = ["api.example.com", "api.example.net", "*.openai.com", "*"]
        store = self.new_store(egress_allowlist=given)
        self.assertEqual(list(store.egress_allowlist), normal)
        self.assertEqual(list(self.api.get_store(store.id).egress_allowlist), normal)
        updated = self.api.update_store(store.id, ["egress_allowlist"], egress_allowlist=given)
        self.assertEqual(list(updated.egress_allowlist), normal)
        entry = self.api.set_secret(store.id, "TOKEN", "v", given)
        self.assertEqual(list(entry.allowed_hosts), normal)
        self.assertEqual(list(self.api.list_secrets(store.id)[0].allowed_hosts), normal)

    def wildcard_patterns_are_accepted(self):
        patterns = ["*.openai.com", "*.a.b.example.com", "*"]
        store = self.new_store(egress_allowlist=patterns)
        self.assertEqual(list(store.egress_allowlist), patterns)
        self.assertEqual(list(self.api.set_secret(store.id, "TOKEN", "v", patterns).allowed_hosts),
                         patterns)

    def bad_host_patterns_are_invalid_argument_naming_field_and_index(self):
        bad = {
            "scheme": "https://api.example.com",
            "path": "api.example.com/v1",
            "port": "api.example.com:443",
            "IPv4 literal": "127.0.0.1",
            "IPv4 as one number": "2130706433",
            "IPv6 literal": "::1",
            "bracketed IPv6 literal": "[::1]",
            "* inside a label": "api*.example.com",
            "* not leading": "api.*.example.com",
            "* at the end": "api.example.*",
            "* without its dot": "*example.com",
            "two wildcards": "*.*.example.com",
            "empty": "",
        }
        store = self.new_store(egress_allowlist=["api.example.com"])
        for what, pattern in bad.items():
            hosts = ["good.example.com", pattern]   # the bad one at index 1
            with self.subTest(what=what, pattern=pattern):
                self.assertInvalid("egress_allowlist[1]", self.api.create_store, unique("hosts"),
                                   hosts)
                self.assertInvalid("egress_allowlist[1]", self.api.update_store, store.id,
                                   ["egress_allowlist"], egress_allowlist=hosts)
                self.assertInvalid("allowed_hosts[1]", self.api.set_secret, store.id, "TOKEN",
                                   "v", hosts)
        self.assertEqual(self.api.get_store(store.id), store)
        self.assertEqual(self.api.list_secrets(store.id), [])

    # --- Values never come back ---------------------------------------------------------------

    def list_secrets_never_returns_a_value(self):
        store = self.new_store()
        values = {"TOKEN": "tok-" + uuid.uuid4().hex, "OTHER": "oth-" + uuid.uuid4().hex}
        for name, value in values.items():
            entry = self.api.set_secret(store.id, name, value, ["api.example.com"])
            self.assertNotIn(value.encode(), entry.SerializeToString())
        entries = self.api.list_secrets(store.id)
        self.assertEqual(sorted(e.name for e in entries), sorted(values))
        for entry in entries:
            for field, content in entry.ListFields():
                for item in content if field.label == field.LABEL_REPEATED else [content]:
                    for value in values.values():
                        with self.subTest(entry=entry.name, field=field.name):
                            self.assertNotIn(value, str(item))
        raw_list = self.api.channel.unary_unary(
            "/sealgate.v1.SecretService/ListSecrets",
            request_serializer=S.secret_pb2.ListSecretsRequest.SerializeToString,
            response_deserializer=None)
        body = raw_list(S.secret_pb2.ListSecretsRequest(store_id=store.id),
                        metadata=self.api.metadata, timeout=RPC_TIMEOUT_S)
        self.assertIn(b"TOKEN", body)
        for value in values.values():
            self.assertNotIn(value.encode(), body)

    def no_response_message_has_a_value_field(self):
        services = [S.secret_store_pb2.DESCRIPTOR.services_by_name["SecretStoreService"],
                    S.secret_pb2.DESCRIPTOR.services_by_name["SecretService"]]
        for service in services:
            for method in service.methods:
                for path, field in walk_fields(method.output_type):
                    with self.subTest(method=method.full_name, field=path):
                        self.assertNotIn("value", field.name)

    # --- Timestamps and ids -------------------------------------------------------------------

    def assertRecentUtc(self, timestamp):
        self.assertRegex(timestamp, RFC3339_UTC)
        when = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
        skew = abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds())
        self.assertLess(skew, 120, "%s is not now in UTC" % timestamp)

    def timestamps_are_rfc3339_utc(self):
        store = self.new_store()
        entry = self.api.set_secret(store.id, "TOKEN", "v")
        updated = self.api.update_store(store.id, ["name"], name=unique("ts"))
        stamps = {
            "CreateSecretStore": [store.created_at, store.updated_at],
            "UpdateSecretStore": [updated.created_at, updated.updated_at],
            "GetSecretStore": [self.api.get_store(store.id).created_at],
            "ListSecretStores": [s.created_at for s in self.api.list_stores(1000).secret_stores
                                 if s.id == store.id],
            "SetSecret": [entry.created_at, entry.updated_at],
            "ListSecrets": [self.api.list_secrets(store.id)[0].updated_at],
        }
        for method, values in stamps.items():
            for value in values:
                with self.subTest(method=method, value=value):
                    self.assertRecentUtc(value)
        self.assertEqual(entry.last_used_at, "")   # never used by the proxy yet

    def ids_are_uuids(self):
        store = self.new_store()
        entry = self.api.set_secret(store.id, "TOKEN", "v")
        for what, value in [("org id", self.org.id), ("SecretStore.id", store.id),
                            ("SecretStore.org_id", store.org_id), ("SecretEntry.id", entry.id),
                            ("SecretEntry.store_id", entry.store_id)]:
            with self.subTest(what=what):
                self.assertEqual(str(uuid.UUID(value)), value)   # canonical text form
        self.assertEqual((store.org_id, entry.store_id), (self.org.id, store.id))
        self.assertNotEqual(entry.id, store.id)


def walk_fields(message, path="", seen=None):
    """(path, field) for every field of `message` (a Descriptor), nested messages included."""
    seen = set() if seen is None else seen
    if message.full_name in seen:
        return
    seen.add(message.full_name)
    for field in message.fields:
        yield path + message.name + "." + field.name, field
        if field.message_type is not None:
            yield from walk_fields(field.message_type, path + message.name + ".", seen)


# The spec's words, and the check that is their test.
SPEC_RULES = [
    ("Every call carries `authorization: Bearer <api key>`. No key: UNAUTHENTICATED.",
     SpecRulesTest.every_method_without_a_key_is_unauthenticated),
    ("A bad key: UNAUTHENTICATED.",
     SpecRulesTest.a_bad_key_is_unauthenticated),
    ("A revoked key: UNAUTHENTICATED.",
     SpecRulesTest.a_revoked_key_is_unauthenticated),
    ("Store names: 1-128 chars of [A-Za-z0-9._-].",
     SpecRulesTest.store_names_of_1_to_128_allowed_characters_are_accepted),
    ("Bad input (a store name): INVALID_ARGUMENT whose message names the field.",
     SpecRulesTest.bad_store_names_are_invalid_argument_naming_the_field),
    ("Bad input: INVALID_ARGUMENT — a NUL byte is bad input, not the end of the string.",
     SpecRulesTest.nul_byte_in_a_name_or_host_is_invalid_argument),
    ("Store names are unique per organization: a duplicate gives ALREADY_EXISTS.",
     SpecRulesTest.a_duplicate_store_name_is_already_exists),
    ("A duplicate store name gives ALREADY_EXISTS, also through UpdateSecretStore.",
     SpecRulesTest.renaming_onto_a_taken_store_name_is_already_exists),
    ("Store names are unique per organization (another organization may use the name).",
     SpecRulesTest.store_names_are_unique_per_organization_only),
    ("Store names are unique per organization (among stores not deleted).",
     SpecRulesTest.a_deleted_stores_name_can_be_reused_by_a_new_empty_store),
    ("Secret names are env-var names [A-Za-z_][A-Za-z0-9_]{0,127}.",
     SpecRulesTest.secret_names_that_are_env_var_names_are_accepted),
    ("Bad input (a secret name): INVALID_ARGUMENT whose message names the field.",
     SpecRulesTest.bad_secret_names_are_invalid_argument_naming_the_field),
    ("Values: 1 byte to 64 KiB.",
     SpecRulesTest.values_of_1_byte_to_64_kib_are_accepted),
    ("Bad input (a value): INVALID_ARGUMENT whose message names the field.",
     SpecRulesTest.empty_and_over_64_kib_values_are_invalid_argument_naming_the_field),
    ("UpdateSecretStore changes only the paths in update_mask (name, egress_allowlist).",
     SpecRulesTest.update_changes_only_the_paths_in_the_mask),
    ("UpdateSecretStore: a path listed with an empty list clears it.",
     SpecRulesTest.a_masked_path_with_an_empty_list_clears_it),
    ("UpdateSecretStore: an unknown path is INVALID_ARGUMENT.",
     SpecRulesTest.an_unknown_mask_path_is_invalid_argument),
    ("UpdateSecretStore: an empty update_mask is INVALID_ARGUMENT (sealgate's choice).",
     SpecRulesTest.an_empty_mask_is_invalid_argument),
    ("SetSecret is an upsert on (store, name); each call makes a new version (1, 2, ...).",
     SpecRulesTest.set_secret_upserts_making_versions_1_2_3),
    ("SetSecret: each call makes a new version, also when calls race.",
     SpecRulesTest.concurrent_set_secret_calls_each_make_their_own_version),
    ("SetSecret versions never restart, also across DeleteSecret and a re-create.",
     SpecRulesTest.a_deleted_then_recreated_secret_continues_the_numbering),
    ("DeleteSecretStore deletes the store and all its secrets from the API's view.",
     SpecRulesTest.a_deleted_store_and_its_secrets_leave_the_api_view),
    ("Host patterns: matching is on normalized names: lowercase, one trailing dot dropped.",
     SpecRulesTest.host_patterns_are_stored_normalized),
    ("Host patterns: a hostname or a wildcard `*.openai.com`; `*` alone.",
     SpecRulesTest.wildcard_patterns_are_accepted),
    ("Host patterns: a scheme, path, port, misplaced `*` or an IP literal is INVALID_ARGUMENT.",
     SpecRulesTest.bad_host_patterns_are_invalid_argument_naming_field_and_index),
    ("Secrets: values never returned by any API (ListSecrets: metadata only).",
     SpecRulesTest.list_secrets_never_returns_a_value),
    ("There is no value field in any response message, anywhere.",
     SpecRulesTest.no_response_message_has_a_value_field),
    ("Timestamps are RFC 3339 UTC strings (2026-11-27T22:41:40Z).",
     SpecRulesTest.timestamps_are_rfc3339_utc),
    ("Ids are UUIDs (text).",
     SpecRulesTest.ids_are_uuids),
]


def _rule_test(rule, check):
    def test(self):
        check(self)
    test.__doc__ = rule + ("\n" + check.__doc__ if check.__doc__ else "")
    return test


for _number, (_rule, _check) in enumerate(SPEC_RULES, 1):
    setattr(SpecRulesTest, "test_%02d_%s" % (_number, _check.__name__), _rule_test(_rule, _check))


# ----------------------------------------------------------------------------------------------
# 2. Isolation: "Another organization's id: NOT_FOUND, never PERMISSION_DENIED, and nothing
#    changes."

class IsolationTest(SharedServerTest):

    def test_every_method_with_another_orgs_store_id_is_not_found_and_changes_nothing(self):
        store = self.new_store(egress_allowlist=["api.example.com"])
        secret = self.api.set_secret(store.id, "TOKEN", "org-a-value", ["api.example.com"])
        intruder = Org.create(helpers.shared_db(), "intruder")
        other = intruder.connect(SHARED)
        self.addCleanup(other.channel.close)

        attempts = {
            "GetSecretStore": lambda: other.get_store(store.id),
            "UpdateSecretStore": lambda: other.update_store(
                store.id, ["name", "egress_allowlist"], name=unique("taken")),
            "DeleteSecretStore": lambda: other.delete_store(store.id),
            "SetSecret": lambda: other.set_secret(store.id, "TOKEN", "org-b-value"),
            "ListSecrets": lambda: other.list_secrets(store.id),
            "DeleteSecret": lambda: other.delete_secret(store.id, "TOKEN"),
        }
        for method, call in attempts.items():
            with self.subTest(method=method):
                self.assertFails(NOT_FOUND, call)

        self.assertEqual(self.api.get_store(store.id), store)
        self.assertEqual(self.api.list_secrets(store.id), [secret])
        self.assertNotIn(store.id, other.all_store_ids())
        db = helpers.shared_db()
        self.assertEqual(db.psql("SELECT count(*) FROM secrets WHERE org_id = '%s'"
                                 % intruder.id).strip(), "0")


# ----------------------------------------------------------------------------------------------
# 3. Pagination of ListSecretStores (keyset: "1|created_at|id" in the token)

class PaginationTest(ApiTestCase):
    """Each test lists an organization of its own, so that it knows every store there is."""

    def setUp(self):
        self.org = Org.create(helpers.shared_db(), "pages")
        self.api = self.org.connect(SHARED)
        self.addCleanup(self.api.channel.close)

    def create_stores(self, n):
        return [self.api.create_store(unique("page")).id for _ in range(n)]

    def walk(self, page_size, between_pages=lambda: None):
        """All pages, as lists of ids; calls between_pages() after each page but the last."""
        pages, token = [], ""
        for _ in range(100):
            page = self.api.list_stores(page_size=page_size, page_token=token)
            pages.append([s.id for s in page.secret_stores])
            token = page.next_page_token
            if not token:
                return pages
            between_pages()
        raise AssertionError("more than 100 pages")

    def test_pages_of_7_show_25_stores_once_each_in_a_stable_order(self):
        created = self.create_stores(25)
        pages = self.walk(7)
        self.assertEqual([len(p) for p in pages], [7, 7, 7, 4])
        listed = [i for p in pages for i in p]
        self.assertEqual(len(listed), len(set(listed)), "a store listed twice")
        self.assertEqual(set(listed), set(created))
        self.assertEqual(self.walk(7), pages)
        self.assertEqual(self.walk(25), [listed])

    def test_stores_added_between_pages_neither_repeat_nor_hide_others(self):
        before = self.create_stores(20)
        added = []
        pages = self.walk(7, between_pages=lambda: added.extend(self.create_stores(3)))
        listed = [i for p in pages for i in p]
        self.assertEqual(len(listed), len(set(listed)), "a store listed twice")
        for store_id in before:
            self.assertEqual(listed.count(store_id), 1, store_id)
        self.assertLessEqual(set(listed), set(before) | set(added))

    def test_page_size_0_1_and_1000_are_accepted(self):
        self.create_stores(3)
        for size in (0, 1, 1000):
            with self.subTest(page_size=size):
                self.assertEqual(sum(len(p) for p in self.walk(size)), 3)

    def test_page_size_out_of_range_is_invalid_argument(self):
        for size in (-1, 1001, -2**31, 2**31 - 1):
            with self.subTest(page_size=size):
                self.assertInvalid("page_size", self.api.list_stores, page_size=size)

    def test_a_page_token_the_api_did_not_return_is_invalid_argument(self):
        an_id = str(uuid.uuid4())
        for token in ["garbage", "!!!!", "=", "x" * 300,
                      b64("2|2026-01-01 00:00:00.000000|" + an_id),   # another format tag
                      b64("1|2026-01-01 00:00:00.000000"),
                      b64("1|'; DROP TABLE secret_stores; --|" + an_id),
                      b64("1|2026-01-01 00:00:00|not an id")]:
            with self.subTest(token=token):
                self.assertInvalid("page_token", self.api.list_stores, page_token=token)

    def test_a_forged_page_token_is_invalid_argument_not_internal(self):
        """A token with an impossible time or a non-UUID id is refused as INVALID_ARGUMENT, not
        passed to PostgreSQL to fail there as INTERNAL "database error" (regression)."""
        self.create_stores(2)
        real = unb64(self.api.list_stores(page_size=1).next_page_token)
        for token in [b64(real + "0"), b64(real[:-1]),   # a real token with its id edited
                      b64("1|2026-13-45 00:00:00.000000|" + str(uuid.uuid4())),
                      b64("1|2026-01-01 99:00:00|" + str(uuid.uuid4())),
                      b64("1|- :|" + str(uuid.uuid4())),
                      b64("1|2026-01-01 00:00:00|abc")]:
            with self.subTest(token=unb64(token)):
                self.assertInvalid("page_token", self.api.list_stores, page_token=token)


def b64(text):
    return base64.b64encode(text.encode()).decode()


def unb64(token):
    """A page token's text (sealgate writes base64 without padding)."""
    return base64.b64decode(token + "=" * (-len(token) % 4)).decode()


# ----------------------------------------------------------------------------------------------
# 4. At rest (SPEC §4)

class Envelope:
    """sealgate's at-rest format, written here from server/crypto/keys.c and seal.c rather than
    shared with them, so that these tests also check the format the C code writes:

      root key id     first 8 bytes of SHA-256("sealgate root key id v1" || root key), hex
      org_keys.wrapped  nonce(12) || AES-256-GCM(root key, DEK)(32) || tag(16),
                        AAD "sealgate/dek/v1" || str(org_id) || str(root key id)
      secrets           nonce (12 bytes), ciphertext = AES-256-GCM(DEK, value) || tag(16),
                        AAD "sealgate/secret/v1" || str(org) || str(store) || str(name)
                            || version (8 bytes big-endian)
      where str(s) = 4-byte big-endian length || s.
    """

    @staticmethod
    def _str(s):
        data = s.encode()
        return struct.pack(">I", len(data)) + data

    @staticmethod
    def root_key_id(root_key):
        return hashlib.sha256(b"sealgate root key id v1" + root_key).digest()[:8].hex()

    @classmethod
    def unwrap_dek(cls, root_key, org_id, wrapped):
        aad = b"sealgate/dek/v1" + cls._str(org_id) + cls._str(cls.root_key_id(root_key))
        return AESGCM(root_key).decrypt(wrapped[:12], wrapped[12:], aad)

    @classmethod
    def open_secret(cls, dek, row):
        """The plaintext of a SecretRow; raises InvalidTag if anything does not match."""
        aad = (b"sealgate/secret/v1" + cls._str(row.org_id) + cls._str(row.store_id) +
               cls._str(row.name) + struct.pack(">Q", row.version))
        return AESGCM(dek).decrypt(row.nonce, row.ciphertext, aad)


def read_root_key(path):
    with open(path) as f:
        return bytes.fromhex(f.read().strip())


class SecretRow:
    """The columns of a secrets row that the envelope involves."""

    def __init__(self, db, secret_id):
        out = db.psql("SELECT org_id, store_id, name, version, encode(nonce, 'hex'), "
                      "encode(ciphertext, 'hex') FROM secrets WHERE id = '%s'" % secret_id)
        org, store, name, version, nonce, ciphertext = out.strip().split("|")
        self.id = secret_id
        self.org_id, self.store_id, self.name, self.version = org, store, name, int(version)
        self.nonce, self.ciphertext = bytes.fromhex(nonce), bytes.fromhex(ciphertext)


def wrapped_dek(db, org_id, root_key_id):
    out = db.psql("SELECT encode(wrapped, 'hex') FROM org_keys WHERE org_id = '%s' AND "
                  "root_key_id = '%s'" % (org_id, root_key_id)).strip()
    return bytes.fromhex(out) if out else None


def org_dek(db, org_id, root_key):
    """The organization's data key, unwrapped offline from its wrapping for `root_key`."""
    return Envelope.unwrap_dek(root_key, org_id,
                               wrapped_dek(db, org_id, Envelope.root_key_id(root_key)))


def flip_byte_sql(table, column, index, where):
    """SQL that flips the low bit of byte `index` of `column` (negative: from the end)."""
    at = "%d" % index if index >= 0 else "length(%s) - %d" % (column, -index)
    return ("UPDATE %s SET %s = set_byte(%s, %s, get_byte(%s, %s) # 1) WHERE %s" %
            (table, column, column, at, column, at, where))


def traces(value):
    """The forms in which a value could leak: itself, hex (either case) and base64."""
    raw = value.encode()
    return [value, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode()]


@needs_decryptor
class SealedValuesTest(SharedServerTest):
    """What PostgreSQL holds for a secret: ciphertext that only the envelope opens."""

    def setUp(self):
        self.db = helpers.shared_db()

    def sealed(self, name="TOKEN", value=None, store=None):
        """Sets a secret; returns (value, SecretRow, DEK)."""
        value = value or "sk_live_" + uuid.uuid4().hex
        store = store or self.new_store()
        entry = self.api.set_secret(store.id, name, value)
        dek = org_dek(self.db, self.org.id, read_root_key(helpers.shared_root_key()))
        return value, SecretRow(self.db, entry.id), dek

    def test_the_row_opens_with_the_envelope_to_the_value_set(self):
        value, row, dek = self.sealed(value="é-" + uuid.uuid4().hex)
        self.assertEqual(Envelope.open_secret(dek, row), value.encode())
        self.assertEqual(len(row.nonce), 12)
        self.assertEqual(len(row.ciphertext), len(value.encode()) + 16)

    def test_the_secrets_row_and_the_database_hold_no_trace_of_the_value(self):
        value, row, _ = self.sealed()
        row_text = self.db.psql("SELECT s::text FROM secrets s WHERE id = '%s'" % row.id)
        dump = subprocess.run(["pg_dump", "--data-only", "-d", self.db.conninfo],
                              capture_output=True, text=True, timeout=60, check=True).stdout
        for trace in traces(value):
            with self.subTest(trace=trace):
                self.assertNotIn(trace.encode(), row.nonce + row.ciphertext)
                self.assertNotIn(trace.lower(), row_text.lower())
                self.assertNotIn(trace, dump)

    def test_the_same_value_twice_gives_new_nonces_and_ciphertexts(self):
        value, first, _ = self.sealed()
        store_id = first.store_id
        second = SecretRow(self.db, self.api.set_secret(store_id, "TOKEN", value).id)
        twin = SecretRow(self.db, self.api.set_secret(store_id, "TWIN", value).id)
        rows = [first, second, twin]
        self.assertEqual(len({r.nonce for r in rows}), 3)
        self.assertEqual(len({r.ciphertext for r in rows}), 3)

    def test_a_flipped_byte_in_nonce_ciphertext_or_tag_fails_to_open(self):
        value, row, dek = self.sealed()
        where = "id = '%s'" % row.id
        for part, column, index in [("nonce", "nonce", 0), ("ciphertext", "ciphertext", 0),
                                    ("tag", "ciphertext", -16), ("tag end", "ciphertext", -1)]:
            with self.subTest(part=part):
                self.db.psql(flip_byte_sql("secrets", column, index, where))
                with self.assertRaises(InvalidTag):
                    Envelope.open_secret(dek, SecretRow(self.db, row.id))
                self.db.psql(flip_byte_sql("secrets", column, index, where))   # flipped back
                self.assertEqual(Envelope.open_secret(dek, SecretRow(self.db, row.id)),
                                 value.encode())

    def test_a_ciphertext_copied_to_another_row_fails_to_open_there(self):
        store = self.new_store()
        _, source, dek = self.sealed("TOKEN", store=store)
        _, version_1, _ = self.sealed("ROLLED", store=store)
        copies = {   # (the sealed bytes of one row, the row they are written onto)
            "another secret of the store": (source, self.sealed("OTHER", store=store)[1]),
            "the same name in another store": (source, self.sealed("TOKEN")[1]),
            "the next version of the same secret (a rollback)":
                (version_1, SecretRow(self.db, self.api.set_secret(store.id, "ROLLED", "v2").id)),
        }
        for what, (origin, target) in copies.items():
            with self.subTest(copied_onto=what):
                self.db.psql("UPDATE secrets SET nonce = '\\x%s', ciphertext = '\\x%s' "
                             "WHERE id = '%s'" % (origin.nonce.hex(), origin.ciphertext.hex(),
                                                  target.id))
                copied = SecretRow(self.db, target.id)
                with self.assertRaises(InvalidTag):
                    Envelope.open_secret(dek, copied)
                # The bytes themselves are sound: they open under the AAD of their own row.
                self.assertEqual((copied.nonce, copied.ciphertext),
                                 (origin.nonce, origin.ciphertext))
                Envelope.open_secret(dek, origin)

    def test_a_value_with_a_nul_byte_is_sealed_whole_or_refused(self):
        """A value "a\\0b" must be kept whole or refused with INVALID_ARGUMENT, never sealed
        as "a" (regression: it used to be cut at the NUL)."""
        store = self.new_store()
        value = "before\x00after-" + uuid.uuid4().hex
        try:
            entry = self.api.set_secret(store.id, "TOKEN", value)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), INVALID_ARGUMENT, e.details())
            return
        dek = org_dek(self.db, self.org.id, read_root_key(helpers.shared_root_key()))
        self.assertEqual(Envelope.open_secret(dek, SecretRow(self.db, entry.id)), value.encode())


class VersionCounterTest(SharedServerTest):
    """Version numbers are taken from an UNLOGGED table (no WAL flush per SetSecret), which a
    crash or a failover empties."""

    def test_numbering_continues_above_the_stored_version_after_the_counters_are_lost(self):
        store = self.new_store()
        for version in (1, 2, 3):
            self.assertEqual(self.api.set_secret(store.id, "TOKEN", "v%d" % version).version,
                             version)
        helpers.shared_db().psql("TRUNCATE secret_version_counters")
        self.assertEqual(self.api.set_secret(store.id, "TOKEN", "v4").version, 4)
        self.assertEqual(self.api.set_secret(store.id, "TOKEN", "v5").version, 5)


class DataKeyTest(SharedServerTest):
    """The organization's data key: a node that cannot unwrap it fails closed (INTERNAL, the
    log says data_key_unavailable) and never falls back to another key or mints a new one."""

    def setUp(self):
        self.db = helpers.shared_db()
        self.store = self.new_store()
        self.api.set_secret(self.store.id, "TOKEN", "first")   # the org now has its data key
        self.keydir = tempfile.mkdtemp(prefix="sealgate-e2e-keys-")
        self.addCleanup(shutil.rmtree, self.keydir, ignore_errors=True)

    def fresh_server(self, root_key=None):
        """A new server process: its data-key cache is empty."""
        server = helpers.Server(root_key=root_key)
        self.addCleanup(server.cleanup)
        api = self.org.connect(server)
        self.addCleanup(api.channel.close)
        return server, api

    def key_rows(self):
        return self.db.psql("SELECT root_key_id, dek_id, encode(wrapped, 'hex') FROM org_keys "
                            "WHERE org_id = '%s' ORDER BY root_key_id" % self.org.id)

    def assertFailsClosed(self, server, api):
        e = self.assertFails(INTERNAL, api.set_secret, self.store.id, "TOKEN", "second")
        self.assertNotIn(self.org.id, e.details())   # INTERNAL carries no internals
        self.assertTrue(server.wait_for_log(r"msg=data_key_unavailable .*org=" + self.org.id),
                        server.log())

    def test_a_flipped_byte_in_the_wrapped_data_key_fails_closed(self):
        where = "org_id = '%s'" % self.org.id
        before = self.key_rows()
        server, api = self.fresh_server()
        for part, index in [("nonce", 0), ("encrypted key", 12), ("tag", -1)]:
            with self.subTest(part=part):
                self.db.psql(flip_byte_sql("org_keys", "wrapped", index, where))
                self.assertFailsClosed(server, api)
                self.db.psql(flip_byte_sql("org_keys", "wrapped", index, where))
        self.assertEqual(self.key_rows(), before)   # no new key was made in its place
        self.assertEqual(api.set_secret(self.store.id, "TOKEN", "second").version, 2)

    def test_a_node_with_another_root_key_fails_closed(self):
        before = self.key_rows()
        other_key = helpers.write_root_key(os.path.join(self.keydir, "other.key"))
        server, api = self.fresh_server(root_key=other_key)
        self.assertFailsClosed(server, api)
        self.assertEqual(self.key_rows(), before)
        self.assertEqual([e.version for e in api.list_secrets(self.store.id)], [1])


class RootKeyRotationTest(ApiTestCase):
    """`sealgate rotate-root-key` from K1 to K2 over three organizations, in a database of its
    own (the command works on every organization of a database)."""

    @classmethod
    def setUpClass(cls):
        cls.keydir = tempfile.mkdtemp(prefix="sealgate-e2e-rotation-")
        cls.k1 = helpers.write_root_key(os.path.join(cls.keydir, "k1.key"))
        cls.k2 = helpers.write_root_key(os.path.join(cls.keydir, "k2.key"))
        cls.k1_id = Envelope.root_key_id(read_root_key(cls.k1))
        cls.k2_id = Envelope.root_key_id(read_root_key(cls.k2))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.keydir, ignore_errors=True)

    def setUp(self):
        self.db = helpers.shared_db().create_database("rotation_" + uuid.uuid4().hex[:12])
        self.db.migrate()
        self.orgs = [Org.create(self.db, "rotation-%d" % i) for i in range(3)]
        _, apis = self.serve(self.k1)
        self.stores = {}
        self.secrets = {}
        for org in self.orgs:
            self.stores[org.id] = apis[org.id].create_store("rotation").id
            self.secrets[org.id] = apis[org.id].set_secret(
                self.stores[org.id], "TOKEN", "sealed under k1 for " + org.id).id

    def serve(self, root_key):
        """A fresh server process with `root_key` (an empty data-key cache); returns it and an
        Api on it per organization id."""
        server = helpers.Server(db=self.db.conninfo, root_key=root_key)
        self.addCleanup(server.cleanup)
        apis = {}
        for org in self.orgs:
            apis[org.id] = org.connect(server)
            self.addCleanup(apis[org.id].channel.close)
        return server, apis

    def rotate(self, *flags):
        out = helpers.sealgate_cli("rotate-root-key", "--db", self.db.conninfo,
                                   "--root-key-file", self.k1, "--new-root-key-file", self.k2,
                                   *flags, timeout=60)
        assert_no_sanitizer_report(self, out)
        return out

    def wrappings(self, root_key_id):
        out = self.db.psql("SELECT org_id FROM org_keys WHERE root_key_id = '%s' ORDER BY org_id"
                           % root_key_id)
        return out.split()

    def set_secret_status(self, apis, org):
        return status_of(apis[org.id].set_secret, self.stores[org.id], "TOKEN", "next")

    def test_a_rotation_stopped_after_one_org_leaves_every_org_working_on_the_old_key(self):
        out = self.rotate("--max-orgs", "1")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("re-wrapped 1 organization data keys, 2 left", out.stdout)
        self.assertEqual(len(self.wrappings(self.k2_id)), 1)
        _, apis = self.serve(self.k1)
        for org in self.orgs:
            with self.subTest(org=org.id):
                self.assertEqual(self.set_secret_status(apis, org), OK)

    def test_mid_rotation_a_new_key_node_serves_only_the_orgs_already_rewrapped(self):
        self.rotate("--max-orgs", "1")
        [rewrapped] = self.wrappings(self.k2_id)
        keys_before = self.db.psql("SELECT count(*) FROM org_keys")
        server, apis = self.serve(self.k2)
        for org in self.orgs:
            with self.subTest(org=org.id, rewrapped=org.id == rewrapped):
                self.assertEqual(self.set_secret_status(apis, org),
                                 OK if org.id == rewrapped else INTERNAL)
        self.assertEqual(len(server.wait_for_log(r"msg=data_key_unavailable", count=2)), 2)
        self.assertEqual(self.db.psql("SELECT count(*) FROM org_keys"), keys_before)

    @needs_decryptor
    def test_a_finished_rotation_lets_a_new_key_node_serve_every_org(self):
        old_rows = {org.id: SecretRow(self.db, self.secrets[org.id]) for org in self.orgs}
        self.rotate("--max-orgs", "1")
        out = self.rotate()
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("re-wrapped 2 organization data keys, 0 left", out.stdout)
        _, apis = self.serve(self.k2)
        for org in self.orgs:
            with self.subTest(org=org.id):
                dek = org_dek(self.db, org.id, read_root_key(self.k2))
                self.assertEqual(dek, org_dek(self.db, org.id, read_root_key(self.k1)))
                self.assertEqual(Envelope.open_secret(dek, old_rows[org.id]),
                                 ("sealed under k1 for " + org.id).encode())
                entry = apis[org.id].set_secret(self.stores[org.id], "TOKEN", "under k2")
                self.assertEqual(entry.version, 2)
                self.assertEqual(Envelope.open_secret(dek, SecretRow(self.db, entry.id)),
                                 b"under k2")

    def test_retire_old_is_refused_while_an_org_is_not_rewrapped(self):
        out = self.rotate("--max-orgs", "1", "--retire-old")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("nothing deleted", out.stderr)
        self.assertEqual(len(self.wrappings(self.k1_id)), 3)

    def test_retire_old_removes_the_old_wrappings_and_old_key_nodes_fail_closed(self):
        self.assertEqual(self.rotate().returncode, 0)
        out = self.rotate("--retire-old")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("deleted 3 wrappings", out.stdout)
        self.assertEqual(self.wrappings(self.k1_id), [])
        self.assertEqual(len(self.wrappings(self.k2_id)), 3)
        old_server, old_node = self.serve(self.k1)
        _, new_node = self.serve(self.k2)
        for org in self.orgs:
            with self.subTest(org=org.id):
                self.assertEqual(self.set_secret_status(old_node, org), INTERNAL)
                self.assertEqual(self.set_secret_status(new_node, org), OK)
        self.assertEqual(len(old_server.wait_for_log(r"msg=data_key_unavailable", count=3)), 3)
        self.assertEqual(self.db.psql("SELECT count(*) FROM org_keys").strip(), "3")


class DatabaseLogTest(unittest.TestCase):
    """"No plaintext value is ever sent to PostgreSQL, so no database log can hold one": a
    cluster that logs every statement with its parameters."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = helpers.PgCluster("log_statement=all")
        try:
            cls.cluster.migrate()
            cls.org = Org.create(cls.cluster, "logged")
            cls.server = helpers.Server(db=cls.cluster.conninfo)
        except Exception:
            cls.cluster.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.cleanup()   # raises on a sanitizer report or a bad exit
        finally:
            cls.cluster.cleanup()

    def test_a_value_set_never_reaches_the_postgresql_log(self):
        marker = "marker-" + uuid.uuid4().hex
        api = self.org.connect(self.server)
        self.addCleanup(api.channel.close)
        store = api.create_store("logged")
        api.set_secret(store.id, "TOKEN", marker)
        api.set_secret(store.id, "TOKEN", marker)   # the update path too
        with open(self.cluster.log_path, encoding="utf-8", errors="replace") as f:
            log = f.read()
        self.assertIn("INSERT INTO secrets", log)   # the writes were logged, parameters and all
        self.assertIn("parameters:", log)
        for trace in traces(marker):
            with self.subTest(trace=trace):
                self.assertNotIn(trace, log)
                self.assertNotIn(trace, self.server.log())   # nor sealgate's own log


# ----------------------------------------------------------------------------------------------
# 5. Resilience: "UNAVAILABLE (database down; retryable)"

class CallLoop(threading.Thread):
    """Calls GetSecretStore and SetSecret in turn until stopped, recording (time, status)."""

    def __init__(self, api, store_id):
        super().__init__(daemon=True)
        self.api, self.store_id = api, store_id
        self.results = []
        self.done = threading.Event()

    def run(self):
        n = 0
        while not self.done.is_set():
            if n % 2:
                code = status_of(self.api.get_store, self.store_id)
            else:
                code = status_of(self.api.set_secret, self.store_id, "TOKEN", "v%d" % n)
            self.results.append((time.monotonic(), code))
            n += 1
            time.sleep(0.02)

    def first(self, code, after):
        """The time of the first result `code` after `after`, or None."""
        return next((t for t, c in list(self.results) if t > after and c == code), None)

    def between(self, start, end):
        return [c for t, c in list(self.results) if start < t < end]


class DatabaseOutageTest(ApiTestCase):
    """A cluster of its own, stopped and started again under one server process."""

    # Longer than the auth cache's 2 s: the key lookup itself then meets the outage too.
    OUTAGE_S = 2.5
    RECOVERY_BOUND_S = 10.0

    @classmethod
    def setUpClass(cls):
        cls.cluster = helpers.PgCluster()
        try:
            cls.cluster.migrate()
            cls.org = Org.create(cls.cluster, "outage")
            cls.server = helpers.Server(db=cls.cluster.conninfo)
        except Exception:
            cls.cluster.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.cleanup()   # raises on a sanitizer report or a bad exit
        finally:
            cls.cluster.cleanup()

    def test_database_down_gives_unavailable_and_service_resumes_in_the_same_process(self):
        api = self.org.connect(self.server)
        self.addCleanup(api.channel.close)
        store = api.create_store("outage")
        pid = self.server.proc.pid
        loop = CallLoop(api, store.id)
        loop.start()
        self.addCleanup(loop.join, RPC_TIMEOUT_S + 5)
        self.addCleanup(loop.done.set)
        self.assertTrue(wait_until(lambda: loop.first(OK, 0), 5), "no call succeeded")

        self.cluster.stop()
        stopped = time.monotonic()
        self.assertTrue(wait_until(lambda: loop.first(UNAVAILABLE, stopped), 5),
                        "no UNAVAILABLE within 5 s of the database stopping")
        time.sleep(max(0.0, self.OUTAGE_S - (time.monotonic() - stopped)))

        restarting = time.monotonic()
        self.cluster.start()
        restarted = time.monotonic()
        recovered = wait_until(lambda: loop.first(OK, restarted), self.RECOVERY_BOUND_S)
        loop.done.set()
        loop.join(RPC_TIMEOUT_S + 5)

        self.assertTrue(recovered, "no call succeeded within %ss of the database returning"
                        % self.RECOVERY_BOUND_S)
        during = loop.between(stopped, restarting)
        self.assertGreater(len(during), 10)
        self.assertEqual(set(during), {UNAVAILABLE})
        self.assertEqual({c for _, c in loop.results} - {OK}, {UNAVAILABLE})
        self.assertIsNone(self.server.proc.poll(), "the server exited")
        self.assertEqual(self.server.proc.pid, pid)
        self.assertEqual(api.get_store(store.id).id, store.id)


# ----------------------------------------------------------------------------------------------
# 6. Revocation

class RevocationTest(SharedServerTest):

    def test_a_revoked_key_fails_on_every_node_within_5_seconds(self):
        key = self.org.db.create_api_key(self.org.id)
        second_node = helpers.Server()
        self.addCleanup(second_node.cleanup)
        channel = grpc.insecure_channel(second_node.target)
        self.addCleanup(channel.close)
        nodes = [Api(self.api.channel, key), Api(channel, key)]
        for node in nodes:
            node.list_stores()   # the key is now in each node's cache

        self.org.db.revoke_api_key(key)
        revoked = time.monotonic()
        for i, node in enumerate(nodes):
            refused = wait_until(lambda: status_of(node.list_stores) == UNAUTHENTICATED,
                                 REVOCATION_BOUND_S + 5, interval=0.05)
            elapsed = time.monotonic() - revoked
            with self.subTest(node=i):
                self.assertTrue(refused, "the revoked key still works")
                self.assertLess(elapsed, REVOCATION_BOUND_S)
        self.api.list_stores()   # the organization's other key is untouched


# ----------------------------------------------------------------------------------------------
# 6b. Caches across nodes (LISTEN/NOTIFY)

class CrossNodeCacheTest(SharedServerTest):
    """GetSecretStore is served from a per-node cache that PostgreSQL's notifications keep
    exact: a change made through another node shows on this one as soon as the notification
    arrives, and a change made through this node at once."""

    # SPEC §6 allows a second for a change to reach other nodes.
    PROPAGATION_BOUND_S = 1.0

    def test_a_change_through_one_node_reaches_the_other_nodes_cache(self):
        other = helpers.Server()
        self.addCleanup(other.cleanup)
        there = self.org.connect(other)
        self.addCleanup(there.channel.close)
        store = self.new_store("xnode", ["api.openai.com"])
        for _ in range(3):   # cached here now
            self.assertEqual(self.api.get_store(store.id).egress_allowlist, ["api.openai.com"])

        there.update_store(store.id, name=store.name + "-b", egress_allowlist=["a.example.com"],
                           paths=["name", "egress_allowlist"])
        changed = time.monotonic()
        seen = wait_until(lambda: self.api.get_store(store.id).name == store.name + "-b",
                          self.PROPAGATION_BOUND_S + 4, interval=0.01)
        elapsed = time.monotonic() - changed
        self.assertTrue(seen, "the other node's change never showed here")
        self.assertLess(elapsed, self.PROPAGATION_BOUND_S)
        self.assertEqual(self.api.get_store(store.id).egress_allowlist, ["a.example.com"])

        there.delete_store(store.id)
        gone = wait_until(lambda: status_of(self.api.get_store, store.id) == NOT_FOUND,
                          self.PROPAGATION_BOUND_S + 4, interval=0.01)
        self.assertTrue(gone, "a store deleted through another node is still served here")

    def test_a_change_through_this_node_is_read_back_at_once(self):
        store = self.new_store("ryw")
        for i in range(20):
            self.api.get_store(store.id)   # cached
            name = "%s-%d" % (store.name, i)
            self.api.update_store(store.id, name=name, paths=["name"])
            self.assertEqual(self.api.get_store(store.id).name, name)
        self.api.delete_store(store.id)
        self.assertFails(NOT_FOUND, self.api.get_store, store.id)

    def test_another_organization_never_gets_a_cached_store(self):
        store = self.new_store("cached-iso")
        self.api.get_store(store.id)
        self.api.get_store(store.id)
        stranger = Org.create(helpers.shared_db(), "stranger").connect(SHARED)
        self.addCleanup(stranger.channel.close)
        self.assertFails(NOT_FOUND, stranger.get_store, store.id)


# ----------------------------------------------------------------------------------------------
# 7. The scenario in Python, as the README shows it

class PythonClientScenarioTest(unittest.TestCase):
    """A store's life as a Python service drives it through the stubs protoc generates from
    proto/sealgate/v1 (python -m grpc_tools.protoc or protoc --grpc_out)."""

    @classmethod
    def setUpClass(cls):
        cls.target = SHARED.target
        cls.api_key = Org.create(helpers.shared_db(), "scenario").key

    def test_create_a_store_set_secrets_list_update_rotate_and_delete(self):
        from sealgate.v1 import secret_pb2, secret_pb2_grpc
        from sealgate.v1 import secret_store_pb2, secret_store_pb2_grpc

        auth = [("authorization", "Bearer " + self.api_key)]
        with grpc.insecure_channel(self.target) as channel:
            stores = secret_store_pb2_grpc.SecretStoreServiceStub(channel)
            secrets = secret_pb2_grpc.SecretServiceStub(channel)

            # A store for a payments agent: its sandboxes may reach Stripe and nothing else.
            store = stores.CreateSecretStore(
                secret_store_pb2.CreateSecretStoreRequest(
                    name="payments", egress_allowlist=["api.stripe.com"]),
                metadata=auth, timeout=10)

            # Two secrets; the Stripe key may only ever be sent to Stripe.
            secrets.SetSecret(
                secret_pb2.SetSecretRequest(
                    store_id=store.id, name="STRIPE_API_KEY", value="sk_test_4eC39HqLyjWDarjtT1",
                    allowed_hosts=["api.stripe.com"]),
                metadata=auth, timeout=10)
            secrets.SetSecret(
                secret_pb2.SetSecretRequest(
                    store_id=store.id, name="WEBHOOK_SECRET", value="whsec_5WbX5kEWLlfzsGNj"),
                metadata=auth, timeout=10)

            # Listing shows names and versions, never values.
            listed = secrets.ListSecrets(
                secret_pb2.ListSecretsRequest(store_id=store.id), metadata=auth, timeout=10)
            self.assertEqual({(s.name, s.version) for s in listed.secrets},
                             {("STRIPE_API_KEY", 1), ("WEBHOOK_SECRET", 1)})

            # The agent needs OpenAI too: widen the allowlist; only the masked field changes.
            store = stores.UpdateSecretStore(
                secret_store_pb2.UpdateSecretStoreRequest(
                    store_id=store.id, egress_allowlist=["api.stripe.com", "*.openai.com"],
                    update_mask=field_mask_pb2.FieldMask(paths=["egress_allowlist"])),
                metadata=auth, timeout=10)
            self.assertEqual(store.name, "payments")
            self.assertEqual(list(store.egress_allowlist), ["api.stripe.com", "*.openai.com"])

            # Rotating a key is another SetSecret on the same name: the next version.
            rotated = secrets.SetSecret(
                secret_pb2.SetSecretRequest(
                    store_id=store.id, name="STRIPE_API_KEY", value="sk_test_rotated_51Hx",
                    allowed_hosts=["api.stripe.com"]),
                metadata=auth, timeout=10)
            self.assertEqual(rotated.version, 2)

            # Done with the webhook, then with the whole store.
            secrets.DeleteSecret(
                secret_pb2.DeleteSecretRequest(store_id=store.id, name="WEBHOOK_SECRET"),
                metadata=auth, timeout=10)
            listed = secrets.ListSecrets(
                secret_pb2.ListSecretsRequest(store_id=store.id), metadata=auth, timeout=10)
            self.assertEqual([s.name for s in listed.secrets], ["STRIPE_API_KEY"])

            stores.DeleteSecretStore(
                secret_store_pb2.DeleteSecretStoreRequest(store_id=store.id),
                metadata=auth, timeout=10)
            with self.assertRaises(grpc.RpcError) as gone:
                stores.GetSecretStore(
                    secret_store_pb2.GetSecretStoreRequest(store_id=store.id),
                    metadata=auth, timeout=10)
            self.assertEqual(gone.exception.code(), grpc.StatusCode.NOT_FOUND)


# ----------------------------------------------------------------------------------------------
# 8. The command line

def clean_env():
    """The environment without SEALGATE_* variables, which sealgate reads as flags."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SEALGATE_")}


class CommandLineTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.keydir = tempfile.mkdtemp(prefix="sealgate-e2e-cli-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.keydir, ignore_errors=True)

    def fresh_database(self, prefix):
        return helpers.shared_db().create_database(prefix + "_" + uuid.uuid4().hex[:12])

    def key_file(self, name, content, mode=0o600):
        path = os.path.join(self.keydir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(path, mode)   # whatever the umask
        return path

    def serve(self, *flags, db=None):
        """Runs `sealgate serve`, which must refuse to start: returns the CompletedProcess."""
        data = tempfile.mkdtemp(prefix="sealgate-e2e-data-")
        self.addCleanup(shutil.rmtree, data, True)
        args = ["serve", "--grpc-listen", "127.0.0.1:0", "--db-wait", "0",
                "--db", db or helpers.shared_db().conninfo, "--data-dir", data] + list(flags)
        try:
            out = helpers.sealgate_cli(*args, env=clean_env(), timeout=20)
        except subprocess.TimeoutExpired:
            self.fail("sealgate serve %s started serving instead of refusing" % " ".join(flags))
        assert_no_sanitizer_report(self, out)
        return out

    def test_migrate_twice_is_idempotent(self):
        db = self.fresh_database("migrate")
        first = helpers.sealgate_cli("migrate", "--db", db.conninfo)
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertIn("applied migration 0001_init", first.stdout)
        self.assertIn("applied migration 0002_sandboxes", first.stdout)
        self.assertIn("applied migration 0003_audit", first.stdout)
        second = helpers.sealgate_cli("migrate", "--db", db.conninfo)
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertIn("up to date", second.stdout)
        self.assertNotIn("applied", second.stdout)
        self.assertEqual(db.psql("SELECT count(*) FROM sealgate_schema").strip(),
                         str(first.stdout.count("applied migration")))

    def test_serve_refuses_an_unmigrated_database_and_says_to_migrate(self):
        """On a database never migrated, serve exits non-zero and says to run `sealgate
        migrate` (regression: it used to print a raw SQL error)."""
        db = self.fresh_database("unmigrated")
        out = self.serve("--root-key-file", helpers.shared_root_key(), db=db.conninfo)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("sealgate migrate", out.stderr)

    def test_serve_refuses_to_start_without_a_root_key_file(self):
        out = self.serve()
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("--root-key-file", out.stderr)

    def test_serve_refuses_a_root_key_file_others_may_read(self):
        path = self.key_file("shared.key", os.urandom(32).hex() + "\n", mode=0o644)
        out = self.serve("--root-key-file", path)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(path, out.stderr)
        self.assertIn("readable by others", out.stderr)

    def test_serve_refuses_a_root_key_of_63_hex_characters(self):
        key = os.urandom(32).hex()[:63]
        path = self.key_file("short.key", key + "\n")
        out = self.serve("--root-key-file", path)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("64 hexadecimal characters", out.stderr)
        self.assertNotIn(key, out.stderr + out.stdout)   # the message never shows the key

    def test_admin_create_org_json_prints_the_org_id_and_a_53_character_osk_key(self):
        db = helpers.shared_db()
        out = helpers.sealgate_cli("admin", "create-org", "acme", "--db", db.conninfo, "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        data = json.loads(out.stdout)
        self.assertEqual(set(data), {"org_id", "api_key"})
        self.assertEqual(str(uuid.UUID(data["org_id"])), data["org_id"])
        key = data["api_key"]
        self.assertRegex(key, r"^osk_[0-9A-Za-z]{49}$")
        self.assertEqual(len(key), 53)
        # Only the key's SHA-256 digest is stored (SPEC §4), and the key works.
        row = db.psql("SELECT encode(digest, 'hex'), prefix, k::text FROM api_keys k "
                      "WHERE org_id = '%s'" % data["org_id"]).strip().split("|", 2)
        self.assertEqual(row[0], hashlib.sha256(key.encode()).hexdigest())
        self.assertEqual(row[1], key[:12])
        self.assertNotIn(key[12:], row[2])
        client = Org(db, data["org_id"], key).connect(SHARED)
        self.addCleanup(client.channel.close)
        self.assertEqual(list(client.list_stores().secret_stores), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
