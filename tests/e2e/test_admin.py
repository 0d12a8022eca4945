"""End-to-end: the admin HTTP endpoint (--admin-listen; SPEC §3 "counts in Prometheus metrics
on an admin HTTP endpoint").

  1. Routes: /healthz and /livez 200, /readyz 200, unknown paths 404, other methods 405, HEAD.
  2. The exposition parses as Prometheus text under a strict parser (HELP/TYPE before samples,
     one block per family, escaped label values, cumulative histogram buckets ending in +Inf
     that equal _count).
  3. RPCs move sealgate_rpc_requests_total and the sealgate_rpc_duration_seconds histogram by
     exactly the calls made, labelled by method and status code name; an unknown method counts
     as "unknown". The API-key and store caches and the database query counters move too.
  4. Proxy requests move sealgate_proxy_requests_total (connect / forwarded / refused by status
     class), the substitution decisions, the leaf certificate and view cache counters.
  5. No secret value, sealed token, proxy credential or API key is ever in the output.
  6. /readyz turns 503 when PostgreSQL stops and 200 again when it is back; on SIGTERM it turns
     503 at once, while calls in flight finish.

The server runs on a PostgreSQL cluster of its own, so stopping the database touches no other
suite.
"""

import math
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import helpers  # noqa: E402
import test_proxy as tp  # noqa: E402  (its Api and raw HTTP client, not its tests)
import upstream  # noqa: E402

HTTP_TIMEOUT_S = 10.0
DB_WAIT_S = 30.0   # the pool retries with backoff up to 5 s (plus jitter)

S = None
UP = None
PG = None
SERVER = None
_pki_dir = None
SENSITIVE = set()

STORE_SVC = "/sealgate.v1.SecretStoreService/"
TEST_SVC = "/sealgate.testing.v1.TestService/"


def setUpModule():
    global S, UP, PG, SERVER, _pki_dir
    S = helpers.stubs()
    _pki_dir = tempfile.mkdtemp(prefix="sealgate-e2e-admin-")
    UP = upstream.Upstreams(upstream.UpstreamPki(_pki_dir)).start()
    tp.S, tp.UP = S, UP
    try:
        PG = helpers.PgCluster()
        PG.migrate()
        flags = ["--admin-listen", "127.0.0.1:0", "--threads", "2", "--local-runtime",
                 "--proxy-allow-cidr", "127.0.0.0/8", "--db-wait", "0"]
        for name in upstream.CERT_NAMES:
            flags += ["--proxy-resolve", name + ":127.0.0.1"]
        SERVER = helpers.Server(*(flags + tp.proxy_flags()), db=PG.conninfo,
                                listeners=("grpc-listen", "proxy-listen", "admin-listen"))
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    problems = []
    if SERVER is not None:
        try:
            SERVER.cleanup()
        except AssertionError as e:
            problems.append(str(e))
    if UP is not None:
        UP.stop()
    if PG is not None:
        PG.cleanup()
    if _pki_dir is not None:
        shutil.rmtree(_pki_dir, ignore_errors=True)
    if problems:
        raise AssertionError("\n".join(problems))


# ----------------------------------------------------------------------------------------------
# HTTP and the exposition format

def admin_url(server, path):
    return "http://%s%s" % (server.addresses["admin-listen"], path)


