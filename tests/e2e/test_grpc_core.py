"""End-to-end: the gRPC core of sealgate as real peers see it.

A real grpcio 1.51 client (and curl, for requests grpcio would never send) talks to
sealgate-test-server: the sealgate server plus sealgate.testing.v1.TestService, which can make a
handler slow, fail with a chosen status, stream, echo metadata and flip a health status.

The spec these tests follow is grpc's PROTOCOL-HTTP2.md, health-checking.md, server-reflection.md
and the interop test descriptions (see /work/shared/notes/grpc-http2-nghttp2.md §1).

Most tests share one server started in setUpModule; tests that need other flags (TLS, client
certificates, message limits) or that kill the server (shutdown, log counting) start their own.
"""

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402  (after the path tweak, so the helpers module is found)
from google.protobuf import descriptor_pb2  # noqa: E402

import helpers  # noqa: E402

# Generous upper bound for any single RPC in these tests; the behaviour under test is never
# this slow, it only keeps a hung server from hanging the suite.
RPC_TIMEOUT_S = 10.0

SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3

ALL_SERVICES = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "sealgate.v1.SecretStoreService",
    "sealgate.v1.SecretService",
    "sealgate.v1.SandboxService",
    "sealgate.v1.AuditService",
    "sealgate.testing.v1.TestService",
]

# grpc's special_status_message interop case.
SPECIAL_STATUS_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"

STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

S = None        # generated stubs (helpers.Stubs)
SHARED = None   # the server most tests use


def setUpModule():
    global S, SHARED
    S = helpers.stubs()
    SHARED = helpers.Server("--threads", "2")


def tearDownModule():
    if SHARED is not None:
        SHARED.cleanup()


# ----------------------------------------------------------------------------------------------
# Small client-side helpers

def health_stub(channel):
    return S.health_grpc.HealthStub(channel)


def testing_stub(channel):
    return S.test_grpc.TestServiceStub(channel)


def check(channel, service="", **kwargs):
    req = S.health_pb2.HealthCheckRequest(service=service)
    return health_stub(channel).Check(req, timeout=RPC_TIMEOUT_S, **kwargs)


def set_health(channel, service, status):
    req = S.test_pb2.SetHealthRequest(service=service, status=status)
    testing_stub(channel).SetHealth(req, timeout=RPC_TIMEOUT_S)


def raw_unary(channel, path, request=b""):
    """Calls `path` with raw bytes both ways: for methods no stub knows."""
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    return call(request, timeout=RPC_TIMEOUT_S)


