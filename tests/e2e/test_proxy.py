"""End-to-end: the egress proxy (SPEC §5; the host, rotation, layering and audit semantics of §2)
as real clients see it: curl, Python's urllib, Node (when installed), and raw sockets for what no
well-behaved client sends.

The upstreams are the TLS and cleartext echo servers of upstream.py (HTTP/1.1, HTTP/2 and
gRPC), running in this process on 127.0.0.1; the proxy reaches them through --proxy-resolve
(every test host name maps to 127.0.0.1), --proxy-allow-cidr 127.0.0.0/8, --proxy-allow-port
(their kernel-chosen ports) and --upstream-ca (their CA). What an upstream received is read
from its records (substitution is checked there, never in the echo the client gets back, which
the proxy redacts). A second server without --proxy-allow-cidr checks the SSRF table.

  1. The seed flow: a local-runtime sandbox's own curl and python, and curl, urllib and Node
     from outside.
  2. Substitution: where tokens are replaced (headers, Basic credentials, query, bodies with
     Content-Length or chunked, tokens split across chunks and reads), and where they are not
     (hosts the secret does not allow, wildcards and look-alikes, CONNECT/SNI/Host that differ,
     another sandbox's tokens, cleartext HTTP); layering, rotation, keep-alive.
  3. Redaction of values echoed back in responses (Content-Length, chunked and close-delimited
     bodies).
  4. Framing: smuggling vectors (400), header blocks over 64 KiB (431), bodies over 16 MiB (413).
  5. Upstream trust: unknown CA or wrong name (502, no request bytes); the leaf certificate.
  6. Proxy authentication (407).
  7. Egress policy: ports (403), the layered allowlist (403, audited), the SSRF table (403).
  8. Audit events, use_count and last_used_at.
  9. Other protocols: a WebSocket upgrade (handshake substituted and redacted, then frames
     both ways), HTTP/2 (ALPN mirrored: h2 to an h2 upstream, HTTP/1.1 to an HTTP/1.1 one;
     headers, :path query and bodies substituted, responses redacted) and gRPC through grpcio's
     own proxy support (metadata substituted, messages untouched, headers and trailers
     redacted).

Every test makes uniquely named stores and sends its requests to unique paths, so the tests do
not depend on each other's order. At the end of the module the servers' logs are searched for
every secret value, sealed token and proxy credential the tests used: none may be there.
"""

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402  (after the path tweak, so the helpers module is found)

import helpers  # noqa: E402
import upstream  # noqa: E402

RPC_TIMEOUT_S = 15.0
IO_TIMEOUT_S = 10.0       # one socket read or write through the proxy
AUDIT_WAIT_S = 5.0        # audit events are written in batches
ROTATION_WAIT_S = 1.0     # SetSecret reaches running sandboxes "at once": within a second
QUIET_S = 0.25            # how long to wait before saying nothing reached an upstream

MIB = 1024 * 1024
MAX_BODY = 16 * MIB       # a Content-Length body over this is 413
MAX_HEAD = 64 * 1024      # a header block over this is 431
TOKEN_RE = re.compile(r"osb_sealed_[0-9a-f]{32}")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
CHALLENGE = 'Basic realm="sealgate"'

# Host names the main server resolves to 127.0.0.1 (the upstream's certificate names them, but
# wrong.test, which only the wrong-name upstream's certificate holds).
RESOLVED = upstream.CERT_NAMES + (upstream.WRONG_NAME,)

# The SSRF table (SPEC §5: never a private, loopback, link-local or metadata address after
# resolution): literal hosts, each 403 on a server without --proxy-allow-cidr.
SSRF_LITERALS = ("127.0.0.1", "127.1", "2130706433", "0x7f.1", "[::1]", "[::ffff:127.0.0.1]",
                 "169.254.169.254", "10.0.0.1", "192.168.1.1", "100.64.0.1", "0.0.0.0",
                 "[fd00:ec2::254]", "[64:ff9b::7f00:1]")
# The same addresses behind names (--proxy-resolve on that server). IPv6 answers are written
# bare (HOST:ADDR splits at the first colon, since a host name has none).
SSRF_NAMES = {
    "loopback.test": "127.0.0.1",
    "metadata.test": "169.254.169.254",
    "ten.test": "10.0.0.1",
    "lan.test": "192.168.1.1",
    "cgnat.test": "100.64.0.1",
    "zero.test": "0.0.0.0",
    "v6-loopback.test": "::1",
    "v6-mapped.test": "::ffff:127.0.0.1",
    "v6-ula.test": "fd00:ec2::254",
    "v6-nat64.test": "64:ff9b::7f00:1",
}

S = None          # generated stubs (helpers.Stubs)
UP = None         # upstream.Upstreams
MAIN = None       # the server most tests use (--proxy-allow-cidr 127.0.0.0/8, --local-runtime)
NOALLOW = None    # the same without --proxy-allow-cidr: the SSRF table
_pki_dir = None
SENSITIVE = set()   # every secret value, sealed token and proxy credential the tests used
_sensitive_lock = threading.Lock()


def remember(*items):
    with _sensitive_lock:
        SENSITIVE.update(i for i in items if i)


def proxy_flags():
    flags = ["--proxy-listen", "127.0.0.1:0", "--upstream-ca", UP.pki.ca_file]
    for port in UP.ports:
        flags += ["--proxy-allow-port", str(port)]
    return flags


def setUpModule():
    global S, UP, MAIN, NOALLOW, _pki_dir
    S = helpers.stubs()
    _pki_dir = tempfile.mkdtemp(prefix="sealgate-e2e-upstream-")
    UP = upstream.Upstreams(upstream.UpstreamPki(_pki_dir)).start()
    main_flags = ["--local-runtime", "--threads", "2", "--proxy-allow-cidr", "127.0.0.0/8"]
    for name in RESOLVED:
        main_flags += ["--proxy-resolve", name + ":127.0.0.1"]
    for name, addr in SSRF_NAMES.items():
        main_flags += ["--proxy-resolve", "%s:%s" % (name, addr)]
    noallow_flags = ["--threads", "2"]
    for name in RESOLVED:
        noallow_flags += ["--proxy-resolve", name + ":127.0.0.1"]
    for name, addr in SSRF_NAMES.items():
        noallow_flags += ["--proxy-resolve", "%s:%s" % (name, addr)]
    listeners = ("grpc-listen", "proxy-listen")
    try:
        MAIN = helpers.Server(*(main_flags + proxy_flags()), listeners=listeners)
        NOALLOW = helpers.Server(*(noallow_flags + proxy_flags()), listeners=listeners)
    except BaseException:
        # unittest skips tearDownModule when setUpModule fails: clean up here.
        for server in (MAIN, NOALLOW):
            if server is not None:
                server.stop()
        UP.stop()
        shutil.rmtree(_pki_dir, ignore_errors=True)
        raise


def tearDownModule():
    """Stops the servers (helpers.Server.cleanup checks for a clean exit and no sanitizer
    report) after searching their logs for anything secret (SPEC §3: "Secret values and tokens
    never reach a log"), then the upstreams."""
    problems = []
    for server in (MAIN, NOALLOW):
        if server is None:
            continue
        log = server.log()
        leaked = sorted(s for s in SENSITIVE if s in log)
        if leaked:
            problems.append("%s's log holds %d secret(s), e.g. %r" %
                            (server.workdir, len(leaked), leaked[0]))
        if "osb_sealed_" in log:
            problems.append("%s's log holds a sealed token" % server.workdir)
    for server in (MAIN, NOALLOW):
        if server is not None:
            try:
                server.cleanup()
            except AssertionError as e:
                problems.append(str(e))
    if UP is not None:
        UP.stop()
    if _pki_dir is not None:
        shutil.rmtree(_pki_dir, ignore_errors=True)
    if MAIN is not None and not SENSITIVE:
        problems.append("no secrets were recorded: the log check checked nothing")
    if problems:
        raise AssertionError("\n".join(problems))


unique = helpers.unique
wait_until = helpers.wait_until


def secret_value(name="v"):
    """A distinctive secret value (searched for in the logs at the end); never the length of a
    sealed token, so that a body's length changes with substitution."""
    value = "val-%s-%s" % (name.lower().replace("_", "-"), uuid.uuid4().hex)
    if len(value) == len("osb_sealed_") + 32:
        value += "-x"
    return value


def b64(text):
    return base64.b64encode(text.encode()).decode()


# ----------------------------------------------------------------------------------------------
# The API