def get(server, path, method="GET"):
    """(status, headers, body text) of one request to the admin endpoint."""
    req = urllib.request.Request(admin_url(server, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"'
_SAMPLE = re.compile(r"^(%s)(?:\{(%s(?:,%s)*)\})? (\S+)$" % (_NAME, _LABEL, _LABEL))
_VALUE = re.compile(r"^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)$")


def unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def parse_exposition(text):
    """Parses Prometheus text format 0.0.4 strictly. Returns {family: {"type", "help",
    "samples": {(sample name, frozenset(labels)): value}}}; raises AssertionError on anything
    a Prometheus server would reject or that breaks the format's rules."""
    if not text.endswith("\n"):
        raise AssertionError("exposition does not end with a newline")
    families, current, seen_samples = {}, None, set()
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = "line %d: %r" % (n, line)
        if line.startswith("# HELP "):
            m = re.match(r"^# HELP (%s) (.*)$" % _NAME, line)
            if not m or m.group(1) in families:
                raise AssertionError("bad or repeated HELP, " + where)
            current = m.group(1)
            families[current] = {"help": m.group(2), "type": None, "samples": {}}
        elif line.startswith("# TYPE "):
            m = re.match(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % _NAME,
                         line)
            if not m or m.group(1) != current or families[current]["type"] is not None \
                    or families[current]["samples"]:
                raise AssertionError("TYPE must follow its HELP, before samples, " + where)
            families[current]["type"] = m.group(2)
        elif line.startswith("#") or line == "":
            raise AssertionError("unexpected comment or blank line, " + where)
        else:
            m = _SAMPLE.match(line)
            if not m or not _VALUE.match(m.group(m.lastindex)):
                raise AssertionError("bad sample, " + where)
            name, value = m.group(1), m.group(m.lastindex)
            labels = {}
            if m.group(2):
                for k, v in re.findall(_LABEL, m.group(2)):
                    if k in labels:
                        raise AssertionError("repeated label, " + where)
                    labels[k] = unescape(v)
            fam = families.get(current)
            if fam is None or fam["type"] is None:
                raise AssertionError("sample before HELP/TYPE, " + where)
            suffixes = {"histogram": ("_bucket", "_sum", "_count")}.get(fam["type"], ("",))
            if not any(name == current + s for s in suffixes):
                raise AssertionError("sample outside its family %s, %s" % (current, where))
            if fam["type"] == "counter" and not current.endswith("_total"):
                raise AssertionError("counter without _total, " + where)
            key = (name, frozenset(labels.items()))
            if key in seen_samples:
                raise AssertionError("repeated sample, " + where)
            seen_samples.add(key)
            fam["samples"][key] = float(value)
    for name, fam in families.items():
        if fam["type"] == "histogram":
            check_histogram(name, fam)
    return families


def check_histogram(name, fam):
    """Every series of a histogram: buckets cumulative in ascending le, ending in +Inf, equal
    to _count; a _sum for each."""
    series = {}
    for (sname, labels), value in fam["samples"].items():
        base = frozenset((k, v) for k, v in labels if k != "le")
        s = series.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if sname == name + "_bucket":
            le = dict(labels).get("le")
            if le is None:
                raise AssertionError("%s bucket without le" % name)
            s["buckets"].append((float(le), value))
        elif sname == name + "_sum":
            s["sum"] = value
        else:
            s["count"] = value
    for base, s in series.items():
        b = sorted(s["buckets"])
        if not b or b[-1][0] != math.inf or s["sum"] is None or s["count"] is None:
            raise AssertionError("%s%s lacks +Inf, _sum or _count" % (name, dict(base)))
        if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
            raise AssertionError("%s%s buckets are not cumulative" % (name, dict(base)))
        if b[-1][1] != s["count"]:
            raise AssertionError("%s%s +Inf bucket != _count" % (name, dict(base)))


class Scrape:
    """One parsed scrape, with lookups that read an absent series as 0."""

    def __init__(self, server):
        status, headers, self.text = get(server, "/metrics")
        assert status == 200, (status, self.text)
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
        self.families = parse_exposition(self.text)

    def value(self, sample, **labels):
        family = re.sub(r"_(bucket|sum|count)$", "", sample)
        fam = self.families.get(family) or self.families.get(sample)
        if fam is None:
            raise AssertionError("no family for %s" % sample)
        return fam["samples"].get((sample, frozenset(labels.items())), 0.0)

    def rpc(self, method, code):
        return self.value("sealgate_rpc_requests_total", method=method, code=code)

    def rpc_hist(self, method, code):
        """(_count, +Inf bucket, _sum) of the duration histogram."""
        return (self.value("sealgate_rpc_duration_seconds_count", method=method, code=code),
                self.value("sealgate_rpc_duration_seconds_bucket", method=method, code=code,
                           le="+Inf"),
                self.value("sealgate_rpc_duration_seconds_sum", method=method, code=code))


# ----------------------------------------------------------------------------------------------

class RoutesTest(unittest.TestCase):

    def test_liveness_answers_ok(self):
        for path in ("/healthz", "/livez"):
            status, _, body = get(SERVER, path)
            self.assertEqual((status, body), (200, "ok\n"), path)

    def test_readiness_answers_ready_with_the_database_up(self):
        ok = helpers.wait_until(lambda: get(SERVER, "/readyz")[0] == 200, DB_WAIT_S)
        self.assertTrue(ok, get(SERVER, "/readyz"))
        self.assertEqual(get(SERVER, "/readyz")[2], "ready\n")

    def test_unknown_paths_are_404(self):
        for path in ("/", "/metrics/", "/metricsx", "/healthz/x", "/nope?x=1"):
            self.assertEqual(get(SERVER, path)[0], 404, path)

    def test_other_methods_are_405_with_allow(self):
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            status, headers, _ = get(SERVER, "/metrics", method=method)
            self.assertEqual(status, 405, method)
            self.assertEqual(headers["Allow"], "GET, HEAD")

    def test_head_answers_like_get_without_a_body(self):
        status, headers, body = get(SERVER, "/metrics", method="HEAD")
        self.assertEqual((status, body), (200, ""))
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"))

    def test_query_strings_do_not_change_the_route(self):
        self.assertEqual(get(SERVER, "/healthz?verbose=1")[0], 200)

    def test_a_raw_http10_request_is_answered_and_closed(self):
        addr = SERVER.addresses["admin-listen"].rsplit(":", 1)
        with socket.create_connection((addr[0], int(addr[1])), timeout=HTTP_TIMEOUT_S) as s:
            s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.0 200") or data.startswith(b"HTTP/1.1 200"),
                        data)
        self.assertTrue(data.endswith(b"\r\n\r\nok\n"), data)


class ExpositionTest(unittest.TestCase):

    def test_the_output_parses_and_names_the_documented_families(self):
        families = Scrape(SERVER).families
        expected = {
            "sealgate_build_info": "gauge",
            "sealgate_process_start_time_seconds": "gauge",
            "sealgate_rpc_requests_total": "counter",
            "sealgate_rpc_duration_seconds": "histogram",
            "sealgate_cache_hits_total": "counter",
            "sealgate_cache_misses_total": "counter",
            "sealgate_db_connections_up": "gauge",
            "sealgate_db_queries_in_flight": "gauge",
            "sealgate_db_queries_queued": "gauge",
            "sealgate_db_queries_total": "counter",
            "sealgate_proxy_requests_total": "counter",
            "sealgate_proxy_decisions_total": "counter",
            "sealgate_proxy_tunnels_open": "gauge",
            "sealgate_proxy_leaf_certificates_minted_total": "counter",
            "sealgate_notify_received_total": "counter",
            "sealgate_notify_listening": "gauge",
            "sealgate_audit_events_written_total": "counter",
            "sealgate_audit_events_dropped_total": "counter",
        }
        for name, kind in expected.items():
            self.assertIn(name, families)
            self.assertEqual(families[name]["type"], kind, name)
            self.assertTrue(families[name]["help"], name)

    def test_process_series(self):
        s = Scrape(SERVER)
        fam = s.families["sealgate_build_info"]["samples"]
        (((name, labels), value),) = fam.items()
        self.assertEqual(value, 1)
        self.assertRegex(dict(labels)["version"], r"^\d+\.\d+\.\d+")
        start = s.value("sealgate_process_start_time_seconds")
        self.assertLess(abs(start - time.time()), 3600)

    def test_the_strict_parser_rejects_what_prometheus_would(self):
        bad = [
            "x_total 1\n",                                           # no HELP/TYPE
            "# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"b} 1\n",
            "# HELP x_total h\n# TYPE x_total counter\nx_total one\n",
            "# HELP x h\n# TYPE x histogram\nx_bucket{le=\"1\"} 2\nx_bucket{le=\"+Inf\"} 1\n"
            "x_sum 1\nx_count 1\n",                                  # not cumulative
            "# HELP x_total h\n# TYPE x_total counter\nx_total 1",   # no final newline
        ]
        for text in bad:
            with self.assertRaises(AssertionError, msg=text):
                parse_exposition(text)

    def test_notifications_are_heard(self):
        ok = helpers.wait_until(
            lambda: Scrape(SERVER).value("sealgate_notify_listening") == 1, DB_WAIT_S)
        self.assertTrue(ok)


class RpcMetricsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        helpers.wait_until(lambda: get(SERVER, "/readyz")[0] == 200, DB_WAIT_S)
        cls.org_id, cls.api_key = PG.create_org(helpers.unique("admin"))
        SENSITIVE.add(cls.api_key)
        cls.channel = grpc.insecure_channel(SERVER.target)
        cls.md = (("authorization", "Bearer " + cls.api_key),)
        cls.stores = S.secret_store_grpc.SecretStoreServiceStub(cls.channel)
        cls.test = S.test_grpc.TestServiceStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()

    def create_store(self):
        return self.stores.CreateSecretStore(S.secret_store_pb2.CreateSecretStoreRequest(
            name=helpers.unique("store")), metadata=self.md, timeout=15)

    def test_calls_count_by_method_and_status_with_durations(self):
        create, get_store = STORE_SVC + "CreateSecretStore", STORE_SVC + "GetSecretStore"
        unary = TEST_SVC + "UnaryCall"
        before = Scrape(SERVER)
        store = self.create_store()
        self.create_store()
        time.sleep(0.5)  # the creations' own notifications move the store caches' generation
        for _ in range(3):
            self.stores.GetSecretStore(S.secret_store_pb2.GetSecretStoreRequest(store_id=store.id),
                                       metadata=self.md, timeout=15)
        # Failing calls: a status the handler chose, and no credential at all.
        code = helpers.status_of(self.test.UnaryCall, S.test_pb2.TestRequest(
            message="x", delay_ms=20,
            response_status=S.test_pb2.EchoStatus(code=5, message="gone")), timeout=15)
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        code = helpers.status_of(self.stores.GetSecretStore,
                                 S.secret_store_pb2.GetSecretStoreRequest(store_id=store.id),
                                 timeout=15)
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        # A method no router knows: counted as "unknown", never under its own path.
        bogus = self.channel.unary_unary("/sealgate.v1.Nope/Nothing-" + helpers.unique("m"))
        code = helpers.status_of(bogus, b"", timeout=15)
        self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED)
        # The stream's end is counted just after the client hears the trailers.
        expect = {(create, "OK"): 2, (get_store, "OK"): 3, (unary, "NOT_FOUND"): 1,
                  (get_store, "UNAUTHENTICATED"): 1, ("unknown", "UNIMPLEMENTED"): 1}
        after = helpers.wait_until(
            lambda: (lambda s: s if all(s.rpc(m, c) - before.rpc(m, c) >= n
                                        for (m, c), n in expect.items()) else None)(
                Scrape(SERVER)), 5.0)
        self.assertIsNotNone(after, "RPC counters did not move")
        for (method, code), n in expect.items():
            self.assertEqual(after.rpc(method, code) - before.rpc(method, code), n,
                             (method, code))
            count, inf, total = after.rpc_hist(method, code)
            count0, inf0, total0 = before.rpc_hist(method, code)
            self.assertEqual(count - count0, n, (method, code))
            self.assertEqual(inf - inf0, n, (method, code))
            self.assertGreater(total, total0, (method, code))
        # The delayed call took at least 20 ms: not in the buckets below that.
        self.assertEqual(after.value("sealgate_rpc_duration_seconds_bucket", method=unary,
                                     code="NOT_FOUND", le="0.01"),
                         before.value("sealgate_rpc_duration_seconds_bucket", method=unary,
                                      code="NOT_FOUND", le="0.01"))
        methods = {dict(l).get("method") for (_, l) in
                   after.families["sealgate_rpc_requests_total"]["samples"]}
        self.assertFalse(any("Nope" in m for m in methods), methods)
        # Five calls carried the API key: at least the repeated ones were cache hits, and the
        # repeated reads of one store hit the store cache.
        self.assertGreaterEqual(after.value("sealgate_cache_hits_total", cache="api_key") -
                                before.value("sealgate_cache_hits_total", cache="api_key"), 3)
        self.assertGreaterEqual(after.value("sealgate_cache_hits_total", cache="store") -
                                before.value("sealgate_cache_hits_total", cache="store"), 1)
        self.assertGreaterEqual(after.value("sealgate_db_queries_total", result="ok") -
                                before.value("sealgate_db_queries_total", result="ok"), 2)