def rpc_error(fn, *args, **kwargs):
    """Runs fn, which must fail with a grpc.RpcError, and returns that error."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as e:
        return e
    raise AssertionError("expected the call to fail, it succeeded")


def grpc_headers(timeout=None, encoding=None):
    headers = [("content-type", "application/grpc"), ("te", "trailers")]
    if timeout is not None:
        headers.append(("grpc-timeout", timeout))
    if encoding is not None:
        headers.append(("grpc-encoding", encoding))
    return headers


def curl_unary(server, path, message_bytes, compressed=False, **header_args):
    return helpers.curl_post("http://%s%s" % (server.target, path),
                             helpers.frame(message_bytes, compressed), grpc_headers(**header_args))


class SharedServerTest(unittest.TestCase):
    """Base for tests against the shared server through one channel."""

    @classmethod
    def setUpClass(cls):
        cls.channel = grpc.insecure_channel(SHARED.target)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()


# ----------------------------------------------------------------------------------------------
# Health: Check

class HealthCheckTest(SharedServerTest):

    def test_overall_server_is_serving(self):
        self.assertEqual(check(self.channel, "").status, SERVING)

    def test_a_sealgate_service_is_serving_at_start(self):
        self.assertEqual(check(self.channel, "sealgate.v1.SecretStoreService").status, SERVING)

    def test_every_served_service_is_serving_at_start(self):
        for service in ALL_SERVICES:
            with self.subTest(service=service):
                self.assertEqual(check(self.channel, service).status, SERVING)

    def test_unknown_service_is_not_found(self):
        e = rpc_error(check, self.channel, "no.such.Service")
        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)


# ----------------------------------------------------------------------------------------------
# Health: Watch

class HealthWatchTest(SharedServerTest):

    def test_watch_sends_current_status_then_each_change(self):
        service = "sealgate.v1.SecretService"
        self.addCleanup(set_health, self.channel, service, SERVING)
        watch = health_stub(self.channel).Watch(
            S.health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S)
        self.addCleanup(watch.cancel)

        self.assertEqual(next(watch).status, SERVING)
        set_health(self.channel, service, NOT_SERVING)
        self.assertEqual(next(watch).status, NOT_SERVING)

    def test_watch_of_unknown_service_sends_service_unknown_and_stays_open(self):
        watch = health_stub(self.channel).Watch(
            S.health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=RPC_TIMEOUT_S)
        self.addCleanup(watch.cancel)
        ended = threading.Event()
        watch.add_done_callback(lambda _: ended.set())

        self.assertEqual(next(watch).status, SERVICE_UNKNOWN)
        # A server that ended the call would have done so right after that message.
        self.assertFalse(ended.wait(0.5), "the Watch of an unknown service ended")
        watch.cancel()
        self.assertEqual(watch.code(), grpc.StatusCode.CANCELLED)


# ----------------------------------------------------------------------------------------------
# TLS

class TlsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="sealgate-e2e-tls-")
        cls.tls = helpers.TlsMaterial(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def start_server(self, *flags):
        server = helpers.Server(
            "--grpc-tls-listen", "127.0.0.1:0",
            "--tls-cert", self.tls.path("server.pem"), "--tls-key", self.tls.path("server.key"),
            *flags, listeners=("grpc-listen", "grpc-tls-listen"))
        self.addCleanup(server.cleanup)
        return server

    def tls_channel(self, server, client_cert=False):
        kwargs = {"root_certificates": self.tls.read("ca.pem")}
        if client_cert:
            kwargs["private_key"] = self.tls.read("client.key")
            kwargs["certificate_chain"] = self.tls.read("client.pem")
        channel = grpc.secure_channel("localhost:%d" % server.port("grpc-tls-listen"),
                                      grpc.ssl_channel_credentials(**kwargs))
        self.addCleanup(channel.close)
        return channel

    def test_check_over_tls_is_serving(self):
        server = self.start_server()
        self.assertEqual(check(self.tls_channel(server)).status, SERVING)

    def test_client_with_cert_from_client_ca_is_served(self):
        server = self.start_server("--tls-client-ca", self.tls.path("ca.pem"))
        channel = self.tls_channel(server, client_cert=True)
        self.assertEqual(check(channel).status, SERVING)

    def test_client_without_cert_is_refused_when_client_ca_is_set(self):
        server = self.start_server("--tls-client-ca", self.tls.path("ca.pem"))
        e = rpc_error(check, self.tls_channel(server, client_cert=False))
        self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)


    def test_sighup_reloads_the_certificate_for_new_connections_and_keeps_open_ones(self):
        other_dir = tempfile.TemporaryDirectory(prefix="sealgate-e2e-tls2-")
        self.addCleanup(other_dir.cleanup)
        renewed = helpers.TlsMaterial(other_dir.name)  # another CA: who serves which shows
        live = tempfile.TemporaryDirectory(prefix="sealgate-e2e-tls-live-")
        self.addCleanup(live.cleanup)
        cert, key = os.path.join(live.name, "server.pem"), os.path.join(live.name, "server.key")
        shutil.copy(self.tls.path("server.pem"), cert)
        shutil.copy(self.tls.path("server.key"), key)
        server = helpers.Server(
            "--grpc-tls-listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key,
            listeners=("grpc-listen", "grpc-tls-listen"))
        self.addCleanup(server.cleanup)
        target = "localhost:%d" % server.port("grpc-tls-listen")

        def channel(material):
            ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(
                root_certificates=material.read("ca.pem")))
            self.addCleanup(ch.close)
            return ch

        before = channel(self.tls)
        self.assertEqual(check(before).status, SERVING)

        shutil.copy(renewed.path("server.pem"), cert)
        shutil.copy(renewed.path("server.key"), key)
        server.proc.send_signal(signal.SIGHUP)
        self.assertTrue(server.wait_for_log(r"TLS certificate reloaded"), server.log())
        self.assertEqual(check(channel(renewed)).status, SERVING, "new connections: the new cert")
        e = rpc_error(check, channel(self.tls))
        self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE, "the old cert is not served")
        # The connection made before the reload is still up: a reconnect with the old CA
        # could not succeed any more.
        self.assertEqual(check(before).status, SERVING)

        # A broken file is refused and the current certificate stays in service.
        with open(cert, "w") as f:
            f.write("not a certificate\n")
        server.proc.send_signal(signal.SIGHUP)
        lines = server.wait_for_log(r"TLS files not reloaded")
        self.assertTrue(lines, server.log())
        self.assertIn(cert, lines[0])
        self.assertEqual(check(channel(renewed)).status, SERVING)
        self.assertIsNone(server.proc.poll())

    def test_sighup_without_a_tls_listener_is_harmless(self):
        server = helpers.Server()
        self.addCleanup(server.cleanup)
        server.proc.send_signal(signal.SIGHUP)
        self.assertTrue(server.wait_for_log(r"nothing to reload"), server.log())
        self.assertEqual(check(grpc.insecure_channel(server.target)).status, SERVING)


# ----------------------------------------------------------------------------------------------
# Routing: what is not implemented says so

class UnimplementedTest(SharedServerTest):

    def test_unknown_method_on_known_service_is_unimplemented(self):
        e = rpc_error(raw_unary, self.channel, "/grpc.health.v1.Health/NoSuchMethod")
        self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_unknown_service_is_unimplemented(self):
        e = rpc_error(raw_unary, self.channel, "/sealgate.v1.NoSuchService/NoSuchMethod")
        self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_unknown_method_on_a_sealgate_v1_service_is_unimplemented(self):
        e = rpc_error(raw_unary, self.channel, "/sealgate.v1.AuditService/DeleteAuditEvents")
        self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED)


# ----------------------------------------------------------------------------------------------
# Deadlines

SLOW_HANDLER_MS = 3000


class DeadlineTest(SharedServerTest):

    def slow_call(self, timeout):
        req = S.test_pb2.TestRequest(message="slow", delay_ms=SLOW_HANDLER_MS)
        return testing_stub(self.channel).UnaryCall(req, timeout=timeout)

    def test_client_deadline_passing_in_slow_handler_gives_deadline_exceeded_before_answer(self):
        started = time.monotonic()
        e = rpc_error(self.slow_call, 0.3)
        elapsed = time.monotonic() - started
        self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(elapsed, SLOW_HANDLER_MS / 1000 * 2 / 3,
                        "DEADLINE_EXCEEDED came only after %.2fs" % elapsed)

    def test_server_stays_healthy_after_a_deadline_passes(self):
        rpc_error(self.slow_call, 0.3)
        self.assertEqual(check(self.channel).status, SERVING)
        reply = testing_stub(self.channel).UnaryCall(S.test_pb2.TestRequest(message="after"),
                                                  timeout=RPC_TIMEOUT_S)
        self.assertEqual(reply.message, "after")

    def test_server_enforces_grpc_timeout_header(self):
        # curl knows nothing of grpc-timeout: a DEADLINE_EXCEEDED status can only come from the
        # server, and it must come before the handler would have answered.
        req = S.test_pb2.TestRequest(delay_ms=SLOW_HANDLER_MS).SerializeToString()
        started = time.monotonic()
        r = curl_unary(SHARED, "/sealgate.testing.v1.TestService/UnaryCall", req, timeout="200m")
        elapsed = time.monotonic() - started
        self.assertEqual(r.header("grpc-status"), "4", r.stderr)
        self.assertLess(elapsed, SLOW_HANDLER_MS / 1000 * 2 / 3)


# ----------------------------------------------------------------------------------------------
# Message size limit

LIMIT = 64 * 1024


def request_of_size(size, payload_byte=b"z"):
    """A TestRequest whose serialized form is exactly `size` bytes (size >= 4, < 2**21)."""
    # payload is field 5, length-delimited: one tag byte, a varint length, the bytes.
    for varint_len in (1, 2, 3):
        n = size - 1 - varint_len
        if 0 <= n < 128 ** varint_len and (varint_len == 1 or n >= 128 ** (varint_len - 1)):
            req = S.test_pb2.TestRequest(payload=payload_byte * n)
            assert req.ByteSize() == size, (req.ByteSize(), size)
            return req
    raise ValueError(size)


class MessageSizeLimitTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = helpers.Server("--max-message-bytes", "64KiB")
        cls.channel = grpc.insecure_channel(cls.server.target)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.cleanup()

    def unary(self, req, **kwargs):
        return testing_stub(self.channel).UnaryCall(req, timeout=RPC_TIMEOUT_S, **kwargs)

    def test_request_far_over_limit_is_resource_exhausted(self):
        e = rpc_error(self.unary, S.test_pb2.TestRequest(payload=b"z" * 100_000))
        self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_request_one_byte_over_limit_is_resource_exhausted(self):
        e = rpc_error(self.unary, request_of_size(LIMIT + 1))
        self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_request_just_under_limit_is_served(self):
        self.unary(request_of_size(LIMIT - 16))

    def test_request_of_exactly_the_limit_is_served(self):
        self.unary(request_of_size(LIMIT))

    def test_compressed_request_inflating_past_limit_is_resource_exhausted(self):
        # 100 KB of zeros gzips to a few hundred bytes: the limit must apply after inflating.
        req = S.test_pb2.TestRequest(payload=bytes(100_000))
        e = rpc_error(self.unary, req, compression=grpc.Compression.Gzip)
        self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_connection_still_serves_after_an_oversize_request(self):
        rpc_error(self.unary, S.test_pb2.TestRequest(payload=b"z" * 100_000))
        self.assertEqual(self.unary(S.test_pb2.TestRequest(message="next")).message, "next")


# ----------------------------------------------------------------------------------------------
# Compression

LARGE_RESPONSE = 100_000


class CompressionTest(SharedServerTest):

    def large_call(self, compression):
        # A compressible request, so grpcio really sends it compressed.
        req = S.test_pb2.TestRequest(message="compressed", payload=b"a" * 50_000,
                                     response_size=LARGE_RESPONSE)
        return testing_stub(self.channel).UnaryCall(req, timeout=RPC_TIMEOUT_S,
                                                 compression=compression)

    def assert_large_response(self, reply):
        self.assertEqual(reply.message, "compressed")
        self.assertEqual(reply.payload, b"x" * LARGE_RESPONSE)

    def test_gzip_request_gets_correct_large_response(self):
        self.assert_large_response(self.large_call(grpc.Compression.Gzip))

    def test_deflate_request_gets_correct_large_response(self):
        self.assert_large_response(self.large_call(grpc.Compression.Deflate))

    def test_gzip_channel_gets_correct_large_response(self):
        with grpc.insecure_channel(SHARED.target, compression=grpc.Compression.Gzip) as channel:
            req = S.test_pb2.TestRequest(message="compressed", payload=b"a" * 50_000,
                                         response_size=LARGE_RESPONSE)
            reply = testing_stub(channel).UnaryCall(req, timeout=RPC_TIMEOUT_S)
        self.assert_large_response(reply)

    # grpcio decides for itself whether to compress; these build the compressed frame by hand
    # so the server's inflating is certainly what is tested.

    def echo_of_compressed_frame(self, encoding, compress):
        req = S.test_pb2.TestRequest(message="inflated " + encoding, payload=b"b" * 10_000)
        r = curl_unary(SHARED, "/sealgate.testing.v1.TestService/UnaryCall",
                       compress(req.SerializeToString()), compressed=True, encoding=encoding)
        self.assertEqual(r.header("grpc-status"), "0", r.stderr)
        return r

    def test_hand_gzipped_request_frame_is_inflated(self):
        r = self.echo_of_compressed_frame("gzip", gzip.compress)
        self.assertIn(b"inflated gzip", self.decode_reply_body(r.body, r.header("grpc-encoding")))

    def test_hand_deflated_request_frame_is_inflated(self):
        # gRPC's "deflate" is the zlib format (RFC 1950), as grpcio and grpc-go send it.
        r = self.echo_of_compressed_frame("deflate", zlib.compress)
        self.assertIn(b"inflated deflate",
                      self.decode_reply_body(r.body, r.header("grpc-encoding")))

    def decode_reply_body(self, body, encoding):
        self.assertGreaterEqual(len(body), 5)
        flag, length = body[0], int.from_bytes(body[1:5], "big")
        message = body[5:5 + length]
        if flag == 1:
            message = gzip.decompress(message) if encoding == "gzip" else zlib.decompress(message)
        return message

    def test_unsupported_encoding_is_unimplemented(self):
        # Refused from the headers alone, so no body (see helpers.curl_post on early answers).
        r = helpers.curl_post(
            "http://%s/sealgate.testing.v1.TestService/UnaryCall" % SHARED.target, None,
            grpc_headers(encoding="snappy"))
        self.assertEqual(r.header("grpc-status"), "12", r.stderr)

    def test_unsupported_encoding_answer_lists_the_supported_ones(self):
        r = helpers.curl_post(
            "http://%s/sealgate.testing.v1.TestService/UnaryCall" % SHARED.target, None,
            grpc_headers(encoding="snappy"))
        accepted = (r.header("grpc-accept-encoding") or "").split(",")
        self.assertLessEqual({"gzip", "deflate"}, {e.strip() for e in accepted}, r.stderr)


# ----------------------------------------------------------------------------------------------
# Status message

class StatusMessageTest(SharedServerTest):

    def failing_call(self, code, message):
        req = S.test_pb2.TestRequest(
            response_status=S.test_pb2.EchoStatus(code=code, message=message))
        return rpc_error(testing_stub(self.channel).UnaryCall, req, timeout=RPC_TIMEOUT_S)

    def assert_round_trip(self, code, message):
        e = self.failing_call(code, message)
        self.assertEqual(e.code(), STATUS_BY_NUMBER[code])
        self.assertEqual(e.details(), message)

    def test_status_code_and_message_are_echoed(self):
        self.assert_round_trip(2, "test status message")

    def test_special_status_message_round_trips_exactly(self):
        self.assert_round_trip(2, SPECIAL_STATUS_MESSAGE)

    def test_percent_and_non_ascii_status_message_round_trips_exactly(self):
        self.assert_round_trip(2, "100% done: naïve café")

    def test_chosen_code_other_than_unknown_is_echoed(self):
        self.assert_round_trip(9, "precondition failed")

    def test_status_message_is_percent_encoded_on_the_wire(self):
        # PROTOCOL-HTTP2.md: UTF-8, then every byte outside %x20-%x24 / %x26-%x7E as %XX
        # with upper-case hex digits.
        req = S.test_pb2.TestRequest(
            response_status=S.test_pb2.EchoStatus(code=2, message="100% done: naïve café\n"))
        r = curl_unary(SHARED, "/sealgate.testing.v1.TestService/UnaryCall",
                       req.SerializeToString())
        self.assertEqual(r.header("grpc-status"), "2", r.stderr)
        self.assertEqual(r.header("grpc-message"), "100%25 done: na%C3%AFve caf%C3%A9%0A")


# ----------------------------------------------------------------------------------------------
# Custom metadata

class CustomMetadataTest(SharedServerTest):

    def echo_call(self, metadata):
        return testing_stub(self.channel).UnaryCall.with_call(
            S.test_pb2.TestRequest(message="metadata"), metadata=metadata, timeout=RPC_TIMEOUT_S)

    def test_initial_metadata_is_echoed(self):
        _, call = self.echo_call([("x-sealgate-echo-initial", "test_initial_metadata_value")])
        self.assertIn(("x-sealgate-echo-initial", "test_initial_metadata_value"),
                      list(call.initial_metadata()))

    def test_binary_trailing_metadata_is_echoed(self):
        _, call = self.echo_call([("x-sealgate-echo-trailing-bin", b"\xab\xab\xab")])
        self.assertIn(("x-sealgate-echo-trailing-bin", b"\xab\xab\xab"),
                      list(call.trailing_metadata()))


# ----------------------------------------------------------------------------------------------
# Server streaming

class ServerStreamingTest(SharedServerTest):

    def test_streaming_call_yields_each_response_in_order_then_ok(self):
        stream = testing_stub(self.channel).StreamingCall(
            S.test_pb2.TestRequest(message="tick", count=5, interval_ms=10),
            timeout=RPC_TIMEOUT_S)
        replies = list(stream)
        self.assertEqual([r.index for r in replies], [0, 1, 2, 3, 4])
        self.assertEqual({r.message for r in replies}, {"tick"})
        self.assertEqual(stream.code(), grpc.StatusCode.OK)


# ----------------------------------------------------------------------------------------------
# Reflection, v1 and v1alpha alike

class ReflectionCases:
    """Mixed into one TestCase per reflection version; `version` names the stub modules."""

    version = None

    def setUp(self):
        self.pb2 = getattr(S, "reflection_%s_pb2" % self.version)
        grpc_mod = getattr(S, "reflection_%s_grpc" % self.version)
        self.stub = grpc_mod.ServerReflectionStub(self.channel)

    def ask(self, *requests):
        """Sends the requests on one stream and returns the responses, in order."""
        responses = self.stub.ServerReflectionInfo(iter(requests), timeout=RPC_TIMEOUT_S)
        return list(responses)

    def ask_one(self, **fields):
        replies = self.ask(self.pb2.ServerReflectionRequest(**fields))
        self.assertEqual(len(replies), 1)
        return replies[0]

    def files_of(self, reply):
        self.assertEqual(reply.WhichOneof("message_response"), "file_descriptor_response",
                         str(reply))
        files = []
        for raw in reply.file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto()
            fd.ParseFromString(raw)
            files.append(fd)
        return files

    def test_list_services_names_every_service(self):
        reply = self.ask_one(list_services="")
        names = [s.name for s in reply.list_services_response.service]
        self.assertEqual(sorted(names), sorted(ALL_SERVICES))

    def test_file_containing_symbol_returns_its_file_and_imports(self):
        files = self.files_of(self.ask_one(file_containing_symbol="sealgate.v1.SecretStoreService"))
        names = {f.name for f in files}
        self.assertLessEqual({"sealgate/v1/secret_store.proto", "sealgate/v1/resources.proto",
                              "google/protobuf/field_mask.proto",
                              "google/protobuf/empty.proto"}, names)
        secret_store = next(f for f in files if f.name == "sealgate/v1/secret_store.proto")
        self.assertEqual(secret_store.package, "sealgate.v1")
        self.assertIn("SecretStoreService", [s.name for s in secret_store.service])

    def test_file_containing_symbol_closes_over_transitive_imports(self):
        files = self.files_of(self.ask_one(file_containing_symbol="sealgate.v1.SecretStoreService"))
        names = {f.name for f in files}
        for f in files:
            for dep in f.dependency:
                self.assertIn(dep, names, "%s imports %s, not sent" % (f.name, dep))

    def test_file_containing_symbol_finds_a_method(self):
        files = self.files_of(
            self.ask_one(file_containing_symbol="sealgate.v1.SecretStoreService.CreateSecretStore"))
        self.assertEqual(files[0].name, "sealgate/v1/secret_store.proto")

    def test_file_containing_symbol_finds_a_message(self):
        files = self.files_of(
            self.ask_one(file_containing_symbol="sealgate.v1.CreateSecretStoreRequest"))
        self.assertEqual(files[0].name, "sealgate/v1/secret_store.proto")

    def test_file_by_filename_returns_that_file_first(self):
        files = self.files_of(self.ask_one(file_by_filename="sealgate/v1/secret_store.proto"))
        self.assertEqual(files[0].name, "sealgate/v1/secret_store.proto")

    def test_unknown_symbol_gives_not_found_error_response(self):
        reply = self.ask_one(file_containing_symbol="no.such.Symbol")
        self.assertEqual(reply.WhichOneof("message_response"), "error_response", str(reply))
        self.assertEqual(reply.error_response.error_code, 5)

    def test_unknown_filename_gives_not_found_error_response(self):
        reply = self.ask_one(file_by_filename="no/such/file.proto")
        self.assertEqual(reply.WhichOneof("message_response"), "error_response", str(reply))
        self.assertEqual(reply.error_response.error_code, 5)

    def test_several_requests_on_one_stream_each_get_their_answer(self):
        requests = [
            self.pb2.ServerReflectionRequest(list_services=""),
            self.pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
            self.pb2.ServerReflectionRequest(file_by_filename="sealgate/v1/secret_store.proto"),
        ]
        replies = self.ask(*requests)
        self.assertEqual([r.WhichOneof("message_response") for r in replies],
                         ["list_services_response", "error_response", "file_descriptor_response"])
        for request, reply in zip(requests, replies):
            self.assertEqual(reply.original_request, request)


class ReflectionV1Test(ReflectionCases, SharedServerTest):
    version = "v1"


class ReflectionV1alphaTest(ReflectionCases, SharedServerTest):
    version = "v1alpha"


# ----------------------------------------------------------------------------------------------
# Plain HTTP/2 requests that are not gRPC

class NonGrpcRequestTest(unittest.TestCase):

    def test_non_grpc_content_type_gets_http_415(self):
        # No body: see helpers.curl_post on why early answers are tested with header-only POSTs.
        r = helpers.curl_post("http://%s/grpc.health.v1.Health/Check" % SHARED.target,
                              None, [("content-type", "text/plain")])
        self.assertEqual(r.http_status, 415, r.stderr)


# ----------------------------------------------------------------------------------------------
# The per-RPC log line

class RpcLogTest(unittest.TestCase):
    """Own server, so the log holds only this test's calls."""

    def setUp(self):
        self.server = helpers.Server()
        self.addCleanup(self.server.cleanup)
        self.channel = grpc.insecure_channel(self.server.target)
        self.addCleanup(self.channel.close)

    def rpc_lines(self, method, expected):
        """The log lines for `method`, once `expected` of them are there (bounded wait)."""
        return self.server.wait_for_log(r"msg=rpc method=%s " % method, count=expected)

    def test_each_rpc_leaves_exactly_one_log_line(self):
        for _ in range(3):
            check(self.channel)
        raw_unary(self.channel, "/sealgate.testing.v1.TestService/UnaryCall")  # fence: last call
        self.rpc_lines("/sealgate.testing.v1.TestService/UnaryCall", 1)
        lines = self.rpc_lines("/grpc.health.v1.Health/Check", 3)
        self.assertEqual(len(lines), 3, self.server.log())
        for line in lines:
            self.assertIn("status=OK ", line)

    def test_log_line_names_method_status_duration_peer_and_org(self):
        check(self.channel)
        (line,) = self.rpc_lines("/grpc.health.v1.Health/Check", 1)
        self.assertRegex(line, r"msg=rpc method=/grpc.health.v1.Health/Check status=OK "
                               r"duration_ms=[0-9.]+ peer=127\.0\.0\.1:\d+ org=-$")

    def test_streaming_call_log_line_counts_messages(self):
        stream = testing_stub(self.channel).StreamingCall(
            S.test_pb2.TestRequest(count=3, interval_ms=1), timeout=RPC_TIMEOUT_S)
        self.assertEqual(len(list(stream)), 3)
        (line,) = self.rpc_lines("/sealgate.testing.v1.TestService/StreamingCall", 1)
        self.assertRegex(line, r"status=OK .*msgs_in=1 msgs_out=3$")

    def test_unimplemented_call_logs_its_status(self):
        rpc_error(raw_unary, self.channel, "/grpc.health.v1.Health/NoSuchMethod")
        (line,) = self.rpc_lines("/grpc.health.v1.Health/NoSuchMethod", 1)
        self.assertIn("status=UNIMPLEMENTED ", line)


