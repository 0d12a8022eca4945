"""End-to-end: libsealgate, the C client library, against real servers.

tests/client/client_check.c is a program on the library's public API only (the installed
headers and the typed functions generated from proto/, linked with the shared library). Each
test here runs one of its commands against real peers and checks what it printed:

  1. The store/secret scenario against sealgate-test-server and its PostgreSQL: every store and
     secret method, with its errors (INVALID_ARGUMENT naming the field, NOT_FOUND,
     ALREADY_EXISTS, UNAUTHENTICATED with a bad key or none, another organization's store).
     Then the test server's TestService: every status code and its message, 3 MiB messages
     both ways, a request over the server's limit, server streaming, a stream freed early,
     streams from 8 threads, a slow call.
  2. Concurrency: 8 threads x 1,000 calls on one channel, each answer checked against its call;
     the server's log shows every call, all on one connection.
  3. Deadlines that pass: on a Health/Watch stream, on unary calls to a server stopped with
     SIGSTOP, and on peers that accept a connection and never answer (h2c and TLS).
  4. Restarts, on the same port: the server restarted gracefully (SIGTERM) and by a crash
     (SIGKILL) under running calls, where calls with retry all succeed and calls without retry
     fail only UNAVAILABLE and work again by themselves; a call made while the server drains;
     a call made after a GOAWAY from a hand-written HTTP/2 peer; sg_channel_free with calls in
     flight.
  5. TLS: verified against the right CA by IP and by name; another CA or another server name
     fails UNAVAILABLE saying the certificate did not verify; mutual TLS; TLS to a cleartext
     port; nothing listening.
  6. A gRPC server the library did not come from: the grpc C++ health server of the benchmark
     (tests/bench/grpc_cpp_health_server.cc), built here with g++ and libgrpc++-dev.

Each test that stores anything gets a fresh organization and API key
(helpers.shared_db().create_org). The suite also runs against the sanitizer build, so every
client_check run must end without a report from AddressSanitizer, LeakSanitizer or
UndefinedBehaviorSanitizer (and every server it talked to, see helpers.Server.cleanup).
"""

import hashlib
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import helpers  # noqa: E402  (after the path tweak)

CLIENT_CHECK = os.environ.get(
    "SEALGATE_CLIENT_CHECK",
    os.path.join(helpers.SOURCE_ROOT, "build", "tests", "client", "client_check"))
# Where the grpc C++ server is built and kept between runs.
CACHE_DIR = os.environ.get(
    "SEALGATE_CLIENT_CACHE", os.path.join(helpers.SOURCE_ROOT, "build", "tests", "client"))
CPP_SERVER_SOURCE = os.path.join(helpers.SOURCE_ROOT, "tests", "bench",
                                 "grpc_cpp_health_server.cc")
HEALTH_PROTO = "grpc/health/v1/health.proto"

# Bounds: one client_check run, one step of an interactive run, building the C++ server.
RUN_TIMEOUT_S = 120
STEP_TIMEOUT_S = 30
BUILD_TIMEOUT_S = 600
# How many calls the restarted server must have answered before the next step: proof that the
# client came back to it.
CALLS_PER_PHASE = 50

SHARED = None   # the server most tests use


def setUpModule():
    global SHARED
    # No rate limit: the concurrency checks make thousands of calls a second on one key,
    # which measures the client, not the limit (tests/e2e/test_ratelimit.py does that).
    SHARED = helpers.Server("--threads", "4", "--rate-limit", "0")


def tearDownModule():
    if SHARED is not None:
        SHARED.cleanup()   # raises on a bad exit or a sanitizer report in the server's log


# ----------------------------------------------------------------------------------------------
# Running client_check

