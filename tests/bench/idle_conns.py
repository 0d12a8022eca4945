#!/usr/bin/python3
"""Open many idle HTTP/2 (h2c, prior knowledge) connections and hold them.

Used by grpc_core.sh to measure a server's memory per idle connection.

Each connection sends the client preface and an empty SETTINGS frame, reads
the server's SETTINGS (acknowledging it) and the server's ACK of ours, and then
stays idle. With --call it first makes one grpc.health.v1.Health/Check call on
stream 1 (HEADERS + a 5-byte empty gRPC message) and waits for the end of that
stream (the trailers) before counting as ready.

When every connection is ready the script prints "READY <n>" on stdout and
keeps the connections open, answering PINGs, until SIGTERM/SIGINT, stdin EOF
(when --stdin is given) or --hold seconds. On exit it prints a one-line summary
on stderr. Exit status: 0 when all connections became ready, 1 otherwise.

Standard library only; single thread with selectors; every wait bounded.
"""

import argparse
import errno
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
FLAG_ACK = 0x1
FLAG_END_STREAM = 0x1
FLAG_END_HEADERS = 0x4


def frame(ftype, flags, stream_id, payload=b""):
    return (struct.pack(">I", len(payload))[1:]
            + struct.pack(">BBI", ftype, flags, stream_id & 0x7FFFFFFF)
            + payload)


