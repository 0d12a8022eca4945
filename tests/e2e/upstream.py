"""Test upstreams for the egress proxy's end-to-end suite: small HTTP/1.1 echo servers running in
threads of the test process, over TLS (certificates from throwaway CAs made with openssl) or in
cleartext; an HTTP/2 echo server (TLS, ALPN h2 only; python3-h2) and a gRPC echo server (grpcio).

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
  /close-delimited...  the echo with neither Content-Length nor chunking: the body ends where
                    the server closes the connection (TCP only, no TLS close_notify)
  GET with Upgrade: websocket (RFC 6455)
                    101 with the right Sec-WebSocket-Accept (and the first protocol offered in
                    Sec-WebSocket-Protocol, if any), then every frame is echoed back (unmasked;
                    ping answered by pong, close by close, then TLS close_notify, or for
                    /ws-abrupt… paths a TCP close alone); the frames received are recorded in
                    the request's `frames`

The HTTP/2 server (H2EchoServer) records the same Request objects (pseudo-headers included in
`headers`, version "HTTP/2", request trailers in `trailers`) and answers every stream with the same
JSON echo (/reflect?h=NAME as above). It speaks h2 only: a client that does not select h2 by ALPN
is refused (recorded in `errors`, the connection closed without a byte read).

The gRPC server (GrpcEchoServer) serves GRPC_ECHO_METHOD with raw bytes in and out: it records
the metadata and message of each call (GrpcCall) and answers with a JSON echo of both, plus the
value of its x-api-key metadata in the initial metadata key x-echo-header and in the trailing
metadata key x-echo-trailer.

    pki = UpstreamPki(directory)            # CAs and certificates, made once
    ups = Upstreams(pki).start()            # .main .untrusted .wrong_name .plain .h2 .grpc
    ...
    ups.stop()

`python3 upstream.py` runs a self-check against the servers with curl and raw sockets (no proxy).

Every socket operation here has a timeout; stop() closes every socket and joins every thread
(bounded).
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions

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
    "h2.test",
    "grpc.test",
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

    def server_context(self, cert, alpn=("http/1.1",)):
        """An SSLContext serving NAME.pem/NAME.key, selecting a protocol of `alpn` (a client
        offering none of them gets no ALPN answer)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.path(cert + ".pem"), self.path(cert + ".key"))
        ctx.set_alpn_protocols(list(alpn))
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
        self.trailers = []        # HTTP/2: request trailers, [(name, value)]
        self.frames = []          # WebSocket: [(opcode, payload bytes)] as they arrived

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
                if _is_websocket_upgrade(request):
                    self._websocket(sock, reader, request)
                    return
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
        if path.startswith("/close-delimited"):
            # No framing: the body ends when the connection does, without TLS close_notify.
            head = [h for h in head if h != "Connection: close"] + ["Connection: close"]
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            return False
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


    def _websocket(self, sock, reader, request):
        """Answers the handshake with 101, then echoes frames until a close frame, the peer's
        end, or IDLE_TIMEOUT_S without a frame."""
        head = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                "Sec-WebSocket-Accept: " + websocket_accept(request.header("sec-websocket-key"))]
        offered = ",".join(request.header_values("sec-websocket-protocol"))
        protocols = [p.strip() for p in offered.split(",") if p.strip()]
        if protocols:
            head.append("Sec-WebSocket-Protocol: " + protocols[0])
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        while not self._stopping:
            try:
                reader._fill_if_empty(IDLE_TIMEOUT_S)
                fin, opcode, masked, payload = read_ws_frame(reader._exactly)
            except _Closed:
                return
            with self.lock:
                request.frames.append((opcode, payload))
            if not masked:     # RFC 6455 §5.1: a server closes on an unmasked client frame
                sock.sendall(ws_frame(WS_CLOSE, (1002).to_bytes(2, "big"), mask=False))
                return
            if opcode == WS_PING:
                sock.sendall(ws_frame(WS_PONG, payload, mask=False))
            elif opcode == WS_CLOSE:
                # RFC 6455 §7.1.1: the server closes first. /ws-abrupt… closes TCP alone, as
                # servers that skip TLS close_notify do; others end TLS cleanly first.
                sock.sendall(ws_frame(WS_CLOSE, payload[:2], mask=False))
                if not request.path.startswith("/ws-abrupt") and isinstance(sock, ssl.SSLSocket):
                    sock.settimeout(1.0)
                    try:
                        sock.unwrap()
                    except (OSError, ssl.SSLError, ValueError):
                        pass
                return
            elif opcode != WS_PONG:
                sock.sendall(ws_frame(opcode, payload, fin=fin, mask=False))


def _is_websocket_upgrade(request):
    return (request.method == "GET" and
            "websocket" in ",".join(request.header_values("upgrade")).lower() and
            request.header("sec-websocket-key") is not None)