class Api:
    """One organization's view of the API on `server`. Every value, sealed token and proxy
    credential it sees is remembered for the log check."""

    def __init__(self, server, api_key):
        self.server = server
        self.channel = grpc.insecure_channel(server.target)
        self.metadata = (("authorization", "Bearer " + api_key),)
        self.stores = S.secret_store_grpc.SecretStoreServiceStub(self.channel)
        self.secrets = S.secret_grpc.SecretServiceStub(self.channel)
        self.sandboxes = S.sandbox_grpc.SandboxServiceStub(self.channel)
        self.audit = S.audit_grpc.AuditServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def _call(self, method, request, timeout=RPC_TIMEOUT_S):
        return method(request, metadata=self.metadata, timeout=timeout)

    def set_secret(self, store_id, name, value, allowed_hosts=()):
        remember(value)
        return self._call(self.secrets.SetSecret, S.secret_pb2.SetSecretRequest(
            store_id=store_id, name=name, value=value, allowed_hosts=list(allowed_hosts)))

    def set_allowlist(self, store_id, egress_allowlist):
        return self._call(self.stores.UpdateSecretStore, S.secret_store_pb2
                          .UpdateSecretStoreRequest(store_id=store_id,
                                                    egress_allowlist=list(egress_allowlist),
                                                    update_mask={"paths": ["egress_allowlist"]}))

    def list_secrets(self, store_id):
        return {e.name: e for e in self._call(self.secrets.ListSecrets, S.secret_pb2
                                              .ListSecretsRequest(store_id=store_id)).secrets}

    def store_with(self, secrets, egress_allowlist=(), prefix="store"):
        """A new store holding `secrets` ({name: value} or {name: (value, allowed_hosts)})."""
        store = self._call(self.stores.CreateSecretStore, S.secret_store_pb2
                           .CreateSecretStoreRequest(name=unique(prefix),
                                                     egress_allowlist=list(egress_allowlist)))
        for name, spec in secrets.items():
            value, hosts = spec if isinstance(spec, tuple) else (spec, ())
            self.set_secret(store.id, name, value, hosts)
        return store

    def _seen(self, sandbox):
        tokens = [v for v in sandbox.env.values() if v.startswith("osb_sealed_")]
        m = re.match(r"^http://[^:]+:([^@]+)@", sandbox.proxy.url)
        remember(*tokens, m.group(1) if m else None)
        return sandbox

    def create_sandbox(self, secret_store="", timeout_seconds=0):
        return self._seen(self._call(self.sandboxes.CreateSandbox,
                                     S.sandbox_pb2.CreateSandboxRequest(
                                         secret_store=secret_store,
                                         timeout_seconds=timeout_seconds)))

    def get_sandbox(self, sandbox_id):
        return self._call(self.sandboxes.GetSandbox,
                          S.sandbox_pb2.GetSandboxRequest(sandbox_id=sandbox_id))

    def delete_sandbox(self, sandbox_id):
        return self._call(self.sandboxes.DeleteSandbox,
                          S.sandbox_pb2.DeleteSandboxRequest(sandbox_id=sandbox_id))

    def checkpoint(self, sandbox_id):
        return self._call(self.sandboxes.CreateCheckpoint, S.sandbox_pb2.CreateCheckpointRequest(
            sandbox_id=sandbox_id, name=unique("cp")))

    def fork(self, checkpoint_id, secret_store=""):
        return self._seen(self._call(
            self.sandboxes.CreateSandboxFromCheckpoint,
            S.sandbox_pb2.CreateSandboxFromCheckpointRequest(checkpoint_id=checkpoint_id,
                                                             secret_store=secret_store)))

    def run(self, sandbox_id, command, timeout_seconds=30):
        return self._call(self.sandboxes.RunCommand, S.sandbox_pb2.RunCommandRequest(
            sandbox_id=sandbox_id, command=command, timeout_seconds=timeout_seconds),
            timeout=timeout_seconds + RPC_TIMEOUT_S)

    def audit_events(self, sandbox_id):
        events, token = [], ""
        for _ in range(100):
            page = self._call(self.audit.ListAuditEvents, S.audit_pb2.ListAuditEventsRequest(
                sandbox_id=sandbox_id, page_size=1000, page_token=token, kind="proxy"))
            events += list(page.events)
            token = page.next_page_token
            if not token:
                return events
        raise AssertionError("ListAuditEvents never ended")


# ----------------------------------------------------------------------------------------------
# A raw HTTP/1.1 client: exact bytes out, exact responses in, never a silent reconnect

class ConnectionClosed(Exception):
    """The peer closed the connection before a complete response."""


class Response:
    def __init__(self, status, reason, headers, body, stage):
        self.status = status
        self.reason = reason
        self.headers = headers      # [(name, value)] as received
        self.body = body
        self.stage = stage          # "connect": the CONNECT's answer; "request": one inside

    def header(self, name):
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return values[-1] if values else None

    def text(self):
        return self.body.decode("latin-1")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def raw_text(self):
        return "\n".join(["%s: %s" % hv for hv in self.headers] + [self.text()])

    def __repr__(self):
        return "Response(%s %s at %s, %r)" % (self.status, self.reason, self.stage,
                                              self.body[:300])


def build_request(method, target, headers, body=None):
    """The bytes of a request; Content-Length is added for a body unless `headers` frame it."""
    headers = list(headers)
    if body is not None and not any(n.lower() in ("content-length", "transfer-encoding")
                                    for n, _ in headers):
        headers.append(("Content-Length", str(len(body))))
    head = "%s %s HTTP/1.1\r\n" % (method, target) + \
        "".join("%s: %s\r\n" % hv for hv in headers) + "\r\n"
    return head.encode("latin-1") + (body or b"")


class Conn:
    """One connection to a proxy; TLS to the proxy's leaf once a CONNECT succeeded."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=IO_TIMEOUT_S)
        self.sock.settimeout(IO_TIMEOUT_S)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def start_tls(self, ca_pem, server_hostname, check_hostname=True):
        if self.buf:
            raise AssertionError("bytes after the CONNECT response: %r" % self.buf[:200])
        ctx = ssl.create_default_context(cadata=ca_pem)
        ctx.check_hostname = check_hostname
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.peer_cert = self.sock.getpeercert()

    def _fill(self):
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError) as e:
            raise ConnectionClosed(str(e))
        if not data:
            raise ConnectionClosed("EOF with %r unread" % self.buf[:200])
        self.buf += data

    def _until(self, marker, limit=1024 * 1024):
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise AssertionError("no %r in %d bytes" % (marker, limit))
            self._fill()
        i = self.buf.index(marker)
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def _exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, method="GET", stage="request"):
        """The next response (1xx but 101 skipped); the body framed by Content-Length, chunked,
        or the connection's end (101: none, what follows is the upgraded protocol's)."""
        while True:
            head = self._until(b"\r\n\r\n").decode("latin-1")
            lines = head.split("\r\n")
            m = re.match(r"^HTTP/1\.[01] (\d{3}) ?(.*)$", lines[0])
            if not m:
                raise AssertionError("bad status line %r" % lines[0])
            status = int(m.group(1))
            headers = [(n.strip(), v.strip()) for n, _, v in
                       (line.partition(":") for line in lines[1:])]
            if 100 <= status < 200 and status != 101:
                continue
            break
        r = Response(status, m.group(2), headers, b"", stage)
        te = (r.header("transfer-encoding") or "").lower()
        if (method == "CONNECT" and 200 <= status < 300) or method == "HEAD" or \
                status in (101, 204, 304):
            return r
        if "chunked" in te:
            body = []
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self._until(b"\r\n"):
                        pass
                    break
                body.append(self._exactly(size))
                if self._exactly(2) != b"\r\n":
                    raise AssertionError("chunk not followed by CRLF")
            r.body = b"".join(body)
        elif r.header("content-length") is not None:
            r.body = self._exactly(int(r.header("content-length")))
        else:
            try:
                while True:
                    self._fill()
            except ConnectionClosed:
                pass
            r.body, self.buf = self.buf, b""
        return r

    def request(self, method, target, headers, body=None):
        """Sends a request and reads its response. A send cut short by the peer (it answered
        early, 413 or 431, and closed) still reads what the peer answered."""
        try:
            self.send(build_request(method, target, headers, body))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            pass
        return self.read_response(method)

    def ws_send(self, opcode, payload):
        """One masked WebSocket frame."""
        self.send(upstream.ws_frame(opcode, payload))

    def ws_recv(self):
        """(opcode, payload) of the next WebSocket frame, which must be final and unmasked."""
        fin, opcode, masked, payload = upstream.read_ws_frame(self._exactly)
        if not fin or masked:
            raise AssertionError("frame fin=%s masked=%s opcode %d" % (fin, masked, opcode))
        return opcode, payload

    def closed_by_peer(self, timeout=2.0):
        """True if the peer ends the connection within `timeout` without sending anything."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            return True
        finally:
            self.sock.settimeout(IO_TIMEOUT_S)


# ----------------------------------------------------------------------------------------------
# Going through the proxy

SAME = object()   # "as the CONNECT host" / "the sandbox's own credential"


def parse_proxy_url(url):
    """(user, password, host, port) of http://user:password@host:port."""
    m = re.match(r"^http://([^:@/]+):([^@/]+)@([^:/]+):(\d+)/?$", url)
    if not m:
        raise AssertionError("proxy.url %r is not http://id:token@host:port" % url)
    return m.group(1), m.group(2), m.group(3), int(m.group(4))


def proxy_addr(sandbox):
    _, _, host, port = parse_proxy_url(sandbox.proxy.url)
    return host, port


def proxy_authorization(sandbox):
    user, password, _, _ = parse_proxy_url(sandbox.proxy.url)
    return "Basic " + b64("%s:%s" % (user, password))


def authority(host, port):
    return "%s:%d" % (host, port)


def open_tunnel(sandbox, host, port, sni=SAME, authorization=SAME, check_hostname=True):
    """CONNECT host:port through the sandbox's proxy and, if it answers 200, TLS to the proxy's
    leaf with the sandbox's CA (server_hostname: `sni`, by default the host as written; None
    sends no SNI). Returns (Conn, the CONNECT's Response)."""
    conn = Conn(proxy_addr(sandbox))
    try:
        headers = [("Host", authority(host, port))]
        if authorization is SAME:
            authorization = proxy_authorization(sandbox)
        if authorization is not None:
            headers.append(("Proxy-Authorization", authorization))
        conn.send(build_request("CONNECT", authority(host, port), headers))
        r = conn.read_response("CONNECT", stage="connect")
        if r.status == 200:
            name = host.strip("[]") if sni is SAME else sni
            conn.start_tls(sandbox.proxy.ca_cert_pem, name, check_hostname)
        return conn, r
    except BaseException:
        conn.close()
        raise


def https(sandbox, host, path, method="GET", headers=(), body=None, port=None, sni=SAME,
          host_header=None, check_hostname=True, authorization=SAME):
    """One request through a fresh tunnel. Returns the CONNECT's response when it is not 200,
    else the response to the request inside (either may be the proxy's own error)."""
    port = port or UP.main.port
    conn, r = open_tunnel(sandbox, host, port, sni=sni, check_hostname=check_hostname,
                          authorization=authorization)
    with conn:
        if r.status != 200:
            return r
        return conn.request(method, path,
                            [("Host", host_header or authority(host, port))] + list(headers),
                            body)


def http(sandbox, host, path, method="GET", headers=(), body=None, port=None,
         authorization=SAME):
    """One absolute-form cleartext request through the sandbox's proxy."""
    port = port or UP.plain.port
    with Conn(proxy_addr(sandbox)) as conn:
        hdrs = [("Host", authority(host, port))]
        if authorization is SAME:
            authorization = proxy_authorization(sandbox)
        if authorization is not None:
            hdrs.append(("Proxy-Authorization", authorization))
        target = "http://%s%s" % (authority(host, port), path)
        return conn.request(method, target, hdrs + list(headers), body)