class ProxyMetricsTest(tp.ProxyTestCase):
    """Through the proxy: a substituted request in a tunnel, and a denied host."""

    @classmethod
    def setUpClass(cls):
        helpers.wait_until(lambda: get(SERVER, "/readyz")[0] == 200, DB_WAIT_S)
        org_id, api_key = PG.create_org(helpers.unique("admin-proxy"))
        SENSITIVE.add(api_key)
        cls.api = tp.Api(SERVER, api_key)

    @classmethod
    def tearDownClass(cls):
        cls.api.close()

    def test_proxy_requests_decisions_tunnels_and_caches_are_counted(self):
        host = "api.anthropic.test"
        value = tp.secret_value("admin")
        SENSITIVE.add(value)
        store = self.api.store_with({"KEY": (value, [host])}, egress_allowlist=[host])
        sandbox = self.api.create_sandbox(store.name)
        token = sandbox.env["KEY"]
        SENSITIVE.update([token, tp.proxy_authorization(sandbox),
                          tp.parse_proxy_url(sandbox.proxy.url)[1]])
        before = Scrape(SERVER)
        r = tp.https(sandbox, host, "/admin-metrics", headers=[("X-Key", token)])
        self.assertEqual(r.status, 200, r)
        r = tp.https(sandbox, host, "/admin-metrics-2", headers=[("X-Key", token)])
        self.assertEqual(r.status, 200, r)
        denied = tp.https(sandbox, "denied.test", "/nope")
        self.assertEqual(denied.status, 403, denied)

        def moved():
            s = Scrape(SERVER)
            return s if s.value("sealgate_proxy_decisions_total", decision="denied") > \
                before.value("sealgate_proxy_decisions_total", decision="denied") and \
                s.value("sealgate_proxy_tunnels_open") == 0 else None
        after = helpers.wait_until(moved, 5.0)
        self.assertIsNotNone(after, "proxy counters did not move")

        def delta(name, **labels):
            return after.value(name, **labels) - before.value(name, **labels)
        req = "sealgate_proxy_requests_total"
        self.assertEqual(delta(req, code_class="2xx", result="connect"), 2)
        self.assertEqual(delta(req, code_class="2xx", result="forwarded"), 2)
        self.assertEqual(delta(req, code_class="4xx", result="refused"), 1)
        self.assertEqual(delta("sealgate_proxy_decisions_total", decision="substituted"), 2)
        self.assertEqual(delta("sealgate_proxy_decisions_total", decision="denied"), 1)
        self.assertEqual(delta("sealgate_proxy_decisions_total", decision="withheld"), 0)
        self.assertEqual(after.value("sealgate_proxy_tunnels_open"), 0)
        # The host's leaf was minted at most once; the second tunnel found it in the cache.
        self.assertLessEqual(delta("sealgate_proxy_leaf_certificates_minted_total"), 1)
        self.assertGreaterEqual(delta("sealgate_cache_hits_total", cache="leaf_cert"), 1)
        self.assertGreaterEqual(delta("sealgate_cache_hits_total", cache="proxy_view") +
                                delta("sealgate_cache_misses_total", cache="proxy_view"), 3)

    def test_an_open_tunnel_is_counted_until_it_closes(self):
        host = "api.anthropic.test"
        store = self.api.store_with({}, egress_allowlist=[host])
        sandbox = self.api.create_sandbox(store.name)
        SENSITIVE.update([tp.proxy_authorization(sandbox),
                          tp.parse_proxy_url(sandbox.proxy.url)[1]])
        conn, r = tp.open_tunnel(sandbox, host, UP.main.port)
        with conn:
            self.assertEqual(r.status, 200)
            self.assertGreaterEqual(Scrape(SERVER).value("sealgate_proxy_tunnels_open"), 1)
        self.assertTrue(helpers.wait_until(
            lambda: Scrape(SERVER).value("sealgate_proxy_tunnels_open") == 0, 5.0))


