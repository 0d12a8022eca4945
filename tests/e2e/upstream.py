"""Test upstreams for the egress proxy's end-to-end suite: small HTTP/1.1 echo servers running in
threads of the test process, over TLS (certificates from throwaway CAs made with openssl) or in
cleartext.

The servers are raw-socket servers rather than http.server ones, so that what they record is what
arrived on the wire: the request line's target as written, every header line in order (repeats
included), the body after de-chunking (a chunked request body is decoded here, chunk by chunk), the
SNI the client sent, which connection the request came on (keep-alive reuse), and how many
plaintext bytes they ever read (so that a test can say "nothing reached upstream").

Every request is answered with a JSON echo of itself (Content-Length framing, keep-alive), except:
  /reflect?h=NAME   the same echo plus the value of request header NAME in the response header
                    X-Reflected and in the body's "reflected" field
  /chunked...       the echo sent as a chunked body, in 16-byte chunks
  /sink...          {"length": n, "sha256": hex} of the body, not the body itself (large bodies)

    pki = UpstreamPki(directory)            # CAs and certificates, made once
    ups = Upstreams(pki).start()            # .main .untrusted .wrong_name .plain
    ...
    ups.stop()

`python3 upstream.py` runs a self-check against the servers with curl and raw sockets (no proxy).

Every socket operation here has a timeout; stop() closes every socket and joins every thread
(bounded).
"""

import hashlib
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import helpers  # noqa: E402

# Names the main upstream's certificate holds (and that tests map to 127.0.0.1 with
# --proxy-resolve), besides localhost and IP 127.0.0.1.
CERT_NAMES = (
    "api.anthropic.test",
    "api.openai.com",
    "openai.com",
    "evilopenai.com",
    "api.openai.com.evil.com",
    "x.api.openai.com",
    "github.test",
    "other.test",
    "denied.test",
)
WRONG_NAME = "wrong.test"

HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0      # a keep-alive connection with no request for this long is closed
IO_TIMEOUT_S = 10.0        # one read or write once a request has started
MAX_HEAD = 1024 * 1024     # the upstream is lenient: the proxy is what enforces limits
MAX_BODY = 64 * 1024 * 1024
STOP_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------------------------
# Certificates

_SERVER_EXT = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=serverAuth\nsubjectAltName=%s\n")


class UpstreamPki:
    """Throwaway TLS material in `directory` (absolute paths):
      ca.pem                  the CA tests give the proxy with --upstream-ca
      server.pem/.key         signed by ca, for CERT_NAMES, localhost and 127.0.0.1
      untrusted-ca.pem        a CA nobody is told about
      untrusted.pem/.key      signed by it, for the same names
      wrong-name.pem/.key     signed by ca, for wrong.test only
    """

    def __init__(self, directory):
        self.dir = directory
        sans = ",".join(["DNS:" + n for n in CERT_NAMES] + ["DNS:localhost", "IP:127.0.0.1"])
        helpers.make_ca(directory, "ca")
        helpers._issue(directory, "ca", "server", "/CN=api.anthropic.test", _SERVER_EXT % sans)
        helpers.make_ca(directory, "untrusted-ca")
        helpers._issue(directory, "untrusted-ca", "untrusted", "/CN=api.anthropic.test",
                       _SERVER_EXT % sans)
        helpers._issue(directory, "ca", "wrong-name", "/CN=" + WRONG_NAME,
                       _SERVER_EXT % ("DNS:" + WRONG_NAME))

    def path(self, name):
        return os.path.join(self.dir, name)

    @property
    def ca_file(self):
        return self.path("ca.pem")

    def server_context(self, cert):
        """An SSLContext serving NAME.pem/NAME.key."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.path(cert + ".pem"), self.path(cert + ".key"))
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


# --------------------------------------------------------------------------------------------
# What a server saw

class Request:
    """One request as the upstream read it. `headers` is a list of (name, value) in arrival
    order, names as written; `body` is bytes (de-chunked); `chunked` says it came chunked."""

    def __init__(self, method, target, version, headers, body, chunked, sni, connection):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.chunked = chunked
        self.sni = sni
        self.connection = connection

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def query(self):
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def header_values(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name):
        """The value of header `name` (any case), None if absent; AssertionError if repeated."""
        values = self.header_values(name)
        if len(values) > 1:
            raise AssertionError("header %s repeated: %r" % (name, values))
        return values[0] if values else None

    def raw_text(self):
        """Everything the request carried, as text (for "does X appear anywhere")."""
        return "\n".join([self.method + " " + self.target] +
                         ["%s: %s" % hv for hv in self.headers] +
                         [self.body.decode("latin-1")])

    def as_json(self):
        return {"method": self.method, "target": self.target, "version": self.version,
                "headers": [[n, v] for n, v in self.headers],
                "body": self.body.decode("latin-1"), "chunked": self.chunked,
                "sni": self.sni, "connection": self.connection}

    def __repr__(self):
        return "Request(%s %s, conn %s, sni %r, %d body bytes)" % (
            self.method, self.target, self.connection, self.sni, len(self.body))


class Mark:
    """Where a server's counters stood at some moment."""

    def __init__(self, requests, connections, bytes_received):
        self.requests = requests
        self.connections = connections
        self.bytes_received = bytes_received


