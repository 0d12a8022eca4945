"""End-to-end: sandboxes, checkpoints, snapshots and the local process runtime as real clients
see them (SPEC §2 SandboxService and "Semantics", §5).

A grpcio client with protoc-generated stubs talks to sealgate-test-server over a real
PostgreSQL cluster (helpers.shared_db). Most tests share one server started with
--local-runtime (RunCommand runs /bin/sh -c in the sandbox's directory under its data dir);
a second server without it checks what an orchestrator that runs real VMs sees (RunCommand
UNIMPLEMENTED, the CA file path it must fill, --proxy-advertise, --sandbox-ca-file).

  1. Sealed tokens and the proxy configuration in a sandbox's env (SPEC §2, §5).
  2. A sandbox's life: expiry, deletion, listing.
  3. Layering: checkpoints and CreateSandboxFromCheckpoint; GetAllowedHosts.
  4. Stores changing under running sandboxes: deletion, rotation, allowlist changes.
  5. Snapshots.
  6. Isolation between organizations, authentication, bad input.
  7. The local process runtime: RunCommand, checkpoint copies, snapshot builds, kills.
  8. The server without --local-runtime.

Every test makes an organization of its own (per class) and uniquely named stores, so the
tests do not depend on each other's order. At the end of the module the servers' logs are
searched for every secret value, sealed token and proxy credential the tests saw: none may be
there (SPEC §3). helpers.Server.cleanup, also at the end, fails the module on a sanitizer
report in a server's log (the suite runs again against the ASan build).

Server bugs these tests found (fixed; the tests stay as their regression tests):
  - The local runtime's sweep of ended sandboxes leaked the text of its uuid[] parameter on
    every pass that found a sandbox directory (LeakSanitizer at exit under the ASan build).
  - A plain env of 256 entries of 64 KiB (16 MiB) was accepted, and every RunCommand in that
    sandbox then failed with "Argument list too long": env is now capped at 512 KiB in all.
  - A fork with the checkpoint's own store on top listed that store twice.
  - A command that could not start told the client the server's paths.
  (Found by review, with tests here: RunCommand replies over the cap after UTF-8 cleaning; a
  cwd leading out through a link; a .sealgate link in a checkpoint followed when writing the
  fork's CA file; a fork failing once its checkpoint's snapshot was deleted; a store secret
  named like a proxy variable duplicating the env key.)
"""

import concurrent.futures
import datetime
import os
import re
import shutil
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

# Generous upper bound for any single RPC that does not wait on a command.
RPC_TIMEOUT_S = 15.0

OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED

MIB = 1024 * 1024
TOKEN_RE = re.compile(r"^osb_sealed_[0-9a-f]{32}$")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
PROXY_URL_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
NO_PROXY_VARS = ("NO_PROXY", "no_proxy")
CA_FILE_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE",
                "GIT_SSL_CAINFO")
PROXY_VARS = PROXY_URL_VARS + NO_PROXY_VARS + CA_FILE_VARS
NO_PROXY_VALUE = "localhost,127.0.0.1,::1"
DEFAULT_CA_FILE = "/etc/sealgate/proxy-ca.pem"
DEFAULT_PROXY = "127.0.0.1:3128"

# A variable of the test process (so of the server's environment) that must never reach a
# sandbox's command.
PARENT_CANARY = ("SEALGATE_E2E_PARENT_CANARY", "parent-env-" + uuid.uuid4().hex)

S = None            # generated stubs (helpers.Stubs)
SHARED = None       # --local-runtime server most tests use
PLAIN = None        # server without --local-runtime
SENSITIVE = set()   # every secret value, sealed token and proxy credential the tests saw
_sensitive_lock = threading.Lock()


def remember(*items):
    with _sensitive_lock:
        SENSITIVE.update(i for i in items if i)


def setUpModule():
    global S, SHARED, PLAIN
    S = helpers.stubs()
    os.environ[PARENT_CANARY[0]] = PARENT_CANARY[1]
    try:
        SHARED = helpers.Server("--local-runtime", "--threads", "2")
        PLAIN = helpers.Server("--threads", "2")
    finally:
        del os.environ[PARENT_CANARY[0]]


def tearDownModule():
    """Stops the servers (helpers.Server.cleanup checks for a clean exit and no sanitizer
    report) after searching their logs for anything secret (SPEC §3: "Secret values and tokens
    never reach a log")."""
    problems = []
    for server in (SHARED, PLAIN):
        if server is None:
            continue
        log = server.log()
        leaked = sorted(s for s in SENSITIVE if s in log)
        if leaked:
            problems.append("%s's log holds %d secret(s), e.g. %r" %
                            (server.workdir, len(leaked), leaked[0]))
        if "osb_sealed_" in log:
            problems.append("%s's log holds a sealed token" % server.workdir)
    for server in (SHARED, PLAIN):
        if server is not None:
            try:
                server.cleanup()
            except AssertionError as e:
                problems.append(str(e))
    if not SENSITIVE:
        problems.append("no secrets were recorded: the log check checked nothing")
    if problems:
        raise AssertionError("\n".join(problems))


# ----------------------------------------------------------------------------------------------
# Client-side helpers

class Api:
    """One organization's view of the API on `server`: the generated stubs, its API key on
    every call. Every sealed token and proxy credential it sees is remembered for the log
    check."""

    def __init__(self, server, api_key):
        self.server = server
        self.channel = grpc.insecure_channel(
            server.target, options=[("grpc.max_receive_message_length", 16 * MIB)])
        self.metadata = (("authorization", "Bearer " + api_key),)
        self.stores = S.secret_store_grpc.SecretStoreServiceStub(self.channel)
        self.secrets = S.secret_grpc.SecretServiceStub(self.channel)
        self.sandboxes = S.sandbox_grpc.SandboxServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def with_header(self, value):
        """This Api on the same channel, whose calls carry `authorization: value` (None: no
        such metadata)."""
        other = Api.__new__(Api)
        other.__dict__.update(self.__dict__)
        other.metadata = () if value is None else (("authorization", value),)
        return other

    def _call(self, method, request, timeout=RPC_TIMEOUT_S):
        return method(request, metadata=self.metadata, timeout=timeout)

    # --- stores and secrets

    def create_store(self, name=None, egress_allowlist=()):
        request = S.secret_store_pb2.CreateSecretStoreRequest(
            name=name or unique("store"), egress_allowlist=list(egress_allowlist))
        return self._call(self.stores.CreateSecretStore, request)

    def update_allowlist(self, store_id, egress_allowlist):
        request = S.secret_store_pb2.UpdateSecretStoreRequest(
            store_id=store_id, egress_allowlist=list(egress_allowlist),
            update_mask=field_mask_pb2.FieldMask(paths=["egress_allowlist"]))
        return self._call(self.stores.UpdateSecretStore, request)

    def delete_store(self, store_id):
        return self._call(self.stores.DeleteSecretStore,
                          S.secret_store_pb2.DeleteSecretStoreRequest(store_id=store_id))

    def set_secret(self, store_id, name, value=None, allowed_hosts=()):
        value = value or secret_value(name)
        remember(value)
        request = S.secret_pb2.SetSecretRequest(
            store_id=store_id, name=name, value=value, allowed_hosts=list(allowed_hosts))
        return self._call(self.secrets.SetSecret, request)

    def delete_secret(self, store_id, name):
        return self._call(self.secrets.DeleteSecret,
                          S.secret_pb2.DeleteSecretRequest(store_id=store_id, name=name))

    def store_with(self, secrets, egress_allowlist=(), prefix="store"):
        """A new store holding `secrets` ({name: value} or {name: (value, allowed_hosts)})."""
        store = self.create_store(unique(prefix), egress_allowlist)
        for name, spec in secrets.items():
            value, hosts = spec if isinstance(spec, tuple) else (spec, ())
            self.set_secret(store.id, name, value, hosts)
        return store

    # --- sandboxes

    def _seen(self, sandbox):
        tokens = [v for v in sandbox.env.values() if v.startswith("osb_sealed_")]
        m = re.match(r"^http://[^:]+:([^@]+)@", sandbox.proxy.url)
        remember(*tokens, m.group(1) if m else None)
        return sandbox

    def create_sandbox(self, secret_store="", snapshot="", timeout_seconds=0, env=None):
        request = S.sandbox_pb2.CreateSandboxRequest(
            secret_store=secret_store, snapshot=snapshot, timeout_seconds=timeout_seconds,
            env=env or {})
        return self._seen(self._call(self.sandboxes.CreateSandbox, request))

    def get_sandbox(self, sandbox_id):
        return self._seen(self._call(self.sandboxes.GetSandbox,
                                     S.sandbox_pb2.GetSandboxRequest(sandbox_id=sandbox_id)))

    def list_sandboxes(self, page_size=0, page_token=""):
        page = self._call(self.sandboxes.ListSandboxes, S.sandbox_pb2.ListSandboxesRequest(
            page_size=page_size, page_token=page_token))
        for s in page.sandboxes:
            self._seen(s)
        return page

    def all_sandboxes(self):
        out, token = [], ""
        for _ in range(1000):
            page = self.list_sandboxes(1000, token)
            out += list(page.sandboxes)
            token = page.next_page_token
            if not token:
                return out
        raise AssertionError("ListSandboxes never ended")

    def delete_sandbox(self, sandbox_id):
        return self._call(self.sandboxes.DeleteSandbox,
                          S.sandbox_pb2.DeleteSandboxRequest(sandbox_id=sandbox_id))

    def checkpoint(self, sandbox_id, name=None):
        return self._call(self.sandboxes.CreateCheckpoint, S.sandbox_pb2.CreateCheckpointRequest(
            sandbox_id=sandbox_id, name=unique("cp") if name is None else name))

    def fork(self, checkpoint_id, secret_store="", timeout_seconds=0):
        request = S.sandbox_pb2.CreateSandboxFromCheckpointRequest(
            checkpoint_id=checkpoint_id, secret_store=secret_store,
            timeout_seconds=timeout_seconds)
        return self._seen(self._call(self.sandboxes.CreateSandboxFromCheckpoint, request))

    def create_snapshot(self, name, base="", apt_packages=(), pip_packages=(), run_commands=(),
                        timeout=60.0):
        image = S.resources_pb2.Image(base=base, apt_packages=list(apt_packages),
                                      pip_packages=list(pip_packages),
                                      run_commands=list(run_commands))
        return self._call(self.sandboxes.CreateSnapshot,
                          S.sandbox_pb2.CreateSnapshotRequest(name=name, image=image), timeout)

    def get_snapshot(self, name):
        return self._call(self.sandboxes.GetSnapshot, S.sandbox_pb2.GetSnapshotRequest(name=name))

    def list_snapshots(self):
        return list(self._call(self.sandboxes.ListSnapshots,
                               S.sandbox_pb2.ListSnapshotsRequest()).snapshots)

    def delete_snapshot(self, name):
        return self._call(self.sandboxes.DeleteSnapshot,
                          S.sandbox_pb2.DeleteSnapshotRequest(name=name))

    def allowed_hosts(self, sandbox_id):
        """(egress_allowlist, {secret name: [hosts]})"""
        r = self._call(self.sandboxes.GetAllowedHosts,
                       S.sandbox_pb2.GetAllowedHostsRequest(sandbox_id=sandbox_id))
        return list(r.egress_allowlist), {k: list(v.hosts) for k, v in
                                          r.secret_allowed_hosts.items()}

    def run(self, sandbox_id, command, cwd="", timeout_seconds=0):
        request = S.sandbox_pb2.RunCommandRequest(
            sandbox_id=sandbox_id, command=command, cwd=cwd, timeout_seconds=timeout_seconds)
        return self._call(self.sandboxes.RunCommand, request,
                          timeout=(timeout_seconds or 60) + RPC_TIMEOUT_S)