def ca_file(test, sandbox):
    """The sandbox's proxy CA in a file, removed when the test ends."""
    fd, path = tempfile.mkstemp(prefix="sealgate-e2e-ca-", suffix=".pem")
    with os.fdopen(fd, "w") as f:
        f.write(sandbox.proxy.ca_cert_pem)
    test.addCleanup(os.unlink, path)
    return path


def header_values(headers, name):
    return [v for n, v in headers if n.lower() == name.lower()]


# ----------------------------------------------------------------------------------------------
# Test bases

class ProxyTestCase(helpers.StatusAssertions):
    """An organization per class on `server_name`, and short assertions about what upstreams
    received."""

    server_name = "MAIN"

    @classmethod
    def setUpClass(cls):
        server = globals()[cls.server_name]
        cls.org_id, cls.key = helpers.shared_db().create_org(cls.__name__)
        cls.api = Api(server, cls.key)

    @classmethod
    def tearDownClass(cls):
        cls.api.close()

    def path(self, tag="p"):
        """A path no other request uses."""
        return "/" + unique(tag)

    def only_request(self, server, path):
        """The one request `server` received at `path` (with any query)."""
        got = [r for r in server.requests if r.path == path]
        self.assertEqual(len(got), 1, "%s received %r at %s" % (server.name, got, path))
        return got[0]

    def assertOk(self, response):
        self.assertEqual(response.status, 200, response)
        return response

    def assertNothingReached(self, server, mark, what="", wait=True):
        """`server` read no byte and no request since `mark` (waiting QUIET_S first)."""
        if wait:
            time.sleep(QUIET_S)
        self.assertEqual(server.since(mark), [], what)
        self.assertEqual(server.bytes_since(mark), 0,
                         "%s read request bytes %s" % (server.name, what))

    def assertStatusAndNothingSent(self, want, send, servers=None, what=""):
        """send() returns a Response whose status is `want`; no upstream read a byte."""
        servers = servers or UP.all
        marks = [(s, s.mark()) for s in servers]
        r = send()
        self.assertEqual(r.status, want, "%s: %r" % (what, r))
        time.sleep(QUIET_S)
        for server, mark in marks:
            self.assertNothingReached(server, mark, what, wait=False)
        return r

    def assertProxyAuthRequired(self, r, what=""):
        self.assertEqual(r.status, 407, "%s: %r" % (what, r))
        self.assertEqual(r.header("proxy-authenticate"), CHALLENGE, what)

    def wait_audit(self, sandbox_id, timeout=AUDIT_WAIT_S, **want):
        """The audit events of `sandbox_id` matching every field in `want`, polled for up to
        `timeout` seconds until there is one; fails with what was there."""
        def matching():
            return [e for e in self.api.audit_events(sandbox_id)
                    if all(getattr(e, k) == v for k, v in want.items())]
        got = wait_until(matching, timeout, interval=0.1)
        if not got:
            self.fail("no audit event %r for sandbox %s within %ss; events: %r" %
                      (want, sandbox_id, timeout, self.api.audit_events(sandbox_id)))
        return got

    def run_ok(self, sandbox_id, command):
        r = self.api.run(sandbox_id, command)
        self.assertEqual(r.exit_code, 0, "%r: stdout %r stderr %r" % (command, r.stdout,
                                                                       r.stderr))
        return r.stdout


ANTHROPIC = "api.anthropic.test"


class SubstitutionBase(ProxyTestCase):

    def one_secret_sandbox(self, name="KEY", allowed_hosts=(), allowlist=(ANTHROPIC,)):
        """(sandbox, value, token, store) for a store with one secret."""
        value = secret_value(name)
        store = self.api.store_with({name: (value, list(allowed_hosts))}, list(allowlist))
        sandbox = self.api.create_sandbox(store.name)
        return sandbox, value, sandbox.env[name], store

    def send_header(self, sandbox, host, token, path=None, **kwargs):
        """A GET to `host` carrying `token` in X-Api-Key; returns (upstream request, response)."""
        path = path or self.path()
        r = self.assertOk(https(sandbox, host, path, headers=[("X-Api-Key", token)], **kwargs))
        return self.only_request(UP.main, path), r


# ----------------------------------------------------------------------------------------------
# 1. The seed flow, and real clients

class SeedFlowTest(SubstitutionBase):

    def test_a_local_runtime_sandboxs_curl_sends_the_value_and_sees_the_token(self):
        """The seed flow: $KEY holds the sealed token; curl in the sandbox (HTTPS_PROXY and
        CURL_CA_BUNDLE from its env) makes the upstream see the real value, and the echo the
        sandbox reads back holds the token, never the value (redaction)."""
        sandbox, value, token, _ = self.one_secret_sandbox("ANTHROPIC_API_KEY", [ANTHROPIC])
        self.assertRegex(token, "^" + TOKEN_RE.pattern + "$")
        self.assertEqual(self.run_ok(sandbox.id, "echo $ANTHROPIC_API_KEY"), token + "\n")
        path = self.path("seed")
        out = self.run_ok(sandbox.id, 'curl -sS --max-time 10 -H "x-api-key: $ANTHROPIC_API_KEY" '
                                      'https://%s:%d%s' % (ANTHROPIC, UP.main.port, path))
        got = self.only_request(UP.main, path)
        self.assertEqual(got.header("x-api-key"), value)
        self.assertEqual(got.sni, ANTHROPIC)
        self.assertEqual(got.header_values("proxy-authorization"), [])
        self.assertNotIn(value, out)
        echo = json.loads(out)
        self.assertEqual(header_values(echo["headers"], "x-api-key"), [token])

    def test_a_local_runtime_sandboxs_python_uses_the_proxy_from_its_env(self):
        """Python's urllib in the sandbox follows https_proxy and SSL_CERT_FILE from its env."""
        sandbox, value, token, _ = self.one_secret_sandbox("API_KEY")
        path = self.path("py")
        script = ("import os, urllib.request; "
                  "r = urllib.request.Request('https://%s:%d%s', "
                  "headers={'X-Api-Key': os.environ['API_KEY']}); "
                  "print(urllib.request.urlopen(r, timeout=10).read().decode())" %
                  (ANTHROPIC, UP.main.port, path))
        out = self.run_ok(sandbox.id, "python3 -c \"%s\"" % script)
        self.assertEqual(self.only_request(UP.main, path).header("x-api-key"), value)
        self.assertNotIn(value, out)
        self.assertIn(token, out)

    def test_curl_from_outside_with_the_proxy_url_and_ca(self):
        """proxy.url is usable as is (curl --proxy) with proxy.ca_cert_pem (--cacert)."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        self.assertEqual("%s:%d" % proxy_addr(sandbox), MAIN.addresses["proxy-listen"])
        path = self.path("curl")
        p = subprocess.run(["curl", "-sS", "--max-time", "10", "--proxy", sandbox.proxy.url,
                            "--cacert", ca_file(self, sandbox), "-H", "X-Api-Key: " + token,
                            "--data-binary", '{"k": "%s"}' % token,
                            "https://%s:%d%s" % (ANTHROPIC, UP.main.port, path)],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = self.only_request(UP.main, path)
        self.assertEqual(got.header("x-api-key"), value)
        self.assertEqual(got.body, ('{"k": "%s"}' % value).encode())
        self.assertNotIn(value, p.stdout)

    def test_urllib_from_outside_through_connect(self):
        sandbox, value, _, _ = self.one_secret_sandbox()
        path = self.path("urllib")
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"https": sandbox.proxy.url}),
            urllib.request.HTTPSHandler(
                context=ssl.create_default_context(cadata=sandbox.proxy.ca_cert_pem)))
        request = urllib.request.Request(
            "https://%s:%d%s?key=%s" % (ANTHROPIC, UP.main.port, path, sandbox.env["KEY"]),
            headers={"Authorization": "Bearer " + sandbox.env["KEY"]})
        with opener.open(request, timeout=IO_TIMEOUT_S) as r:
            self.assertEqual(r.status, 200)
            self.assertNotIn(value, r.read().decode())
        got = self.only_request(UP.main, path)
        self.assertEqual(got.header("authorization"), "Bearer " + value)
        self.assertEqual(got.query, "key=" + value)

    @unittest.skipUnless(shutil.which("node"), "node is not installed")
    def test_node_https_through_a_connect_tunnel(self):
        """Node: http.request CONNECT, then https.request over tls.connect on the tunnel."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        path = self.path("node")
        host, port = proxy_addr(sandbox)
        config = {"proxyHost": host, "proxyPort": port, "proxyAuth": proxy_authorization(sandbox),
                  "host": ANTHROPIC, "port": UP.main.port, "path": path,
                  "ca": sandbox.proxy.ca_cert_pem, "token": token,
                  "body": json.dumps({"key": token})}
        p = subprocess.run(["node", "-e", NODE_CLIENT, json.dumps(config)],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout)
        self.assertEqual(out["status"], 200, out)
        self.assertNotIn(value, out["body"])
        got = self.only_request(UP.main, path)
        self.assertEqual(got.header("x-api-key"), value)
        self.assertEqual(json.loads(got.body), {"key": value})


NODE_CLIENT = r"""
const http = require('http'), https = require('https'), tls = require('tls');
const cfg = JSON.parse(process.argv[1]);
const where = cfg.host + ':' + cfg.port;
const fail = (code, e) => { console.error(String(e)); process.exit(code); };
setTimeout(() => fail(2, 'timeout'), 15000).unref();
const req = http.request({host: cfg.proxyHost, port: cfg.proxyPort, method: 'CONNECT',
  path: where, headers: {'Proxy-Authorization': cfg.proxyAuth, Host: where}});
req.on('error', e => fail(3, e));
req.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.log(JSON.stringify({status: res.statusCode, body: ''}));
    socket.destroy(); return; }
  const r = https.request({host: cfg.host, port: cfg.port, path: cfg.path, method: 'POST',
    headers: {'x-api-key': cfg.token, 'content-type': 'application/json'},
    createConnection: () => tls.connect({socket, servername: cfg.host, ca: cfg.ca})}, res2 => {
      const chunks = [];
      res2.on('data', c => chunks.push(c));
      res2.on('end', () => {
        console.log(JSON.stringify({status: res2.statusCode,
                                    body: Buffer.concat(chunks).toString('latin1')}));
        socket.destroy();
      });
  });
  r.on('error', e => fail(4, e));
  r.end(cfg.body);
});
req.end();
"""