class _BadRequest(Exception):
    pass


class _Closed(Exception):
    pass


# --------------------------------------------------------------------------------------------
# The server

class EchoServer:
    """An HTTP/1.1 echo server on 127.0.0.1 (port chosen by the kernel), TLS if `context` is an
    SSLContext. Thread-safe counters: `requests` (list of Request), `connections` (accepted,
    TLS handshake done or not), `handshakes` (TLS handshakes completed), `bytes_received`
    (plaintext bytes read: after TLS, so a failed handshake adds nothing)."""

    def __init__(self, name, context=None):
        self.name = name
        self.context = context
        self.lock = threading.Lock()
        self._requests = []
        self.connections = 0
        self.handshakes = 0
        self.bytes_received = 0
        self.errors = []          # (connection, text) of requests it could not parse
        self._socks = set()
        self._threads = []
        self._stopping = False
        self._listener = None
        self._accept_thread = None
        if context is not None:
            context.sni_callback = self._sni

    @property
    def tls(self):
        return self.context is not None

    # --- life

    def start(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name="upstream-%s-accept" % self.name,
                                               daemon=True)
        self._accept_thread.start()
        return self

    def stop(self):
        """Closes the listener and every connection, and joins the threads (bounded)."""
        self._stopping = True
        if self._accept_thread is not None:
            self._accept_thread.join(STOP_TIMEOUT_S)
        if self._listener is not None:
            self._listener.close()
        with self.lock:
            socks = list(self._socks)
            threads = list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # --- what it saw

    @property
    def requests(self):
        with self.lock:
            return list(self._requests)

    def mark(self):
        with self.lock:
            return Mark(len(self._requests), self.connections, self.bytes_received)

    def since(self, mark):
        """The requests received after `mark`."""
        with self.lock:
            return list(self._requests[mark.requests:])

    def bytes_since(self, mark):
        with self.lock:
            return self.bytes_received - mark.bytes_received

    def connections_since(self, mark):
        with self.lock:
            return self.connections - mark.connections

    def find(self, path_prefix):
        """The requests whose target starts with `path_prefix`."""
        return [r for r in self.requests if r.target.startswith(path_prefix)]

    def url(self, host="localhost", path="/"):
        return "%s://%s:%d%s" % ("https" if self.tls else "http", host, self.port, path)

    # --- serving

    def _sni(self, ssl_sock, server_name, ctx):
        ssl_sock.sealgate_sni = server_name
        return None

    def _accept_loop(self):
        while not self._stopping:
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                conn_id = self.connections
                self._socks.add(sock)
            t = threading.Thread(target=self._serve, args=(sock, conn_id),
                                 name="upstream-%s-%d" % (self.name, conn_id), daemon=True)
            with self.lock:
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _serve(self, raw, conn_id):
        sock = raw
        try:
            sni = None
            if self.context is not None:
                raw.settimeout(HANDSHAKE_TIMEOUT_S)
                sock = self.context.wrap_socket(raw, server_side=True,
                                                do_handshake_on_connect=False)
                with self.lock:
                    self._socks.add(sock)
                sock.do_handshake()
                sni = getattr(sock, "sealgate_sni", None)
                with self.lock:
                    self.handshakes += 1
            reader = _Reader(self, sock)
            while not self._stopping:
                try:
                    request = reader.read_request(sni, conn_id)
                except _Closed:
                    return
                except _BadRequest as e:
                    with self.lock:
                        self.errors.append((conn_id, str(e)))
                    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    return
                with self.lock:
                    self._requests.append(request)
                sock.settimeout(IO_TIMEOUT_S)
                keep = self._respond(sock, request)
                if not keep:
                    return
        except (OSError, ssl.SSLError, ValueError):
            return   # a failed handshake, a reset, a timeout, or stop() closing the socket
        finally:
            with self.lock:
                self._socks.discard(raw)
                self._socks.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _respond(self, sock, request):
        """Writes the answer; returns whether the connection stays open."""
        conn_hdr = ",".join(request.header_values("connection")).lower()
        keep = not ("close" in conn_hdr or
                    (request.version == "HTTP/1.0" and "keep-alive" not in conn_hdr))
        payload = request.as_json()
        extra = []
        path = request.path
        if path == "/reflect" or path.startswith("/reflect/"):
            names = urllib.parse.parse_qs(request.query).get("h", [])
            value = ",".join(request.header_values(names[0])) if names else ""
            payload["reflected"] = value
            extra.append(("X-Reflected", value))
        if path.startswith("/sink"):
            payload = {"length": len(request.body),
                       "sha256": hashlib.sha256(request.body).hexdigest(),
                       "connection": request.connection}
        body = json.dumps(payload).encode("latin-1") if _is_latin1(payload) else \
            json.dumps(payload).encode()
        head = ["HTTP/1.1 200 OK", "Content-Type: application/json"]
        head += ["%s: %s" % hv for hv in extra]
        if not keep:
            head.append("Connection: close")
        if request.method == "HEAD":
            head.append("Content-Length: %d" % len(body))
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            return keep
        if path.startswith("/chunked"):
            head.append("Transfer-Encoding: chunked")
            out = [("\r\n".join(head) + "\r\n\r\n").encode("latin-1")]
            for i in range(0, len(body), 16):
                piece = body[i:i + 16]
                out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            out.append(b"0\r\n\r\n")
            sock.sendall(b"".join(out))
        else:
            head.append("Content-Length: %d" % len(body))
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        return keep