unique = helpers.unique


def secret_value(name="V"):
    """A distinctive secret value (searched for in the logs at the end)."""
    return "val-%s-%s" % (name.lower(), uuid.uuid4().hex)


wait_until = helpers.wait_until


status_of = helpers.status_of


def parse_time(stamp):
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)


def secret_env(sandbox):
    """The sandbox's env without the proxy variables."""
    return {k: v for k, v in sandbox.env.items() if k not in PROXY_VARS}


def proxy_credential(test, sandbox, host_port=DEFAULT_PROXY):
    """The proxy token in sandbox.proxy.url, after checking the URL's shape."""
    m = re.match(r"^http://([0-9a-f-]{36}):([0-9a-f]{32})@(.+)$", sandbox.proxy.url)
    test.assertIsNotNone(m, sandbox.proxy.url)
    test.assertEqual(m.group(1), sandbox.id)
    test.assertEqual(m.group(3), host_port)
    return m.group(2)


def data_dir(server):
    return os.path.join(server.workdir, "data")


def sandbox_dir(sandbox_id):
    return os.path.join(data_dir(SHARED), "sandboxes", sandbox_id)


def openssl_text(pem):
    out = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem.encode(),
                         capture_output=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError("openssl cannot parse the CA certificate: %s" % out.stderr)
    return out.stdout.decode()


class ApiTestCase(helpers.StatusAssertions):
    """Status assertions, and an organization per class on the shared server."""

    server_name = "SHARED"

    @classmethod
    def setUpClass(cls):
        server = globals()[cls.server_name]
        cls.org_id, cls.key = helpers.shared_db().create_org(cls.__name__)
        cls.api = Api(server, cls.key)

    @classmethod
    def tearDownClass(cls):
        cls.api.close()

    def new_org_api(self, name="other", server=None):
        """An Api for a new organization, closed when the test ends."""
        _, key = helpers.shared_db().create_org(name)
        api = Api(server or self.api.server, key)
        self.addCleanup(api.close)
        return api

    def assertInvalid(self, field, fn, *args, **kwargs):
        """INVALID_ARGUMENT, and the message starts by naming `field` ("name: ...",
        "env[\"X\"]: ...")."""
        e = self.assertFails(INVALID_ARGUMENT, fn, *args, **kwargs)
        details = e.details() or ""
        self.assertTrue(details.startswith(field) and details[len(field):][:1] in (":", "["),
                        "the message should name %r: %r" % (field, details))
        return e

    def assertSameSandbox(self, got, want):
        """GetSandbox/ListSandboxes show what CreateSandbox returned (status aside)."""
        for field in ("id", "org_id", "snapshot", "checkpoint_id", "created_at", "expires_at"):
            self.assertEqual(getattr(got, field), getattr(want, field), field)
        self.assertEqual(list(got.secret_stores), list(want.secret_stores))
        self.assertEqual(dict(got.env), dict(want.env))
        self.assertEqual(got.proxy, want.proxy)

    def run_ok(self, sandbox_id, command, **kwargs):
        """RunCommand that must exit 0; returns its stdout."""
        r = self.api.run(sandbox_id, command, **kwargs)
        self.assertEqual(r.exit_code, 0, "%r: stdout %r stderr %r" % (command, r.stdout,
                                                                       r.stderr))
        return r.stdout


# ----------------------------------------------------------------------------------------------
# 1. Sealed tokens and the proxy configuration

class TokenTest(ApiTestCase):

    def test_tokens_are_osb_sealed_32_hex_unique_per_sandbox_and_secret_never_a_value(self):
        """Each secret becomes an env var holding a fresh sealed token; tokens are unique per
        sandbox and per secret, 128 random bits (osb_sealed_<32 lowercase hex>)."""
        values = {name: secret_value(name) for name in ("OPENAI_API_KEY", "GITHUB_TOKEN", "DB_PW")}
        store = self.api.store_with(values)
        tokens = []
        for _ in range(20):
            sandbox = self.api.create_sandbox(store.name)
            env = secret_env(sandbox)
            self.assertEqual(set(env), set(values))
            for name, token in env.items():
                self.assertRegex(token, TOKEN_RE)
                for value in values.values():
                    self.assertNotIn(value, token)
                    self.assertNotIn(token, value)
                tokens.append(token)
            for value in values.values():
                self.assertNotIn(value.encode(), sandbox.SerializeToString())
        self.assertEqual(len(tokens), 60)
        self.assertEqual(len(set(tokens)), 60, "a sealed token repeated")
        # 128 random bits: every hex digit shows up across 60 tokens.
        self.assertEqual(set("".join(t[len("osb_sealed_"):] for t in tokens)),
                         set("0123456789abcdef"))

    def test_get_sandbox_returns_exactly_the_env_and_proxy_create_returned(self):
        """GetSandbox returns the same env (tokens, plain entries, proxy variables) and proxy
        configuration as CreateSandbox, every time."""
        store = self.api.store_with({"ANTHROPIC_API_KEY": secret_value(), "B": secret_value()},
                                    ["api.anthropic.com"])
        created = self.api.create_sandbox(store.name, env={"PLAIN": "p", "EMPTY": ""},
                                          timeout_seconds=1000)
        self.assertEqual(created.status, "running")
        self.assertEqual(list(created.secret_stores), [store.name])
        self.assertEqual(created.org_id, self.org_id)
        self.assertEqual(str(uuid.UUID(created.id)), created.id)
        self.assertEqual((created.env["PLAIN"], created.env["EMPTY"]), ("p", ""))
        for _ in range(3):
            got = self.api.get_sandbox(created.id)
            self.assertSameSandbox(got, created)
            self.assertEqual(got.status, "running")
        listed = [s for s in self.api.all_sandboxes() if s.id == created.id]
        self.assertEqual(len(listed), 1)
        self.assertSameSandbox(listed[0], created)

    def test_timestamps_are_rfc3339_utc_and_expires_at_is_created_plus_timeout(self):
        """timeout_seconds (default 300) sets expires_at."""
        for timeout, want in [(0, 300), (1000, 1000), (604800, 604800)]:
            with self.subTest(timeout_seconds=timeout):
                sandbox = self.api.create_sandbox(timeout_seconds=timeout)
                self.assertRegex(sandbox.created_at, RFC3339_UTC)
                self.assertRegex(sandbox.expires_at, RFC3339_UTC)
                created = parse_time(sandbox.created_at)
                now = datetime.datetime.now(datetime.timezone.utc)
                self.assertLess(abs((now - created).total_seconds()), 120)
                delta = (parse_time(sandbox.expires_at) - created).total_seconds()
                self.assertIn(delta, (want, want + 1))   # whole seconds, truncated apart

    def test_proxy_url_carries_a_per_sandbox_credential_and_the_proxy_variables_are_set(self):
        """proxy.url = http://<sandbox_id>:<proxy_token>@host:port; HTTPS_PROXY, HTTP_PROXY,
        https_proxy, http_proxy = proxy.url; NO_PROXY=localhost,127.0.0.1,::1 (SPEC §5)."""
        store = self.api.store_with({"K": secret_value()})
        credentials = set()
        for _ in range(5):
            sandbox = self.api.create_sandbox(store.name)
            credential = proxy_credential(self, sandbox)
            credentials.add(credential)
            self.assertNotIn(credential, sandbox.env["K"])
            for var in PROXY_URL_VARS:
                self.assertEqual(sandbox.env[var], sandbox.proxy.url, var)
            for var in NO_PROXY_VARS:
                self.assertEqual(sandbox.env[var], NO_PROXY_VALUE, var)
            ca_file = os.path.join(sandbox_dir(sandbox.id), ".sealgate", "proxy-ca.pem")
            for var in CA_FILE_VARS:
                self.assertEqual(sandbox.env[var], ca_file, var)
        self.assertEqual(len(credentials), 5, "a proxy credential repeated")

    def test_the_ca_is_a_p256_ca_certificate_and_its_key_is_mode_0600(self):
        """proxy.ca_cert_pem is the CA that signs the proxy's certificates: a CA (CA:TRUE) on
        P-256, made in --data-dir at first start; its key file is readable by the owner only."""
        sandbox = self.api.create_sandbox()
        pem = sandbox.proxy.ca_cert_pem
        self.assertTrue(pem.startswith("-----BEGIN CERTIFICATE-----"), pem[:60])
        text = openssl_text(pem)
        self.assertIn("CA:TRUE", text)
        self.assertTrue("prime256v1" in text or "P-256" in text, text)
        cert_path = os.path.join(data_dir(SHARED), "proxy-ca.pem")
        key_path = os.path.join(data_dir(SHARED), "proxy-ca.key")
        with open(cert_path) as f:
            self.assertEqual(f.read(), pem)
        self.assertEqual(os.stat(key_path).st_mode & 0o777, 0o600)
        # The key is the certificate's.
        cert_pub = subprocess.run(["openssl", "x509", "-noout", "-pubkey", "-in", cert_path],
                                  capture_output=True, timeout=30, check=True).stdout
        key_pub = subprocess.run(["openssl", "pkey", "-pubout", "-in", key_path],
                                 capture_output=True, timeout=30, check=True).stdout
        self.assertEqual(cert_pub, key_pub)
        # Every sandbox gets the same CA.
        self.assertEqual(self.api.create_sandbox().proxy.ca_cert_pem, pem)

    def test_plain_env_may_not_set_the_proxy_variables(self):
        """The proxy variables are sealgate's: plain env setting one is INVALID_ARGUMENT."""
        for name in PROXY_VARS:
            with self.subTest(name=name):
                self.assertInvalid("env", self.api.create_sandbox, env={name: "http://evil:1"})

    def test_plain_env_wins_over_a_store_secret_of_the_same_name(self):
        """Plain env entries win over a store secret of the same name."""
        store = self.api.store_with({"TOKEN": secret_value(), "OTHER": secret_value()})
        sandbox = self.api.create_sandbox(store.name, env={"TOKEN": "plain-value"})
        self.assertEqual(sandbox.env["TOKEN"], "plain-value")
        self.assertRegex(sandbox.env["OTHER"], TOKEN_RE)
        self.assertEqual(self.api.get_sandbox(sandbox.id).env["TOKEN"], "plain-value")
        _, secrets = self.api.allowed_hosts(sandbox.id)
        self.assertEqual(set(secrets), {"OTHER"})
        self.assertEqual(self.run_ok(sandbox.id, 'printf %s "$TOKEN"'), "plain-value")

    def test_a_sandbox_without_a_store_gets_the_proxy_config_and_every_public_host(self):
        """A sandbox created with no store still gets the proxy configuration and may reach
        every public host (GetAllowedHosts: ["*"])."""
        sandbox = self.api.create_sandbox(env={"X": "1"})
        self.assertEqual(list(sandbox.secret_stores), [])
        self.assertEqual(set(sandbox.env), set(PROXY_VARS) | {"X"})
        proxy_credential(self, sandbox)
        self.assertTrue(sandbox.proxy.ca_cert_pem)
        self.assertEqual(self.api.allowed_hosts(sandbox.id), (["*"], {}))

    def test_a_missing_store_or_snapshot_is_not_found(self):
        """CreateSandbox resolves secret_store (and snapshot) by name at creation: missing is
        NOT_FOUND, and so is a deleted store's name."""
        self.assertFails(NOT_FOUND, self.api.create_sandbox, unique("nostore"))
        self.assertFails(NOT_FOUND, self.api.create_sandbox, snapshot=unique("nosnap"))
        store = self.api.store_with({"K": secret_value()})
        self.api.delete_store(store.id)
        self.assertFails(NOT_FOUND, self.api.create_sandbox, store.name)
        snap = self.api.create_snapshot(unique("snap"))
        self.api.delete_snapshot(snap.name)
        self.assertFails(NOT_FOUND, self.api.create_sandbox, snapshot=snap.name)
        existing = self.api.store_with({"K": secret_value()})
        self.assertFails(NOT_FOUND, self.api.create_sandbox, existing.name, unique("nosnap"))


