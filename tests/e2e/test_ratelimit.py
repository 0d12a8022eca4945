"""End-to-end: rate limits per API key (serve --rate-limit RPS --rate-burst N).

A grpcio client with protoc-generated stubs talks to sealgate-test-server over a real
PostgreSQL cluster (helpers.shared_db). The server admits 5 calls a second per key with bursts
of 10, so a test sees the limit in a fraction of a second:

  1. A burst over the limit ends in RESOURCE_EXHAUSTED, whose message says the limit and when
     to retry, with the wait in the trailers (retry-after-ms, grpc-retry-pushback-ms); after
     that wait the key is admitted again.
  2. Another key, even of the same organization, has a bucket of its own.
  3. Health, reflection and calls that fail to authenticate are charged to no key.
  4. A grpc client with a retry policy waits as the pushback says and succeeds.
  5. Refusals are counted in sealgate_rate_limited_total; --rate-limit 0 turns the limit off.
"""

import json
import os
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import helpers  # noqa: E402

RPC_TIMEOUT_S = 10.0
RATE, BURST = 5, 10
INTERVAL_MS = 1000 // RATE

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED

S = None
SERVER = None


def setUpModule():
    global S, SERVER
    S = helpers.stubs()
    SERVER = helpers.Server("--threads", "2", "--rate-limit", str(RATE), "--rate-burst",
                            str(BURST), "--admin-listen", "127.0.0.1:0",
                            listeners=("grpc-listen", "admin-listen"))


def tearDownModule():
    if SERVER is not None:
        SERVER.cleanup()


class Client:
    """One API key's view of SecretStoreService on `server`, on a channel of its own."""

    def __init__(self, server, api_key, options=()):
        self.channel = grpc.insecure_channel(server.target, options=list(options))
        self.metadata = (("authorization", "Bearer " + api_key),)
        self.stores = S.secret_store_grpc.SecretStoreServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def list(self):
        return self.stores.ListSecretStores(S.secret_store_pb2.ListSecretStoresRequest(),
                                            metadata=self.metadata, timeout=RPC_TIMEOUT_S)

    def burst(self, calls):
        """Makes `calls` calls in a row; returns (admitted, the first refusal or None)."""
        admitted, refused = 0, None
        for _ in range(calls):
            try:
                self.list()
                admitted += 1
            except grpc.RpcError as e:
                if e.code() != RESOURCE_EXHAUSTED:
                    raise
                refused = refused or e
        return admitted, refused


def trailers(error):
    return dict(error.trailing_metadata() or ())


def refused_total():
    url = "http://%s/metrics" % SERVER.addresses["admin-listen"]
    with urllib.request.urlopen(url, timeout=RPC_TIMEOUT_S) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("sealgate_rate_limited_total "):
                return float(line.split()[1])
    raise AssertionError("no sealgate_rate_limited_total in /metrics")