def _is_latin1(payload):
    try:
        json.dumps(payload).encode("latin-1")
        return True
    except UnicodeEncodeError:
        return False


class _Reader:
    """Buffered reads from one connection, counting plaintext bytes on the server."""

    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.buf = b""

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            raise _Closed()
        with self.server.lock:
            self.server.bytes_received += len(data)
        self.buf += data

    def _until(self, marker, limit, timeout):
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise _BadRequest("no %r within %d bytes" % (marker, limit))
            self._fill(timeout)
        i = self.buf.index(marker)
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def _exactly(self, n):
        while len(self.buf) < n:
            self._fill(IO_TIMEOUT_S)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_request(self, sni, conn_id):
        # Blank lines before a request line are tolerated (RFC 9112 §2.2).
        while self.buf.startswith(b"\r\n"):
            self.buf = self.buf[2:]
        if not self.buf:
            self._fill(IDLE_TIMEOUT_S)
        try:
            head = self._until(b"\r\n\r\n", MAX_HEAD, IO_TIMEOUT_S)
        except _Closed:
            if self.buf.strip():
                raise _BadRequest("connection closed inside a head: %r" % self.buf[:200])
            raise
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _BadRequest("bad request line %r" % lines[0])
        method, target, version = parts
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest("bad header line %r" % line)
            headers.append((name, value.strip(" \t")))
        te = ",".join(v for n, v in headers if n.lower() == "transfer-encoding").lower()
        lengths = [v for n, v in headers if n.lower() == "content-length"]
        chunked = "chunked" in te
        if chunked:
            body = self._read_chunked()
        elif lengths:
            try:
                n = int(lengths[0])
            except ValueError:
                raise _BadRequest("bad Content-Length %r" % lengths[0])
            if n < 0 or n > MAX_BODY:
                raise _BadRequest("Content-Length %d out of range" % n)
            body = self._exactly(n)
        else:
            body = b""
        return Request(method, target, version, headers, body, chunked, sni, conn_id)

    def _read_chunked(self):
        body = []
        total = 0
        while True:
            line = self._until(b"\r\n", 4096, IO_TIMEOUT_S).decode("latin-1")
            size_text = line.split(";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _BadRequest("bad chunk size line %r" % line)
            if size == 0:
                break
            total += size
            if total > MAX_BODY:
                raise _BadRequest("chunked body over %d bytes" % MAX_BODY)
            body.append(self._exactly(size))
            if self._exactly(2) != b"\r\n":
                raise _BadRequest("chunk data not followed by CRLF")
        while self._until(b"\r\n", 16384, IO_TIMEOUT_S):   # trailer fields, dropped
            pass
        return b"".join(body)


# --------------------------------------------------------------------------------------------
# The set a suite uses

class Upstreams:
    """The four servers of the proxy suite:
      main        TLS, certificate from pki's CA for CERT_NAMES (the proxy trusts the CA)
      untrusted   TLS, certificate for the same names from a CA the proxy does not know
      wrong_name  TLS, certificate from the trusted CA for wrong.test only
      plain       cleartext HTTP
    """

    def __init__(self, pki):
        self.pki = pki
        self.main = EchoServer("main", pki.server_context("server"))
        self.untrusted = EchoServer("untrusted", pki.server_context("untrusted"))
        self.wrong_name = EchoServer("wrong-name", pki.server_context("wrong-name"))
        self.plain = EchoServer("plain")

    @property
    def all(self):
        return (self.main, self.untrusted, self.wrong_name, self.plain)

    @property
    def ports(self):
        return [s.port for s in self.all]

    def start(self):
        try:
            for s in self.all:
                s.start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self):
        for s in self.all:
            if s._listener is not None:
                s.stop()