def hpack_int(value, prefix_bits, first_byte_flags=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman."""
    name, value = name.encode(), value.encode()
    return (b"\x00" + hpack_int(len(name), 7) + name
            + hpack_int(len(value), 7) + value)


def health_check_request(authority):
    block = b"".join(hpack_literal(n, v) for n, v in (
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/grpc.health.v1.Health/Check"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ))
    return (frame(HEADERS, FLAG_END_HEADERS, 1, block)
            + frame(DATA, FLAG_END_STREAM, 1, b"\x00\x00\x00\x00\x00"))


class Conn:
    __slots__ = ("sock", "out", "inbuf", "connected", "got_settings",
                 "got_ack", "call_done", "closed", "error")

    def __init__(self, sock):
        self.sock = sock
        self.out = bytearray()
        self.inbuf = bytearray()
        self.connected = False
        self.got_settings = False
        self.got_ack = False
        self.call_done = False
        self.closed = False
        self.error = None


class Client:
    def __init__(self, args):
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.conns = []
        self.ready = 0
        self.failed = 0
        self.closed_after_ready = 0
        self.first_error = None
        self.stop = []
        self.hello = PREFACE + frame(SETTINGS, 0, 0)
        if args.call:
            self.hello += health_check_request(f"{args.host}:{args.port}")

    # -- connection lifecycle -------------------------------------------
    def is_ready(self, c):
        return (c.got_settings and c.got_ack
                and (c.call_done or not self.args.call))

    def open_one(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Conn(s)
        self.conns.append(c)
        self.sel.register(s, selectors.EVENT_WRITE, c)
        err = s.connect_ex((self.args.host, self.args.port))
        if err not in (0, errno.EINPROGRESS):
            self.fail(c, f"connect: {os.strerror(err)}")

    def fail(self, c, why):
        if c.error is None:
            c.error = why
            if self.first_error is None:
                self.first_error = why
        was_ready = self.is_ready(c)
        self.close(c)
        if was_ready:
            self.ready -= 1
            self.closed_after_ready += 1
        else:
            self.failed += 1

    def close(self, c):
        if c.closed:
            return
        c.closed = True
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def update_interest(self, c):
        if c.closed:
            return
        events = selectors.EVENT_READ
        if c.out or not c.connected:
            events |= selectors.EVENT_WRITE
        self.sel.modify(c.sock, events, c)

    # -- I/O ------------------------------------------------------------
    def on_writable(self, c):
        if not c.connected:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(c, f"connect: {os.strerror(err)}")
                return
            c.connected = True
            c.out += self.hello
        try:
            n = c.sock.send(c.out)
            del c.out[:n]
        except BlockingIOError:
            pass
        except OSError as e:
            self.fail(c, f"send: {e}")
            return
        self.update_interest(c)

    def on_readable(self, c):
        was_ready = self.is_ready(c)
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self.fail(c, f"recv: {e}")
            return
        if not data:
            self.fail(c, "connection closed by server")
            return
        c.inbuf += data
        while len(c.inbuf) >= 9:
            length = int.from_bytes(c.inbuf[0:3], "big")
            if len(c.inbuf) < 9 + length:
                break
            ftype, flags = c.inbuf[3], c.inbuf[4]
            sid = int.from_bytes(c.inbuf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(c.inbuf[9:9 + length])
            del c.inbuf[:9 + length]
            if ftype == SETTINGS:
                if flags & FLAG_ACK:
                    c.got_ack = True
                else:
                    c.got_settings = True
                    c.out += frame(SETTINGS, FLAG_ACK, 0)
            elif ftype == PING and not flags & FLAG_ACK:
                c.out += frame(PING, FLAG_ACK, 0, payload)
            elif ftype == GOAWAY:
                code = int.from_bytes(payload[4:8], "big") if len(payload) >= 8 else -1
                self.fail(c, f"GOAWAY error_code={code}")
                return
            elif ftype == RST_STREAM and sid == 1:
                self.fail(c, "call reset by server (RST_STREAM)")
                return
            elif ftype in (HEADERS, DATA) and sid == 1 and flags & FLAG_END_STREAM:
                c.call_done = True
        if not was_ready and self.is_ready(c):
            self.ready += 1
        self.update_interest(c)

    def pump(self, timeout):
        for key, events in self.sel.select(timeout):
            c = key.data
            if c.closed:
                continue
            if events & selectors.EVENT_WRITE:
                self.on_writable(c)
            if not c.closed and events & selectors.EVENT_READ:
                self.on_readable(c)

    # -- phases -----------------------------------------------------------
    def establish(self):
        """Open --count connections, at most --batch handshakes in flight."""
        deadline = time.monotonic() + self.args.timeout
        while len(self.conns) < self.args.count or self.in_flight() > 0:
            if time.monotonic() > deadline or self.stop:
                return False
            while (len(self.conns) < self.args.count
                   and self.in_flight() < self.args.batch):
                self.open_one()
            self.pump(0.2)
        return self.ready == self.args.count

    def in_flight(self):
        return (len(self.conns) - self.ready - self.failed
                - self.closed_after_ready)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--call", action="store_true",
                    help="make one Health/Check call on each connection first")
    ap.add_argument("--batch", type=int, default=200,
                    help="handshakes in flight at once (default 200)")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds allowed to establish all connections")
    ap.add_argument("--hold", type=float, default=300.0,
                    help="longest time to hold the connections (seconds)")
    ap.add_argument("--stdin", action="store_true",
                    help="also stop when stdin reaches EOF")
    args = ap.parse_args()

    need = args.count + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            except (ValueError, OSError):
                print(f"idle_conns: RLIMIT_NOFILE hard limit {hard} < {need}",
                      file=sys.stderr)
                return 1
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    client = Client(args)
    stop = client.stop
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    started = time.monotonic()
    ok = client.establish()
    took = time.monotonic() - started
    if not ok:
        print(f"idle_conns: only {client.ready}/{args.count} connections ready "
              f"after {took:.1f}s ({client.failed} failed; first error: "
              f"{client.first_error})", file=sys.stderr)
        return 1
    print(f"READY {client.ready}", flush=True)

    if args.stdin:
        client.sel.register(sys.stdin, selectors.EVENT_READ, None)
    deadline = time.monotonic() + args.hold
    while not stop and time.monotonic() < deadline:
        for key, events in client.sel.select(0.2):
            if key.data is None:  # stdin
                if not os.read(sys.stdin.fileno(), 4096):
                    stop.append(1)
                continue
            c = key.data
            if c.closed:
                continue
            if events & selectors.EVENT_WRITE:
                client.on_writable(c)
            if not c.closed and events & selectors.EVENT_READ:
                client.on_readable(c)

    print(f"idle_conns: {args.count} connections ready in {took:.1f}s, "
          f"{client.closed_after_ready} closed by the server while idle"
          + (f" (first: {client.first_error})" if client.first_error else ""),
          file=sys.stderr)
    for c in client.conns:
        client.close(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