def client_env():
    """The environment without SEALGATE_* settings: client_check gets everything on its
    command line."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SEALGATE_")}


def new_org(test):
    """A new organization for `test`: (org_id, api_key)."""
    return helpers.shared_db().create_org("client-" + test.id().rsplit(".", 1)[-1][:40])


def ok_lines(stdout):
    return [line[4:] for line in stdout.splitlines() if line.startswith("ok  ")]


class ClientTestCase(unittest.TestCase):

    def assertCleanExit(self, argv, returncode, stdout, stderr, server=None):
        report = "%s exited %s\n--- stdout\n%s--- stderr\n%s" % (
            " ".join(argv), returncode, stdout, stderr)
        if server is not None:
            report += "--- server log (tail)\n" + server.log()[-3000:]
        for marker in helpers.SANITIZER_MARKERS:
            self.assertNotIn(marker, stderr, report)
        self.assertEqual(returncode, 0, report)
        self.assertNotIn("FAIL", stderr, report)
        return report

    def run_check(self, command, *args, server=None, timeout=RUN_TIMEOUT_S):
        """Runs `client_check command args...`, which must exit 0 with a clean stderr; returns
        its "ok" lines (without the "ok  " prefix)."""
        argv = [CLIENT_CHECK, command] + [str(a) for a in args]
        try:
            out = subprocess.run(argv, env=client_env(), stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            self.fail("%s did not finish within %ss\n--- stdout\n%s\n--- stderr\n%s" % (
                " ".join(argv), timeout, e.stdout, e.stderr))
        self.assertCleanExit(argv, out.returncode, out.stdout, out.stderr, server)
        sys.stderr.write(out.stdout)   # into the test log: what each check saw
        return ok_lines(out.stdout)


class Interactive:
    """A client_check command that talks with the test: its stdout is read line by line on a
    thread, its stdin takes the test's go-aheads. Always ended by finish() or kill()."""

    def __init__(self, command, *args):
        self.argv = [CLIENT_CHECK, command] + [str(a) for a in args]
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.argv, env=client_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.lines = []
        self.queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def expect(self, prefix, timeout=STEP_TIMEOUT_S):
        """Waits for a line starting with `prefix`; raises with the output so far if the
        program ends or the time runs out first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.queue.get(timeout=max(0.01, left))
            except queue.Empty:
                if left <= 0:
                    raise AssertionError("no %r line within %ss\n%s" % (prefix, timeout,
                                                                         self.output()))
                continue
            if line is None:
                self.proc.wait(timeout=STEP_TIMEOUT_S)
                raise AssertionError("client_check ended (%s) before a %r line\n%s" % (
                    self.proc.returncode, prefix, self.output()))
            if line.startswith(prefix):
                return line

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout=STEP_TIMEOUT_S):
        """Closes stdin and waits for the exit; returns (returncode, stdout, stderr)."""
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            output = self.output()
            self.kill()
            raise AssertionError("client_check did not exit within %ss\n%s" % (timeout, output))
        self.reader.join(timeout=STEP_TIMEOUT_S)
        result = self.proc.returncode, "".join(self.lines), self.stderr()
        self.kill()
        sys.stderr.write(result[1])
        return result

    def kill(self):
        """Ends the program if it still runs and closes its pipes (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STEP_TIMEOUT_S)
        for f in (self.proc.stdin, self.proc.stdout, self.err):
            if not f.closed:
                try:
                    f.close()
                except OSError:
                    pass

    def stderr(self):
        self.err.seek(0)
        return self.err.read()

    def output(self):
        return "--- stdout\n%s--- stderr\n%s" % ("".join(self.lines), self.stderr())


def rpc_lines(server, method, status="OK"):
    """The server's log lines of calls to `method` that ended `status`."""
    rx = re.compile(r"msg=rpc method=\S*/%s status=%s\b" % (method, status))
    return [l for l in server.log().splitlines() if rx.search(l)]


def wait_for_calls(server, method, count, timeout=STEP_TIMEOUT_S):
    """Waits until `server` has answered `count` calls to `method` OK; returns how many."""
    deadline = time.monotonic() + timeout
    while True:
        n = len(rpc_lines(server, method))
        if n >= count or time.monotonic() >= deadline:
            return n
        time.sleep(0.05)


def crash(server):
    """Kills `server` with SIGKILL and cleans up after it (Server.cleanup wants a graceful
    exit). Its log must hold no sanitizer report."""
    server.proc.kill()
    server.proc.wait(timeout=helpers.STOP_TIMEOUT_S)
    server.stop()
    log = server.log()
    shutil.rmtree(server.workdir, ignore_errors=True)
    for marker in helpers.SANITIZER_MARKERS:
        if marker in log:
            raise AssertionError("server log has a sanitizer report:\n" + log[-8000:])


# ----------------------------------------------------------------------------------------------
# 1. Every store and secret method