# ----------------------------------------------------------------------------------------------
# 2. A sandbox's life

class LifecycleTest(ApiTestCase):

    def wait_status(self, sandbox_id, status, timeout=6.0):
        got = wait_until(lambda: self.api.get_sandbox(sandbox_id).status == status, timeout)
        self.assertTrue(got, "sandbox %s not %s after %ss: %s" %
                        (sandbox_id, status, timeout, self.api.get_sandbox(sandbox_id).status))

    def test_after_its_timeout_a_sandbox_is_expired_and_refuses_checkpoints_and_commands(self):
        """timeout_seconds sets expires_at; after it the sandbox is `expired`, still readable;
        checkpoints and commands need a running sandbox (FAILED_PRECONDITION)."""
        store = self.api.store_with({"K": secret_value()})
        sandbox = self.api.create_sandbox(store.name, timeout_seconds=1)
        self.wait_status(sandbox.id, "expired")
        got = self.api.get_sandbox(sandbox.id)
        self.assertSameSandbox(got, sandbox)
        self.assertFails(FAILED_PRECONDITION, self.api.checkpoint, sandbox.id)
        self.assertFails(FAILED_PRECONDITION, self.api.run, sandbox.id, "true")
        self.assertEqual([s.status for s in self.api.all_sandboxes() if s.id == sandbox.id],
                         ["expired"])

    def test_a_deleted_sandbox_is_stopped_still_readable_and_refuses_commands(self):
        """A deleted sandbox stays readable with status: stopped; deleting twice is fine;
        commands and checkpoints are refused (FAILED_PRECONDITION)."""
        store = self.api.store_with({"K": secret_value()}, ["api.example.com"])
        sandbox = self.api.create_sandbox(store.name)
        self.run_ok(sandbox.id, "true")
        self.api.delete_sandbox(sandbox.id)
        got = self.api.get_sandbox(sandbox.id)
        self.assertEqual(got.status, "stopped")
        self.assertSameSandbox(got, sandbox)
        self.api.delete_sandbox(sandbox.id)
        self.assertEqual(self.api.get_sandbox(sandbox.id).status, "stopped")
        self.assertFails(FAILED_PRECONDITION, self.api.run, sandbox.id, "true")
        self.assertFails(FAILED_PRECONDITION, self.api.checkpoint, sandbox.id)
        self.assertEqual([s.status for s in self.api.all_sandboxes() if s.id == sandbox.id],
                         ["stopped"])

    def test_unknown_sandbox_ids_are_not_found(self):
        missing = str(uuid.uuid4())
        for name, call in [("GetSandbox", self.api.get_sandbox),
                           ("DeleteSandbox", self.api.delete_sandbox),
                           ("CreateCheckpoint", self.api.checkpoint),
                           ("GetAllowedHosts", self.api.allowed_hosts),
                           ("CreateSandboxFromCheckpoint", self.api.fork)]:
            for sid in (missing, "abcdef"):   # the second is no UUID but only id characters
                with self.subTest(method=name, id=sid):
                    self.assertFails(NOT_FOUND, call, sid)
        self.assertFails(NOT_FOUND, self.api.run, missing, "true")


class ListSandboxesTest(ApiTestCase):

    def setUp(self):
        self.own = self.new_org_api("pages")   # an organization whose sandboxes we know

    def walk(self, page_size):
        pages, token = [], ""
        for _ in range(100):
            page = self.own.list_sandboxes(page_size, token)
            pages.append([s.id for s in page.sandboxes])
            token = page.next_page_token
            if not token:
                return pages
        raise AssertionError("more than 100 pages")

    def test_pages_show_every_sandbox_once_in_a_stable_order(self):
        """ListSandboxes paginates with page_size and page_token, like ListSecretStores."""
        store = self.own.store_with({"K": secret_value()})
        created = [self.own.create_sandbox(store.name if i % 2 else "").id for i in range(7)]
        self.own.delete_sandbox(created[3])   # stopped sandboxes are listed too
        pages = self.walk(3)
        self.assertEqual([len(p) for p in pages], [3, 3, 1])
        listed = [i for p in pages for i in p]
        self.assertEqual(len(listed), len(set(listed)))
        self.assertEqual(set(listed), set(created))
        self.assertEqual(self.walk(3), pages)
        self.assertEqual(self.walk(7), [listed])
        self.assertEqual(self.walk(0), [listed])
        self.assertEqual(self.walk(1000), [listed])

    def test_bad_page_size_or_token_is_invalid_argument(self):
        self.own.create_sandbox()
        self.assertInvalid("page_size", self.own.list_sandboxes, -1)
        self.assertInvalid("page_size", self.own.list_sandboxes, 1001)
        for token in ["nope", "MXwyMDI2fGFiYw==", "x" * 300]:
            with self.subTest(page_token=token):
                self.assertInvalid("page_token", self.own.list_sandboxes, 1, token)


# ----------------------------------------------------------------------------------------------
# 3. Layering and GetAllowedHosts

