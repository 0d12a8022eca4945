"""Shared plumbing for sealgate's end-to-end suites: Python stubs generated at test start, a
test server run as a child process with its log captured, throwaway TLS material, and raw gRPC
requests over curl for the cases grpcio will not send.

Every wait here is bounded; every process started here is killed by its owner's tearDown.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import grpc

SOURCE_ROOT = os.environ.get(
    "SEALGATE_SOURCE_ROOT",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
TEST_SERVER = os.environ.get(
    "SEALGATE_TEST_SERVER",
    os.path.join(SOURCE_ROOT, "build", "tests", "support", "sealgate-test-server"))
SEALGATE_BIN = os.environ.get(
    "SEALGATE_BIN", os.path.join(SOURCE_ROOT, "build", "server", "sealgate"))
PG_LOCAL = os.path.join(SOURCE_ROOT, "deploy", "pg-local.sh")

GRPC_PROTO_ROOT = "/usr/share/grpc-proto"
PROTOBUF_INCLUDE = "/usr/include"

# How long a server may take to print its listening lines, or to exit after SIGTERM/SIGKILL.
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------------------------
# Secret hygiene across the whole suite (SPEC §3: no value, token or API key in a log)
#
# With SEALGATE_HYGIENE_DIR set (meson sets it for every e2e suite), every secret value, sealed
# token, proxy credential and API key a test sends or receives through grpcio is recorded in
# that directory, and every server and PostgreSQL log is copied there when its owner cleans up.
# tests/e2e/test_log_hygiene.py, which runs after all the others, looks for each recorded
# string in each kept log and fails on any hit.

HYGIENE_DIR = os.environ.get("SEALGATE_HYGIENE_DIR")
# An API key is "osk_" and 49 characters; its 12-character prefix ("osk_" + 8, an audit event's
# actor, ListApiKeys) is public by design, so only longer runs count.
_SENSITIVE_RX = re.compile(r"osb_sealed_[0-9A-Za-z_-]+|osk_[0-9A-Za-z_-]{20,}")
_PROXY_URL_RX = re.compile(r"^https?://[^:/@]+:([^@/]+)@")
MIN_SENSITIVE_LEN = 8  # shorter strings would match by chance


def record_sensitive(*strings):
    """Remembers strings no log may contain (values, tokens, keys)."""
    if not HYGIENE_DIR:
        return
    keep = [x for x in strings if isinstance(x, str) and len(x) >= MIN_SENSITIVE_LEN]
    if not keep:
        return
    os.makedirs(HYGIENE_DIR, exist_ok=True)
    with open(os.path.join(HYGIENE_DIR, "sensitive-%d.jsonl" % os.getpid()), "a") as f:
        for x in keep:
            f.write(json.dumps(x) + "\n")


def keep_log(path, kind):
    """Copies a log file into the hygiene directory before its owner deletes it."""
    if not HYGIENE_DIR or not os.path.exists(path):
        return
    os.makedirs(os.path.join(HYGIENE_DIR, "logs"), exist_ok=True)
    shutil.copy(path, os.path.join(HYGIENE_DIR, "logs", "%s-%d-%s.log" %
                                   (kind, os.getpid(), uuid.uuid4().hex[:8])))


def _record_message(msg):
    """Records what is sensitive in a protobuf message, recursively: the `value` of a secret,
    every sealed token or API key in any string, and the password of a proxy URL."""
    for field, val in msg.ListFields():
        items = val if field.label == field.LABEL_REPEATED else [val]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            items = [v for v in val.values()] if hasattr(val, "values") else []
        for item in items:
            if hasattr(item, "ListFields"):
                _record_message(item)
            elif isinstance(item, str):
                if field.name == "value" and "Secret" in msg.DESCRIPTOR.name:
                    record_sensitive(item)
                record_sensitive(*_SENSITIVE_RX.findall(item))
                m = _PROXY_URL_RX.match(item)
                if m:
                    record_sensitive(m.group(1))


class _Recorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def _request(self, request):
        try:
            _record_message(request)
        except Exception:  # a raw bytes request or a test's odd object: nothing to record
            pass

    def intercept_unary_unary(self, continuation, details, request):
        self._request(request)
        outcome = continuation(details, request)

        def done(f):
            try:
                if f.exception() is None:
                    _record_message(f.result())
            except Exception:
                pass
        outcome.add_done_callback(done)
        return outcome

    def intercept_unary_stream(self, continuation, details, request):
        self._request(request)
        return continuation(details, request)


if HYGIENE_DIR:
    _insecure_channel, _secure_channel = grpc.insecure_channel, grpc.secure_channel
    grpc.insecure_channel = lambda *a, **k: grpc.intercept_channel(
        _insecure_channel(*a, **k), _Recorder())
    grpc.secure_channel = lambda *a, **k: grpc.intercept_channel(
        _secure_channel(*a, **k), _Recorder())


# --------------------------------------------------------------------------------------------
# Stubs

# The grpc-proto files would generate into a top-level Python package named `grpc`, shadowing
# grpcio itself. So they are copied into a staging tree under `grpcstubs/` before protoc runs:
# the Python modules become grpcstubs.health.v1.health_pb2 and so on, while the proto packages
# (and therefore the method paths on the wire, /grpc.health.v1.Health/Check) are unchanged.
_GRPC_PROTOS = [
    "health/v1/health.proto",
    "reflection/v1/reflection.proto",
    "reflection/v1alpha/reflection.proto",
]


class Stubs:
    """The generated modules, by short name."""

    def __init__(self):
        import importlib
        imp = importlib.import_module
        self.health_pb2 = imp("grpcstubs.health.v1.health_pb2")
        self.health_grpc = imp("grpcstubs.health.v1.health_pb2_grpc")
        self.reflection_v1_pb2 = imp("grpcstubs.reflection.v1.reflection_pb2")
        self.reflection_v1_grpc = imp("grpcstubs.reflection.v1.reflection_pb2_grpc")
        self.reflection_v1alpha_pb2 = imp("grpcstubs.reflection.v1alpha.reflection_pb2")
        self.reflection_v1alpha_grpc = imp("grpcstubs.reflection.v1alpha.reflection_pb2_grpc")
        self.resources_pb2 = imp("sealgate.v1.resources_pb2")
        self.secret_store_pb2 = imp("sealgate.v1.secret_store_pb2")
        self.secret_store_grpc = imp("sealgate.v1.secret_store_pb2_grpc")
        self.secret_pb2 = imp("sealgate.v1.secret_pb2")
        self.secret_grpc = imp("sealgate.v1.secret_pb2_grpc")
        self.sandbox_pb2 = imp("sealgate.v1.sandbox_pb2")
        self.sandbox_grpc = imp("sealgate.v1.sandbox_pb2_grpc")
        self.audit_pb2 = imp("sealgate.v1.audit_pb2")
        self.audit_grpc = imp("sealgate.v1.audit_pb2_grpc")
        self.test_pb2 = imp("sealgate.testing.v1.test_service_pb2")
        self.test_grpc = imp("sealgate.testing.v1.test_service_pb2_grpc")


_stubs = None
_stubs_dir = None


def stubs():
    """Generates the Python stubs once per process (into a temp dir put on sys.path) and
    returns them. Raises if protoc fails."""
    global _stubs, _stubs_dir
    if _stubs is not None:
        return _stubs
    _stubs_dir = tempfile.mkdtemp(prefix="sealgate-e2e-stubs-")
    atexit.register(shutil.rmtree, _stubs_dir, ignore_errors=True)
    staging = os.path.join(_stubs_dir, "protos")
    out = os.path.join(_stubs_dir, "py")
    os.makedirs(out)
    for rel in _GRPC_PROTOS:
        dst = os.path.join(staging, "grpcstubs", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(os.path.join(GRPC_PROTO_ROOT, "grpc", rel), dst)
    proto_root = os.path.join(SOURCE_ROOT, "proto")
    test_proto_root = os.path.join(SOURCE_ROOT, "tests", "proto")
    sealgate_protos = sorted(
        os.path.join("sealgate", "v1", f)
        for f in os.listdir(os.path.join(proto_root, "sealgate", "v1")) if f.endswith(".proto"))
    files = ([os.path.join("grpcstubs", rel) for rel in _GRPC_PROTOS] + sealgate_protos +
             ["sealgate/testing/v1/test_service.proto"])
    cmd = ["protoc", "-I" + staging, "-I" + proto_root, "-I" + test_proto_root,
           "-I" + PROTOBUF_INCLUDE, "-I" + GRPC_PROTO_ROOT,
           "--python_out=" + out, "--grpc_out=" + out,
           "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin"] + files
    subprocess.run(cmd, check=True, timeout=60)
    sys.path.insert(0, out)
    _stubs = Stubs()
    return _stubs


# --------------------------------------------------------------------------------------------
# Small helpers the API suites share

def unique(prefix):
    """A name no other test uses."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def wait_until(predicate, timeout, interval=0.02):
    """Polls `predicate` until it returns something true or `timeout` seconds pass; returns its
    last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def status_of(fn, *args, **kwargs):
    """The status code a call ends with: OK, or the code of its grpc.RpcError."""
    try:
        fn(*args, **kwargs)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


class StatusAssertions(unittest.TestCase):
    """assertFails for gRPC calls."""

    def assertFails(self, code, fn, *args, **kwargs):
        """Calls fn, which must fail with `code`; returns the grpc.RpcError."""
        try:
            result = fn(*args, **kwargs)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), code, e.details())
            return e
        self.fail("expected %s, the call succeeded with:\n%s" % (code, result))


# --------------------------------------------------------------------------------------------
# PostgreSQL and keys

class PgDatabase:
    """One PostgreSQL database, by its connection string: psql and sealgate's admin commands
    run against it."""

    def __init__(self, conninfo):
        self.conninfo = conninfo

    def migrate(self):
        """Runs `sealgate migrate`; returns its output."""
        return run_sealgate("migrate", "--db", self.conninfo)

    def psql(self, sql):
        """Runs `sql` with psql; returns stdout (unaligned, tuples only)."""
        out = subprocess.run(["psql", self.conninfo, "-XtAq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("psql failed: %s\n%s" % (sql, out.stderr))
        return out.stdout

    def create_org(self, name="e2e"):
        """A new organization: returns (org_id, api_key)."""
        out = run_sealgate("admin", "create-org", name, "--db", self.conninfo, "--json")
        data = json.loads(out)
        record_sensitive(data["api_key"])
        return data["org_id"], data["api_key"]

    def create_api_key(self, org_id):
        """Another API key for `org_id`: returns the key."""
        out = run_sealgate("admin", "create-api-key", org_id, "--db", self.conninfo, "--json")
        key = json.loads(out)["api_key"]
        record_sensitive(key)
        return key

    def revoke_api_key(self, api_key):
        """Revokes `api_key` by the prefix an operator sees (its first 12 characters)."""
        run_sealgate("admin", "revoke-api-key", api_key[:12], "--db", self.conninfo)


class PgCluster(PgDatabase):
    """A private PostgreSQL cluster (deploy/pg-local.sh) in a temporary directory, reached
    through a Unix socket inside it. `settings` are postgres -c settings (log_statement=all).
    As a PgDatabase it is the cluster's database "sealgate"; create_database adds others."""

    def __init__(self, *settings):
        self.dir = tempfile.mkdtemp(prefix="sealgate-e2e-pg-")
        self.settings = list(settings)
        super().__init__(self.start())

    def start(self):
        out = subprocess.run([PG_LOCAL, "start", self.dir] + self.settings,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("starting PostgreSQL failed:\n" + out.stderr)
        return out.stdout.strip().splitlines()[-1]

    def stop(self):
        subprocess.run([PG_LOCAL, "stop", self.dir], capture_output=True, timeout=120)

    def cleanup(self):
        self.stop()
        keep_log(self.log_path, "postgresql")
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def log_path(self):
        return os.path.join(self.dir, "postgresql.log")

    def create_database(self, name):
        """A new, empty (unmigrated) database `name` in this cluster."""
        self.psql('CREATE DATABASE "%s"' % name)
        return PgDatabase(re.sub(r"\bdbname=\S+", "dbname=" + name, self.conninfo))


def sealgate_cli(*args, env=None, timeout=120):
    """Runs the sealgate binary with `args`; returns the subprocess.CompletedProcess (text),
    whatever its exit status. A run that outlives `timeout` is killed and raises."""
    return subprocess.run([SEALGATE_BIN] + list(args), capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def run_sealgate(*args, check=True):
    """Runs the sealgate binary with `args`; returns stdout (raises on failure if `check`)."""
    out = sealgate_cli(*args)
    if check and out.returncode != 0:
        raise RuntimeError("sealgate %s failed (%d):\n%s%s" %
                           (" ".join(args), out.returncode, out.stdout, out.stderr))
    return out.stdout


def write_root_key(path):
    """A fresh root key file (64 hex characters, mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    return path


_shared_db = None
_shared_key_dir = None


def shared_db():
    """One migrated cluster for the whole test process, stopped when it exits."""
    global _shared_db
    if _shared_db is None:
        # Every statement with its parameters in the log: the hygiene sweep checks that no
        # value, token or key ever reaches the database in the clear.
        _shared_db = PgCluster("log_statement=all")
        atexit.register(_shared_db.cleanup)
        _shared_db.migrate()
    return _shared_db


def shared_root_key():
    global _shared_key_dir
    if _shared_key_dir is None:
        _shared_key_dir = tempfile.mkdtemp(prefix="sealgate-e2e-key-")
        atexit.register(shutil.rmtree, _shared_key_dir, ignore_errors=True)
        write_root_key(os.path.join(_shared_key_dir, "root.key"))
    return os.path.join(_shared_key_dir, "root.key")


# --------------------------------------------------------------------------------------------
# Server process

_LISTENING = re.compile(r"msg=listening listener=(\S+) address=(\S+)")


class Server:
    """One sealgate-test-server child. Its stderr (the log) goes to a temp file that tests read
    with log(); stop() is idempotent and always leaves the process reaped."""

    def __init__(self, *flags, listeners=("grpc-listen",), binary=None, db=None, root_key=None):
        """Starts a server with `flags`; the database is `db` (a conninfo) or the shared
        cluster, the root key `root_key` (a file) or the shared one."""
        self.workdir = tempfile.mkdtemp(prefix="sealgate-e2e-server-")
        self.log_path = os.path.join(self.workdir, "server.log")
        self._log = open(self.log_path, "wb")
        args = [binary or TEST_SERVER, "serve"]
        if "--grpc-listen" not in flags:
            args += ["--grpc-listen", "127.0.0.1:0"]
        if "--db" not in flags:
            args += ["--db", db or shared_db().conninfo]
        if "--root-key-file" not in flags:
            args += ["--root-key-file", root_key or shared_root_key()]
        if "--data-dir" not in flags:
            args += ["--data-dir", os.path.join(self.workdir, "data")]
        args += list(flags)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        self.addresses = {}
        try:
            self._wait_listening(set(listeners))
        except Exception:
            self.stop()
            raise

    def _wait_listening(self, wanted):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, addr in _LISTENING.findall(self.log()):
                self.addresses[name] = addr
            if wanted <= set(self.addresses):
                return
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %s before listening:\n%s" %
                                   (self.proc.returncode, self.log()))
            time.sleep(0.02)
        raise RuntimeError("server did not report %s within %ss:\n%s" %
                           (sorted(wanted), START_TIMEOUT_S, self.log()))

    def port(self, listener="grpc-listen"):
        return int(self.addresses[listener].rsplit(":", 1)[1])

    @property
    def target(self):
        """host:port of the cleartext listener."""
        return "127.0.0.1:%d" % self.port()

    def log(self):
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for_log(self, pattern, timeout=5.0, count=1):
        """Polls the log until the regex `pattern` matches at least `count` times; returns the
        matching lines (possibly fewer than `count` if the timeout passed)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = [l for l in self.log().splitlines() if rx.search(l)]
            if len(lines) >= count or time.monotonic() >= deadline:
                return lines
            time.sleep(0.02)

    def terminate(self):
        """Sends SIGTERM (the graceful shutdown request)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def wait(self, timeout):
        """Returns the exit status, or None if the process is still running after `timeout`."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """Stops the server gracefully (SIGTERM) and returns its exit status; -9 if it had to
        be killed."""
        if self.proc.poll() is None:
            # A second SIGTERM means "stop waiting for calls": give the first one its time.
            if not getattr(self, "_terminated", False):
                self.proc.send_signal(signal.SIGTERM)
            if self.wait(STOP_TIMEOUT_S) is None:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def cleanup(self):
        """Stops the server and checks how it ended: a graceful exit 0, and no report from
        AddressSanitizer, LeakSanitizer or UndefinedBehaviorSanitizer in its log (the suite
        runs a second time against a sanitizer build). Raises AssertionError otherwise."""
        if not os.path.isdir(self.workdir):
            return  # cleaned up already
        status = self.stop()
        log = self.log()
        keep_log(self.log_path, "server")
        shutil.rmtree(self.workdir, ignore_errors=True)
        for marker in SANITIZER_MARKERS:
            if marker in log:
                raise AssertionError("server log has a sanitizer report:\n" + log[-8000:])
        if status != 0:
            raise AssertionError("server exited with status %s:\n%s" % (status, log[-4000:]))


# Lines the sanitizers print when they find something.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


# --------------------------------------------------------------------------------------------
# TLS material

def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _issue(cwd, ca, name, subject, extensions):
    """Writes NAME.key and NAME.pem: an EC P-256 key and a cert signed by CA.{key,pem}."""
    with open(os.path.join(cwd, name + ".ext"), "w") as f:
        f.write(extensions)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", name + ".key", "-subj", subject, "-out", name + ".csr", cwd=cwd)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
             "-CAcreateserial", "-days", "2", "-sha256", "-extfile", name + ".ext",
             "-out", name + ".pem", cwd=cwd)


def make_ca(cwd, name):
    """Writes NAME.key and NAME.pem: a self-signed CA."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
             "-subj", "/CN=sealgate e2e " + name,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


class TlsMaterial:
    """A throwaway CA with a server cert (localhost, 127.0.0.1) and a client cert; all paths
    absolute, bytes available through read()."""

    def __init__(self, cwd):
        self.dir = cwd
        make_ca(cwd, "ca")
        _issue(cwd, "ca", "server", "/CN=localhost",
               "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _issue(cwd, "ca", "client", "/CN=sealgate e2e client",
               "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=clientAuth\n")

    def path(self, name):
        return os.path.join(self.dir, name)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()


# --------------------------------------------------------------------------------------------
# Raw gRPC over curl

def frame(message_bytes, compressed=False):
    """A gRPC Length-Prefixed-Message: flag byte, 4-byte big-endian length, message."""
    return struct.pack(">BI", 1 if compressed else 0, len(message_bytes)) + message_bytes


class CurlResult:
    def __init__(self, returncode, headers, body, stderr):
        self.returncode = returncode
        self.headers = headers    # list of (lower-case name, value), response headers + trailers
        self.body = body
        self.stderr = stderr

    def header(self, name):
        """The last value of header or trailer `name`, or None."""
        values = [v for n, v in self.headers if n == name]
        return values[-1] if values else None

    @property
    def http_status(self):
        m = [l for l in self.stderr.splitlines() if l.startswith("< HTTP/2 ")]
        return int(m[-1].split()[2]) if m else None


def curl_post(url, body, headers, timeout=15.0):
    """POSTs `body` over h2c (prior knowledge) with curl and returns a CurlResult. Headers and
    trailers are both taken from curl's -v trace ("< name: value" lines), which lists trailers
    as they arrive.

    body=None sends a POST without a body (HEADERS with END_STREAM). Use it for requests the
    server answers from the headers alone: when such an answer arrives while curl 7.88 still
    has body to upload, the server rightly follows it with RST_STREAM(NO_ERROR)
    (PROTOCOL-HTTP2.md), and curl then fails the transfer with "(92) Stream error in the HTTP/2
    framing layer" about one time in four instead of reporting the response it already has
    (curl's early-response handling; cf. curl/curl#22984)."""
    with tempfile.TemporaryDirectory(prefix="sealgate-e2e-curl-") as d:
        out_path = os.path.join(d, "out")
        cmd = ["curl", "-sS", "-v", "--http2-prior-knowledge", "--max-time", str(timeout),
               "-X", "POST", "-o", out_path]
        if body is not None:
            body_path = os.path.join(d, "body")
            with open(body_path, "wb") as f:
                f.write(body)
            cmd += ["--data-binary", "@" + body_path]
        for name, value in headers:
            cmd += ["-H", "%s: %s" % (name, value)]
        cmd.append(url)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout + 10)
        stderr = p.stderr.decode("utf-8", "replace")
        got = []
        for line in stderr.splitlines():
            if line.startswith("< ") and ":" in line[2:] and not line.startswith("< HTTP/"):
                name, _, value = line[2:].partition(":")
                got.append((name.strip().lower(), value.strip()))
        body_out = b""
        if os.path.exists(out_path):
            with open(out_path, "rb") as f:
                body_out = f.read()
        return CurlResult(p.returncode, got, body_out, stderr)


# --------------------------------------------------------------------------------------------
# A raw HTTP/2 client, for what no well-behaved client does (never reading, holding a
# connection idle at the frame level). HPACK: literal fields without indexing, no Huffman.

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_RST_STREAM, H2_SETTINGS, H2_PING, H2_GOAWAY, H2_WINDOW_UPDATE = \
    0, 1, 3, 4, 6, 7, 8


def _hpack_int(value, prefix_bits):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = [limit]
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    return bytes(out + [value])


def h2_frame(ftype, flags, stream_id, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + \
        stream_id.to_bytes(4, "big") + payload


class RawH2:
    """One HTTP/2 connection driven by hand. Frames read come back as (type, flags, stream,
    payload); ("EOF", ...) marks the end of the connection."""

    def __init__(self, port, settings=None, rcvbuf=None, tls_ca=None):
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        if tls_ca:
            ctx = ssl.create_default_context(cafile=tls_ca)
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buf = b""
        body = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big")
                        for k, v in (settings or {}).items())
        self.send(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0, body))

    def send(self, data):
        self.sock.sendall(data)

    def request(self, stream_id, path, message, end=True):
        fields = [(":method", "POST"), (":scheme", "http"), (":path", path),
                  (":authority", "localhost"), ("content-type", "application/grpc"),
                  ("te", "trailers")]
        block = b"".join(b"\x00" + _hpack_int(len(n), 7) + n.encode() +
                         _hpack_int(len(v), 7) + v.encode() for n, v in fields)
        self.send(h2_frame(H2_HEADERS, 0x4, stream_id, block))
        self.send(h2_frame(H2_DATA, 0x1 if end else 0, stream_id, frame(message)))

    def read_frames(self, timeout, until=None):
        """Reads frames for up to `timeout` seconds (acknowledging SETTINGS), stopping early
        when until(frames) is true or the connection ends."""
        frames = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + length:
                    break
                ftype, flags = self.buf[3], self.buf[4]
                stream = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
                frames.append((ftype, flags, stream, self.buf[9:9 + length]))
                self.buf = self.buf[9 + length:]
                if ftype == H2_SETTINGS and not flags & 1:
                    try:
                        self.send(h2_frame(H2_SETTINGS, 1, 0))
                    except OSError:  # the server has closed: what was read still counts
                        frames.append(("EOF", 0, 0, b""))
                        return frames
                if until is not None and until(frames):
                    return frames
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                data = b""
            if not data:
                frames.append(("EOF", 0, 0, b""))
                return frames
            self.buf += data
        return frames

    def close(self):
        self.sock.close()