# ----------------------------------------------------------------------------------------------
# 2. Substitution

class SubstitutionTest(SubstitutionBase):

    def test_a_token_in_a_header_value_is_replaced_by_its_value(self):
        """Anywhere in a header value, as often as it occurs; other headers untouched; the
        proxy credential never reaches upstream."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        path = self.path()
        self.assertOk(https(sandbox, ANTHROPIC, path, headers=[
            ("X-Api-Key", token), ("Authorization", "Bearer " + token),
            ("X-Twice", "%s,%s;" % (token, token)), ("X-Plain", "nothing here")]))
        got = self.only_request(UP.main, path)
        self.assertEqual(got.header("x-api-key"), value)
        self.assertEqual(got.header("authorization"), "Bearer " + value)
        self.assertEqual(got.header("x-twice"), "%s,%s;" % (value, value))
        self.assertEqual(got.header("x-plain"), "nothing here")
        self.assertEqual(got.header_values("proxy-authorization"), [])
        self.assertNotIn(token, got.raw_text())

    def test_allowed_hosts_gate_substitution_and_empty_means_the_stores_allowlist(self):
        """A secret with allowed_hosts goes only there; one without goes wherever its store's
        allowlist admits. A token bound for a host its secret does not allow goes out untouched
        and is audited `withheld`."""
        only, anywhere = secret_value("only"), secret_value("anywhere")
        store = self.api.store_with({"ONLY": (only, [ANTHROPIC]), "ANYWHERE": anywhere},
                                    [ANTHROPIC, "other.test"])
        sandbox = self.api.create_sandbox(store.name)
        t_only, t_any = sandbox.env["ONLY"], sandbox.env["ANYWHERE"]
        headers = [("X-Only", t_only), ("X-Anywhere", t_any)]
        path = self.path()
        self.assertOk(https(sandbox, ANTHROPIC, path, headers=headers))
        got = self.only_request(UP.main, path)
        self.assertEqual((got.header("x-only"), got.header("x-anywhere")), (only, anywhere))
        path = self.path()
        self.assertOk(https(sandbox, "other.test", path, headers=headers))
        got = self.only_request(UP.main, path)
        self.assertEqual((got.header("x-only"), got.header("x-anywhere")), (t_only, anywhere))
        self.wait_audit(sandbox.id, decision="withheld", secret_name="ONLY", host="other.test")

    def test_a_wildcard_admits_subdomains_at_any_depth_but_not_the_apex_or_look_alikes(self):
        """allowed_hosts *.openai.com: api.openai.com, x.api.openai.com and API.OpenAI.com(.)
        (normalized) get the value; openai.com, evilopenai.com, api.openai.com.evil.com get
        the token. The store's allowlist names every one of them, so the requests all go out
        and only the secret's pattern decides."""
        hosts = ["api.openai.com", "x.api.openai.com", "openai.com", "evilopenai.com",
                 "api.openai.com.evil.com"]
        sandbox, value, token, _ = self.one_secret_sandbox("OPENAI_API_KEY", ["*.openai.com"],
                                                           hosts)
        cases = [("api.openai.com", True, True), ("x.api.openai.com", True, True),
                 ("API.OpenAI.com", True, True),
                 # Python's hostname check refuses a trailing dot: the CA is still verified.
                 ("API.OpenAI.com.", True, False),
                 ("openai.com", False, True), ("evilopenai.com", False, True),
                 ("api.openai.com.evil.com", False, True)]
        for host, substituted, check_hostname in cases:
            with self.subTest(host=host):
                got, _ = self.send_header(sandbox, host, token, check_hostname=check_hostname)
                self.assertEqual(got.header("x-api-key"), value if substituted else token)
        for host in ("openai.com", "evilopenai.com", "api.openai.com.evil.com"):
            self.wait_audit(sandbox.id, decision="withheld", host=host)

    def test_a_host_header_other_than_the_connect_host_withholds_the_token(self):
        """CONNECT api.anthropic.test, SNI api.anthropic.test, Host other.test: the secret
        allows both hosts, yet the token goes out untouched (audited withheld) because the
        three names disagree."""
        sandbox, value, token, _ = self.one_secret_sandbox(
            allowed_hosts=[ANTHROPIC, "other.test"], allowlist=[ANTHROPIC, "other.test"])
        got, _ = self.send_header(sandbox, ANTHROPIC, token,
                                  host_header=authority("other.test", UP.main.port))
        self.assertEqual(got.header("x-api-key"), token)
        self.assertEqual(got.sni, ANTHROPIC)
        self.wait_audit(sandbox.id, decision="withheld", secret_name="KEY")
        # A fresh tunnel with the three names agreeing: substituted.
        got, _ = self.send_header(sandbox, ANTHROPIC, token)
        self.assertEqual(got.header("x-api-key"), value)

    def test_an_sni_other_than_the_connect_host_withholds_the_token(self):
        """CONNECT and Host api.anthropic.test, but TLS SNI other.test (or none): untouched.
        The leaf is for the CONNECT host, so the client's name check is off; the CA is not."""
        sandbox, value, token, _ = self.one_secret_sandbox(
            allowed_hosts=[ANTHROPIC, "other.test"], allowlist=[ANTHROPIC, "other.test"])
        for sni in ("other.test", None):
            with self.subTest(sni=sni):
                got, _ = self.send_header(sandbox, ANTHROPIC, token, sni=sni,
                                          check_hostname=False)
                self.assertEqual(got.header("x-api-key"), token)
        self.wait_audit(sandbox.id, decision="withheld", secret_name="KEY")

    def test_a_token_inside_basic_credentials_is_replaced_and_re_encoded(self):
        """Authorization: Basic base64(user:token) reaches upstream as base64(user:value); so
        does a token as the user name, and curl -u."""
        sandbox, value, token, _ = self.one_secret_sandbox("GITHUB_TOKEN", ["github.test"],
                                                           ["github.test"])
        for user_pass, want in (("x-access-token:" + token, "x-access-token:" + value),
                                (token + ":x-oauth-basic", value + ":x-oauth-basic")):
            with self.subTest(credentials=user_pass.replace(token, "<token>")):
                path = self.path("basic")
                self.assertOk(https(sandbox, "github.test", path,
                                    headers=[("Authorization", "Basic " + b64(user_pass))]))
                got = self.only_request(UP.main, path).header("authorization")
                self.assertEqual(got, "Basic " + b64(want))
        path = self.path("curl-basic")
        p = subprocess.run(["curl", "-sS", "--max-time", "10", "--proxy", sandbox.proxy.url,
                            "--cacert", ca_file(self, sandbox), "-u", "git:" + token,
                            "https://github.test:%d%s" % (UP.main.port, path)],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.only_request(UP.main, path).header("authorization"),
                         "Basic " + b64("git:" + value))

    def test_a_token_in_the_query_string_is_replaced(self):
        sandbox, value, token, _ = self.one_secret_sandbox()
        path = self.path("query")
        self.assertOk(https(sandbox, ANTHROPIC, "%s?key=%s&other=1&again=%s" %
                            (path, token, token)))
        self.assertEqual(self.only_request(UP.main, path).query,
                         "key=%s&other=1&again=%s" % (value, value))

    def test_a_token_in_a_content_length_body_is_replaced_and_the_length_recomputed(self):
        sandbox, value, token, _ = self.one_secret_sandbox()
        self.assertNotEqual(len(value), len(token))
        path = self.path("body")
        body = json.dumps({"key": token, "nested": {"again": token}, "n": 1}).encode()
        self.assertOk(https(sandbox, ANTHROPIC, path, method="POST", body=body,
                            headers=[("Content-Type", "application/json")]))
        got = self.only_request(UP.main, path)
        want = body.replace(token.encode(), value.encode())
        self.assertEqual(got.body, want)
        self.assertEqual(got.header("content-length"), str(len(want)))
        self.assertFalse(got.chunked)

    def test_a_token_split_across_chunks_and_reads_is_replaced_and_a_pipelined_request_follows(
            self):
        """A chunked body whose token is cut between two chunks, a second token cut between
        two writes inside one chunk, then a second request pipelined in the same write as the
        last chunk: upstream gets both requests, with the values, in order; the client both
        answers, in order, on the one connection."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        first, second = self.path("chunked"), self.path("pipelined")
        host = authority(ANTHROPIC, UP.main.port)
        conn, r = open_tunnel(sandbox, ANTHROPIC, UP.main.port)
        with conn:
            self.assertEqual(r.status, 200, r)
            part1 = ('{"a": "%s' % token[:7]).encode()           # cut inside "osb_sealed_"
            part2 = ('%s", "b": "' % token[7:]).encode()
            part3 = ('%s"}' % token).encode()
            conn.send(build_request("POST", first, [("Host", host),
                                                    ("Transfer-Encoding", "chunked")]))
            conn.send(b"%x\r\n%s\r\n" % (len(part1), part1))
            time.sleep(0.05)
            conn.send(b"%x\r\n%s\r\n" % (len(part2), part2))
            time.sleep(0.05)
            conn.send(b"%x\r\n%s" % (len(part3), part3[:20]))     # cut inside the token
            time.sleep(0.05)
            conn.send(part3[20:] + b"\r\n0\r\n\r\n" +
                      build_request("GET", second, [("Host", host), ("X-Api-Key", token)]))
            r1, r2 = conn.read_response("POST"), conn.read_response("GET")
        self.assertEqual((r1.status, r2.status), (200, 200), (r1, r2))
        self.assertEqual((r1.json()["target"], r2.json()["target"]), (first, second))
        got1, got2 = self.only_request(UP.main, first), self.only_request(UP.main, second)
        self.assertEqual(got1.body, (part1 + part2 + part3).replace(token.encode(),
                                                                    value.encode()))
        self.assertEqual(got2.header("x-api-key"), value)
        self.assertEqual(got2.body, b"")

    def test_another_sandboxs_token_is_never_substituted(self):
        """Two sandboxes of one store: A's request carrying B's token sends B's token."""
        sandbox, value, token, store = self.one_secret_sandbox()
        other = self.api.create_sandbox(store.name)
        path = self.path()
        self.assertOk(https(sandbox, ANTHROPIC, path, headers=[
            ("X-Mine", token), ("X-Theirs", other.env["KEY"])]))
        got = self.only_request(UP.main, path)
        self.assertEqual((got.header("x-mine"), got.header("x-theirs")),
                         (value, other.env["KEY"]))

    def test_a_fork_substitutes_the_secrets_of_every_layer_the_top_winning(self):
        """CreateSandboxFromCheckpoint with a second store: base and top secrets are both
        substituted, the top's value for a name both hold; the parent's tokens are not the
        fork's."""
        base_only, base_shared = secret_value("base"), secret_value("shared-base")
        top_only, top_shared = secret_value("top"), secret_value("shared-top")
        base = self.api.store_with({"BASE": base_only, "SHARED": base_shared}, [ANTHROPIC])
        top = self.api.store_with({"TOP": top_only, "SHARED": top_shared}, ["github.test"])
        parent = self.api.create_sandbox(base.name)
        child = self.api.fork(self.api.checkpoint(parent.id).id, top.name)
        for host in (ANTHROPIC, "github.test"):
            with self.subTest(host=host):
                path = self.path("fork")
                self.assertOk(https(child, host, path, headers=[
                    ("X-Base", child.env["BASE"]), ("X-Top", child.env["TOP"]),
                    ("X-Shared", child.env["SHARED"]), ("X-Parent", parent.env["BASE"])]))
                got = self.only_request(UP.main, path)
                # Each secret goes where its own store's allowlist reaches; SHARED is top's.
                want_base = base_only if host == ANTHROPIC else child.env["BASE"]
                want_top = top_only if host == "github.test" else child.env["TOP"]
                want_shared = top_shared if host == "github.test" else child.env["SHARED"]
                self.assertEqual(got.header("x-base"), want_base)
                self.assertEqual(got.header("x-top"), want_top)
                self.assertEqual(got.header("x-shared"), want_shared)
                self.assertEqual(got.header("x-parent"), parent.env["BASE"])

    def test_rotation_reaches_the_next_request_on_an_open_connection(self):
        """SetSecret with a new value: within a second, the next request on the same
        keep-alive connection (same token) carries the new value."""
        sandbox, old, token, store = self.one_secret_sandbox(allowed_hosts=[ANTHROPIC])
        new = secret_value("rotated")
        host = authority(ANTHROPIC, UP.main.port)
        conn, r = open_tunnel(sandbox, ANTHROPIC, UP.main.port)
        with conn:
            self.assertEqual(r.status, 200, r)
            path = self.path("rot")
            self.assertOk(conn.request("GET", path, [("Host", host), ("X-Api-Key", token)]))
            self.assertEqual(self.only_request(UP.main, path).header("x-api-key"), old)
            self.api.set_secret(store.id, "KEY", new, [ANTHROPIC])
            deadline = time.monotonic() + ROTATION_WAIT_S
            seen = []
            while True:
                path = self.path("rot")
                self.assertOk(conn.request("GET", path, [("Host", host), ("X-Api-Key", token)]))
                seen.append(self.only_request(UP.main, path).header("x-api-key"))
                if seen[-1] == new or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        self.assertEqual(seen[-1], new, "still the old value %.1fs after SetSecret" %
                         ROTATION_WAIT_S)
        self.assertTrue(set(seen) <= {old, new}, "neither value: %r" % seen)

    def test_keep_alive_holds_on_both_sides(self):
        """Three requests on one client connection ride one upstream connection."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        host = authority(ANTHROPIC, UP.main.port)
        conn, r = open_tunnel(sandbox, ANTHROPIC, UP.main.port)
        paths = [self.path("ka") for _ in range(3)]
        with conn:
            self.assertEqual(r.status, 200, r)
            for path in paths:
                self.assertOk(conn.request("GET", path, [("Host", host), ("X-Api-Key", token)]))
        got = [self.only_request(UP.main, p) for p in paths]
        self.assertEqual([g.header("x-api-key") for g in got], [value] * 3)
        self.assertEqual(len({g.connection for g in got}), 1,
                         "upstream connections %r" % [g.connection for g in got])

    def test_a_later_tunnel_reuses_an_idle_upstream_connection(self):
        """Tunnels one after the other (each closed before the next) draw on the pool of idle
        upstream connections; the pool is per event loop (MAIN runs two, and tunnels are dealt
        round-robin), so four tunnels need at most two upstream connections."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        paths = [self.path("pool") for _ in range(4)]
        for path in paths:
            self.assertOk(https(sandbox, ANTHROPIC, path, headers=[("X-Api-Key", token)]))
            time.sleep(0.2)  # the proxy sees the close and parks the upstream connection
        got = [self.only_request(UP.main, p) for p in paths]
        self.assertEqual([g.header("x-api-key") for g in got], [value] * 4)
        self.assertLessEqual(len({g.connection for g in got}), 2,
                             "upstream connections %r" % [g.connection for g in got])

    def test_a_repeated_host_costs_no_second_certificate(self):
        """The interception certificate of a host is minted once and then served from the
        cache (each mint leaves a proxy_leaf_minted line in the log)."""
        sandbox, _, _, _ = self.one_secret_sandbox()
        self.assertOk(https(sandbox, ANTHROPIC, self.path("leaf")))
        pattern = r"msg=proxy_leaf_minted host=%s " % re.escape(ANTHROPIC)
        before = len(MAIN.wait_for_log(pattern, timeout=1.0))
        self.assertGreaterEqual(before, 1)
        for _ in range(3):
            self.assertOk(https(sandbox, ANTHROPIC, self.path("leaf")))
        self.assertEqual(len(MAIN.wait_for_log(pattern, timeout=0.3)), before)

    def test_cleartext_http_forwards_tokens_untouched_and_audits_withheld(self):
        """Absolute-form GET http://…: no substitution over cleartext (audited withheld, the
        reason says why); the upstream gets origin-form and no Proxy-Authorization."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        path = self.path("plain")
        self.assertOk(http(sandbox, ANTHROPIC, "%s?key=%s" % (path, token),
                           headers=[("X-Api-Key", token)]))
        got = self.only_request(UP.plain, path)
        self.assertEqual(got.target, "%s?key=%s" % (path, token))
        self.assertEqual(got.header("x-api-key"), token)
        self.assertEqual(got.header_values("proxy-authorization"), [])
        self.assertNotIn(value, got.raw_text())
        event = self.wait_audit(sandbox.id, decision="withheld", secret_name="KEY")[0]
        self.assertRegex(event.reason.lower(), "cleartext|plain|http\\b|tls")


# ----------------------------------------------------------------------------------------------
# 3. Redaction

class RedactionTest(SubstitutionBase):

    def test_a_value_echoed_in_a_response_header_and_body_comes_back_as_its_token(self):
        """/reflect sends the substituted value back in X-Reflected and in the body: the
        sandbox reads its token there, the body's length still right (audited redacted)."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        path = "/reflect" + self.path()
        r = self.assertOk(https(sandbox, ANTHROPIC, path + "?h=x-api-key",
                                headers=[("X-Api-Key", token)]))
        self.assertEqual(self.only_request(UP.main, path).header("x-api-key"), value)
        self.assertEqual(r.header("x-reflected"), token)
        echo = r.json()      # a length left as it was would cut or overrun the JSON
        self.assertEqual(echo["reflected"], token)
        self.assertEqual(header_values(echo["headers"], "x-api-key"), [token])
        self.assertNotIn(value, r.raw_text())
        self.wait_audit(sandbox.id, decision="redacted", secret_name="KEY")

    def test_a_close_delimited_response_ends_at_upstreams_close_even_without_close_notify(
            self):
        """A response with neither Content-Length nor chunking, its end the upstream closing TCP
        without TLS close_notify (as many servers do): the client gets all of it, redacted."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        path = "/close-delimited" + self.path()
        r = self.assertOk(https(sandbox, ANTHROPIC, path, headers=[("X-Api-Key", token)]))
        self.assertEqual(self.only_request(UP.main, path).header("x-api-key"), value)
        self.assertEqual(header_values(r.json()["headers"], "x-api-key"), [token])
        self.assertNotIn(value, r.raw_text())

    def test_a_value_in_a_chunked_response_is_redacted_across_chunk_boundaries(self):
        # Stricter reading: "identity-encoded" is about Content-Encoding, so a chunked
        # (transfer-coded, identity content) body is redacted too, even when 16-byte chunks
        # cut the value.
        sandbox, value, token, _ = self.one_secret_sandbox()
        path = self.path("chunked")
        r = self.assertOk(https(sandbox, ANTHROPIC, path, headers=[("X-Api-Key", token)]))
        self.assertEqual(self.only_request(UP.main, path).header("x-api-key"), value)
        self.assertNotIn(value, r.raw_text())
        self.assertEqual(header_values(r.json()["headers"], "x-api-key"), [token])


# ----------------------------------------------------------------------------------------------
# 4. Framing

def smuggling_vectors(target, host):
    """{name: raw request} for the ambiguous framings the proxy must refuse with 400. Each
    hides a second request (/smuggled-…) that a confused parser would forward."""
    hidden = ("GET /smuggled-%s HTTP/1.1\r\nHost: %s\r\n\r\n" %
              (uuid.uuid4().hex[:8], host)).encode()
    start = ("POST %s HTTP/1.1\r\nHost: %s\r\n" % (target, host)).encode()
    return {
        "Content-Length with Transfer-Encoding":
            start + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" %
            (5 + len(hidden)) + hidden,
        "Content-Length twice, different":
            start + b"Content-Length: 5\r\nContent-Length: %d\r\n\r\nhello" % (5 + len(hidden)) +
            hidden,
        # Stricter: identical repeats are refused too ("duplicate Content-Length").
        "Content-Length twice, equal":
            start + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "Content-Length as a list": start + b"Content-Length: 5, 5\r\n\r\nhello",
        "chunked not last": start + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + hidden,
        "chunked twice": start + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
                                 b"\r\n\r\n0\r\n\r\n",
        "obs-fold": start + b"X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n" + hidden,
        "obs-fold of Transfer-Encoding":
            start + b"Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" +
            hidden,
        "bare LF": start + b"X-A: a\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n" +
                   hidden,
        "NUL in a header value": start + b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
        # Stricter (RFC 9112 §5.1 says 400): whitespace between a field name and its colon.
        "whitespace before the colon":
            start + b"Content-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + hidden,
    }


class FramingTest(SubstitutionBase):

    def test_each_smuggling_vector_is_400_and_nothing_reaches_upstream(self):
        """Inside a CONNECT tunnel and as cleartext absolute-form requests."""
        sandbox, _, _, _ = self.one_secret_sandbox()
        for mode in ("https", "http"):
            server = UP.main if mode == "https" else UP.plain
            host = authority(ANTHROPIC, server.port)
            target = self.path("smuggle")
            if mode == "http":
                target = "http://%s%s" % (host, target)
            for name, raw in smuggling_vectors(target, host).items():
                with self.subTest(mode=mode, vector=name):
                    if mode == "http":
                        raw = raw.replace(b"\r\nHost: ", b"\r\nProxy-Authorization: %s\r\nHost: "
                                          % proxy_authorization(sandbox).encode(), 1)
                    mark = server.mark()
                    if mode == "https":
                        conn, r = open_tunnel(sandbox, ANTHROPIC, server.port)
                        self.assertEqual(r.status, 200, r)
                    else:
                        conn = Conn(proxy_addr(sandbox))
                    with conn:
                        conn.send(raw)
                        r = conn.read_response("POST")
                    self.assertEqual(r.status, 400, r)
                    self.assertNothingReached(server, mark, name)

    def test_a_header_block_over_64_kib_is_431_and_one_under_it_goes_through(self):
        sandbox, _, _, _ = self.one_secret_sandbox()
        many = [("X-Pad-%02d" % i, "a" * 1000) for i in range(70)]
        one = [("X-Pad", "b" * (MAX_HEAD + 1000))]
        for name, headers in (("70 headers of 1000 bytes", many), ("one 65 KiB header", one)):
            with self.subTest(name):
                path = self.path("big")
                self.assertStatusAndNothingSent(
                    431, lambda: https(sandbox, ANTHROPIC, path, headers=headers), [UP.main],
                    name)
        path = self.path("under")
        self.assertOk(https(sandbox, ANTHROPIC, path, headers=many[:60]))
        self.assertEqual(self.only_request(UP.main, path).header("x-pad-59"), "a" * 1000)

    def test_a_content_length_over_16_mib_is_413_before_any_body_is_read(self):
        """The head alone (no body sent) is answered 413; exactly 16 MiB goes through."""
        sandbox, _, _, _ = self.one_secret_sandbox()
        host = authority(ANTHROPIC, UP.main.port)

        def oversized():
            conn, r = open_tunnel(sandbox, ANTHROPIC, UP.main.port)
            with conn:
                self.assertEqual(r.status, 200, r)
                conn.send(build_request("POST", self.path("huge"), [
                    ("Host", host), ("Content-Length", str(MAX_BODY + 1))]))
                return conn.read_response("POST")
        self.assertStatusAndNothingSent(413, oversized, [UP.main])
        body = os.urandom(MAX_BODY // 2).hex().encode()
        path = self.path("sink")
        r = self.assertOk(https(sandbox, ANTHROPIC, path, method="POST", body=body))
        self.assertEqual(r.json()["length"], MAX_BODY)
        self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())


# ----------------------------------------------------------------------------------------------
# 5. Upstream trust and the leaf certificate

class UpstreamTrustTest(SubstitutionBase):

    def test_an_upstream_certificate_from_an_unknown_ca_is_502_and_gets_no_request_bytes(self):
        sandbox, _, token, _ = self.one_secret_sandbox()
        self.assertStatusAndNothingSent(
            502, lambda: https(sandbox, ANTHROPIC, self.path("untrusted"),
                               port=UP.untrusted.port, headers=[("X-Api-Key", token)]),
            [UP.untrusted])

    def test_an_upstream_certificate_for_another_name_is_502_and_gets_no_request_bytes(self):
        """The wrong-name upstream's certificate is from the trusted CA but for wrong.test:
        502 under api.anthropic.test, 200 under wrong.test."""
        sandbox, _, token, _ = self.one_secret_sandbox(allowlist=[ANTHROPIC, "wrong.test"])
        self.assertStatusAndNothingSent(
            502, lambda: https(sandbox, ANTHROPIC, self.path("wrongname"),
                               port=UP.wrong_name.port, headers=[("X-Api-Key", token)]),
            [UP.wrong_name])
        path = self.path("rightname")
        self.assertOk(https(sandbox, "wrong.test", path, port=UP.wrong_name.port))
        self.assertEqual(self.only_request(UP.wrong_name, path).sni, "wrong.test")

    def test_the_leaf_verifies_with_the_sandbox_ca_alone_and_names_the_connect_host(self):
        """ssl.create_default_context(cadata=ca_cert_pem), check_hostname on, trusts the leaf;
        its subjectAltName is the CONNECT host."""
        sandbox, _, _, _ = self.one_secret_sandbox(allowlist=[ANTHROPIC, "github.test"])
        for host in (ANTHROPIC, "github.test"):
            with self.subTest(host=host):
                conn, r = open_tunnel(sandbox, host, UP.main.port)
                with conn:
                    self.assertEqual(r.status, 200, r)
                    self.assertIn(("DNS", host), conn.peer_cert["subjectAltName"])


# ----------------------------------------------------------------------------------------------
# 6. Proxy authentication

class ProxyAuthTest(SubstitutionBase):

    def bad_credentials(self, sandbox):
        user, secret, _, _ = parse_proxy_url(sandbox.proxy.url)
        wrong = "%032x" % (int(secret, 16) ^ 1) if re.match("^[0-9a-f]+$", secret) else "x" + \
            secret
        return {
            "no Proxy-Authorization": None,
            "a wrong secret": "Basic " + b64("%s:%s" % (user, wrong)),
            "an unknown sandbox id": "Basic " + b64("%s:%s" % (uuid.uuid4(), secret)),
            "Basic without credentials": "Basic",
            "Basic with no base64": "Basic !!!not-base64!!!",
            "Basic without a colon": "Basic " + b64(user + secret),
            "a Bearer token": "Bearer " + secret,
            "an empty secret": "Basic " + b64(user + ":"),
            "a sandbox id that is no UUID": "Basic " + b64("abcdef:" + secret),
        }

    def test_a_missing_wrong_or_malformed_credential_is_407_with_a_basic_challenge(self):
        sandbox, _, token, _ = self.one_secret_sandbox()
        for name, authorization in self.bad_credentials(sandbox).items():
            for mode in ("CONNECT", "absolute-form"):
                with self.subTest(credential=name, mode=mode):
                    via = https if mode == "CONNECT" else http
                    r = self.assertStatusAndNothingSent(
                        407, lambda: via(sandbox, ANTHROPIC, self.path(),
                                         authorization=authorization,
                                         headers=[("X-Api-Key", token)]),
                        [UP.main, UP.plain], name)
                    self.assertProxyAuthRequired(r, name)
        # The same sandbox with its credential: through.
        self.assertOk(https(sandbox, ANTHROPIC, self.path()))
        # Not audited: whoever knows a sandbox id could otherwise write rows of their choosing
        # into its organization's trail (the holder of the credential is not the caller).
        time.sleep(0.3)  # the audit writer flushes about every 100 ms
        self.assertEqual([e for e in self.api.audit_events(sandbox.id)
                          if e.reason == "proxy credential not valid"], [])

    def test_a_deleted_sandboxs_credential_is_407(self):
        # Strict reading: "after DeleteSandbox every token is dead" within the second a cache
        # may take to hear of it.
        sandbox, _, _, _ = self.one_secret_sandbox()
        self.assertOk(https(sandbox, ANTHROPIC, self.path()))
        self.api.delete_sandbox(sandbox.id)

        def refused():
            r = https(sandbox, ANTHROPIC, self.path())
            return r if r.status == 407 else None
        r = wait_until(refused, ROTATION_WAIT_S, 0.05)
        self.assertTrue(r, "still let through %.1fs after DeleteSandbox" % ROTATION_WAIT_S)
        self.assertProxyAuthRequired(r)
        self.assertProxyAuthRequired(http(sandbox, ANTHROPIC, self.path()))
        self.wait_audit(sandbox.id, decision="denied", reason="sandbox has ended")

    def test_an_expired_sandboxs_credential_is_407(self):
        _, _, _, store = self.one_secret_sandbox()
        expiring = self.api.create_sandbox(store.name, timeout_seconds=1)
        self.assertTrue(wait_until(
            lambda: self.api.get_sandbox(expiring.id).status == "expired", 6, 0.1))
        self.assertProxyAuthRequired(https(expiring, ANTHROPIC, self.path()))
        self.assertProxyAuthRequired(http(expiring, ANTHROPIC, self.path()))

    def test_a_deleted_sandboxs_open_tunnel_substitutes_no_more(self):
        """A tunnel opened before DeleteSandbox: from a second after it, no request on it
        carries the value (refused, closed, or the token untouched are all fine)."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        host = authority(ANTHROPIC, UP.main.port)
        conn, r = open_tunnel(sandbox, ANTHROPIC, UP.main.port)
        with conn:
            self.assertEqual(r.status, 200, r)
            path = self.path()
            self.assertOk(conn.request("GET", path, [("Host", host), ("X-Api-Key", token)]))
            self.assertEqual(self.only_request(UP.main, path).header("x-api-key"), value)
            self.api.delete_sandbox(sandbox.id)
            time.sleep(ROTATION_WAIT_S)
            path = self.path()
            try:
                conn.request("GET", path, [("Host", host), ("X-Api-Key", token)])
            except (ConnectionClosed, OSError):
                pass
        got = [r for r in UP.main.requests if r.path == path]
        self.assertTrue(all(value not in g.raw_text() for g in got), got)