SCENARIO_CHECKS = [
    "CreateSecretStore with the other organization's key (per-call api_key)",
    "CreateSecretStore",
    "CreateSecretStore duplicate name: ALREADY_EXISTS",
    "CreateSecretStore bad name: INVALID_ARGUMENT naming name",
    "CreateSecretStore bad host pattern: INVALID_ARGUMENT naming egress_allowlist[1]",
    "GetSecretStore",
    "GetSecretStore unknown id: NOT_FOUND",
    "GetSecretStore malformed id: INVALID_ARGUMENT naming store_id",
    "GetSecretStore another organization's store: NOT_FOUND",
    "ListSecretStores in pages of 1",
    "ListSecretStores page_size 1001: INVALID_ARGUMENT naming page_size",
    "ListSecretStores forged page_token: INVALID_ARGUMENT naming page_token",
    "UpdateSecretStore rename (mask: name)",
    "UpdateSecretStore clear allowlist (mask: egress_allowlist, empty list)",
    "UpdateSecretStore unknown mask path: INVALID_ARGUMENT naming update_mask",
    "UpdateSecretStore empty mask: INVALID_ARGUMENT naming update_mask",
    "UpdateSecretStore bad name: INVALID_ARGUMENT naming name",
    "UpdateSecretStore rename onto a taken name: ALREADY_EXISTS",
    "UpdateSecretStore unknown store: NOT_FOUND",
    "SetSecret version 1",
    "SetSecret again: version 2 of the same secret",
    "SetSecret 64 KiB value",
    "SetSecret 64 KiB + 1 value: INVALID_ARGUMENT naming value",
    "SetSecret empty value: INVALID_ARGUMENT naming value",
    "SetSecret bad name: INVALID_ARGUMENT naming name",
    "SetSecret IP literal host: INVALID_ARGUMENT naming allowed_hosts[0]",
    "SetSecret unknown store: NOT_FOUND",
    "ListSecrets: metadata of both secrets, no value field",
    "ListSecrets unknown store: NOT_FOUND",
    "DeleteSecret",
    "DeleteSecret again: NOT_FOUND",
    "DeleteSecret bad name: INVALID_ARGUMENT naming name",
    "every method with a bad API key: UNAUTHENTICATED, nothing changed",
    "every method without an API key: UNAUTHENTICATED, nothing changed",
    "every store-scoped method with another organization's key: NOT_FOUND as for an unknown "
    "store, nothing changed",
    "custom metadata (text and -bin) goes out with the call",
    "reserved metadata is refused before sending: INVALID_ARGUMENT",
    "a method the server does not have: UNIMPLEMENTED",
    "Health/Check: SERVING",
    "SEALGATE_ADDR and SEALGATE_API_KEY from the environment (NULL options)",
    "DeleteSecretStore",
    "after DeleteSecretStore every method on the store is NOT_FOUND",
    "the other organization's store is untouched",
]


class ScenarioTest(ClientTestCase):

    def test_every_store_and_secret_method_and_its_errors(self):
        org_id, key = new_org(self)
        _, other_key = new_org(self)
        lines = self.run_check("scenario", "--target", SHARED.target, "--key", key,
                               "--other-key", other_key, "--org-id", org_id, server=SHARED)
        report = "\n".join(lines)
        self.assertEqual(len(lines), len(SCENARIO_CHECKS), report)
        for line, want in zip(lines, SCENARIO_CHECKS):
            self.assertTrue(line == want or line.startswith(want + ": "),
                            "%r is not the check %r\n%s" % (line, want, report))


class TestServiceTest(ClientTestCase):
    """The test server's sealgate.testing.v1.TestService, through sg_channel_unary and
    sg_channel_stream_open: what a real server can be made to do on purpose."""

    def test_statuses_large_messages_streams_cancellation_and_slow_calls(self):
        lines = self.run_check("testservice", "--target", SHARED.target, server=SHARED)
        self.assertEqual([l.split(": ")[0] for l in lines], [
            "UnaryCall echoes its message",
            "every status code comes back with its message as sent",
            "a 3 MiB response, three times the stream window",
            "a 3 MiB request",
            "a request over the server's 4 MiB limit",
            "StreamingCall",
            "StreamingCall ending ABORTED",
            "a stream freed before its end is cancelled; the channel goes on",
            "8 threads x 20 streams of 50 responses on one channel, each in order",
            "a call slower than its 300 ms deadline",
            "a slow call within its deadline",
        ])
        # The freed stream was cancelled on the server too, not left running.
        self.assertTrue(SHARED.wait_for_log(r"msg=rpc method=\S*/StreamingCall status=CANCELLED"),
                        SHARED.log()[-3000:])


# ----------------------------------------------------------------------------------------------
# 2. Concurrency