# --------------------------------------------------------------------------------------------
# WebSocket framing (RFC 6455 §5), shared with the tests' client

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_CONT, WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def websocket_accept(key):
    """The Sec-WebSocket-Accept for Sec-WebSocket-Key `key`."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest()).decode()


def ws_frame(opcode, payload, fin=True, mask=True):
    """One frame; a client's is masked with a random key."""
    n = len(payload)
    out = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        out.append(bit | n)
    elif n < 65536:
        out.append(bit | 126)
        out += n.to_bytes(2, "big")
    else:
        out.append(bit | 127)
        out += n.to_bytes(8, "big")
    if mask:
        key = os.urandom(4)
        out += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(out) + payload


def read_ws_frame(exactly):
    """(fin, opcode, masked, payload unmasked) of the next frame; `exactly(n)` reads n bytes."""
    b0, b1 = exactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(exactly(2), "big")
    elif n == 127:
        n = int.from_bytes(exactly(8), "big")
    if n > MAX_BODY:
        raise ValueError("WebSocket frame of %d bytes" % n)
    masked = bool(b1 & 0x80)
    key = exactly(4) if masked else None
    payload = exactly(n)
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, masked, payload


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

    def _fill_if_empty(self, timeout):
        if not self.buf:
            self._fill(timeout)

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
# HTTP/2

class H2EchoServer(EchoServer):
    """The JSON echo over HTTP/2 (TLS, ALPN h2 only), with EchoServer's records and counters.
    A connection that did not select h2 is closed without a read (its `errors` say why); one that
    breaks the protocol is closed too (recorded the same way)."""

    def _serve(self, raw, conn_id):
        sock = raw
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT_S)
            sock = self.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            with self.lock:
                self._socks.add(sock)
            sock.do_handshake()
            with self.lock:
                self.handshakes += 1
            alpn = sock.selected_alpn_protocol()
            if alpn != "h2":
                with self.lock:
                    self.errors.append((conn_id, "ALPN %r, not h2" % alpn))
                return
            self._serve_h2(sock, conn_id, getattr(sock, "sealgate_sni", None))
        except (OSError, ssl.SSLError, ValueError):
            return
        except h2.exceptions.ProtocolError as e:
            with self.lock:
                self.errors.append((conn_id, "HTTP/2 protocol error: %s" % e))
        finally:
            with self.lock:
                self._socks.discard(raw)
                self._socks.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _serve_h2(self, sock, conn_id, sni):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        streams = {}     # stream id: Request being received
        pending = {}     # stream id: response body bytes not yet sent (flow control)
        while not self._stopping:
            sock.settimeout(IDLE_TIMEOUT_S if not streams and not pending else IO_TIMEOUT_S)
            data = sock.recv(65536)
            if not data:
                return
            with self.lock:
                self.bytes_received += len(data)
            for event in conn.receive_data(data):
                sid = getattr(event, "stream_id", None)
                if isinstance(event, h2.events.RequestReceived):
                    headers = [(n.decode("latin-1"), v.decode("latin-1"))
                               for n, v in event.headers]
                    pseudo = dict(headers)
                    streams[sid] = Request(pseudo.get(":method", ""), pseudo.get(":path", ""),
                                           "HTTP/2", headers, b"", False, sni, conn_id)
                elif isinstance(event, h2.events.DataReceived):
                    if sid in streams:
                        streams[sid].body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.TrailersReceived):
                    if sid in streams:
                        streams[sid].trailers = [(n.decode("latin-1"), v.decode("latin-1"))
                                                 for n, v in event.headers]
                elif isinstance(event, h2.events.StreamEnded):
                    request = streams.pop(sid, None)
                    if request is not None:
                        with self.lock:
                            self._requests.append(request)
                        pending[sid] = self._h2_respond(conn, sid, request)
                elif isinstance(event, h2.events.StreamReset):
                    streams.pop(sid, None)
                    pending.pop(sid, None)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    sock.sendall(conn.data_to_send())
                    return
            self._h2_flush(conn, pending)
            out = conn.data_to_send()
            if out:
                sock.settimeout(IO_TIMEOUT_S)
                sock.sendall(out)

    def _h2_respond(self, conn, sid, request):
        """Sends the response headers; returns the body, sent as the windows allow."""
        payload = request.as_json()
        payload["trailers"] = [[n, v] for n, v in request.trailers]
        headers = [(":status", "200"), ("content-type", "application/json")]
        if request.path == "/reflect" or request.path.startswith("/reflect/"):
            names = urllib.parse.parse_qs(request.query).get("h", [])
            value = ",".join(request.header_values(names[0])) if names else ""
            payload["reflected"] = value
            headers.append(("x-reflected", value))
        body = json.dumps(payload).encode()
        headers.append(("content-length", str(len(body))))
        if request.method == "HEAD":
            conn.send_headers(sid, headers, end_stream=True)
            return b""
        conn.send_headers(sid, headers)
        return body

    @staticmethod
    def _h2_flush(conn, pending):
        for sid in list(pending):
            data = pending[sid]
            try:
                while data:
                    n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                            len(data))
                    if n <= 0:
                        break
                    conn.send_data(sid, data[:n])
                    data = data[n:]
                if data:
                    pending[sid] = data
                    continue
                conn.end_stream(sid)
            except h2.exceptions.StreamClosedError:
                pass
            del pending[sid]