# --------------------------------------------------------------------------------------------
# Self-check: the servers on their own, with curl and raw sockets (no proxy)

def _curl(*args):
    import subprocess
    p = subprocess.run(["curl", "-sS", "--max-time", "10"] + list(args), capture_output=True,
                       timeout=20)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def self_check():
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="sealgate-upstream-check-")
    ups = None
    try:
        pki = UpstreamPki(d)
        ups = Upstreams(pki).start()
        m = ups.main
        resolve = ["--resolve", "api.anthropic.test:%d:127.0.0.1" % m.port]

        # TLS echo with the trusted CA, SNI recorded, two requests on one connection.
        rc, out, err = _curl("--cacert", pki.ca_file, *resolve,
                             "-H", "X-Api-Key: abc", "-H", "X-Dup: 1", "-H", "X-Dup: 2",
                             "https://api.anthropic.test:%d/one?q=1" % m.port,
                             "https://api.anthropic.test:%d/two" % m.port)
        assert rc == 0, err
        first = json.loads(out[:out.index(b"}{") + 1])
        assert first["target"] == "/one?q=1" and first["sni"] == "api.anthropic.test", first
        assert ["X-Dup", "1"] in first["headers"] and ["X-Dup", "2"] in first["headers"]
        one, two = m.find("/one")[0], m.find("/two")[0]
        assert one.connection == two.connection, "curl's keep-alive was not reused"
        assert one.header("x-api-key") == "abc"

        # Content-Length body, /reflect, /chunked, /sink.
        rc, out, err = _curl("--cacert", pki.ca_file, *resolve, "--data-binary", "hello body",
                             "-H", "X-Secret: s3cr3t",
                             "https://api.anthropic.test:%d/reflect?h=x-secret" % m.port)
        assert rc == 0, err
        echo = json.loads(out)
        assert echo["body"] == "hello body" and echo["reflected"] == "s3cr3t", echo
        rc, out, err = _curl("-i", "--cacert", pki.ca_file, *resolve,
                             "https://api.anthropic.test:%d/chunked" % m.port)
        assert rc == 0 and b"transfer-encoding: chunked" in out.lower(), (out, err)
        assert b'"target": "/chunked"' in out
        rc, out, err = _curl("--cacert", pki.ca_file, *resolve, "--data-binary", "abc",
                             "https://api.anthropic.test:%d/sink" % m.port)
        assert rc == 0 and json.loads(out)["length"] == 3, (out, err)

        # A chunked request body, a token split across chunks, a pipelined request after it.
        ctx = ssl.create_default_context(cafile=pki.ca_file)
        with socket.create_connection(("127.0.0.1", m.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="github.test") as s:
                s.sendall(b"POST /raw-chunked HTTP/1.1\r\nHost: github.test\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                time.sleep(0.05)
                s.sendall(b"6;ext=1\r\n world\r\n0\r\n\r\n"
                          b"GET /raw-second HTTP/1.1\r\nHost: github.test\r\n"
                          b"Connection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 2, data
        raw_req = m.find("/raw-chunked")[0]
        assert raw_req.body == b"hello world" and raw_req.chunked, raw_req
        assert raw_req.sni == "github.test"
        assert m.find("/raw-second")[0].connection == raw_req.connection

        # The untrusted and wrong-name servers fail verification; nothing is read by them.
        for server, host in ((ups.untrusted, "api.anthropic.test"),
                             (ups.wrong_name, "api.anthropic.test")):
            before = server.mark()
            rc, out, err = _curl("--cacert", pki.ca_file, "--resolve",
                                 "%s:%d:127.0.0.1" % (host, server.port),
                                 "https://%s:%d/x" % (host, server.port))
            assert rc == 60, (server.name, rc, err)
            time.sleep(0.1)
            assert server.bytes_since(before) == 0 and not server.since(before), server.name
            assert server.connections_since(before) == 1
        rc, out, err = _curl("--cacert", pki.path("untrusted-ca.pem"), "--resolve",
                             "api.anthropic.test:%d:127.0.0.1" % ups.untrusted.port,
                             "https://api.anthropic.test:%d/ok" % ups.untrusted.port)
        assert rc == 0, err
        rc, out, err = _curl("--cacert", pki.ca_file, "--resolve",
                             "wrong.test:%d:127.0.0.1" % ups.wrong_name.port,
                             "https://wrong.test:%d/ok" % ups.wrong_name.port)
        assert rc == 0, err

        # Cleartext.
        rc, out, err = _curl("-H", "Host: github.test",
                             "http://127.0.0.1:%d/plain?x=y" % ups.plain.port)
        assert rc == 0 and json.loads(out)["target"] == "/plain?x=y", (out, err)
        assert ups.plain.find("/plain")[0].header("host") == "github.test"
        print("upstream self-check: ok (main %d, untrusted %d, wrong-name %d, plain %d)" %
              (m.port, ups.untrusted.port, ups.wrong_name.port, ups.plain.port))
    finally:
        if ups is not None:
            ups.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    self_check()