class LayeringTest(ApiTestCase):

    def test_a_checkpoint_records_the_sandboxs_layers_and_a_fork_puts_a_store_on_top(self):
        """CreateSandboxFromCheckpoint takes the checkpoint's layers and puts secret_store on
        top; secret_stores lists base layer first; checkpoint_id is set; every token is fresh."""
        base = self.api.store_with({"BASE_ONLY": secret_value()}, ["base.example.com"], "base")
        top = self.api.store_with({"TOP_ONLY": secret_value()}, ["top.example.com"], "top")
        third = self.api.store_with({"THIRD": secret_value()}, ["third.example.com"], "third")
        parent = self.api.create_sandbox(base.name)
        cp = self.api.checkpoint(parent.id, "first-cp")
        self.assertEqual((cp.sandbox_id, cp.name, list(cp.secret_stores)),
                         (parent.id, "first-cp", [base.name]))
        self.assertRegex(cp.created_at, RFC3339_UTC)
        self.assertEqual(str(uuid.UUID(cp.id)), cp.id)
        child = self.api.fork(cp.id, top.name)
        self.assertEqual(list(child.secret_stores), [base.name, top.name])
        self.assertEqual(child.checkpoint_id, cp.id)
        self.assertEqual(child.status, "running")
        self.assertNotEqual(child.id, parent.id)
        self.assertEqual(set(secret_env(child)), {"BASE_ONLY", "TOP_ONLY"})
        self.assertNotEqual(child.env["BASE_ONLY"], parent.env["BASE_ONLY"])
        self.assertRegex(child.env["TOP_ONLY"], TOKEN_RE)
        self.assertNotEqual(proxy_credential(self, child), proxy_credential(self, parent))
        self.assertSameSandbox(self.api.get_sandbox(child.id), child)
        # A fork of a fork: three layers, base first.
        cp2 = self.api.checkpoint(child.id)
        self.assertEqual(list(cp2.secret_stores), [base.name, top.name])
        grandchild = self.api.fork(cp2.id, third.name)
        self.assertEqual(list(grandchild.secret_stores), [base.name, top.name, third.name])
        self.assertEqual(set(secret_env(grandchild)), {"BASE_ONLY", "TOP_ONLY", "THIRD"})
        allow, _ = self.api.allowed_hosts(grandchild.id)
        self.assertEqual(sorted(allow),
                         ["base.example.com", "third.example.com", "top.example.com"])

    def test_on_a_name_collision_the_top_layer_wins_with_its_own_token_and_hosts(self):
        """Secrets merge by name, the top layer winning; a winning secret keeps its own
        allowed_hosts."""
        base = self.api.store_with({"KEY": (secret_value(), ["a.example.com"]),
                                    "KEEP": (secret_value(), ["a.example.com"])},
                                   ["a.example.com", "b.example.com"], "base")
        top = self.api.store_with({"KEY": (secret_value(), ["b.example.com"])},
                                  ["a.example.com", "b.example.com"], "top")
        parent = self.api.create_sandbox(base.name)
        child = self.api.fork(self.api.checkpoint(parent.id).id, top.name)
        self.assertEqual(set(secret_env(child)), {"KEY", "KEEP"})
        self.assertRegex(child.env["KEY"], TOKEN_RE)
        self.assertNotEqual(child.env["KEY"], parent.env["KEY"])
        _, secrets = self.api.allowed_hosts(child.id)
        self.assertEqual(secrets, {"KEY": ["b.example.com"], "KEEP": ["a.example.com"]})
        _, parent_secrets = self.api.allowed_hosts(parent.id)
        self.assertEqual(parent_secrets["KEY"], ["a.example.com"])

    def test_the_egress_allowlist_is_the_union_of_the_layers(self):
        """Egress allowlists are the union of the layers."""
        base = self.api.store_with({"A": secret_value()}, ["a.example.com", "*.shared.example"])
        top = self.api.store_with({"B": secret_value()}, ["b.example.com", "*.shared.example"])
        child = self.api.fork(self.api.checkpoint(self.api.create_sandbox(base.name).id).id,
                              top.name)
        allow, secrets = self.api.allowed_hosts(child.id)
        self.assertEqual(sorted(allow), ["*.shared.example", "a.example.com", "b.example.com"])
        # Each secret with empty allowed_hosts gets what its own store allows.
        self.assertEqual(sorted(secrets["A"]), ["*.shared.example", "a.example.com"])
        self.assertEqual(sorted(secrets["B"]), ["*.shared.example", "b.example.com"])

    def test_a_layer_with_an_empty_allowlist_makes_the_union_every_public_host(self):
        """A layer with an empty allowlist makes the union "every public host" (["*"]); an
        empty allowed_hosts still means only what the secret's own store allows."""
        base = self.api.store_with({"A": secret_value(),
                                    "A_HOSTS": (secret_value(), ["x.example.com"])},
                                   ["a.example.com"])
        top = self.api.store_with({"B": secret_value(),
                                   "B_HOSTS": (secret_value(), ["*.openai.com"])}, [])
        child = self.api.fork(self.api.checkpoint(self.api.create_sandbox(base.name).id).id,
                              top.name)
        allow, secrets = self.api.allowed_hosts(child.id)
        self.assertEqual(allow, ["*"])
        self.assertEqual(secrets["A"], ["a.example.com"])    # its own store's, not the union
        self.assertEqual(secrets["A_HOSTS"], ["x.example.com"])
        self.assertEqual(secrets["B"], ["*"])
        self.assertEqual(secrets["B_HOSTS"], ["*.openai.com"])
        # The same the other way round: the empty layer at the base.
        child2 = self.api.fork(self.api.checkpoint(self.api.create_sandbox(top.name).id).id,
                               base.name)
        self.assertEqual(self.api.allowed_hosts(child2.id)[0], ["*"])

    def test_a_layer_whose_store_was_deleted_since_the_checkpoint_is_skipped(self):
        """A layer whose store was deleted since is skipped (at fork time)."""
        gone = self.api.store_with({"GONE": secret_value(), "SHARED_NAME": secret_value()},
                                   ["gone.example.com"], "gone")
        kept = self.api.store_with({"KEPT": secret_value()}, ["kept.example.com"], "kept")
        top = self.api.store_with({"TOP": secret_value(), "SHARED_NAME": secret_value()},
                                  ["top.example.com"], "top")
        mid = self.api.fork(self.api.checkpoint(self.api.create_sandbox(gone.name).id).id,
                            kept.name)
        cp = self.api.checkpoint(mid.id)
        self.assertEqual(list(cp.secret_stores), [gone.name, kept.name])
        self.api.delete_store(gone.id)
        child = self.api.fork(cp.id, top.name)
        self.assertEqual(list(child.secret_stores), [kept.name, top.name])
        self.assertEqual(set(secret_env(child)), {"KEPT", "TOP", "SHARED_NAME"})
        allow, secrets = self.api.allowed_hosts(child.id)
        self.assertEqual(sorted(allow), ["kept.example.com", "top.example.com"])
        self.assertEqual(set(secrets), {"KEPT", "TOP", "SHARED_NAME"})
        self.assertEqual(secrets["SHARED_NAME"], ["top.example.com"])
        # The sandbox made before the deletion still has its layer (tokens keep working).
        self.assertEqual(list(self.api.get_sandbox(mid.id).secret_stores),
                         [gone.name, kept.name])
        # Every inherited layer gone and no store on top: no layer at all.
        lone = self.api.store_with({"L": secret_value()})
        cp_lone = self.api.checkpoint(self.api.create_sandbox(lone.name).id)
        self.api.delete_store(lone.id)
        bare = self.api.fork(cp_lone.id)
        self.assertEqual(list(bare.secret_stores), [])
        self.assertEqual(set(secret_env(bare)), set())
        self.assertEqual(self.api.allowed_hosts(bare.id), (["*"], {}))

    def test_the_store_named_on_top_must_exist(self):
        """The store named in the request must exist: NOT_FOUND otherwise (also when deleted)."""
        base = self.api.store_with({"A": secret_value()})
        cp = self.api.checkpoint(self.api.create_sandbox(base.name).id)
        self.assertFails(NOT_FOUND, self.api.fork, cp.id, unique("missing"))
        doomed = self.api.store_with({"B": secret_value()})
        self.api.delete_store(doomed.id)
        self.assertFails(NOT_FOUND, self.api.fork, cp.id, doomed.name)
        self.assertFails(NOT_FOUND, self.api.fork, str(uuid.uuid4()), base.name)

    def test_a_fork_with_no_store_on_top_keeps_the_checkpoints_layers_with_fresh_tokens(self):
        """secret_store may be empty: the fork has the checkpoint's layers, new tokens, the
        checkpoint's snapshot."""
        base = self.api.store_with({"A": secret_value(), "B": secret_value()}, ["a.example.com"])
        snap = self.api.create_snapshot(unique("snap"))
        parent = self.api.create_sandbox(base.name, snap.name)
        cp = self.api.checkpoint(parent.id)
        child = self.api.fork(cp.id, timeout_seconds=1234)
        self.assertEqual(list(child.secret_stores), [base.name])
        self.assertEqual(child.snapshot, snap.name)
        self.assertEqual(child.checkpoint_id, cp.id)
        self.assertEqual(set(secret_env(child)), {"A", "B"})
        for name in ("A", "B"):
            self.assertRegex(child.env[name], TOKEN_RE)
            self.assertNotEqual(child.env[name], parent.env[name])
        self.assertIn((parse_time(child.expires_at) - parse_time(child.created_at))
                      .total_seconds(), (1234, 1235))   # whole seconds, truncated apart
        self.assertEqual(self.api.allowed_hosts(child.id)[0], ["a.example.com"])
        # Two forks of one checkpoint differ too.
        self.assertNotEqual(self.api.fork(cp.id).env["A"], child.env["A"])

    def test_the_checkpoints_own_store_on_top_is_listed_once(self):
        base = self.api.store_with({"A": secret_value()})
        parent = self.api.create_sandbox(base.name)
        child = self.api.fork(self.api.checkpoint(parent.id).id, secret_store=base.name)
        self.assertEqual(list(child.secret_stores), [base.name])
        self.assertEqual(set(secret_env(child)), {"A"})
        self.assertNotEqual(child.env["A"], parent.env["A"])

    def test_a_checkpoint_outlives_its_sandbox(self):
        """A checkpoint of a sandbox deleted since still forks."""
        base = self.api.store_with({"A": secret_value()})
        parent = self.api.create_sandbox(base.name)
        cp = self.api.checkpoint(parent.id)
        self.api.delete_sandbox(parent.id)
        child = self.api.fork(cp.id)
        self.assertEqual(child.status, "running")
        self.assertEqual(list(child.secret_stores), [base.name])


class AllowedHostsTest(ApiTestCase):

    def test_a_secrets_hosts_are_intersected_with_the_allowlist_by_pattern(self):
        """secret_allowed_hosts: the secret's allowed_hosts as far as the sandbox's allowlist
        reaches them ("*.openai.com" within "api.openai.com" is "api.openai.com"; a wildcard
        never covers its apex)."""
        store = self.api.store_with({
            "OPENAI": (secret_value(), ["*.openai.com"]),
            "ANTHROPIC": (secret_value(), ["api.anthropic.com", "example.org"]),
            "DEEP": (secret_value(), ["*.eu.anthropic.com"]),
            "APEX": (secret_value(), ["openai.com"]),
            "EVERY": (secret_value(), ["*"]),
            "OWN": secret_value(),
        }, ["api.openai.com", "*.anthropic.com"])
        sandbox = self.api.create_sandbox(store.name)
        allow, secrets = self.api.allowed_hosts(sandbox.id)
        self.assertEqual(sorted(allow), ["*.anthropic.com", "api.openai.com"])
        want = {
            "OPENAI": ["api.openai.com"],
            "ANTHROPIC": ["api.anthropic.com"],
            "DEEP": ["*.eu.anthropic.com"],
            "APEX": [],
            "EVERY": ["*.anthropic.com", "api.openai.com"],
            "OWN": ["*.anthropic.com", "api.openai.com"],
        }
        self.assertEqual({k: sorted(v) for k, v in secrets.items()}, want)

    def test_with_every_public_host_allowed_a_secret_keeps_its_own_hosts(self):
        store = self.api.store_with({"K": (secret_value(), ["api.example.com", "*.x.example"]),
                                     "ANY": secret_value()}, [])
        sandbox = self.api.create_sandbox(store.name)
        self.assertEqual(self.api.allowed_hosts(sandbox.id),
                         (["*"], {"K": ["api.example.com", "*.x.example"], "ANY": ["*"]}))
        star = self.api.store_with({"K": secret_value()}, ["*"])
        self.assertEqual(self.api.allowed_hosts(self.api.create_sandbox(star.name).id),
                         (["*"], {"K": ["*"]}))

    def test_a_deleted_secret_leaves_the_map(self):
        store = self.api.store_with({"GONE": secret_value(), "STAYS": secret_value()},
                                    ["api.example.com"])
        sandbox = self.api.create_sandbox(store.name)
        self.api.delete_secret(store.id, "GONE")
        self.assertEqual(self.api.allowed_hosts(sandbox.id),
                         (["api.example.com"], {"STAYS": ["api.example.com"]}))