# ----------------------------------------------------------------------------------------------
# 7. Egress policy

class EgressPolicyTest(SubstitutionBase):

    def test_connect_to_a_port_neither_443_nor_allowed_is_403(self):
        sandbox, _, _, _ = self.one_secret_sandbox()
        for port in (22, 80, 8443, 25):
            if port in UP.ports:
                continue
            with self.subTest(port=port):
                self.assertStatusAndNothingSent(
                    403, lambda: https(sandbox, ANTHROPIC, "/", port=port))
        self.wait_audit(sandbox.id, decision="denied", reason="port not allowed")

    def test_a_host_outside_the_layered_allowlist_is_403_and_audited_denied(self):
        """denied.test resolves and the secret allows it, but no layer's allowlist does."""
        sandbox, _, token, _ = self.one_secret_sandbox(allowed_hosts=[ANTHROPIC, "denied.test"])
        self.assertStatusAndNothingSent(
            403, lambda: https(sandbox, "denied.test", "/", headers=[("X-Api-Key", token)]),
            what="CONNECT")
        self.assertStatusAndNothingSent(
            403, lambda: http(sandbox, "denied.test", "/", headers=[("X-Api-Key", token)]),
            what="absolute-form")
        event = self.wait_audit(sandbox.id, decision="denied", host="denied.test")[0]
        self.assertEqual(event.sandbox_id, sandbox.id)
        self.assertTrue(event.reason)

    def test_an_allowlist_change_closes_an_open_tunnel_at_its_next_request(self):
        """A tunnel opened while its host was allowed: once the store's allowlist drops the
        host, the next request on that same connection is 403 (within a second), reaches
        nothing upstream, and is audited denied."""
        sandbox, value, token, store = self.one_secret_sandbox()
        host = authority(ANTHROPIC, UP.main.port)
        conn, r = open_tunnel(sandbox, ANTHROPIC, UP.main.port)
        with conn:
            self.assertEqual(r.status, 200, r)
            path = self.path("before")
            self.assertOk(conn.request("GET", path, [("Host", host), ("X-Api-Key", token)]))
            self.assertEqual(self.only_request(UP.main, path).header("x-api-key"), value)
            self.api.set_allowlist(store.id, ["other.test"])
            tried = []

            def refused():
                tried.append(self.path("after"))
                r = conn.request("GET", tried[-1], [("Host", host), ("X-Api-Key", token)])
                return r if r.status != 200 else None
            resp = wait_until(refused, ROTATION_WAIT_S, 0.05)
        self.assertTrue(resp, "still forwarded %.1fs after the allowlist change"
                        % ROTATION_WAIT_S)
        self.assertEqual(resp.status, 403)
        self.assertEqual(UP.main.find(tried[-1]), [])
        event = self.wait_audit(sandbox.id, decision="denied", host=ANTHROPIC)[0]
        self.assertIn("no longer", event.reason)

    def test_the_allowed_cidr_opens_only_its_own_range(self):
        """--proxy-allow-cidr 127.0.0.0/8 lets 127.0.0.1 through; 10.0.0.1 and the metadata
        address stay 403, as literals and behind names."""
        sandbox = self.api.create_sandbox()   # no store: every public host
        # The control: "every public host" with 127.0.0.0/8 allowed reaches an IP literal.
        self.assertEqual(https(sandbox, "127.0.0.1", self.path()).status, 200)
        for host in ("10.0.0.1", "169.254.169.254", "ten.test", "metadata.test", "[::1]"):
            with self.subTest(host=host):
                self.assertStatusAndNothingSent(403, lambda: https(sandbox, host, "/"))