class ZyNoSecretsTest(unittest.TestCase):
    """After the tests that make secrets (unittest runs a module's classes in name order)."""

    def test_no_secret_token_or_key_in_the_output(self):
        text = Scrape(SERVER).text
        self.assertNotIn("osb_", text)   # sealed tokens and API keys both start so
        self.assertNotIn("osk_", text)
        leaked = sorted(s for s in SENSITIVE if s and s in text)
        self.assertEqual(leaked, [])


class ZzReadinessTest(unittest.TestCase):
    """Last: stops the database, and a server."""

    def test_readiness_follows_the_database(self):
        self.assertTrue(helpers.wait_until(lambda: get(SERVER, "/readyz")[0] == 200, DB_WAIT_S))
        PG.stop()
        try:
            down = helpers.wait_until(lambda: get(SERVER, "/readyz")[0] == 503, DB_WAIT_S)
            self.assertTrue(down, "readyz stayed 200 with the database stopped")
            status, _, body = get(SERVER, "/readyz")
            self.assertEqual((status, body), (503, "database unreachable\n"))
            self.assertEqual(get(SERVER, "/healthz")[0], 200)  # alive all the same
            s = Scrape(SERVER)
            self.assertEqual(s.value("sealgate_db_connections_up"), 0)
        finally:
            PG.start()
        up = helpers.wait_until(lambda: get(SERVER, "/readyz")[0] == 200, DB_WAIT_S)
        self.assertTrue(up, "readyz did not come back after the database restarted")
        self.assertGreater(Scrape(SERVER).value("sealgate_db_connections_up"), 0)

    def test_drain_turns_not_ready_at_once(self):
        server = helpers.Server("--admin-listen", "127.0.0.1:0", "--threads", "1",
                                db=PG.conninfo, listeners=("grpc-listen", "admin-listen"))
        try:
            self.assertTrue(helpers.wait_until(lambda: get(server, "/readyz")[0] == 200,
                                               DB_WAIT_S))
            channel = grpc.insecure_channel(server.target)
            stub = S.test_grpc.TestServiceStub(channel)
            result = {}

            def slow_call():
                result["code"] = helpers.status_of(
                    stub.UnaryCall, S.test_pb2.TestRequest(message="slow", delay_ms=2500),
                    timeout=15)
            t = threading.Thread(target=slow_call)
            t.start()
            # The call is in flight when the signal comes: the drain waits for it.
            time.sleep(0.5)
            server.terminate()
            # At once: while the call is still in flight (the signal itself is asynchronous).
            self.assertTrue(helpers.wait_until(lambda: get(server, "/readyz")[0] == 503, 1.0))
            self.assertTrue(t.is_alive(), "the call ended before readyz turned")
            status, _, body = get(server, "/readyz")
            self.assertEqual((status, body), (503, "draining: shutting down\n"))
            self.assertEqual(get(server, "/healthz")[0], 200)
            t.join(15)
            channel.close()
            self.assertEqual(result.get("code"), grpc.StatusCode.OK)
            self.assertEqual(server.wait(10), 0)
        finally:
            server.cleanup()


class BindErrorTest(unittest.TestCase):

    def test_an_address_in_use_is_a_clear_error(self):
        addr = SERVER.addresses["admin-listen"]
        data_dir = tempfile.mkdtemp(prefix="sealgate-e2e-admin-bind-")
        self.addCleanup(shutil.rmtree, data_dir, ignore_errors=True)
        out = helpers.sealgate_cli("serve", "--db", PG.conninfo, "--root-key-file",
                                   helpers.shared_root_key(), "--data-dir", data_dir,
                                   "--grpc-listen", "127.0.0.1:0", "--admin-listen", addr,
                                   "--db-wait", "0", timeout=60)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("--admin-listen", out.stderr)
        self.assertNotIn("ERROR: LeakSanitizer", out.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