# ----------------------------------------------------------------------------------------------
# 4. Stores changing under running sandboxes

class LiveStoreTest(ApiTestCase):

    def test_deleting_a_store_leaves_its_running_sandboxes_working(self):
        """DeleteSecretStore: running sandboxes are not affected (their tokens, layers and
        allowlist stay)."""
        store = self.api.store_with({"K": (secret_value(), ["api.example.com"]),
                                     "J": secret_value()}, ["api.example.com", "*.example.org"])
        sandbox = self.api.create_sandbox(store.name)
        before = self.api.allowed_hosts(sandbox.id)
        self.api.delete_store(store.id)
        got = self.api.get_sandbox(sandbox.id)
        self.assertSameSandbox(got, sandbox)
        self.assertEqual(got.status, "running")
        self.assertEqual(list(got.secret_stores), [store.name])
        allow, secrets = self.api.allowed_hosts(sandbox.id)
        self.assertEqual(sorted(allow), ["*.example.org", "api.example.com"])
        self.assertEqual((allow, secrets), before)
        self.assertEqual(set(secrets), {"K", "J"})
        self.assertEqual(self.run_ok(sandbox.id, 'printf %s "$K"'), sandbox.env["K"])
        # A checkpoint of it: the deleted layer is recorded, and skipped by a fork.
        cp = self.api.checkpoint(sandbox.id)
        self.assertEqual(list(cp.secret_stores), [store.name])
        self.assertEqual(list(self.api.fork(cp.id).secret_stores), [])

    def test_rotation_keeps_the_token_and_new_allowed_hosts_apply_at_once(self):
        """SetSecret on an existing name reaches running sandboxes under the same token;
        allowed_hosts changes apply to running sandboxes."""
        store = self.api.store_with({"K": (secret_value(), ["a.example.com"])},
                                    ["a.example.com", "b.example.com"])
        sandbox = self.api.create_sandbox(store.name)
        entry = self.api.set_secret(store.id, "K", secret_value(), ["b.example.com"])
        self.assertEqual(entry.version, 2)
        got = self.api.get_sandbox(sandbox.id)
        self.assertEqual(got.env["K"], sandbox.env["K"])
        self.assertSameSandbox(got, sandbox)
        self.assertEqual(self.api.allowed_hosts(sandbox.id)[1], {"K": ["b.example.com"]})
        self.api.set_secret(store.id, "K", secret_value())   # empty: the store's allowlist
        self.assertEqual(sorted(self.api.allowed_hosts(sandbox.id)[1]["K"]),
                         ["a.example.com", "b.example.com"])
        self.assertEqual(self.api.get_sandbox(sandbox.id).env["K"], sandbox.env["K"])

    def test_an_allowlist_change_applies_to_running_sandboxes_at_once(self):
        """Allowlist changes (UpdateSecretStore) apply to running sandboxes."""
        store = self.api.store_with({"K": secret_value()}, ["a.example.com"])
        sandbox = self.api.create_sandbox(store.name)
        self.assertEqual(self.api.allowed_hosts(sandbox.id),
                         (["a.example.com"], {"K": ["a.example.com"]}))
        self.api.update_allowlist(store.id, ["c.example.com", "*.d.example.com"])
        allow, secrets = self.api.allowed_hosts(sandbox.id)
        self.assertEqual(sorted(allow), ["*.d.example.com", "c.example.com"])
        self.assertEqual(sorted(secrets["K"]), ["*.d.example.com", "c.example.com"])
        self.api.update_allowlist(store.id, [])
        self.assertEqual(self.api.allowed_hosts(sandbox.id), (["*"], {"K": ["*"]}))


# ----------------------------------------------------------------------------------------------
# 5. Snapshots

class SnapshotTest(ApiTestCase):

    def test_create_get_list_delete_and_duplicate_names(self):
        """CreateSnapshot / GetSnapshot / ListSnapshots (by name) / DeleteSnapshot; a duplicate
        name is ALREADY_EXISTS; a missing one NOT_FOUND."""
        own = self.new_org_api("snapshots")
        tag = uuid.uuid4().hex[:6]
        names = ["c-" + tag, "a-" + tag, "b-" + tag]
        made = {}
        for name in names:
            made[name] = own.create_snapshot(
                name, base="debian:bookworm", apt_packages=["curl", "git"],
                pip_packages=["requests==2.31.0"], run_commands=["echo %s > name.txt" % name])
        snap = made[names[0]]
        self.assertEqual(snap.name, names[0])
        self.assertEqual(str(uuid.UUID(snap.id)), snap.id)
        self.assertRegex(snap.created_at, RFC3339_UTC)
        self.assertEqual(snap.image.base, "debian:bookworm")
        self.assertEqual(list(snap.image.apt_packages), ["curl", "git"])
        self.assertEqual(list(snap.image.pip_packages), ["requests==2.31.0"])
        self.assertEqual(list(snap.image.run_commands), ["echo %s > name.txt" % names[0]])
        self.assertEqual(own.get_snapshot(names[0]), snap)
        self.assertEqual([s.name for s in own.list_snapshots()], sorted(names))
        self.assertEqual(own.list_snapshots()[0], made[sorted(names)[0]])
        self.assertFails(ALREADY_EXISTS, own.create_snapshot, names[0])
        own.delete_snapshot(names[0])
        self.assertFails(NOT_FOUND, own.get_snapshot, names[0])
        self.assertFails(NOT_FOUND, own.delete_snapshot, names[0])
        self.assertEqual([s.name for s in own.list_snapshots()], sorted(names[1:]))
        self.assertFails(NOT_FOUND, own.get_snapshot, unique("never"))
        # An empty image is fine, and a deleted snapshot's name can be used again.
        again = own.create_snapshot(names[0])
        self.assertNotEqual(again.id, snap.id)
        self.assertEqual(list(again.image.run_commands), [])

    def test_a_snapshot_built_without_a_store_serves_a_sandbox_with_one(self):
        """A snapshot may be named even if it was built without a store."""
        snap = self.api.create_snapshot(unique("nostore"), run_commands=["echo built > f.txt"])
        store = self.api.store_with({"K": secret_value()}, ["api.example.com"])
        sandbox = self.api.create_sandbox(store.name, snap.name)
        self.assertEqual(sandbox.snapshot, snap.name)
        self.assertEqual(list(sandbox.secret_stores), [store.name])
        self.assertRegex(sandbox.env["K"], TOKEN_RE)
        self.assertEqual(self.run_ok(sandbox.id, "cat f.txt"), "built\n")
        self.assertEqual(self.api.get_sandbox(sandbox.id).snapshot, snap.name)
        # Deleting the snapshot leaves its sandboxes as they are.
        self.api.delete_snapshot(snap.name)
        self.assertEqual(self.run_ok(sandbox.id, "cat f.txt"), "built\n")
        self.assertFails(NOT_FOUND, self.api.create_sandbox, store.name, snap.name)


# ----------------------------------------------------------------------------------------------
# 6. Isolation, authentication, bad input

class IsolationTest(ApiTestCase):

    def test_every_method_with_another_orgs_ids_is_not_found_and_changes_nothing(self):
        """Another organization's id: NOT_FOUND, never PERMISSION_DENIED, and nothing
        changes — for all twelve SandboxService methods."""
        store = self.api.store_with({"K": secret_value()}, ["api.example.com"])
        snap = self.api.create_snapshot(unique("snap"), run_commands=["echo a > a.txt"])
        sandbox = self.api.create_sandbox(store.name, snap.name)
        cp = self.api.checkpoint(sandbox.id)
        other = self.new_org_api("intruder")
        other_store = other.store_with({"K": secret_value()})
        other_sandbox = other.create_sandbox(other_store.name)
        other_cp = other.checkpoint(other_sandbox.id)

        attempts = {
            "CreateSandbox(store)": lambda: other.create_sandbox(store.name),
            "CreateSandbox(snapshot)": lambda: other.create_sandbox(snapshot=snap.name),
            "GetSandbox": lambda: other.get_sandbox(sandbox.id),
            "DeleteSandbox": lambda: other.delete_sandbox(sandbox.id),
            "CreateCheckpoint": lambda: other.checkpoint(sandbox.id),
            "CreateSandboxFromCheckpoint": lambda: other.fork(cp.id),
            "CreateSandboxFromCheckpoint(store)": lambda: other.fork(other_cp.id, store.name),
            "GetSnapshot": lambda: other.get_snapshot(snap.name),
            "DeleteSnapshot": lambda: other.delete_snapshot(snap.name),
            "GetAllowedHosts": lambda: other.allowed_hosts(sandbox.id),
            "RunCommand": lambda: other.run(sandbox.id, "touch intruder.txt"),
        }
        for method, call in attempts.items():
            with self.subTest(method=method):
                self.assertFails(NOT_FOUND, call)
        self.assertNotIn(sandbox.id, [s.id for s in other.all_sandboxes()])
        self.assertEqual(len(other.all_sandboxes()), 1)
        self.assertNotIn(snap.name, [s.name for s in other.list_snapshots()])
        # Snapshot names are per organization: the other may use the same name for its own.
        theirs = other.create_snapshot(snap.name)
        self.assertNotEqual(theirs.id, snap.id)
        self.assertEqual(other.get_snapshot(snap.name), theirs)

        # Nothing changed.
        got = self.api.get_sandbox(sandbox.id)
        self.assertEqual(got.status, "running")
        self.assertSameSandbox(got, sandbox)
        self.assertEqual(self.api.get_snapshot(snap.name), snap)
        self.assertEqual(self.run_ok(sandbox.id, "ls"), "a.txt\n")
        self.assertEqual(len([s for s in self.api.all_sandboxes() if s.id == sandbox.id]), 1)