class ConcurrencyTest(ClientTestCase):

    def test_8_threads_x_1000_calls_on_one_channel_each_answered_right(self):
        org_id, key = new_org(self)
        lines = self.run_check("concurrency", "--target", SHARED.target, "--key", key,
                               "--threads", 8, "--calls", 1000, server=SHARED)
        self.assertTrue(any(l.startswith("8 threads x 1000 calls on one channel, every answer "
                                         "the right one: 8000 calls") for l in lines), lines)
        self.assertTrue(any(l.startswith("the versions the threads saw are the stored ones")
                            for l in lines), lines)
        # The server saw every call (8 stores made, listed and deleted around the 8000), all
        # on one connection.
        calls = SHARED.wait_for_log(r"msg=rpc .*org=" + org_id, count=8024)
        self.assertEqual(len(calls), 8024)
        self.assertEqual(len([l for l in calls if re.search(r"/(GetSecretStore|SetSecret) ", l)]),
                         8000)
        peers = {re.search(r"\bpeer=(\S+)", l).group(1) for l in calls}
        self.assertEqual(len(peers), 1, "calls came on several connections: %s" % peers)


# ----------------------------------------------------------------------------------------------
# 3. Deadlines

class SilentPeer:
    """A listening socket that never accepts: connections complete in the kernel's backlog and
    nothing ever answers them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.target = "127.0.0.1:%d" % self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


class DeadlineTest(ClientTestCase):

    def test_deadlines_pass_on_a_stream_and_on_a_stopped_server(self):
        server = helpers.Server("--threads", "2")
        self.addCleanup(server.cleanup)
        _, key = new_org(self)
        run = Interactive("deadline", "--target", server.target, "--key", key)
        self.addCleanup(run.kill)
        stopped = False
        try:
            run.expect("ready to stop the server")
            server.proc.send_signal(signal.SIGSTOP)
            stopped = True
            run.send("go")
            run.expect("ready to resume the server")
        finally:
            if stopped:
                server.proc.send_signal(signal.SIGCONT)
        run.send("go")
        code, out, err = run.finish()
        self.assertCleanExit(run.argv, code, out, err, server)
        lines = ok_lines(out)
        for want in ["Health/Watch with a 500 ms deadline: SERVING, then DEADLINE_EXCEEDED",
                     "GetSecretStore with a 300 ms deadline, server stopped: DEADLINE_EXCEEDED",
                     "the same with retry on: DEADLINE_EXCEEDED, not retried",
                     "Health/Watch with a 300 ms deadline, server stopped: DEADLINE_EXCEEDED",
                     "the channel works again after its calls' deadlines passed"]:
            self.assertTrue(any(l.startswith(want) for l in lines), "%r missing\n%s" % (want, out))

    def test_a_deadline_passes_on_a_peer_that_never_answers_h2c(self):
        peer = SilentPeer()
        self.addCleanup(peer.close)
        lines = self.run_check("health", "--target", peer.target, "--timeout-ms", 300,
                               "--expect", "DEADLINE_EXCEEDED")
        self.assertTrue(lines[0].startswith("Health/Check: DEADLINE_EXCEEDED"), lines)

    def test_a_deadline_passes_during_a_tls_handshake_that_never_ends(self):
        peer = SilentPeer()
        self.addCleanup(peer.close)
        tmp = tempfile.TemporaryDirectory(prefix="sealgate-client-tls-")
        self.addCleanup(tmp.cleanup)
        helpers.make_ca(tmp.name, "ca")
        lines = self.run_check("health", "--target", peer.target, "--timeout-ms", 300,
                               "--tls-ca", os.path.join(tmp.name, "ca.pem"),
                               "--expect", "DEADLINE_EXCEEDED")
        self.assertTrue(lines[0].startswith("Health/Check: DEADLINE_EXCEEDED"), lines)


# ----------------------------------------------------------------------------------------------
# 4. Restarts

class RestartTest(ClientTestCase):

    def test_calls_go_on_across_a_graceful_restart_and_a_crash(self):
        first = helpers.Server("--threads", "2")
        servers = [first]
        self.addCleanup(lambda: [s.stop() for s in servers])
        port = first.port()
        _, key = new_org(self)
        run = Interactive("restart", "--target", first.target, "--key", key, "--threads", 4)
        self.addCleanup(run.kill)
        run.expect("ready to restart the server")
        self.assertGreaterEqual(wait_for_calls(first, "GetSecretStore", CALLS_PER_PHASE),
                                CALLS_PER_PHASE, run.output())

        # Graceful: SIGTERM, the server drains (GOAWAY) and exits 0; a new one on the port.
        first.cleanup()
        second = helpers.Server("--threads", "2", "--grpc-listen", "127.0.0.1:%d" % port)
        servers.append(second)
        self.assertGreaterEqual(wait_for_calls(second, "GetSecretStore", CALLS_PER_PHASE),
                                CALLS_PER_PHASE, "no calls reached the restarted server\n" +
                                run.output())

        # Crash: SIGKILL mid-call, the connection drops; a new one on the port.
        crash(second)
        third = helpers.Server("--threads", "2", "--grpc-listen", "127.0.0.1:%d" % port)
        servers.append(third)
        self.assertGreaterEqual(wait_for_calls(third, "GetSecretStore", CALLS_PER_PHASE),
                                CALLS_PER_PHASE, "no calls reached the server after the crash\n"
                                + run.output())

        run.send("stop")
        code, out, err = run.finish(timeout=60)
        self.assertCleanExit(run.argv, code, out, err, third)
        lines = ok_lines(out)
        self.assertTrue(any(l.startswith("4 threads calling through the restarts") for l in lines),
                        out)
        self.assertTrue(any(l.startswith("after the restarts a call without retry succeeds")
                            for l in lines), out)
        third.cleanup()


    def test_a_call_made_while_the_server_drains_reaches_the_next_server(self):
        """SIGTERM while a 2.5 s call is in flight: the server says GOAWAY and finishes that
        call; a call made meanwhile waits for a connection, and retries until the next server
        on the port answers it."""
        first = helpers.Server("--threads", "2")
        servers = [first]
        self.addCleanup(lambda: [s.stop() for s in servers])
        port = first.port()
        run = Interactive("drain", "--target", first.target)
        self.addCleanup(run.kill)
        run.expect("ready to stop the server")
        first.terminate()
        self.assertTrue(first.wait_for_log(r"SIGTERM received"), first.log())
        time.sleep(0.5)   # the GOAWAY reaches the client
        run.send("go")
        self.assertEqual(first.wait(helpers.STOP_TIMEOUT_S), 0, first.log())
        self.assertEqual(len(rpc_lines(first, "UnaryCall")), 1, first.log())
        first.cleanup()
        second = helpers.Server("--threads", "2", "--grpc-listen", "127.0.0.1:%d" % port)
        servers.append(second)
        code, out, err = run.finish()
        self.assertCleanExit(run.argv, code, out, err, second)
        lines = ok_lines(out)
        self.assertTrue(any(l.startswith("a call made while the server drains reaches the next "
                                         "server") for l in lines), out)
        self.assertTrue(any(l.startswith("the call in flight during the drain finished OK")
                            for l in lines), out)
        # The log is written by a thread of its own: wait for the line.
        self.assertTrue(second.wait_for_log(r"msg=rpc method=\S*/Check status=OK"),
                        "the call did not reach the new server\n" + second.log())
        second.cleanup()

    def test_a_call_made_after_a_goaway_goes_out_on_a_new_connection(self):
        """Against a hand-written HTTP/2 peer, so that the timing is exact: GOAWAY while call A
        is in flight, call B made, then A's answer and the connection's end in one TCP
        segment. B must come on a second connection."""
        peer = HandWrittenPeer()
        self.addCleanup(peer.close)
        run = Interactive("goaway", "--target", peer.target)
        self.addCleanup(run.kill)
        first = peer.accept()
        a = first.read_request()
        first.send(h2_goaway(a))
        run.expect("ready for the GOAWAY")
        time.sleep(0.2)   # the client has read the GOAWAY
        run.send("go")
        time.sleep(0.3)   # call B is waiting
        first.answer_and_close(a)
        second = peer.accept()
        second.answer(second.read_request())
        code, out, err = run.finish()
        second.close()
        self.assertCleanExit(run.argv, code, out, err)
        lines = ok_lines(out)
        self.assertTrue(any(l.startswith("a call made after a GOAWAY goes out on a new "
                                         "connection") for l in lines), out)
        self.assertTrue(any(l.startswith("the call in flight at the GOAWAY finished OK")
                            for l in lines), out)


    def test_sg_channel_free_ends_calls_in_flight_with_cancelled(self):
        lines = self.run_check("close", "--target", SHARED.target, server=SHARED)
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("sg_channel_free ends the calls in flight with "
                                            "CANCELLED"), lines)


def h2_goaway(last_stream_id):
    return helpers.h2_frame(helpers.H2_GOAWAY, 0, 0, struct.pack(">II", last_stream_id, 0))


class HandWrittenPeer:
    """A listening socket whose connections the test drives frame by frame (PeerConn)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(STEP_TIMEOUT_S)
        self.target = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []

    def accept(self):
        conn = PeerConn(self.sock.accept()[0])
        self.conns.append(conn)
        return conn

    def close(self):
        for conn in self.conns:
            conn.close()
        self.sock.close()