class SsrfTest(SubstitutionBase):
    """On the server without --proxy-allow-cidr: every private, loopback, link-local, metadata
    or translated address is 403, however it is written, and behind a name."""

    server_name = "NOALLOW"

    def test_every_address_of_the_ssrf_table_is_403_by_connect_and_absolute_form(self):
        sandbox = self.api.create_sandbox()   # no store: every public host
        hosts = list(SSRF_LITERALS) + list(SSRF_NAMES) + [ANTHROPIC]
        marks = [(s, s.mark()) for s in UP.all]
        for host in hosts:
            tag = re.sub("[^0-9a-z]+", "-", host.lower()).strip("-")
            for mode, send in (
                    ("CONNECT", lambda: https(sandbox, host, self.path(tag), port=UP.main.port)),
                    ("absolute-form", lambda: http(sandbox, host, self.path(tag),
                                                   port=UP.plain.port)),
                    ("CONNECT :443", lambda: https(sandbox, host, self.path(tag), port=443))):
                with self.subTest(host=host, mode=mode):
                    r = send()
                    self.assertEqual(r.status, 403, r)
        # Paths name their host: a request that got through says which.
        time.sleep(QUIET_S)
        for server, mark in marks:
            self.assertNothingReached(server, mark, "SSRF table", wait=False)