class AuthenticationTest(ApiTestCase):

    def test_every_method_without_a_key_or_with_a_bad_key_is_unauthenticated(self):
        """No key or a bad key: UNAUTHENTICATED, for every SandboxService method; nothing is
        done."""
        store = self.api.store_with({"K": secret_value()})
        snap = self.api.create_snapshot(unique("snap"))
        sandbox = self.api.create_sandbox(store.name)
        cp = self.api.checkpoint(sandbox.id)
        count = len(self.api.all_sandboxes())
        typo = self.key[:20] + ("A" if self.key[20] != "A" else "B") + self.key[21:]
        for header in [None, "Bearer osk_" + "A" * 49, "Bearer " + typo, "Basic " + self.key,
                       self.key]:
            bad = self.api.with_header(header)
            calls = {
                "CreateSandbox": lambda: bad.create_sandbox(store.name),
                "GetSandbox": lambda: bad.get_sandbox(sandbox.id),
                "ListSandboxes": lambda: bad.list_sandboxes(),
                "DeleteSandbox": lambda: bad.delete_sandbox(sandbox.id),
                "CreateCheckpoint": lambda: bad.checkpoint(sandbox.id),
                "CreateSandboxFromCheckpoint": lambda: bad.fork(cp.id),
                "CreateSnapshot": lambda: bad.create_snapshot(unique("snap")),
                "GetSnapshot": lambda: bad.get_snapshot(snap.name),
                "ListSnapshots": lambda: bad.list_snapshots(),
                "DeleteSnapshot": lambda: bad.delete_snapshot(snap.name),
                "GetAllowedHosts": lambda: bad.allowed_hosts(sandbox.id),
                "RunCommand": lambda: bad.run(sandbox.id, "touch unauth.txt"),
            }
            for method, call in calls.items():
                with self.subTest(authorization=header, method=method):
                    self.assertFails(UNAUTHENTICATED, call)
        self.assertEqual(self.api.get_sandbox(sandbox.id).status, "running")
        self.assertEqual(len(self.api.all_sandboxes()), count)
        self.assertEqual([s.name for s in self.api.list_snapshots()], [snap.name])
        self.assertEqual(self.run_ok(sandbox.id, "ls"), "")