class PeerConn:
    """The server side of one HTTP/2 connection: SETTINGS and PING are acknowledged, requests
    are read up to their END_STREAM, answers are grpc.health.v1 SERVING. HPACK: literal fields
    without indexing, as helpers.RawH2 writes them."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(STEP_TIMEOUT_S)
        self.buf = b""
        if self._take(len(helpers.H2_PREFACE)) != helpers.H2_PREFACE:
            raise AssertionError("no HTTP/2 client preface")
        self.send(helpers.h2_frame(helpers.H2_SETTINGS, 0, 0))

    def _take(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the client closed the connection")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data):
        self.sock.sendall(data)

    def read_request(self):
        """Reads frames until a request ends; returns its stream id."""
        while True:
            head = self._take(9)
            ftype, flags = head[3], head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7fffffff
            payload = self._take(int.from_bytes(head[:3], "big"))
            if ftype == helpers.H2_SETTINGS and not flags & 1:
                self.send(helpers.h2_frame(helpers.H2_SETTINGS, 1, 0))
            elif ftype == helpers.H2_PING and not flags & 1:
                self.send(helpers.h2_frame(helpers.H2_PING, 1, 0, payload))
            elif ftype in (helpers.H2_HEADERS, helpers.H2_DATA) and flags & 1:
                return stream

    @staticmethod
    def _fields(fields):
        return b"".join(b"\x00" + helpers._hpack_int(len(n), 7) + n.encode() +
                        helpers._hpack_int(len(v), 7) + v.encode() for n, v in fields)

    def _answer_bytes(self, stream):
        serving = helpers.frame(b"\x08\x01")   # HealthCheckResponse{status: SERVING}
        return (helpers.h2_frame(helpers.H2_HEADERS, 0x4, stream, self._fields(
                    [(":status", "200"), ("content-type", "application/grpc")])) +
                helpers.h2_frame(helpers.H2_DATA, 0, stream, serving) +
                helpers.h2_frame(helpers.H2_HEADERS, 0x5, stream,
                                 self._fields([("grpc-status", "0")])))

    def answer(self, stream):
        self.send(self._answer_bytes(stream))

    def answer_and_close(self, stream):
        """The answer and the FIN in one segment: corked, the answer waits in the socket and
        shutdown() sends it with the FIN, so the client reads both in one go."""
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        self.send(self._answer_bytes(stream))
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        self.sock.close()


# ----------------------------------------------------------------------------------------------
# 5. TLS

class TlsTest(ClientTestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="sealgate-client-tls-")
        cls.tls = helpers.TlsMaterial(cls.tmp.name)
        other = os.path.join(cls.tmp.name, "other")
        os.makedirs(other)
        helpers.make_ca(other, "ca")
        cls.other_ca = os.path.join(other, "ca.pem")
        cls.server = None
        cls.server = cls.start_server()

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.cleanup()
        cls.tmp.cleanup()

    @classmethod
    def start_server(cls, *flags):
        return helpers.Server(
            "--threads", "2", "--rate-limit", "0", "--grpc-tls-listen", "127.0.0.1:0",
            "--tls-cert", cls.tls.path("server.pem"), "--tls-key", cls.tls.path("server.key"),
            *flags, listeners=("grpc-listen", "grpc-tls-listen"))

    def tls_port(self, server=None):
        return (server or self.server).port("grpc-tls-listen")

    def health(self, target, *args, server=None):
        return self.run_check("health", "--target", target, *args, server=server or self.server)

    def test_verified_against_its_ca_by_ip_and_by_name(self):
        ca = self.tls.path("ca.pem")
        for host in ("127.0.0.1", "localhost"):
            with self.subTest(host=host):
                lines = self.health("%s:%d" % (host, self.tls_port()), "--tls-ca", ca)
                self.assertEqual(lines, ["Health/Check: SERVING"])

    def test_store_calls_from_8_threads_over_tls(self):
        _, key = new_org(self)
        lines = self.run_check("concurrency", "--target", "localhost:%d" % self.tls_port(),
                               "--tls-ca", self.tls.path("ca.pem"), "--key", key,
                               "--threads", 8, "--calls", 100, server=self.server)
        self.assertTrue(any(l.startswith("8 threads x 100 calls on one channel") for l in lines),
                        lines)

    def test_a_certificate_from_another_ca_does_not_verify(self):
        lines = self.health("127.0.0.1:%d" % self.tls_port(), "--tls-ca", self.other_ca,
                            "--expect", "UNAVAILABLE",
                            "--contains", "certificate did not verify")
        self.assertTrue(lines[0].startswith("Health/Check: UNAVAILABLE"), lines)

    def test_a_certificate_for_another_name_does_not_verify(self):
        lines = self.health("127.0.0.1:%d" % self.tls_port(), "--tls-ca", self.tls.path("ca.pem"),
                            "--server-name", "api.example.com", "--expect", "UNAVAILABLE",
                            "--contains", "certificate did not verify")
        self.assertTrue(lines[0].startswith("Health/Check: UNAVAILABLE"), lines)

    def test_tls_to_the_cleartext_port_is_unavailable(self):
        lines = self.health(self.server.target, "--tls-ca", self.tls.path("ca.pem"),
                            "--expect", "UNAVAILABLE", "--contains", "TLS")
        self.assertTrue(lines[0].startswith("Health/Check: UNAVAILABLE"), lines)

    def test_nothing_listening_is_unavailable(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))   # bound, never listening: connections are refused
        self.addCleanup(sock.close)
        for tls in ((), ("--tls-ca", self.tls.path("ca.pem"))):
            with self.subTest(tls=bool(tls)):
                lines = self.run_check("health", "--target", "127.0.0.1:%d" %
                                       sock.getsockname()[1], *tls, "--expect", "UNAVAILABLE",
                                       "--contains", "refused")
                self.assertTrue(lines[0].startswith("Health/Check: UNAVAILABLE"), lines)

    def test_mutual_tls_with_a_client_certificate(self):
        server = self.start_server("--tls-client-ca", self.tls.path("ca.pem"))
        self.addCleanup(server.cleanup)
        target = "localhost:%d" % self.tls_port(server)
        lines = self.health(target, "--tls-ca", self.tls.path("ca.pem"),
                            "--cert", self.tls.path("client.pem"),
                            "--cert-key", self.tls.path("client.key"), server=server)
        self.assertEqual(lines, ["Health/Check: SERVING"])
        # The server's alert is the reason given (TLS 1.3: after the handshake, on the first
        # read or write), not a bare "read failed".
        lines = self.health(target, "--tls-ca", self.tls.path("ca.pem"),
                            "--expect", "UNAVAILABLE", "--contains", "certificate",
                            server=server)
        self.assertTrue(lines[0].startswith("Health/Check: UNAVAILABLE"), lines)


# ----------------------------------------------------------------------------------------------
# 6. A gRPC server the library did not come from

def cpp_toolchain_missing():
    """Why the grpc C++ server cannot be built here, or None."""
    for tool, package in (("g++", "g++"), ("protoc", "protobuf-compiler"),
                          ("grpc_cpp_plugin", "protobuf-compiler-grpc"),
                          ("pkg-config", "pkg-config")):
        if shutil.which(tool) is None:
            return "no %s (Debian package %s)" % (tool, package)
    if subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"]).returncode != 0:
        return "pkg-config finds no grpc++ (Debian package libgrpc++-dev)"
    return None


def build_cpp_server():
    """Builds tests/bench/grpc_cpp_health_server.cc as tests/bench/grpc_core.sh does, into
    CACHE_DIR, unless a build from the same inputs is there; returns the binary's path."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "grpc++", "protobuf"],
                           capture_output=True, text=True, check=True).stdout.split()
    proto = os.path.join(helpers.GRPC_PROTO_ROOT, HEALTH_PROTO)
    key = hashlib.sha256()
    for path in (CPP_SERVER_SOURCE, proto):
        with open(path, "rb") as f:
            key.update(f.read())
    for cmd in (["g++", "--version"], ["protoc", "--version"],
                ["pkg-config", "--modversion", "grpc++"]):
        key.update(subprocess.run(cmd, capture_output=True, check=True).stdout)
    key.update(" ".join(flags).encode())
    binary = os.path.join(CACHE_DIR, "grpc_cpp_health_server")
    stamp = binary + ".stamp"
    if os.path.exists(binary) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read().strip() == key.hexdigest():
                return binary
    work = tempfile.mkdtemp(prefix="grpc-cpp-build-", dir=CACHE_DIR)
    try:
        subprocess.run(["protoc", "-I", helpers.GRPC_PROTO_ROOT, "--cpp_out=" + work,
                        "--grpc_out=" + work, "--plugin=protoc-gen-grpc=" +
                        shutil.which("grpc_cpp_plugin"), HEALTH_PROTO],
                       check=True, timeout=60)
        gen = os.path.join(work, "grpc", "health", "v1")
        sources = [CPP_SERVER_SOURCE, os.path.join(gen, "health.pb.cc"),
                   os.path.join(gen, "health.grpc.pb.cc")]
        cflags = [f for f in flags if not f.startswith(("-l", "-L", "-Wl"))]
        # The three translation units side by side: -O0 and in parallel, it is a test peer.
        compiles = [subprocess.Popen(["g++", "-O0", "-std=c++17", "-I", work, "-c", src, "-o",
                                      os.path.join(work, "%d.o" % i)] + cflags,
                                     stderr=subprocess.PIPE, text=True)
                    for i, src in enumerate(sources)]
        errors = [p.communicate(timeout=BUILD_TIMEOUT_S)[1] for p in compiles]
        if any(p.returncode != 0 for p in compiles):
            raise RuntimeError("building the grpc C++ server failed:\n" + "\n".join(errors))
        subprocess.run(["g++", "-o", binary + ".tmp"] +
                       [os.path.join(work, "%d.o" % i) for i in range(len(sources))] + flags,
                       check=True, timeout=BUILD_TIMEOUT_S)
        os.replace(binary + ".tmp", binary)
        with open(stamp, "w") as f:
            f.write(key.hexdigest() + "\n")
        return binary
    finally:
        shutil.rmtree(work, ignore_errors=True)