# ----------------------------------------------------------------------------------------------
# 8. Audit, use_count, last_used_at

class AuditTest(SubstitutionBase):

    def test_audit_events_say_who_what_where_and_never_a_value(self):
        """substituted, withheld, redacted and denied events carry the sandbox, store, secret
        name and version, host, method and path (no query string) — and no value or token."""
        sandbox, value, token, store = self.one_secret_sandbox(
            allowed_hosts=[ANTHROPIC], allowlist=[ANTHROPIC, "other.test"])
        value = secret_value("v2")
        entry = self.api.set_secret(store.id, "KEY", value, [ANTHROPIC])
        self.assertEqual(entry.version, 2)
        sub_path, held_path = self.path("audit"), self.path("held")
        self.assertOk(https(sandbox, ANTHROPIC,
                            "/reflect%s?h=x-api-key&q=%s" % (sub_path, token),
                            method="POST", headers=[("X-Api-Key", token)]))
        self.assertOk(https(sandbox, "other.test", held_path + "?q=1",
                            headers=[("X-Api-Key", token)]))
        self.assertEqual(https(sandbox, "denied.test", "/").status, 403)
        for decision, host, path, method in (
                ("substituted", ANTHROPIC, "/reflect" + sub_path, "POST"),
                ("redacted", ANTHROPIC, "/reflect" + sub_path, "POST"),
                ("withheld", "other.test", held_path, "GET")):
            with self.subTest(decision=decision):
                event = self.wait_audit(sandbox.id, decision=decision, path=path)[0]
                self.assertEqual((event.sandbox_id, event.store_id, event.secret_name,
                                  event.secret_version, event.host, event.method),
                                 (sandbox.id, store.id, "KEY", 2, host, method))
                self.assertRegex(event.time, RFC3339_UTC)
                self.assertTrue(event.id)
                if decision == "withheld":
                    self.assertTrue(event.reason)
        self.wait_audit(sandbox.id, decision="denied", host="denied.test")
        for event in self.api.audit_events(sandbox.id):
            raw = event.SerializeToString()
            self.assertNotIn(value.encode(), raw)
            self.assertNotIn(token.encode(), raw)
            self.assertNotIn(b"?", event.path.encode())
            self.assertIn(event.decision, ("substituted", "withheld", "denied", "redacted"))

    def test_use_count_and_last_used_at_count_substitutions_only(self):
        sandbox, value, token, store = self.one_secret_sandbox(
            allowed_hosts=[ANTHROPIC], allowlist=[ANTHROPIC, "other.test"])
        before = self.api.list_secrets(store.id)["KEY"]
        self.assertEqual((before.use_count, before.last_used_at), (0, ""))
        for _ in range(2):
            self.assertOk(https(sandbox, ANTHROPIC, self.path(), headers=[("X-Api-Key", token)]))
        withheld = self.path("held")
        self.assertOk(https(sandbox, "other.test", withheld, headers=[("X-Api-Key", token)]))
        self.wait_audit(sandbox.id, decision="withheld", path=withheld)
        entry = wait_until(lambda: (lambda e: e if e.use_count >= 2 else None)(
            self.api.list_secrets(store.id)["KEY"]), AUDIT_WAIT_S, 0.1)
        self.assertTrue(entry, "use_count did not reach 2")
        time.sleep(QUIET_S)
        entry = self.api.list_secrets(store.id)["KEY"]
        self.assertEqual(entry.use_count, 2)
        self.assertRegex(entry.last_used_at, RFC3339_UTC)
        used = datetime.datetime.strptime(entry.last_used_at[:19], "%Y-%m-%dT%H:%M:%S")
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        self.assertLess(abs((now - used).total_seconds()), 120)



# ----------------------------------------------------------------------------------------------
# 9. WebSocket, HTTP/2 and gRPC

H2_HOST = "h2.test"
GRPC_HOST = "grpc.test"