# --------------------------------------------------------------------------------------------
# gRPC

GRPC_ECHO_SERVICE = "sealgate.e2e.Echo"
GRPC_ECHO_METHOD = "/%s/Echo" % GRPC_ECHO_SERVICE


class GrpcCall:
    """One call as the gRPC server saw it: `metadata` [(key, value)] as grpcio gives it (its
    own user-agent and the like included), `message` the request's bytes."""

    def __init__(self, method, metadata, message, peer):
        self.method = method
        self.metadata = metadata
        self.message = message
        self.peer = peer

    def values(self, key):
        return [v for k, v in self.metadata if k == key.lower()]

    def value(self, key):
        values = self.values(key)
        if len(values) > 1:
            raise AssertionError("metadata %s repeated: %r" % (key, values))
        return values[0] if values else None

    def __repr__(self):
        return "GrpcCall(%s from %s, %r, %d message bytes)" % (
            self.method, self.peer, self.metadata, len(self.message))


class GrpcEchoServer:
    """A grpcio server on 127.0.0.1 (TLS with pki's server certificate) serving
    GRPC_ECHO_METHOD: bytes in, JSON bytes out ({"metadata": [[k, v]...], "message": text}),
    the request's x-api-key value back in initial metadata x-echo-header and trailing metadata
    x-echo-trailer."""

    name = "grpc"

    def __init__(self, pki):
        self.pki = pki
        self.lock = threading.Lock()
        self._calls = []
        self._server = None
        self.port = None

    def start(self):
        with open(self.pki.path("server.key"), "rb") as f:
            key = f.read()
        with open(self.pki.path("server.pem"), "rb") as f:
            cert = f.read()
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(GRPC_ECHO_SERVICE, {
            "Echo": grpc.unary_unary_rpc_method_handler(self._echo)})
        server.add_generic_rpc_handlers((handler,))
        self.port = server.add_secure_port("127.0.0.1:0",
                                           grpc.ssl_server_credentials([(key, cert)]))
        if not self.port:
            raise RuntimeError("the gRPC upstream could not bind")
        server.start()
        self._server = server
        return self

    def stop(self):
        if self._server is not None:
            self._server.stop(None).wait(STOP_TIMEOUT_S)

    def _echo(self, message, context):
        metadata = [(k, v.decode("latin-1") if isinstance(v, bytes) else v)
                    for k, v in context.invocation_metadata()]
        call = GrpcCall(GRPC_ECHO_METHOD, metadata, message, context.peer())
        with self.lock:
            self._calls.append(call)
        key = call.value("x-api-key") or ""
        context.send_initial_metadata((("x-echo-header", key),))
        context.set_trailing_metadata((("x-echo-trailer", key),))
        return json.dumps({"metadata": metadata,
                           "message": message.decode("latin-1")}).encode()

    @property
    def calls(self):
        with self.lock:
            return list(self._calls)

    def find(self, key, value):
        """The calls whose metadata `key` is `value`."""
        return [c for c in self.calls if c.value(key) == value]


# --------------------------------------------------------------------------------------------
# The set a suite uses