# ----------------------------------------------------------------------------------------------
# Connection protection: clients that misbehave at the transport level

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConnectionProtectionTest(unittest.TestCase):

    def test_client_that_reads_nothing_is_disconnected_after_the_write_timeout(self):
        server = helpers.Server("--write-timeout", "1")
        self.addCleanup(server.cleanup)
        conn = helpers.RawH2(server.port(), settings={4: 0x7fffffff}, rcvbuf=4096)
        self.addCleanup(conn.close)
        conn.send(helpers.h2_frame(helpers.H2_WINDOW_UPDATE, 0, 0,
                                   (0x7fffffff - 65535).to_bytes(4, "big")))
        big = S.test_pb2.TestRequest(response_size=1 << 20).SerializeToString()
        for i in range(8):  # 8 MiB of answers the client never reads
            conn.request(2 * i + 1, "/sealgate.testing.v1.TestService/UnaryCall", big)
        server.wait_for_log(r"msg=write_timeout", timeout=8)
        frames = conn.read_frames(timeout=8, until=lambda f: f[-1][0] == "EOF")
        self.assertEqual(frames[-1][0], "EOF", "the server closed the connection")
        self.assertTrue(server.log().count("msg=write_timeout") >= 1)

    def test_tls_connection_is_not_cut_when_idle_timeout_is_zero(self):
        tmp = tempfile.TemporaryDirectory(prefix="sealgate-e2e-idle-")
        self.addCleanup(tmp.cleanup)
        tls = helpers.TlsMaterial(tmp.name)
        server = helpers.Server(
            "--grpc-tls-listen", "127.0.0.1:0", "--tls-cert", tls.path("server.pem"),
            "--tls-key", tls.path("server.key"), "--idle-timeout", "0",
            "--handshake-timeout", "1", listeners=("grpc-listen", "grpc-tls-listen"))
        self.addCleanup(server.cleanup)
        conn = helpers.RawH2(server.port("grpc-tls-listen"), tls_ca=tls.path("ca.pem"))
        self.addCleanup(conn.close)
        conn.read_frames(timeout=1)  # SETTINGS exchange
        time.sleep(2)  # past the handshake timeout, idle
        conn.send(helpers.h2_frame(helpers.H2_PING, 0, 0, b"stillup!"))
        frames = conn.read_frames(timeout=3, until=lambda f: any(
            fr[0] == helpers.H2_PING for fr in f))
        self.assertIn(helpers.H2_PING, [f[0] for f in frames], frames)
        self.assertNotIn(helpers.H2_GOAWAY, [f[0] for f in frames])

    def test_a_log_sink_that_stops_reading_does_not_stop_the_server(self):
        port = free_port()
        # stderr is a pipe nobody reads: it fills after some 400 log lines.
        data = tempfile.mkdtemp(prefix="sealgate-e2e-data-")
        self.addCleanup(shutil.rmtree, data, True)
        proc = subprocess.Popen([helpers.TEST_SERVER, "serve", "--grpc-listen",
                                 "127.0.0.1:%d" % port, "--db", helpers.shared_db().conninfo,
                                 "--root-key-file", helpers.shared_root_key(),
                                 "--data-dir", data],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            channel = grpc.insecure_channel("127.0.0.1:%d" % port)
            self.addCleanup(channel.close)
            grpc.channel_ready_future(channel).result(timeout=10)
            for _ in range(3000):
                self.assertEqual(check(channel).status, SERVING)
        finally:
            proc.terminate()
            proc.stderr.read()  # let the writer finish so the server can exit
            self.assertEqual(proc.wait(timeout=10), 0)

    def test_the_largest_thread_count_starts(self):
        server = helpers.Server("--threads", "256")
        self.addCleanup(server.cleanup)
        channel = grpc.insecure_channel(server.target)
        self.addCleanup(channel.close)
        self.assertEqual(check(channel).status, SERVING)


# ----------------------------------------------------------------------------------------------
# Graceful shutdown

SLOW_MS = 1000
EXIT_BOUND_S = 5.0


class GracefulShutdownTest(unittest.TestCase):
    """Each test starts its own server and sends it SIGTERM."""

    def setUp(self):
        self.server = helpers.Server()
        self.addCleanup(self.server.cleanup)
        self.channel = grpc.insecure_channel(self.server.target)
        self.addCleanup(self.channel.close)
        check(self.channel)   # the connection is up before anything is timed

    def start_slow_call(self):
        req = S.test_pb2.TestRequest(message="in flight", delay_ms=SLOW_MS)
        future = testing_stub(self.channel).UnaryCall.future(req, timeout=RPC_TIMEOUT_S)
        time.sleep(0.2)   # the call has reached the handler's timer
        return future

    def test_call_in_flight_at_sigterm_completes_ok(self):
        future = self.start_slow_call()
        self.server.terminate()
        self.assertEqual(future.result(timeout=RPC_TIMEOUT_S).message, "in flight")
        self.assertEqual(future.code(), grpc.StatusCode.OK)

    def test_server_exits_zero_after_sigterm_once_calls_finish(self):
        future = self.start_slow_call()
        self.server.terminate()
        future.result(timeout=RPC_TIMEOUT_S)
        self.assertEqual(self.server.wait(EXIT_BOUND_S), 0, self.server.log())

    def test_server_exits_zero_after_sigterm_with_a_watch_open(self):
        watch = health_stub(self.channel).Watch(S.health_pb2.HealthCheckRequest(service=""),
                                                timeout=RPC_TIMEOUT_S)
        self.addCleanup(watch.cancel)
        next(watch)
        self.server.terminate()
        self.assertEqual(self.server.wait(EXIT_BOUND_S), 0, self.server.log())

    def test_watch_open_at_sigterm_gets_not_serving_then_unavailable(self):
        watch = health_stub(self.channel).Watch(S.health_pb2.HealthCheckRequest(service=""),
                                                timeout=RPC_TIMEOUT_S)
        self.addCleanup(watch.cancel)
        self.assertEqual(next(watch).status, SERVING)
        self.server.terminate()
        self.assertEqual(next(watch).status, NOT_SERVING)
        with self.assertRaises(grpc.RpcError) as ctx:
            next(watch)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    unittest.main(verbosity=2)