class InvalidArgumentTest(ApiTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.store = cls.api.store_with({"K": secret_value()})
        cls.sandbox = cls.api.create_sandbox(cls.store.name)
        cls.cp = cls.api.checkpoint(cls.sandbox.id)

    BAD_IDS = ["", "not-a-uuid", "x", "0" * 65, "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c'",
               "../etc", "5f0c2a9e 3b1d"]
    BAD_NAMES = ["a b", "a/b", "x" * 129, "é", "a\nb", "name;DROP", "a*"]

    def test_bad_sandbox_and_checkpoint_ids_are_invalid_argument_naming_the_field(self):
        api = self.api
        for bad in self.BAD_IDS:
            with self.subTest(id=bad):
                self.assertInvalid("sandbox_id", api.get_sandbox, bad)
                self.assertInvalid("sandbox_id", api.delete_sandbox, bad)
                self.assertInvalid("sandbox_id", api.checkpoint, bad)
                self.assertInvalid("sandbox_id", api.allowed_hosts, bad)
                self.assertInvalid("sandbox_id", api.run, bad, "true")
                self.assertInvalid("checkpoint_id", api.fork, bad)

    def test_bad_store_snapshot_and_checkpoint_names_are_invalid_argument(self):
        api = self.api
        for bad in self.BAD_NAMES:
            with self.subTest(name=bad):
                self.assertInvalid("secret_store", api.create_sandbox, bad)
                self.assertInvalid("snapshot", api.create_sandbox, "", bad)
                self.assertInvalid("secret_store", api.fork, self.cp.id, bad)
                self.assertInvalid("name", api.checkpoint, self.sandbox.id, bad)
                self.assertInvalid("name", api.create_snapshot, bad)
                self.assertInvalid("name", api.get_snapshot, bad)
                self.assertInvalid("name", api.delete_snapshot, bad)
        self.assertInvalid("name", api.checkpoint, self.sandbox.id, "")
        self.assertInvalid("name", api.create_snapshot, "")
        self.assertInvalid("name", api.get_snapshot, "")

    def test_bad_timeouts_are_invalid_argument(self):
        api = self.api
        for bad in (-1, 604801, 2 ** 31 - 1, -(2 ** 31)):
            with self.subTest(timeout_seconds=bad):
                self.assertInvalid("timeout_seconds", api.create_sandbox, timeout_seconds=bad)
                self.assertInvalid("timeout_seconds", api.fork, self.cp.id, timeout_seconds=bad)
        for bad in (-1, 3601, 2 ** 31 - 1):
            with self.subTest(run_timeout_seconds=bad):
                self.assertInvalid("timeout_seconds", api.run, self.sandbox.id, "true",
                                   timeout_seconds=bad)

    def test_bad_cwd_and_command_are_invalid_argument(self):
        api = self.api
        for bad in ["/", "/tmp", "..", "../x", "a/../..", "a/..", "a/../b", "./..", "a\nb",
                    "x" * 1025]:
            with self.subTest(cwd=bad):
                self.assertInvalid("cwd", api.run, self.sandbox.id, "pwd", cwd=bad)
        self.assertInvalid("command", api.run, self.sandbox.id, "")
        self.assertInvalid("command", api.run, self.sandbox.id, "x" * (64 * 1024 + 1))
        # A relative cwd that does not exist in the sandbox is a precondition, not bad input.
        self.assertFails(FAILED_PRECONDITION, api.run, self.sandbox.id, "pwd",
                         cwd="no/such/dir")

    def test_bad_env_entries_are_invalid_argument_naming_env(self):
        api = self.api
        for key in ["", "1A", "A-B", "A B", "A=B", "É", "A" * 129]:
            with self.subTest(key=key):
                self.assertInvalid("env", api.create_sandbox, env={key: "v"})
        self.assertInvalid("env", api.create_sandbox, env={"BIG": "x" * (64 * 1024 + 1)})
        self.assertInvalid("env", api.create_sandbox,
                           env={"V%d" % i: "v" for i in range(257)})
        # The largest accepted: 64 KiB values, 512 KiB in all (what a process can still be
        # started with: RunCommand must not fail on "Argument list too long").
        sandbox = api.create_sandbox(env={"BIG": "x" * (64 * 1024)})
        self.assertEqual(len(sandbox.env["BIG"]), 64 * 1024)
        self.assertInvalid("env", api.create_sandbox,
                           env={"V%d" % i: "x" * (64 * 1024) for i in range(8)})
        seven = api.create_sandbox(env={"V%d" % i: "x" * (64 * 1024) for i in range(7)})
        self.assertEqual(len(seven.env["V6"]), 64 * 1024)

    def test_bad_image_lists_are_invalid_argument_naming_the_item(self):
        api = self.api
        self.assertInvalid("image.run_commands[1]", api.create_snapshot, unique("img"),
                           run_commands=["true", ""])
        self.assertInvalid("image.apt_packages[0]", api.create_snapshot, unique("img"),
                           apt_packages=["curl\x01"])
        self.assertInvalid("image.pip_packages[0]", api.create_snapshot, unique("img"),
                           pip_packages=["x" * 1025])
        self.assertInvalid("image.base", api.create_snapshot, unique("img"), base="a\nb")


# ----------------------------------------------------------------------------------------------
# 7. The local process runtime

class LocalRuntimeTest(ApiTestCase):

    def test_a_command_sees_sealed_tokens_never_values(self):
        """A sandbox never sees a real value: its env holds sealed tokens."""
        value = secret_value("anthropic")
        store = self.api.store_with({"ANTHROPIC_API_KEY": value})
        sandbox = self.api.create_sandbox(store.name)
        r = self.api.run(sandbox.id, 'echo "$ANTHROPIC_API_KEY"; env; cat /proc/self/environ')
        self.assertEqual(r.exit_code, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines()[0], sandbox.env["ANTHROPIC_API_KEY"])
        self.assertNotIn(value, r.stdout + r.stderr)

    def test_a_command_gets_exactly_the_sandbox_env_plus_path_and_home(self):
        """RunCommand runs /bin/sh -c with the sandbox's env and nothing of the server's."""
        store = self.api.store_with({"K": secret_value()})
        sandbox = self.api.create_sandbox(store.name, env={"PLAIN": "a b\tc", "UNICODE": "é€"})
        # (Not `env -0`: RunCommand's output is UTF-8 text, a NUL comes back as U+FFFD.)
        out = self.run_ok(sandbox.id, "env")
        env = dict(line.split("=", 1) for line in out.splitlines())
        self.assertNotIn(PARENT_CANARY[0], env)
        self.assertNotIn(PARENT_CANARY[1], out)
        for name in ("SEALGATE_BIN", "SEALGATE_TEST_SERVER", "SEALGATE_SOURCE_ROOT", "LD_PRELOAD",
                     "ASAN_OPTIONS"):
            if name in os.environ:
                self.assertNotIn(name, env)
        shell_added = {"PWD", "OLDPWD", "SHLVL", "_"}
        self.assertEqual(set(env) - shell_added, set(sandbox.env) | {"PATH", "HOME"})
        for name, value in sandbox.env.items():
            self.assertEqual(env[name], value, name)
        self.assertEqual(env["HOME"], sandbox_dir(sandbox.id))
        self.assertIn("/usr/bin", env["PATH"].split(":"))
        self.assertEqual(self.run_ok(sandbox.id, "pwd").strip(), sandbox_dir(sandbox.id))

    def test_the_ca_file_in_the_sandbox_is_the_proxy_ca(self):
        """SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS point at the proxy CA file
        (SPEC §5), present inside the sandbox with proxy.ca_cert_pem."""
        sandbox = self.api.create_sandbox()
        for var in CA_FILE_VARS:
            with self.subTest(var=var):
                self.assertEqual(self.run_ok(sandbox.id, 'cat "$%s"' % var),
                                 sandbox.proxy.ca_cert_pem)
        path = sandbox.env["SSL_CERT_FILE"]
        self.assertTrue(path.startswith(sandbox_dir(sandbox.id) + os.sep), path)
        # A fork gets its own copy at its own path.
        child = self.api.fork(self.api.checkpoint(sandbox.id).id)
        self.assertNotEqual(child.env["SSL_CERT_FILE"], path)
        self.assertEqual(self.run_ok(child.id, 'cat "$SSL_CERT_FILE"'), sandbox.proxy.ca_cert_pem)

    def test_exit_status_stdout_stderr_and_cwd(self):
        sandbox = self.api.create_sandbox()
        r = self.api.run(sandbox.id, "echo out; echo err >&2; exit 3")
        self.assertEqual((r.exit_code, r.stdout, r.stderr), (3, "out\n", "err\n"))
        self.run_ok(sandbox.id, "mkdir -p sub/dir && echo x > sub/dir/f")
        self.assertEqual(self.run_ok(sandbox.id, "pwd; cat f", cwd="sub/dir"),
                         sandbox_dir(sandbox.id) + "/sub/dir\nx\n")
        self.assertEqual(self.run_ok(sandbox.id, "cat f", cwd="./sub//dir/"), "x\n")
        r = self.api.run(sandbox.id, "kill -TERM $$")
        self.assertEqual(r.exit_code, 128 + 15)
        # Files persist between commands of one sandbox, not across sandboxes.
        self.run_ok(sandbox.id, "echo kept > kept.txt")
        self.assertEqual(self.run_ok(sandbox.id, "cat kept.txt"), "kept\n")
        other = self.api.create_sandbox()
        self.assertEqual(self.run_ok(other.id, "ls -A"), ".sealgate\n")

    def test_a_fork_has_the_files_written_before_the_checkpoint_and_none_after(self):
        """Checkpoints copy the sandbox's directory; forks start from the copy (SPEC §5)."""
        parent = self.api.create_sandbox()
        self.run_ok(parent.id, "echo before > before.txt && mkdir -p d && echo deep > d/e")
        cp = self.api.checkpoint(parent.id)
        self.run_ok(parent.id, "echo after > after.txt && rm before.txt")
        child = self.api.fork(cp.id)
        self.assertEqual(self.run_ok(child.id, "cat before.txt d/e"), "before\ndeep\n")
        self.assertEqual(self.api.run(child.id, "test -e after.txt").exit_code, 1)
        self.assertEqual(self.run_ok(parent.id, "ls"), "after.txt\nd\n")
        # The fork's own writes stay its own: a second fork of the checkpoint does not see them.
        self.run_ok(child.id, "echo child > child.txt")
        second = self.api.fork(cp.id)
        self.assertEqual(self.run_ok(second.id, "ls"), "before.txt\nd\n")
        # The checkpoint survives its sandbox.
        self.api.delete_sandbox(parent.id)
        self.assertEqual(self.run_ok(self.api.fork(cp.id).id, "cat before.txt"), "before\n")

    def test_snapshot_run_commands_run_once_in_order_and_new_sandboxes_start_from_them(self):
        """Snapshot-based sandboxes start from the snapshot's directory."""
        snap = self.api.create_snapshot(unique("build"), run_commands=[
            "echo one > a.txt",
            "cat a.txt > b.txt; echo two >> b.txt",
            "date +%s%N >> runs.txt",
            "test -z \"$%s\"" % PARENT_CANARY[0],
        ])
        first = self.api.create_sandbox(snapshot=snap.name)
        second = self.api.create_sandbox(snapshot=snap.name)
        self.assertEqual(self.run_ok(first.id, "cat b.txt"), "one\ntwo\n")
        runs = self.run_ok(first.id, "cat runs.txt")
        self.assertEqual(len(runs.splitlines()), 1)
        self.assertEqual(self.run_ok(second.id, "cat runs.txt"), runs)
        # A sandbox's changes do not reach the snapshot.
        self.run_ok(first.id, "rm b.txt")
        self.assertEqual(self.run_ok(self.api.create_sandbox(snapshot=snap.name).id,
                                     "cat b.txt"), "one\ntwo\n")

    def test_a_failing_run_command_fails_the_snapshot_naming_the_command(self):
        """A run_command that fails: FAILED_PRECONDITION naming image.run_commands[i]; the
        snapshot is not made and its name stays free."""
        name = unique("broken")
        e = self.assertFails(FAILED_PRECONDITION, self.api.create_snapshot, name,
                             run_commands=["echo ok > ok.txt", "echo oops >&2; exit 7", "true"])
        self.assertIn("image.run_commands[1]", e.details())
        self.assertIn("oops", e.details())
        self.assertFails(NOT_FOUND, self.api.get_snapshot, name)
        self.assertNotIn(name, [s.name for s in self.api.list_snapshots()])
        snapshots_dir = os.path.join(data_dir(SHARED), "snapshots")
        self.assertEqual([d for d in os.listdir(snapshots_dir) if d.endswith(".building")], [])
        self.assertEqual(self.api.create_snapshot(name, run_commands=["true"]).name, name)

    def test_a_command_past_its_timeout_is_killed_and_reported(self):
        sandbox = self.api.create_sandbox()
        start = time.monotonic()
        r = self.api.run(sandbox.id, "echo started; sleep 30; echo never", timeout_seconds=1)
        elapsed = time.monotonic() - start
        self.assertLess(elapsed, 10)
        self.assertEqual(r.exit_code, 124)
        self.assertEqual(r.stdout, "started\n")
        self.assertTrue(r.stderr.rstrip("\n").endswith("[sealgate: killed after the 1 s timeout]"),
                        r.stderr)
        # A background child dies with the command too.
        self.run_ok(sandbox.id, "(sleep 3; echo late > late.txt) & echo bg")
        time.sleep(0.1)
        self.assertEqual(self.api.run(sandbox.id, "sleep 5; test -e late.txt",
                                      timeout_seconds=1).exit_code, 124)
        self.assertEqual(self.api.run(sandbox.id, "test -e late.txt").exit_code, 1)

    def test_output_over_1_mib_per_stream_is_truncated_with_a_marker(self):
        sandbox = self.api.create_sandbox()
        r = self.api.run(sandbox.id, "head -c 3000000 /dev/zero | tr '\\0' a; "
                                     "head -c 2000000 /dev/zero | tr '\\0' b >&2; echo done >&2")
        self.assertEqual(r.exit_code, 0)
        self.assertEqual(r.stdout, "a" * MIB + "\n[sealgate: stdout truncated at 1 MiB]\n")
        self.assertTrue(r.stderr.startswith("b" * MIB + "\n[sealgate: stderr truncated at 1 MiB]"),
                        r.stderr[MIB - 10:MIB + 100])
        exact = self.api.run(sandbox.id, "head -c %d /dev/zero | tr '\\0' c" % MIB)
        self.assertEqual(exact.stdout, "c" * MIB)

    def test_output_that_grows_in_utf8_cleaning_stays_within_the_cap(self):
        """Invalid bytes become 3-byte U+FFFD: 1 MiB of random bytes must not come back as a
        3 MiB reply (over gRPC clients' default 4 MiB limit with both streams)."""
        sandbox = self.api.create_sandbox()
        r = self.api.run(sandbox.id, "head -c 2000000 /dev/urandom; "
                                     "head -c 2000000 /dev/urandom >&2")
        for stream, name in ((r.stdout, "stdout"), (r.stderr, "stderr")):
            self.assertLessEqual(len(stream.encode()), MIB + 100, name)
            self.assertTrue(stream.endswith("[sealgate: %s truncated at 1 MiB]\n" % name))

    def test_a_cwd_that_leads_out_through_a_link_is_refused(self):
        sandbox = self.api.create_sandbox()
        self.run_ok(sandbox.id, "ln -s / root-link && mkdir -p sub/dir")
        self.assertEqual(self.run_ok(sandbox.id, "pwd", cwd="sub/dir").strip().split("/")[-2:],
                         ["sub", "dir"])
        self.assertFails(FAILED_PRECONDITION, self.api.run, sandbox.id, "pwd", cwd="root-link")

    def test_a_linked_ca_directory_in_a_checkpoint_is_not_followed(self):
        """A sandbox replaces .sealgate by a link before its checkpoint: the fork's CA file is
        written in the fork's own directory, and nothing appears where the link pointed."""
        target = tempfile.mkdtemp(prefix="sealgate-e2e-target-")
        self.addCleanup(shutil.rmtree, target, True)
        sandbox = self.api.create_sandbox()
        self.run_ok(sandbox.id, "rm -rf .sealgate && ln -s %s .sealgate" % target)
        child = self.api.fork(self.api.checkpoint(sandbox.id).id)
        self.assertEqual(os.listdir(target), [])
        self.assertEqual(self.run_ok(child.id, "test -L .sealgate || cat \"$SSL_CERT_FILE\""),
                         child.proxy.ca_cert_pem)

    def test_a_fork_survives_the_deletion_of_its_checkpoints_snapshot(self):
        snap = self.api.create_snapshot(unique("snap"), run_commands=["echo from-snap > s.txt"])
        parent = self.api.create_sandbox(snapshot=snap.name)
        cp = self.api.checkpoint(parent.id)
        self.api.delete_snapshot(snap.name)
        child = self.api.fork(cp.id)
        self.assertEqual(child.snapshot, snap.name)
        self.assertEqual(self.run_ok(child.id, "cat s.txt"), "from-snap\n")

    def test_a_secret_named_like_a_proxy_variable_does_not_replace_it(self):
        store = self.api.store_with({"HTTPS_PROXY": secret_value(), "OK_KEY": secret_value()})
        sandbox = self.api.create_sandbox(store.name)
        self.assertEqual(sandbox.env["HTTPS_PROXY"], sandbox.proxy.url)
        self.assertRegex(sandbox.env["OK_KEY"], TOKEN_RE)
        self.assertEqual(set(self.api.allowed_hosts(sandbox.id)[1]), {"OK_KEY"})

    def test_deleting_a_sandbox_kills_its_commands_and_removes_its_directory(self):
        """After DeleteSandbox nothing of the sandbox runs: its commands are killed (exit 137
        and a marker), its directory removed; another sandbox's command runs on."""
        sandbox, bystander = self.api.create_sandbox(), self.api.create_sandbox()
        directory = sandbox_dir(sandbox.id)
        self.assertTrue(os.path.isdir(directory))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            future = pool.submit(self.api.run, sandbox.id, "touch started; sleep 60",
                                 timeout_seconds=120)
            other = pool.submit(self.api.run, bystander.id, "touch started; sleep 2; echo alive",
                                timeout_seconds=120)
            for sid in (sandbox.id, bystander.id):
                self.assertTrue(wait_until(
                    lambda: os.path.exists(os.path.join(sandbox_dir(sid), "started")), 10),
                    "the command never started")
            time.sleep(0.1)
            start = time.monotonic()
            self.api.delete_sandbox(sandbox.id)
            r = future.result(timeout=20)
            self.assertLess(time.monotonic() - start, 10)
            survivor = other.result(timeout=20)
        self.assertEqual(r.exit_code, 137)
        self.assertIn("killed", r.stderr)
        self.assertEqual((survivor.exit_code, survivor.stdout), (0, "alive\n"))
        self.assertTrue(wait_until(lambda: not os.path.exists(directory), 10),
                        "%s still there" % directory)
        self.assertTrue(os.path.isdir(sandbox_dir(bystander.id)))

    def test_a_command_still_running_when_its_sandbox_expires_is_killed(self):
        """After expires_at the sandbox is over: the sweep (every 2 s) kills what still runs."""
        sandbox = self.api.create_sandbox(timeout_seconds=2)
        start = time.monotonic()
        r = self.api.run(sandbox.id, "sleep 30", timeout_seconds=60)
        self.assertLess(time.monotonic() - start, 10)
        self.assertEqual(r.exit_code, 137)
        self.assertIn("killed", r.stderr)
        self.assertTrue(wait_until(lambda: not os.path.exists(sandbox_dir(sandbox.id)), 10))

    # Under ASan, this and the test above show the sweep's leak (see the module docstring):
    # the report comes at tearDownModule, when the server exits.
    def test_an_expired_sandboxs_directory_is_swept(self):
        sandbox = self.api.create_sandbox(timeout_seconds=1)
        directory = sandbox_dir(sandbox.id)
        self.assertTrue(os.path.isdir(directory))
        self.assertTrue(wait_until(lambda: not os.path.exists(directory), 10),
                        "%s still there" % directory)
        self.assertEqual(self.api.get_sandbox(sandbox.id).status, "expired")

    def test_output_is_utf8_text_with_invalid_bytes_and_nul_replaced(self):
        sandbox = self.api.create_sandbox()
        r = self.api.run(sandbox.id, "printf 'a\\377b\\000c\\303\\251'; printf '\\300\\200' >&2")
        self.assertEqual(r.stdout, "a\ufffdb\ufffdc\u00e9")
        self.assertEqual(r.stderr, "\ufffd\ufffd")

    def test_two_snapshots_of_one_name_built_at_once_make_one(self):
        """A duplicate snapshot name is ALREADY_EXISTS, also when both builds run at once;
        the loser's directory is removed."""
        snapshots_dir = os.path.join(data_dir(SHARED), "snapshots")
        before = set(os.listdir(snapshots_dir))
        name = unique("race")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(status_of, self.api.create_snapshot, name,
                                   run_commands=["sleep 0.5; echo built > built.txt"])
                       for _ in range(2)]
            codes = sorted(f.result().name for f in futures)
        self.assertEqual(codes, ["ALREADY_EXISTS", "OK"])
        snap = self.api.get_snapshot(name)
        self.assertEqual(wait_until(lambda: set(os.listdir(snapshots_dir)) - before, 5),
                         {snap.id})
        sandbox = self.api.create_sandbox(snapshot=name)
        self.assertEqual(self.run_ok(sandbox.id, "cat built.txt"), "built\n")

    def test_commands_beyond_the_concurrency_cap_are_resource_exhausted_not_queued(self):
        """RunCommand calls beyond the cap (16 at once per process) fail fast with
        RESOURCE_EXHAUSTED (retryable) instead of hanging."""
        sandbox = self.api.create_sandbox()
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(status_of, self.api.run, sandbox.id, "sleep 2")
                       for _ in range(24)]
            codes = [f.result() for f in futures]
        self.assertGreaterEqual(codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED), 1, codes)
        self.assertLessEqual(codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED), 8, codes)
        self.assertEqual(set(codes), {OK, grpc.StatusCode.RESOURCE_EXHAUSTED})
        self.assertEqual(self.run_ok(sandbox.id, "echo again"), "again\n")

    def test_a_command_whose_caller_gave_up_is_killed(self):
        """A client's deadline passes while its command runs: the command dies with the call
        instead of holding one of the 16 places until its own timeout."""
        sandbox = self.api.create_sandbox()
        request = S.sandbox_pb2.RunCommandRequest(
            sandbox_id=sandbox.id, command="sleep 3; touch late.txt", timeout_seconds=60)
        with self.assertRaises(grpc.RpcError) as caught:
            self.api.sandboxes.RunCommand(request, metadata=self.api.metadata, timeout=1.0)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        time.sleep(3.5)
        self.assertEqual(self.run_ok(sandbox.id, "ls"), "")

    def test_a_store_value_never_appears_in_command_output_of_a_fork(self):
        """Forks and snapshot sandboxes hold tokens too, never values."""
        value = secret_value("top")
        base_value = secret_value("base")
        base = self.api.store_with({"BASE": base_value})
        top = self.api.store_with({"TOP": value})
        snap = self.api.create_snapshot(unique("snap"), run_commands=["env > build-env.txt"])
        parent = self.api.create_sandbox(base.name, snap.name)
        child = self.api.fork(self.api.checkpoint(parent.id).id, top.name)
        out = self.run_ok(child.id, 'env; cat build-env.txt; echo "$TOP $BASE"')
        self.assertIn(child.env["TOP"] + " " + child.env["BASE"], out)
        self.assertNotIn(value, out)
        self.assertNotIn(base_value, out)