def listening_port(pid):
    """The TCP port process `pid` listens on (from /proc), or None."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                cols = row.split()
                if cols[3] == "0A" and cols[9] in inodes:   # LISTEN
                    return int(cols[1].rsplit(":", 1)[1], 16)
    return None


class GrpcCppPeerTest(ClientTestCase):
    """grpc C++ (Debian's libgrpc++) serving Health/Check: the library speaks real gRPC."""

    @classmethod
    def setUpClass(cls):
        why = cpp_toolchain_missing()
        if why is not None:
            raise unittest.SkipTest("cannot build the grpc C++ health server: %s; "
                                    "`deploy/install-deps.sh test` installs it" % why)
        binary = build_cpp_server()
        cls.log = tempfile.TemporaryFile()
        # Port 0: grpc picks one, read back from /proc (the program prints what it was given).
        cls.proc = subprocess.Popen([binary, "127.0.0.1:0"], stdin=subprocess.DEVNULL,
                                    stdout=cls.log, stderr=subprocess.STDOUT)
        port = None
        deadline = time.monotonic() + helpers.START_TIMEOUT_S
        while port is None and time.monotonic() < deadline and cls.proc.poll() is None:
            time.sleep(0.05)
            port = listening_port(cls.proc.pid)
        if port is None:
            cls.stop()
            raise RuntimeError("the grpc C++ server did not listen within %ss" %
                               helpers.START_TIMEOUT_S)
        cls.target = "127.0.0.1:%d" % port

    @classmethod
    def stop(cls):
        if cls.proc.poll() is None:
            cls.proc.terminate()
            try:
                cls.proc.wait(timeout=helpers.STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait(timeout=helpers.STOP_TIMEOUT_S)
        cls.log.close()

    @classmethod
    def tearDownClass(cls):
        cls.stop()

    def test_health_check_is_serving(self):
        self.assertEqual(self.run_check("health", "--target", self.target),
                         ["Health/Check: SERVING"])

    def test_what_a_grpc_cpp_server_says_to_this_client(self):
        lines = self.run_check("grpc-peer", "--target", self.target, "--threads", 8,
                               "--calls", 250)
        self.assertEqual([l.split(":")[0] for l in lines], [
            "Health/Check",
            "Health/Check with metadata and an API key",
            "Health/Watch",
            "a sealgate method on a plain gRPC server",
            "8 threads x 250 Health/Check on one channel",
        ])


if __name__ == "__main__":
    unittest.main(verbosity=2)