class RateLimitTest(helpers.StatusAssertions):

    def client(self, api_key=None, server=None, options=()):
        if api_key is None:
            _, api_key = helpers.shared_db().create_org("ratelimit")
        c = Client(server or SERVER, api_key, options)
        self.addCleanup(c.close)
        return c

    def exhaust(self, c):
        """Spends `c`'s bucket; returns the refusal."""
        started = time.monotonic()
        admitted, refused = c.burst(3 * BURST)
        elapsed = time.monotonic() - started
        self.assertIsNotNone(refused, "30 calls in a row were all admitted")
        # The burst, plus what refilled while the calls were made.
        self.assertGreaterEqual(admitted, BURST)
        self.assertLessEqual(admitted, BURST + int(elapsed * RATE) + 1)
        return refused

    def test_a_burst_over_the_limit_is_refused_with_when_to_retry(self):
        e = self.exhaust(self.client())
        self.assertIn("rate limit", e.details())
        self.assertIn("%d calls a second" % RATE, e.details())
        self.assertRegex(e.details(), r"retry in \d+ ms")
        md = trailers(e)
        self.assertIn("retry-after-ms", md)
        self.assertEqual(md.get("grpc-retry-pushback-ms"), md["retry-after-ms"])
        wait = int(md["retry-after-ms"])
        self.assertTrue(1 <= wait <= INTERVAL_MS, wait)
        self.assertIn("retry in %d ms" % wait, e.details())

    def test_after_the_wait_the_key_is_admitted_again(self):
        c = self.client()
        e = self.exhaust(c)
        time.sleep(int(trailers(e)["retry-after-ms"]) / 1000.0 + 0.02)
        c.list()
        # And in the long run at the rate: a second later, about RATE more.
        time.sleep(1.0)
        admitted, refused = c.burst(3 * RATE)
        self.assertIsNotNone(refused)
        self.assertTrue(RATE - 1 <= admitted <= RATE + 2, admitted)

    def test_another_key_is_unaffected(self):
        db = helpers.shared_db()
        org, key = db.create_org("ratelimit")
        c, other_org, same_org = self.client(key), self.client(), self.client(
            db.create_api_key(org))
        self.exhaust(c)
        self.assertEqual(other_org.burst(BURST), (BURST, None))
        self.assertEqual(same_org.burst(BURST), (BURST, None))

    def test_health_and_reflection_are_not_limited(self):
        c = self.client()
        self.exhaust(c)
        health = S.health_grpc.HealthStub(c.channel)
        for _ in range(3 * BURST):
            health.Check(S.health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S)
        reflection = S.reflection_v1_grpc.ServerReflectionStub(c.channel)
        for _ in range(2 * BURST):
            replies = list(reflection.ServerReflectionInfo(
                iter([S.reflection_v1_pb2.ServerReflectionRequest(list_services="")]),
                metadata=c.metadata, timeout=RPC_TIMEOUT_S))
            self.assertEqual(len(replies), 1)

    def test_calls_that_fail_to_authenticate_are_charged_to_no_key(self):
        _, key = helpers.shared_db().create_org("ratelimit")
        bad = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        wrong = self.client(bad)
        for _ in range(3 * BURST):
            self.assertFails(UNAUTHENTICATED, wrong.list)
        anonymous = Client(SERVER, "")
        self.addCleanup(anonymous.close)
        anonymous.metadata = ()
        for _ in range(3 * BURST):
            self.assertFails(UNAUTHENTICATED, anonymous.list)
        # The real key still has its whole burst.
        self.assertEqual(self.client(key).burst(BURST), (BURST, None))

    def test_a_grpc_client_with_a_retry_policy_waits_for_the_pushback_and_succeeds(self):
        config = {"methodConfig": [{
            "name": [{"service": "sealgate.v1.SecretStoreService"}],
            "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.001s",
                            "maxBackoff": "0.002s", "backoffMultiplier": 1.0,
                            "retryableStatusCodes": ["RESOURCE_EXHAUSTED"]}}]}
        _, key = helpers.shared_db().create_org("ratelimit")
        plain = self.client(key)
        self.exhaust(plain)
        retrying = self.client(key, options=[("grpc.service_config", json.dumps(config)),
                                             ("grpc.enable_retries", 1)])
        started = time.monotonic()
        retrying.list()   # refused, then retried after the pushback, then admitted
        self.assertGreater(time.monotonic() - started, 0.02)

    def test_refusals_are_counted_in_the_metrics(self):
        before = refused_total()
        c = self.client()
        admitted, _ = c.burst(BURST + 5)
        self.assertGreaterEqual(refused_total() - before, BURST + 5 - admitted)
        self.assertGreater(refused_total(), before)


class NoLimitTest(helpers.StatusAssertions):

    def test_rate_limit_0_turns_the_limit_off(self):
        server = helpers.Server("--threads", "1", "--rate-limit", "0", "--rate-burst", "1")
        self.addCleanup(server.cleanup)
        _, key = helpers.shared_db().create_org("ratelimit-off")
        c = Client(server, key)
        self.addCleanup(c.close)
        self.assertEqual(c.burst(50), (50, None))

    def test_a_burst_below_1_is_refused_at_start(self):
        out = helpers.sealgate_cli("serve", "--rate-burst", "0")
        self.assertEqual(out.returncode, 2, out)
        self.assertIn("rate-burst", out.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