# ----------------------------------------------------------------------------------------------
# 8. Without the local runtime

class NoLocalRuntimeTest(ApiTestCase):

    server_name = "PLAIN"

    def test_run_command_is_unimplemented(self):
        """RunCommand belongs to the local process runtime and is UNIMPLEMENTED when it is
        off."""
        sandbox = self.api.create_sandbox()
        self.assertFails(UNIMPLEMENTED, self.api.run, sandbox.id, "true")

    def test_the_ca_file_is_the_orchestrators_path_and_the_proxy_the_default(self):
        """Without the local runtime the orchestrator injects env: the CA variables name
        /etc/sealgate/proxy-ca.pem (where it puts proxy.ca_cert_pem)."""
        store = self.api.store_with({"K": secret_value()})
        sandbox = self.api.create_sandbox(store.name)
        for var in CA_FILE_VARS:
            self.assertEqual(sandbox.env[var], DEFAULT_CA_FILE, var)
        proxy_credential(self, sandbox)
        self.assertIn("CA:TRUE", openssl_text(sandbox.proxy.ca_cert_pem))
        # Checkpoints and forks work without directories to copy.
        child = self.api.fork(self.api.checkpoint(sandbox.id).id)
        self.assertEqual(list(child.secret_stores), [store.name])
        self.assertEqual(child.env["SSL_CERT_FILE"], DEFAULT_CA_FILE)
        snap = self.api.create_snapshot(unique("snap"), run_commands=["exit 1"])
        self.assertEqual(list(snap.image.run_commands), ["exit 1"])   # recorded, not run
        self.assertEqual(self.api.create_sandbox(snapshot=snap.name).snapshot, snap.name)

    def test_only_a_running_sandbox_can_be_checkpointed(self):
        """CreateCheckpoint of an expired or a stopped sandbox: FAILED_PRECONDITION."""
        expiring = self.api.create_sandbox(timeout_seconds=1)
        stopped = self.api.create_sandbox()
        self.api.delete_sandbox(stopped.id)
        self.assertFails(FAILED_PRECONDITION, self.api.checkpoint, stopped.id)
        self.assertTrue(wait_until(
            lambda: self.api.get_sandbox(expiring.id).status == "expired", 6))
        self.assertFails(FAILED_PRECONDITION, self.api.checkpoint, expiring.id)
        self.assertFails(NOT_FOUND, self.api.checkpoint, str(uuid.uuid4()))

    def test_the_ca_survives_a_restart_and_the_advertised_proxy_and_ca_path_are_flags(self):
        """The CA is made in --data-dir at first start and the same after a restart;
        --proxy-advertise sets proxy.url's host:port and --sandbox-ca-file the CA path."""
        data = tempfile.mkdtemp(prefix="sealgate-e2e-data-")
        self.addCleanup(shutil.rmtree, data, ignore_errors=True)
        first = helpers.Server("--data-dir", data)
        try:
            api = Api(first, self.key)
            pem = api.create_sandbox().proxy.ca_cert_pem
            api.close()
        finally:
            first.cleanup()
        self.assertEqual(os.stat(os.path.join(data, "proxy-ca.key")).st_mode & 0o777, 0o600)
        second = helpers.Server("--data-dir", data, "--proxy-advertise", "proxy.internal:8443",
                                "--sandbox-ca-file", "/opt/ca/sealgate.pem")
        try:
            api = Api(second, self.key)
            sandbox = api.create_sandbox()
            again = api.get_sandbox(sandbox.id)
            api.close()
            log = second.log()
        finally:
            second.cleanup()
        self.assertEqual(sandbox.proxy.ca_cert_pem, pem)
        proxy_credential(self, sandbox, "proxy.internal:8443")
        self.assertEqual(again.proxy, sandbox.proxy)
        for var in CA_FILE_VARS:
            self.assertEqual(sandbox.env[var], "/opt/ca/sealgate.pem", var)
        for secret in list(SENSITIVE):
            self.assertNotIn(secret, log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