class Upstreams:
    """The servers of the proxy suite:
      main        TLS, certificate from pki's CA for CERT_NAMES (the proxy trusts the CA);
                  HTTP/1.1 only (ALPN http/1.1); WebSocket echo
      untrusted   TLS, certificate for the same names from a CA the proxy does not know
      wrong_name  TLS, certificate from the trusted CA for wrong.test only
      plain       cleartext HTTP
      h2          TLS, main's certificate, HTTP/2 only (ALPN h2)
      grpc        grpcio, TLS with main's certificate (ALPN h2, as grpcio does)
    `all` is the EchoServers (every one but grpc), `ports` every port.
    """

    def __init__(self, pki):
        self.pki = pki
        self.main = EchoServer("main", pki.server_context("server"))
        self.untrusted = EchoServer("untrusted", pki.server_context("untrusted"))
        self.wrong_name = EchoServer("wrong-name", pki.server_context("wrong-name"))
        self.plain = EchoServer("plain")
        self.h2 = H2EchoServer("h2", pki.server_context("server", alpn=("h2",)))
        self.grpc = GrpcEchoServer(pki)

    @property
    def all(self):
        return (self.main, self.untrusted, self.wrong_name, self.plain, self.h2)

    @property
    def ports(self):
        return [s.port for s in self.all] + [self.grpc.port]

    def start(self):
        try:
            for s in self.all:
                s.start()
            self.grpc.start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self):
        for s in self.all:
            if s._listener is not None:
                s.stop()
        self.grpc.stop()


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
        rc, out, err = _curl("-i", "--cacert", pki.ca_file, *resolve,
                             "https://api.anthropic.test:%d/close-delimited" % m.port)
        assert rc == 0 and b"content-length" not in out.lower(), (out, err)
        assert out.rstrip().endswith(b"}") and b'"target": "/close-delimited"' in out, out

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

        # WebSocket: the handshake, frames of each length encoding, ping, close.
        with socket.create_connection(("127.0.0.1", m.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="github.test") as s:
                key = base64.b64encode(os.urandom(16)).decode()
                s.sendall(("GET /ws-check HTTP/1.1\r\nHost: github.test\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Protocol: one, two\r\n\r\n" % key).encode())
                buf = bytearray()

                def exactly(n):
                    while len(buf) < n:
                        chunk = s.recv(65536)
                        assert chunk, "WebSocket closed"
                        buf.extend(chunk)
                    out = bytes(buf[:n])
                    del buf[:n]
                    return out
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(65536)
                    assert chunk, bytes(buf)
                    buf.extend(chunk)
                i = buf.index(b"\r\n\r\n")
                head = bytes(buf[:i]).decode()
                del buf[:i + 4]
                assert head.startswith("HTTP/1.1 101 "), head
                assert "Sec-WebSocket-Accept: %s" % websocket_accept(key) in head, head
                assert "Sec-WebSocket-Protocol: one" in head, head
                for payload in (b"hi", b"x" * 300, b"y" * 70000):
                    s.sendall(ws_frame(WS_TEXT, payload))
                    assert read_ws_frame(exactly) == (True, WS_TEXT, False, payload)
                s.sendall(ws_frame(WS_PING, b"p"))
                assert read_ws_frame(exactly) == (True, WS_PONG, False, b"p")
                s.sendall(ws_frame(WS_CLOSE, (1000).to_bytes(2, "big")))
                assert read_ws_frame(exactly)[1] == WS_CLOSE
        assert [f[0] for f in m.find("/ws-check")[0].frames] == [1, 1, 1, 9, 8]

        # HTTP/2: curl --http2 gets h2; a POST body and /reflect; HTTP/1.1 alone is refused.
        h = ups.h2
        h2_resolve = ["--resolve", "h2.test:%d:127.0.0.1" % h.port]
        rc, out, err = _curl("--http2", "--cacert", pki.ca_file, *h2_resolve,
                             "-w", "\n%{http_version}", "-H", "X-Api-Key: abc",
                             "--data-binary", "h2 body",
                             "https://h2.test:%d/reflect/h2-check?h=x-api-key" % h.port)
        assert rc == 0, err
        body, version = out.rsplit(b"\n", 1)
        assert version == b"2", out
        echo = json.loads(body)
        assert echo["reflected"] == "abc" and echo["body"] == "h2 body", echo
        got = h.find("/reflect/h2-check")[0]
        assert got.version == "HTTP/2" and got.method == "POST" and got.sni == "h2.test", got
        assert got.header(":authority") == "h2.test:%d" % h.port, got.headers
        rc, out, err = _curl("--http1.1", "--cacert", pki.ca_file, *h2_resolve,
                             "https://h2.test:%d/h1" % h.port)
        assert rc != 0 and not h.find("/h1"), (rc, out, err)
        assert any("ALPN" in e for _, e in h.errors), h.errors

        # gRPC: a direct call, metadata in, metadata and trailers back.
        with open(pki.ca_file, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        with grpc.secure_channel("127.0.0.1:%d" % ups.grpc.port, creds, options=[
                ("grpc.ssl_target_name_override", "grpc.test")]) as channel:
            echo_call = channel.unary_unary(GRPC_ECHO_METHOD)
            reply, call = echo_call.with_call(b"msg", metadata=(("x-api-key", "k1"),),
                                              timeout=10)
            assert json.loads(reply)["message"] == "msg", reply
            assert ("x-echo-header", "k1") in call.initial_metadata()
            assert ("x-echo-trailer", "k1") in call.trailing_metadata()
        assert ups.grpc.find("x-api-key", "k1")[0].message == b"msg"

        print("upstream self-check: ok (main %d, untrusted %d, wrong-name %d, plain %d, h2 %d, "
              "grpc %d)" % (m.port, ups.untrusted.port, ups.wrong_name.port, ups.plain.port,
                            h.port, ups.grpc.port))
    finally:
        if ups is not None:
            ups.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    self_check()