class WebSocketTest(SubstitutionBase):

    def upgrade(self, sandbox, path, headers=()):
        """A tunnel to the main upstream and a WebSocket handshake on it: (Conn, the 101's
        Response, the key sent). The caller closes the Conn."""
        key = base64.b64encode(os.urandom(16)).decode()
        conn, r = open_tunnel(sandbox, ANTHROPIC, UP.main.port)
        try:
            self.assertEqual(r.status, 200, r)
            conn.send(build_request("GET", path, [
                ("Host", authority(ANTHROPIC, UP.main.port)), ("Upgrade", "websocket"),
                ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key),
                ("Sec-WebSocket-Version", "13")] + list(headers)))
            r = conn.read_response()
            self.assertEqual(r.status, 101, r)
            self.assertEqual(r.header("sec-websocket-accept"), upstream.websocket_accept(key))
            self.assertEqual((r.header("upgrade") or "").lower(), "websocket")
            return conn, r, key
        except BaseException:
            conn.close()
            raise

    def test_a_websocket_handshake_is_substituted_and_its_frames_echo_both_ways(self):
        """GET with Upgrade: websocket carrying the token in Authorization, in
        Sec-WebSocket-Protocol and in the query: upstream gets the value in each; the 101 comes
        back with the Sec-WebSocket-Accept of the client's key and the protocol upstream chose
        (the value, echoed) redacted to the token; then frames echo both ways, before and after a
        pause, and the close handshake completes (upstream ending TLS with close_notify)."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        path = self.path("ws")
        conn, r, key = self.upgrade(sandbox, "%s?key=%s" % (path, token), [
            ("Sec-WebSocket-Protocol", token), ("Authorization", "Bearer " + token)])
        with conn:
            self.assertEqual(r.header("sec-websocket-protocol"), token)
            self.assertNotIn(value, r.raw_text())
            got = self.only_request(UP.main, path)
            self.assertEqual(got.header("authorization"), "Bearer " + value)
            self.assertEqual(got.header("sec-websocket-protocol"), value)
            self.assertEqual(got.query, "key=" + value)
            self.assertEqual(got.header("sec-websocket-key"), key)
            self.assertEqual(got.header_values("proxy-authorization"), [])
            # 7-bit, 16-bit and 64-bit lengths; a binary frame with every byte value.
            sent = [(upstream.WS_TEXT, b"hello"), (upstream.WS_TEXT, b"x" * 300),
                    (upstream.WS_BINARY, bytes(range(256)) * 300)]
            for opcode, payload in sent:
                conn.ws_send(opcode, payload)
                self.assertEqual(conn.ws_recv(), (opcode, payload))
            time.sleep(2 * QUIET_S)
            conn.ws_send(upstream.WS_PING, b"still there?")
            self.assertEqual(conn.ws_recv(), (upstream.WS_PONG, b"still there?"))
            conn.ws_send(upstream.WS_TEXT, b"after the pause")
            self.assertEqual(conn.ws_recv(), (upstream.WS_TEXT, b"after the pause"))
            conn.ws_send(upstream.WS_CLOSE, (1000).to_bytes(2, "big"))
            self.assertEqual(conn.ws_recv(), (upstream.WS_CLOSE, (1000).to_bytes(2, "big")))
        self.assertEqual(got.frames, sent + [
            (upstream.WS_PING, b"still there?"), (upstream.WS_TEXT, b"after the pause"),
            (upstream.WS_CLOSE, (1000).to_bytes(2, "big"))])

    def test_the_last_frames_of_an_upstream_that_closes_without_close_notify_reach_the_client(
            self):
        """Upstream answers the close frame and closes TCP at once, without TLS close_notify
        (as many servers do): the close frame it sent first still reaches the client. Ten
        rounds, since a proxy that drops it may do so only when the close wins a race."""
        sandbox, _, _, _ = self.one_secret_sandbox()
        for attempt in range(10):
            with self.subTest(attempt=attempt):
                conn, _, _ = self.upgrade(sandbox, self.path("ws-abrupt"))
                with conn:
                    conn.ws_send(upstream.WS_TEXT, b"bye")
                    self.assertEqual(conn.ws_recv(), (upstream.WS_TEXT, b"bye"))
                    conn.ws_send(upstream.WS_CLOSE, (1000).to_bytes(2, "big"))
                    self.assertEqual(conn.ws_recv(),
                                     (upstream.WS_CLOSE, (1000).to_bytes(2, "big")))


class Http2Test(SubstitutionBase):

    def curl(self, sandbox, url, *args):
        """curl --http2 through the sandbox's proxy: (HTTP version, response headers
        [(name, value)], body text)."""
        tmp = tempfile.mkdtemp(prefix="sealgate-e2e-curl-")
        self.addCleanup(shutil.rmtree, tmp, True)
        head, body = os.path.join(tmp, "head"), os.path.join(tmp, "body")
        p = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2", "--proxy",
                            sandbox.proxy.url, "--cacert", ca_file(self, sandbox),
                            "-D", head, "-o", body, "-w", "%{http_version}"] + list(args) +
                           [url], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(head, encoding="latin-1") as f:
            blocks = f.read().strip().split("\n\n")   # the CONNECT's answer, then the response's
        headers = [(n.strip(), v.strip()) for n, sep, v in
                   (line.partition(":") for line in blocks[-1].splitlines()[1:]) if sep]
        with open(body, encoding="latin-1") as f:
            return p.stdout.strip(), headers, f.read()

    def test_an_h2_upstream_is_reached_over_h2_with_headers_and_query_substituted(self):
        """curl --http2 to an h2-only upstream: both sides speak HTTP/2; x-api-key and the
        :path query reach upstream with the value; the echo (a header and the body) comes back
        with the token."""
        sandbox, value, token, _ = self.one_secret_sandbox(allowlist=[H2_HOST])
        path = "/reflect" + self.path("h2")
        version, headers, body = self.curl(
            sandbox, "https://%s:%d%s?h=x-api-key&key=%s" % (H2_HOST, UP.h2.port, path, token),
            "-H", "x-api-key: " + token)
        self.assertEqual(version, "2")
        got = self.only_request(UP.h2, path)
        self.assertEqual(got.version, "HTTP/2")
        self.assertEqual(got.header("x-api-key"), value)
        self.assertEqual(got.query, "h=x-api-key&key=" + value)
        self.assertEqual(got.sni, H2_HOST)
        self.assertEqual(got.header_values("proxy-authorization"), [])
        self.assertEqual(header_values(headers, "x-reflected"), [token])
        echo = json.loads(body)
        self.assertEqual(echo["reflected"], token)
        self.assertEqual(header_values(echo["headers"], "x-api-key"), [token])
        self.assertNotIn(value, body)
        self.assertNotIn(value, repr(headers))

    def test_a_token_in_an_h2_request_body_is_replaced(self):
        sandbox, value, token, _ = self.one_secret_sandbox(allowlist=[H2_HOST])
        path = self.path("h2-body")
        sent = json.dumps({"key": token, "again": token, "n": 1})
        version, _, body = self.curl(sandbox, "https://%s:%d%s" % (H2_HOST, UP.h2.port, path),
                                     "-H", "content-type: application/json",
                                     "--data-binary", sent)
        self.assertEqual(version, "2")
        got = self.only_request(UP.h2, path)
        want = sent.replace(token, value).encode()
        self.assertEqual(got.body, want)
        for length in got.header_values("content-length"):
            self.assertEqual(length, str(len(want)))
        self.assertEqual(json.loads(body)["body"], sent)

    def test_an_http11_upstream_gets_http11_from_a_client_offering_h2(self):
        """ALPN is mirrored: the main upstream selects http/1.1, so curl --http2 is answered
        in HTTP/1.1 and substitution happens there as usual."""
        sandbox, value, token, _ = self.one_secret_sandbox()
        path = self.path("h1-fallback")
        version, _, body = self.curl(sandbox, "https://%s:%d%s" % (ANTHROPIC, UP.main.port,
                                                                    path),
                                     "-H", "x-api-key: " + token)
        self.assertEqual(version, "1.1")
        got = self.only_request(UP.main, path)
        self.assertEqual(got.version, "HTTP/1.1")
        self.assertEqual(got.header("x-api-key"), value)
        self.assertNotIn(value, body)


class GrpcTest(SubstitutionBase):

    def channel(self, sandbox):
        """A grpcio channel to grpc.test through the sandbox's proxy (grpcio's own CONNECT
        support, its Proxy-Authorization from the URL's userinfo), trusting the sandbox CA."""
        creds = grpc.ssl_channel_credentials(
            root_certificates=sandbox.proxy.ca_cert_pem.encode())
        channel = grpc.secure_channel("%s:%d" % (GRPC_HOST, UP.grpc.port), creds,
                                      options=[("grpc.http_proxy", sandbox.proxy.url)])
        self.addCleanup(channel.close)
        return channel

    def test_grpc_metadata_is_substituted_messages_untouched_and_trailers_redacted(self):
        """Two unary calls on one channel, each with the token in x-api-key metadata and in the
        request message: the server sees the value in the metadata and the message byte for
        byte (a body substitution would break gRPC's length-prefixed framing); the value it
        echoes in initial and trailing metadata comes back as the token."""
        sandbox, value, token, _ = self.one_secret_sandbox(allowlist=[GRPC_HOST])
        echo = self.channel(sandbox).unary_unary(upstream.GRPC_ECHO_METHOD)
        for attempt in ("first", "second"):
            with self.subTest(call=attempt):
                tag = unique("grpc-" + attempt)
                message = json.dumps({"tag": tag, "key": token}).encode()
                reply, call = echo.with_call(message, timeout=IO_TIMEOUT_S, metadata=(
                    ("x-api-key", token), ("x-tag", tag)))
                got = UP.grpc.find("x-tag", tag)
                self.assertEqual(len(got), 1, got)
                self.assertEqual(got[0].value("x-api-key"), value)
                self.assertEqual(got[0].message, message)
                self.assertEqual(json.loads(reply)["message"], message.decode())
                initial, trailing = call.initial_metadata(), call.trailing_metadata()
                self.assertIn(("x-echo-header", token), initial)
                self.assertIn(("x-echo-trailer", token), trailing)
                self.assertNotIn(value, repr(initial) + repr(trailing))
                self.assertEqual(got[0].values("proxy-authorization"), [])

    def test_an_allowlist_change_stops_the_calls_of_an_open_h2_tunnel(self):
        """One grpcio channel (one HTTP/2 tunnel): after the store's allowlist drops the host,
        its next calls are refused with 403 (PERMISSION_DENIED to gRPC), audited denied, and
        reach nothing upstream."""
        sandbox, value, token, store = self.one_secret_sandbox(allowlist=[GRPC_HOST])
        echo = self.channel(sandbox).unary_unary(upstream.GRPC_ECHO_METHOD)
        tag = unique("grpc-before")
        echo(b"{}", timeout=IO_TIMEOUT_S, metadata=(("x-api-key", token), ("x-tag", tag)))
        self.assertEqual(UP.grpc.find("x-tag", tag)[0].value("x-api-key"), value)
        self.api.set_allowlist(store.id, ["other.test"])
        deadline = time.monotonic() + ROTATION_WAIT_S
        while True:
            tag = unique("grpc-after")
            try:
                echo(b"{}", timeout=IO_TIMEOUT_S, metadata=(("x-api-key", token),
                                                            ("x-tag", tag)))
            except grpc.RpcError as e:
                code = e.code()
                break
            if time.monotonic() > deadline:
                self.fail("calls still forwarded %.1fs after the allowlist change"
                          % ROTATION_WAIT_S)
            time.sleep(0.05)
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(UP.grpc.find("x-tag", tag), [])
        event = self.wait_audit(sandbox.id, decision="denied", host=GRPC_HOST)[0]
        self.assertIn("no longer", event.reason)


if __name__ == "__main__":
    unittest.main(verbosity=2)
