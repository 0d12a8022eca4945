"""End-to-end: the audit trail (SPEC §2 AuditService, §5 "every substitution and every denial
is audited").

A grpcio client with protoc-generated stubs talks to sealgate-test-server over a real
PostgreSQL cluster (helpers.shared_db).

  1. ListAuditEvents over rows put straight into audit_events with psql, for two
     organizations: isolation, each filter alone and together, `since`, paging, bad input,
     authentication.
  2. The writer (server/db/audit_writer.c): events recorded through the test server's
     TestService.RecordAudit, as the egress proxy records them, reach the table in batches,
     count substitutions on their secret, never keep a query string or a sealed token, and
     survive a database outage and a shutdown; a full queue drops its oldest events and says
     so in the log, at most once a second.

The database sessions run in a time zone far from UTC (+05:45), so that a time that forgot to
say UTC shows up as a wrong time instead of passing by luck.
"""

import base64
import datetime
import os
import re
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402  (after the path tweak, so the helpers module is found)

import helpers  # noqa: E402

# Generous upper bound for any single RPC; it only keeps a hung server from hanging the suite.
RPC_TIMEOUT_S = 10.0
# How long the writer may take to get an event into the table (it writes every ~100 ms).
WRITE_BOUND_S = 5.0

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED

# server/db/audit_writer.h
QUEUE_MAX = 100000
BATCH_MAX = 1000
STOP_WAIT_S = 5.0

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
TOKEN = "osb_sealed_" + "0123456789abcdef" * 2

S = None        # generated stubs (helpers.Stubs)
SHARED = None   # the server most tests use


def setUpModule():
    global S, SHARED
    S = helpers.stubs()
    helpers.shared_db().psql("ALTER ROLE CURRENT_USER SET timezone = 'Asia/Kathmandu'")
    SHARED = helpers.Server("--threads", "2")


def tearDownModule():
    if SHARED is not None:
        SHARED.cleanup()


unique = helpers.unique
wait_until = helpers.wait_until


# ----------------------------------------------------------------------------------------------
# Client-side helpers

class Api:
    """One organization's view of the API on `server`, on a channel of its own."""

    def __init__(self, server, api_key):
        self.channel = grpc.insecure_channel(server.target)
        self.metadata = (("authorization", "Bearer " + api_key),) if api_key else ()
        self.audit = S.audit_grpc.AuditServiceStub(self.channel)
        self.stores = S.secret_store_grpc.SecretStoreServiceStub(self.channel)
        self.secrets = S.secret_grpc.SecretServiceStub(self.channel)
        self.testing = S.test_grpc.TestServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def list(self, **fields):
        """One page of ListAuditEvents."""
        return self.audit.ListAuditEvents(S.audit_pb2.ListAuditEventsRequest(**fields),
                                          metadata=self.metadata, timeout=RPC_TIMEOUT_S)

    def walk(self, page_size, **filters):
        """Every page, as lists of event ids."""
        pages, token = [], ""
        for _ in range(1000):
            page = self.list(page_size=page_size, page_token=token, **filters)
            pages.append([e.id for e in page.events])
            token = page.next_page_token
            if not token:
                return pages
        raise AssertionError("more than 1000 pages")

    def ids(self, **filters):
        """The ids of every event the filters select, in the order listed."""
        return [i for page in self.walk(1000, **filters) for i in page]

    def record(self, copies=1, flush=True, **event):
        """Records `event` `copies` times through the server's audit writer; returns the
        writer's counters (written, dropped)."""
        r = self.testing.RecordAudit(S.test_pb2.RecordAuditRequest(
            copies=copies, flush=flush, **event), timeout=RPC_TIMEOUT_S)
        return r.written, r.dropped

    def counters(self):
        return self.record(copies=0, flush=False, decision="denied")


def sql_text(s):
    return "'" + s.replace("'", "''") + "'"


EVENT_DEFAULTS = dict(sandbox_id="", store_id="", secret_name="", secret_version=0, host="",
                      method="", path="", decision="substituted", reason="")


def insert_events(db, events):
    """Puts `events` (dicts of audit_events columns, time in RFC 3339, "" for a NULL id) into
    audit_events with psql; returns them completed, each with its new id."""
    done = [dict(EVENT_DEFAULTS, id=str(uuid.uuid4()), **e) for e in events]
    rows = ["(%s, %s, %s, %s, %s, %s, %d, %s, %s, %s, %s, %s)" % (
        sql_text(e["id"]), sql_text(e["org_id"]), sql_text(e["time"]),
        sql_text(e["sandbox_id"]) if e["sandbox_id"] else "NULL",
        sql_text(e["store_id"]) if e["store_id"] else "NULL",
        sql_text(e["secret_name"]), e["secret_version"], sql_text(e["host"]),
        sql_text(e["method"]), sql_text(e["path"]), sql_text(e["decision"]),
        sql_text(e["reason"])) for e in done]
    db.psql("INSERT INTO audit_events (id, org_id, time, sandbox_id, store_id, secret_name, "
            "secret_version, host, method, path, decision, reason) VALUES " + ", ".join(rows))
    return done


def count_rows(db, where):
    return int(db.psql("SELECT count(*) FROM audit_events WHERE " + where).strip())


def b64(text):
    return base64.b64encode(text.encode()).decode()


def unb64(token):
    """A page token's text (sealgate writes base64 without padding)."""
    return base64.b64decode(token + "=" * (-len(token) % 4)).decode()


class ApiTestCase(helpers.StatusAssertions):

    def assertInvalid(self, field, fn, *args, **kwargs):
        """The call fails with INVALID_ARGUMENT and a message that starts by naming `field`."""
        e = self.assertFails(INVALID_ARGUMENT, fn, *args, **kwargs)
        self.assertTrue(e.details().startswith(field + ":"),
                        "the message should name %r: %r" % (field, e.details()))
        return e


# ----------------------------------------------------------------------------------------------
# 1. ListAuditEvents

T0 = datetime.datetime(2031, 3, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def at(seconds):
    """T0 + `seconds`, in RFC 3339 with microseconds."""
    return (T0 + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ListTest(ApiTestCase):
    """Two organizations with a known trail each. Organization B's events name the very same
    sandbox and store ids as A's (ids that cannot occur across organizations in real life), so
    that a filter alone can never be what keeps them apart."""

    @classmethod
    def setUpClass(cls):
        db = helpers.shared_db()
        cls.db = db
        cls.org_a, key_a = db.create_org("audit-a")
        cls.org_b, key_b = db.create_org("audit-b")
        cls.a = Api(SHARED, key_a)
        cls.b = Api(SHARED, key_b)
        cls.sb1, cls.sb2, cls.st1, cls.st2 = (str(uuid.uuid4()) for _ in range(4))
        # Twelve events of A, one per second from T0, with every combination of sandbox,
        # store and secret; 5 and 6 share their time (the id orders them); 11 names nothing.
        plan = [(cls.sb1, cls.st1, "API_KEY", "substituted"),
                (cls.sb1, cls.st1, "DB_PASS", "withheld"),
                (cls.sb1, cls.st2, "API_KEY", "substituted"),
                (cls.sb2, cls.st1, "API_KEY", "denied"),
                (cls.sb2, cls.st2, "DB_PASS", "redacted"),
                (cls.sb2, cls.st2, "API_KEY", "substituted"),
                (cls.sb1, cls.st2, "DB_PASS", "substituted"),
                (cls.sb2, cls.st1, "DB_PASS", "withheld"),
                (cls.sb1, cls.st1, "API_KEY", "substituted"),
                (cls.sb2, "", "", "denied"),
                ("", cls.st1, "API_KEY", "substituted"),
                ("", "", "", "denied")]
        seconds = [0, 1, 2, 3, 4, 5, 5, 7, 8, 9, 10, 11]
        cls.events_a = insert_events(db, [
            dict(org_id=cls.org_a, time=at(s), sandbox_id=sb, store_id=st, secret_name=name,
                 secret_version=i + 1, host="api%d.example.com" % i, method="POST",
                 path="/v1/call/%d" % i, decision=decision, reason="reason %d" % i)
            for i, ((sb, st, name, decision), s) in enumerate(zip(plan, seconds))])
        cls.events_b = insert_events(db, [
            dict(org_id=cls.org_b, time=at(0.5 + i), sandbox_id=cls.sb1, store_id=cls.st1,
                 secret_name="API_KEY", decision="substituted") for i in range(3)])

    @classmethod
    def tearDownClass(cls):
        cls.a.close()
        cls.b.close()

    def expected(self, events, **filters):
        """The ids of `events` that `filters` select, oldest first by (time, id)."""
        chosen = [e for e in events
                  if all(e[k] == v for k, v in filters.items() if k != "since")
                  and e["time"] >= filters.get("since", "")]
        return [e["id"] for e in sorted(chosen, key=lambda e: (e["time"], e["id"]))]

    # Isolation

    def test_each_organization_sees_its_own_events_and_only_those(self):
        self.assertEqual(self.a.ids(), self.expected(self.events_a))
        self.assertEqual(self.b.ids(), self.expected(self.events_b))

    def test_another_organizations_filters_find_nothing_of_this_one(self):
        self.assertEqual(self.b.ids(sandbox_id=self.sb2), [])
        self.assertEqual(self.b.ids(store_id=self.st2), [])
        self.assertEqual(self.b.ids(secret_name="DB_PASS"), [])
        self.assertEqual(len(self.b.ids(sandbox_id=self.sb1, store_id=self.st1)), 3)

    # What an event holds, and the order

    def test_an_event_carries_every_field_with_its_time_in_rfc3339_utc(self):
        first = self.a.list(page_size=1).events[0]
        e = self.events_a[0]
        self.assertEqual((first.id, first.sandbox_id, first.store_id, first.secret_name,
                          first.secret_version, first.host, first.method, first.path,
                          first.decision, first.reason),
                         (e["id"], self.sb1, self.st1, "API_KEY", 1, "api0.example.com",
                          "POST", "/v1/call/0", "substituted", "reason 0"))
        self.assertRegex(first.time, RFC3339_UTC)
        self.assertEqual(first.time, "2031-03-01T12:00:00Z")

    def test_an_event_without_sandbox_or_store_shows_empty_ids(self):
        last = self.a.list(page_size=1000).events[-1]
        self.assertEqual((last.sandbox_id, last.store_id, last.secret_name), ("", "", ""))

    def test_events_come_oldest_first_and_the_id_orders_events_of_the_same_time(self):
        listed = self.a.list(page_size=1000).events
        times = [e.time for e in listed]
        self.assertEqual(times, sorted(times))
        same = [e.id for e in listed if e.time == "2031-03-01T12:00:05Z"]
        self.assertEqual(same, sorted(same))
        self.assertEqual(len(same), 2)

    # Filters

    def test_each_filter_alone(self):
        for field, value in (("sandbox_id", self.sb1), ("sandbox_id", self.sb2),
                             ("store_id", self.st1), ("store_id", self.st2),
                             ("secret_name", "API_KEY"), ("secret_name", "DB_PASS")):
            with self.subTest(**{field: value}):
                got = self.a.ids(**{field: value})
                self.assertEqual(got, self.expected(self.events_a, **{field: value}))
                self.assertTrue(got)

    def test_filters_combine_with_and(self):
        for filters in ({"sandbox_id": self.sb1, "store_id": self.st1},
                        {"sandbox_id": self.sb2, "secret_name": "DB_PASS"},
                        {"store_id": self.st2, "secret_name": "API_KEY"},
                        {"sandbox_id": self.sb1, "store_id": self.st1,
                         "secret_name": "API_KEY"},
                        {"sandbox_id": self.sb2, "store_id": self.st1,
                         "secret_name": "DB_PASS", "since": at(6)}):
            with self.subTest(**filters):
                got = self.a.ids(**filters)
                self.assertEqual(got, self.expected(self.events_a, **filters))
                self.assertTrue(got)

    def test_a_filter_naming_an_unknown_id_or_name_finds_nothing(self):
        self.assertEqual(self.a.ids(sandbox_id=str(uuid.uuid4())), [])
        self.assertEqual(self.a.ids(store_id=str(uuid.uuid4())), [])
        self.assertEqual(self.a.ids(secret_name="NO_SUCH_SECRET"), [])

    def test_an_id_in_upper_case_is_the_same_id(self):
        self.assertEqual(self.a.ids(sandbox_id=self.sb1.upper()), self.a.ids(sandbox_id=self.sb1))

    # since

    def test_since_keeps_the_events_at_or_after_it(self):
        self.assertEqual(self.a.ids(since=at(5)), self.expected(self.events_a, since=at(5)))
        self.assertEqual(len(self.a.ids(since=at(5))), 7)
        self.assertEqual(len(self.a.ids(since=at(4.5))), 7)
        self.assertEqual(len(self.a.ids(since=at(5.000001))), 5)

    def test_since_in_every_rfc3339_form_names_the_same_instant(self):
        want = self.a.ids(since="2031-03-01T12:00:05Z")
        for since in ("2031-03-01T12:00:05.000Z", "2031-03-01t12:00:05z",
                      "2031-03-01T17:45:05+05:45", "2031-03-01T07:00:05-05:00",
                      "2031-03-01T12:00:05.000000000+00:00"):
            with self.subTest(since=since):
                self.assertEqual(self.a.ids(since=since), want)

    def test_since_in_the_future_finds_nothing_and_in_the_past_everything(self):
        self.assertEqual(self.a.ids(since="2099-01-01T00:00:00Z"), [])
        self.assertEqual(self.a.ids(since="1970-01-01T00:00:00Z"), self.a.ids())

    def test_since_that_is_not_an_rfc3339_time_is_invalid(self):
        for since in ("yesterday", "2031-03-01", "2031-03-01T12:00:05", "2031-03-01 12:00:05Z",
                      "2031-02-29T00:00:00Z", "2031-13-01T00:00:00Z", "2031-03-01T24:00:00Z",
                      "2031-03-01T12:00:05.Z", "2031-03-01T12:00:05.0123456789Z",
                      "2031-03-01T12:00:05+5:45", "2031-03-01T12:00:05+24:00",
                      "2031-03-01T12:00:05Z trailing", "0000-01-01T00:00:00Z", "1" * 300):
            with self.subTest(since=since):
                self.assertInvalid("since", self.a.list, since=since)

    def test_february_29th_of_a_leap_year_is_a_time(self):
        self.assertEqual(self.a.ids(since="2032-02-29T00:00:00Z"), [])

    # Paging

    def test_pages_of_1_show_every_event_once_in_order(self):
        pages = self.a.walk(1)
        self.assertEqual([len(p) for p in pages], [1] * len(self.events_a))
        self.assertEqual([p[0] for p in pages], self.expected(self.events_a))

    def test_pages_of_2_with_a_filter_and_since_read_the_trail_forward(self):
        filters = {"store_id": self.st1, "since": at(1)}
        want = self.expected(self.events_a, **filters)
        pages = self.a.walk(2, **filters)
        self.assertEqual(pages, [want[i:i + 2] for i in range(0, len(want), 2)])
        self.assertEqual(len(want), 5)

    def test_the_last_page_has_no_token(self):
        page = self.a.list(page_size=len(self.events_a))
        self.assertEqual(len(page.events), len(self.events_a))
        self.assertEqual(page.next_page_token, "")

    def test_page_size_out_of_range_is_invalid(self):
        for size in (-1, 1001, -2**31, 2**31 - 1):
            with self.subTest(page_size=size):
                self.assertInvalid("page_size", self.a.list, page_size=size)

    def test_a_page_token_the_api_did_not_return_is_invalid(self):
        real = self.a.list(page_size=1).next_page_token
        an_id = str(uuid.uuid4())
        for token in ["garbage", "!!!!", "x" * 300, b64(unb64(real) + "0"), b64(unb64(real)[:-1]),
                      b64("2|2031-01-01 00:00:00.000000|" + an_id),
                      b64("1|2031-02-30 00:00:00.000000|" + an_id),
                      b64("1|2031-01-01 00:00:00.000000|not an id")]:
            with self.subTest(token=token):
                self.assertInvalid("page_token", self.a.list, page_token=token)

    # Bad input and authentication

    def test_ids_that_are_not_uuids_are_invalid_and_named(self):
        for field in ("sandbox_id", "store_id"):
            for bad in ("x", "1234", self.sb1.replace("-", ""), self.sb1 + "0", self.sb1[:-1] + "g",
                        "'; DROP TABLE audit_events; --"):
                with self.subTest(field=field, value=bad):
                    self.assertInvalid(field, self.a.list, **{field: bad})

    def test_a_secret_name_that_is_no_env_var_name_is_invalid(self):
        for bad in ("1ABC", "A-B", "A" * 129, "A B"):
            with self.subTest(secret_name=bad):
                self.assertInvalid("secret_name", self.a.list, secret_name=bad)

    def test_no_key_or_a_bad_key_is_unauthenticated(self):
        for key in ("", "osk_" + "A" * 49, "Bearer nonsense"):
            api = Api(SHARED, key)
            try:
                with self.subTest(key=key):
                    self.assertFails(UNAUTHENTICATED, api.list)
            finally:
                api.close()


class DefaultPageTest(ApiTestCase):

    def test_the_default_page_is_50_and_1000_is_the_most(self):
        db = helpers.shared_db()
        org, key = db.create_org("audit-pages")
        api = Api(SHARED, key)
        self.addCleanup(api.close)
        db.psql("INSERT INTO audit_events (id, org_id, time, decision) "
                "SELECT gen_random_uuid(), '%s', now() + i * interval '1 ms', 'denied' "
                "FROM generate_series(1, 1050) AS i" % org)
        self.assertEqual(len(api.list().events), 50)
        self.assertTrue(api.list().next_page_token)
        self.assertEqual(len(api.list(page_size=1000).events), 1000)
        self.assertEqual([len(p) for p in api.walk(1000)], [1000, 50])


# ----------------------------------------------------------------------------------------------
# 2. The writer

class WriterTest(ApiTestCase):

    @classmethod
    def setUpClass(cls):
        cls.db = helpers.shared_db()
        cls.org, key = cls.db.create_org("audit-writer")
        cls.other_org, other_key = cls.db.create_org("audit-writer-other")
        cls.api = Api(SHARED, key)
        cls.other = Api(SHARED, other_key)

    @classmethod
    def tearDownClass(cls):
        cls.api.close()
        cls.other.close()

    def event(self, **fields):
        e = dict(org_id=self.org, sandbox_id=str(uuid.uuid4()), store_id=str(uuid.uuid4()),
                 secret_name="API_KEY", secret_version=2, host="api.example.com",
                 method="POST", path="/v1/messages", decision="substituted",
                 reason="the token's secret allows this host")
        e.update(fields)
        return e

    def listed(self, count, api=None, **filters):
        """Waits until `filters` select `count` events of `api`'s organization (by default
        this class's); returns them."""
        api = api or self.api

        def enough():
            events = list(api.list(page_size=1000, **filters).events)
            return events if len(events) >= count else None
        events = wait_until(enough, WRITE_BOUND_S)
        self.assertTrue(events, "the events did not reach the table within %ss" % WRITE_BOUND_S)
        self.assertEqual(len(events), count)
        return events

    def test_a_recorded_event_is_written_with_every_field_and_the_time_it_was_recorded(self):
        e = self.event()
        before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        written, _ = self.api.counters()
        self.api.record(**e)
        (got,) = self.listed(1, sandbox_id=e["sandbox_id"])
        after = datetime.datetime.now(datetime.timezone.utc)
        self.assertEqual((got.sandbox_id, got.store_id, got.secret_name, got.secret_version,
                          got.host, got.method, got.path, got.decision, got.reason),
                         (e["sandbox_id"], e["store_id"], "API_KEY", 2, "api.example.com",
                          "POST", "/v1/messages", "substituted", e["reason"]))
        self.assertEqual(str(uuid.UUID(got.id)), got.id)
        self.assertRegex(got.time, RFC3339_UTC)
        when = datetime.datetime.strptime(got.time, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
        self.assertTrue(before <= when <= after, (before, when, after))
        self.assertGreater(self.api.counters()[0], written)

    def test_every_decision_is_written(self):
        sandbox = str(uuid.uuid4())
        for decision in ("substituted", "withheld", "denied", "redacted"):
            self.api.record(**self.event(sandbox_id=sandbox, decision=decision))
        got = self.listed(4, sandbox_id=sandbox)
        self.assertEqual(sorted(e.decision for e in got),
                         ["denied", "redacted", "substituted", "withheld"])

    def test_an_event_with_no_sandbox_store_or_secret_is_written(self):
        host = unique("bare") + ".example.com"
        # Only what comes from now on (to the microsecond: other tests' bursts came just before).
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.api.record(org_id=self.org, host=host, method="CONNECT", decision="denied",
                        reason="host not in the allowlist")
        got = wait_until(lambda: [e for e in self.api.list(page_size=1000, since=since).events
                                  if e.host == host], WRITE_BOUND_S)
        self.assertEqual(len(got), 1)
        self.assertEqual((got[0].sandbox_id, got[0].store_id, got[0].secret_name),
                         ("", "", ""))

    def test_the_path_loses_its_query_and_fragment(self):
        sandbox = str(uuid.uuid4())
        self.api.record(**self.event(sandbox_id=sandbox, path="/v1/x?key=" + TOKEN + "&a=b"))
        self.api.record(**self.event(sandbox_id=sandbox, path="/v1/y#frag?q"))
        got = sorted(e.path for e in self.listed(2, sandbox_id=sandbox))
        self.assertEqual(got, ["/v1/x", "/v1/y"])

    def test_a_sealed_token_in_any_field_is_masked(self):
        sandbox = str(uuid.uuid4())
        self.api.record(**self.event(sandbox_id=sandbox, path="/bot" + TOKEN + "/getMe",
                                     reason="saw " + TOKEN[:20], host=TOKEN + ".example.com"))
        (got,) = self.listed(1, sandbox_id=sandbox)
        masked = "osb_sealed_" + "*" * 32
        self.assertEqual(got.path, "/bot" + masked + "/getMe")
        self.assertEqual(got.reason, "saw osb_sealed_" + "*" * 9)
        self.assertEqual(got.host, masked + ".example.com")
        self.assertEqual(count_rows(self.db, "path LIKE '%0123456789abcdef%' OR reason LIKE "
                                             "'%0123456789%' OR host LIKE '%0123456789ab%'"), 0)

    def test_bytes_outside_printable_ascii_are_kept_as_percent_escapes(self):
        sandbox = str(uuid.uuid4())
        self.api.record(**self.event(sandbox_id=sandbox, path="/caf\u00e9/a b\x01\x7f",
                                     method="GE\tT"))
        (got,) = self.listed(1, sandbox_id=sandbox)
        self.assertEqual(got.path, "/caf%C3%A9/a b%01%7F")
        self.assertEqual(got.method, "GE%09T")

    def test_long_fields_are_cut_to_their_maximum(self):
        sandbox = str(uuid.uuid4())
        self.api.record(**self.event(sandbox_id=sandbox, path="/" + "p" * 5000,
                                     host="h" * 300, reason="r" * 300,
                                     method="M" * 40, secret_name="S" * 200))
        (got,) = self.listed(1, sandbox_id=sandbox)
        self.assertEqual((len(got.path), len(got.host), len(got.reason), len(got.method),
                          len(got.secret_name)), (1024, 255, 256, 32, 128))

    def test_a_malformed_event_is_dropped_and_counted_and_the_rest_are_written(self):
        _, dropped = self.api.counters()
        sandbox = str(uuid.uuid4())
        for bad in (dict(org_id="not-an-org"), dict(org_id=""), dict(sandbox_id="x"),
                    dict(store_id=self.org + "0")):
            self.api.record(**self.event(**dict(dict(sandbox_id=sandbox), **bad)))
        self.api.record(**self.event(sandbox_id=sandbox))
        self.listed(1, sandbox_id=sandbox)
        self.assertEqual(self.api.counters()[1] - dropped, 4)

    def test_a_burst_of_2500_is_written_in_batches_of_at_most_1000(self):
        sandbox = str(uuid.uuid4())
        written, _ = self.api.counters()
        self.api.record(copies=2500, flush=False, **self.event(sandbox_id=sandbox,
                                                               decision="withheld"))
        where = "sandbox_id = '%s'" % sandbox
        self.assertTrue(wait_until(lambda: count_rows(self.db, where) == 2500, WRITE_BOUND_S * 2))
        self.assertTrue(wait_until(lambda: self.api.counters()[0] - written >= 2500, 1))
        ids = int(self.db.psql("SELECT count(DISTINCT id) FROM audit_events WHERE " + where))
        self.assertEqual(ids, 2500)

    def test_substitutions_count_on_their_secret_and_nothing_else_does(self):
        store = self.api.stores.CreateSecretStore(
            S.secret_store_pb2.CreateSecretStoreRequest(name=unique("audit")),
            metadata=self.api.metadata, timeout=RPC_TIMEOUT_S)
        for name in ("API_KEY", "OTHER"):
            self.api.secrets.SetSecret(
                S.secret_pb2.SetSecretRequest(store_id=store.id, name=name, value="v-" + name),
                metadata=self.api.metadata, timeout=RPC_TIMEOUT_S)
        sandbox = str(uuid.uuid4())
        base = dict(sandbox_id=sandbox, store_id=store.id, secret_name="API_KEY")
        self.api.record(copies=3, **self.event(**base))
        self.api.record(copies=2, **self.event(decision="withheld", **base))
        self.api.record(**self.event(decision="denied", **base))
        self.api.record(**self.event(decision="redacted", **base))
        # Another organization's event naming this store counts nowhere.
        self.other.record(copies=5, **self.event(org_id=self.other_org, **base))
        self.listed(7, sandbox_id=sandbox)
        self.listed(5, api=self.other, sandbox_id=sandbox)

        def secrets():
            listed = self.api.secrets.ListSecrets(
                S.secret_pb2.ListSecretsRequest(store_id=store.id),
                metadata=self.api.metadata, timeout=RPC_TIMEOUT_S).secrets
            return {s.name: s for s in listed}
        got = secrets()
        self.assertEqual(got["API_KEY"].use_count, 3)
        self.assertRegex(got["API_KEY"].last_used_at, RFC3339_UTC)
        self.assertEqual((got["OTHER"].use_count, got["OTHER"].last_used_at), (0, ""))

        # last_used_at never goes back, and the count goes on.
        first_use = got["API_KEY"].last_used_at
        time.sleep(1.1)
        self.api.record(**self.event(**base))
        self.assertTrue(wait_until(lambda: secrets()["API_KEY"].use_count == 4, WRITE_BOUND_S))
        self.assertGreater(secrets()["API_KEY"].last_used_at, first_use)

    def test_a_substitution_of_a_deleted_secret_is_written_and_counts_nowhere(self):
        store = self.api.stores.CreateSecretStore(
            S.secret_store_pb2.CreateSecretStoreRequest(name=unique("audit-del")),
            metadata=self.api.metadata, timeout=RPC_TIMEOUT_S)
        self.api.secrets.SetSecret(
            S.secret_pb2.SetSecretRequest(store_id=store.id, name="GONE", value="v"),
            metadata=self.api.metadata, timeout=RPC_TIMEOUT_S)
        self.api.secrets.DeleteSecret(
            S.secret_pb2.DeleteSecretRequest(store_id=store.id, name="GONE"),
            metadata=self.api.metadata, timeout=RPC_TIMEOUT_S)
        self.api.record(**self.event(store_id=store.id, secret_name="GONE"))
        self.listed(1, store_id=store.id)   # the proxy's decisions: the default kind
        use = self.db.psql("SELECT use_count FROM secrets WHERE store_id = '%s'" % store.id)
        self.assertEqual(use.strip(), "0")


class WriterShutdownTest(ApiTestCase):
    """Servers of their own, stopped while events wait in the writer's queue."""

    def test_a_graceful_stop_writes_what_is_queued(self):
        db = helpers.shared_db()
        org, _ = db.create_org("audit-stop")
        server = helpers.Server()
        self.addCleanup(server.cleanup)
        api = Api(server, None)
        self.addCleanup(api.close)
        sandbox = str(uuid.uuid4())
        api.record(copies=1500, flush=False, org_id=org, sandbox_id=sandbox,
                   decision="denied")
        server.terminate()
        self.assertEqual(server.wait(STOP_WAIT_S + 5), 0, server.log()[-2000:])
        self.assertEqual(count_rows(db, "sandbox_id = '%s'" % sandbox), 1500)
        self.assertNotIn("audit_lost", server.log())


class WriterOutageTest(ApiTestCase):
    """A cluster of its own, stopped and started again under one server process."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = helpers.PgCluster()
        try:
            cls.cluster.migrate()
            cls.org, _ = cls.cluster.create_org("audit-outage")
            cls.server = helpers.Server(db=cls.cluster.conninfo)
        except Exception:
            cls.cluster.cleanup()
            raise
        cls.api = Api(cls.server, None)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.api.close()
            cls.server.cleanup()   # raises on a sanitizer report or a bad exit
        finally:
            cls.cluster.cleanup()

    def tearDown(self):
        self.cluster.start()   # whatever a test left behind

    def test_events_recorded_while_the_database_is_down_are_written_when_it_is_back(self):
        sandbox = str(uuid.uuid4())
        downs = len(self.server.wait_for_log(r"msg=audit_down", timeout=0))
        ups = len(self.server.wait_for_log(r"msg=audit_up", timeout=0))
        self.cluster.stop()
        self.api.record(copies=10, org_id=self.org, sandbox_id=sandbox, decision="withheld")
        self.assertEqual(len(self.server.wait_for_log(r"msg=audit_down", WRITE_BOUND_S,
                                                      downs + 1)), downs + 1)
        time.sleep(1.0)   # a few retries meet the outage
        self.cluster.start()
        where = "sandbox_id = '%s'" % sandbox
        self.assertTrue(wait_until(lambda: count_rows(self.cluster, where) == 10, 15),
                        self.server.log()[-2000:])
        self.assertEqual(len(self.server.wait_for_log(r"msg=audit_up", WRITE_BOUND_S,
                                                      ups + 1)), ups + 1)

    def test_a_full_queue_drops_its_oldest_events_and_says_so_at_most_once_a_second(self):
        old, new = str(uuid.uuid4()), str(uuid.uuid4())
        _, dropped = self.api.counters()
        self.cluster.stop()
        started = time.monotonic()
        # The writer may hold one batch of the old ones (retrying it); the queue holds the
        # rest, and the new ones push the old ones out.
        self.api.record(copies=2 * BATCH_MAX, flush=False, org_id=self.org, sandbox_id=old,
                        decision="denied")
        for _ in range(QUEUE_MAX // 25000):
            self.api.record(copies=25000, flush=False, org_id=self.org, sandbox_id=new,
                            decision="denied")
        lost = self.api.counters()[1] - dropped
        self.assertGreaterEqual(lost, BATCH_MAX)
        self.assertLessEqual(lost, 2 * BATCH_MAX)
        time.sleep(2.5)
        self.cluster.start()
        self.assertTrue(wait_until(
            lambda: count_rows(self.cluster, "sandbox_id = '%s'" % new) == QUEUE_MAX, 60),
            self.server.log()[-2000:])
        self.assertEqual(count_rows(self.cluster, "sandbox_id = '%s'" % old),
                         2 * BATCH_MAX - lost)

        def reported():
            lines = self.server.wait_for_log(r"msg=audit_dropped", timeout=0)
            return lines if sum(int(re.search(r" events=(\d+)", l).group(1))
                                for l in lines) == lost else None
        lines = wait_until(reported, 3)
        self.assertTrue(lines, "the log does not account for %d dropped events:\n%s"
                        % (lost, self.server.log()[-2000:]))
        self.assertLessEqual(len(lines), time.monotonic() - started + 1)

    def test_a_stop_while_the_database_is_down_gives_up_within_its_bound(self):
        server = helpers.Server(db=self.cluster.conninfo)
        self.addCleanup(server.cleanup)
        api = Api(server, None)
        self.addCleanup(api.close)
        self.cluster.stop()
        api.record(copies=10, org_id=self.org, sandbox_id=str(uuid.uuid4()), decision="denied")
        self.assertTrue(server.wait_for_log(r"msg=audit_down", timeout=WRITE_BOUND_S))
        stopping = time.monotonic()
        server.terminate()
        self.assertEqual(server.wait(STOP_WAIT_S + 5), 0, server.log()[-2000:])
        self.assertLess(time.monotonic() - stopping, STOP_WAIT_S + 3)
        self.assertTrue(server.wait_for_log(r"msg=audit_lost events=10\b", timeout=1),
                        server.log()[-2000:])


# ----------------------------------------------------------------------------------------------
# 3. Management calls (service/change.c): each call that changed something leaves one row

class ManagementTest(ApiTestCase):
    """An organization's management calls, read back with the kind filter."""

    @classmethod
    def setUpClass(cls):
        cls.db = helpers.shared_db()
        cls.org, cls.key = cls.db.create_org("audit-mgmt")
        cls.other_org, other_key = cls.db.create_org("audit-mgmt-other")
        cls.api = Api(SHARED, cls.key)
        cls.other = Api(SHARED, other_key)
        cls.sandboxes = S.sandbox_grpc.SandboxServiceStub(cls.api.channel)
        cls.prefix = cls.key[:12]
        cls.key_id = cls.db.psql("SELECT id FROM api_keys WHERE org_id = '%s'" % cls.org).strip()

    @classmethod
    def tearDownClass(cls):
        cls.api.close()
        cls.other.close()

    def call(self, fn, request):
        return fn(request, metadata=self.api.metadata, timeout=RPC_TIMEOUT_S)

    def changes(self, count, api=None, **filters):
        """Waits until the management rows `filters` select number `count`; returns them."""
        api = api or self.api

        def enough():
            events = list(api.list(page_size=1000, kind="management", **filters).events)
            return events if len(events) >= count else None
        events = wait_until(enough, WRITE_BOUND_S) or list(
            api.list(page_size=1000, kind="management", **filters).events)
        self.assertEqual(len(events), count, events)
        return events

    def assertChange(self, event, action, decision, resource, **fields):
        self.assertEqual((event.action, event.decision, event.resource),
                         (action, decision, resource))
        self.assertEqual((event.actor, event.actor_key_id), (self.prefix, self.key_id))
        self.assertRegex(event.time, RFC3339_UTC)
        for name, value in fields.items():
            self.assertEqual(getattr(event, name), value, name)
        # Nothing a proxy decision carries.
        self.assertEqual((event.host, event.method, event.path, event.reason), ("", "", "", ""))

    def new_store(self):
        return self.call(self.api.stores.CreateSecretStore,
                         S.secret_store_pb2.CreateSecretStoreRequest(name=unique("mgmt")))

    def test_store_and_secret_calls_leave_one_row_each_with_actor_action_and_resource(self):
        value = "mgmt-value-" + uuid.uuid4().hex
        helpers.record_sensitive(value)
        store = self.new_store()
        self.call(self.api.stores.UpdateSecretStore, S.secret_store_pb2.UpdateSecretStoreRequest(
            store_id=store.id, egress_allowlist=["api.example.com"],
            update_mask={"paths": ["egress_allowlist"]}))
        for _ in range(2):
            self.call(self.api.secrets.SetSecret, S.secret_pb2.SetSecretRequest(
                store_id=store.id, name="API_KEY", value=value))
        self.call(self.api.secrets.DeleteSecret,
                  S.secret_pb2.DeleteSecretRequest(store_id=store.id, name="API_KEY"))
        self.call(self.api.stores.DeleteSecretStore,
                  S.secret_store_pb2.DeleteSecretStoreRequest(store_id=store.id))
        events = self.changes(6, store_id=store.id)
        res = "stores/" + store.id
        sec = res + "/secrets/API_KEY"
        self.assertChange(events[0], "CreateSecretStore", "created", res, store_id=store.id)
        self.assertChange(events[1], "UpdateSecretStore", "updated", res, store_id=store.id)
        self.assertChange(events[2], "SetSecret", "created", sec, store_id=store.id,
                          secret_name="API_KEY", secret_version=1)
        self.assertChange(events[3], "SetSecret", "updated", sec, store_id=store.id,
                          secret_name="API_KEY", secret_version=2)
        self.assertChange(events[4], "DeleteSecret", "deleted", sec, store_id=store.id,
                          secret_name="API_KEY", secret_version=2)
        self.assertChange(events[5], "DeleteSecretStore", "deleted", res, store_id=store.id)
        for e in events:
            raw = e.SerializeToString()
            self.assertNotIn(value.encode(), raw)
            self.assertNotIn(self.key.encode(), raw)
        # Nor in the table, in any column.
        rows = self.db.psql("SELECT audit_events::text FROM audit_events WHERE store_id = '%s'"
                            % store.id)
        self.assertEqual(len(rows.splitlines()), 6)
        self.assertNotIn(value, rows)
        self.assertNotIn(self.key, rows)

    def test_sandbox_checkpoint_and_snapshot_calls_leave_one_row_each(self):
        snapshot = unique("snap")
        self.call(self.sandboxes.CreateSnapshot, S.sandbox_pb2.CreateSnapshotRequest(
            name=snapshot))
        sandbox = self.call(self.sandboxes.CreateSandbox, S.sandbox_pb2.CreateSandboxRequest(
            snapshot=snapshot))
        cp = self.call(self.sandboxes.CreateCheckpoint, S.sandbox_pb2.CreateCheckpointRequest(
            sandbox_id=sandbox.id, name="cp1"))
        fork = self.call(self.sandboxes.CreateSandboxFromCheckpoint,
                         S.sandbox_pb2.CreateSandboxFromCheckpointRequest(checkpoint_id=cp.id))
        self.call(self.sandboxes.DeleteSandbox,
                  S.sandbox_pb2.DeleteSandboxRequest(sandbox_id=fork.id))
        self.call(self.sandboxes.DeleteSnapshot,
                  S.sandbox_pb2.DeleteSnapshotRequest(name=snapshot))
        sb, fk = "sandboxes/" + sandbox.id, "sandboxes/" + fork.id
        made, checkpointed = self.changes(2, sandbox_id=sandbox.id)
        self.assertChange(made, "CreateSandbox", "created", sb, sandbox_id=sandbox.id)
        self.assertChange(checkpointed, "CreateCheckpoint", "created",
                          "%s/checkpoints/%s" % (sb, cp.id), sandbox_id=sandbox.id)
        forked, deleted = self.changes(2, sandbox_id=fork.id)
        self.assertChange(forked, "CreateSandboxFromCheckpoint", "created", fk,
                          sandbox_id=fork.id)
        self.assertChange(deleted, "DeleteSandbox", "deleted", fk, sandbox_id=fork.id)

        def snapshot_rows():
            rows = [e for e in self.api.list(page_size=1000, kind="management").events
                    if e.resource == "snapshots/" + snapshot]
            return rows if len(rows) >= 2 else None
        snaps = wait_until(snapshot_rows, WRITE_BOUND_S)
        self.assertEqual([(e.action, e.decision) for e in snaps or []],
                         [("CreateSnapshot", "created"), ("DeleteSnapshot", "deleted")])
        for e in snaps:
            self.assertChange(e, e.action, e.decision, "snapshots/" + snapshot, sandbox_id="",
                              store_id="")

    def test_a_secret_set_again_after_its_deletion_is_created_and_a_second_delete_is_no_change(self):
        value = "mgmt-again-" + uuid.uuid4().hex
        helpers.record_sensitive(value)
        store = self.new_store()
        for step in ("set", "delete", "set", "set"):
            if step == "set":
                self.call(self.api.secrets.SetSecret, S.secret_pb2.SetSecretRequest(
                    store_id=store.id, name="AGAIN", value=value))
            else:
                self.call(self.api.secrets.DeleteSecret,
                          S.secret_pb2.DeleteSecretRequest(store_id=store.id, name="AGAIN"))
        events = self.changes(5, store_id=store.id)  # CreateSecretStore and the four steps
        self.assertEqual([(e.action, e.decision, e.secret_version) for e in events[1:]],
                         [("SetSecret", "created", 1), ("DeleteSecret", "deleted", 1),
                          ("SetSecret", "created", 2), ("SetSecret", "updated", 3)])
        # A sandbox deleted twice: both calls succeed, one deletion is recorded.
        sandbox = self.call(self.sandboxes.CreateSandbox, S.sandbox_pb2.CreateSandboxRequest())
        for _ in range(2):
            self.call(self.sandboxes.DeleteSandbox,
                      S.sandbox_pb2.DeleteSandboxRequest(sandbox_id=sandbox.id))
        self.assertEqual([(e.action, e.decision) for e in
                          self.changes(2, sandbox_id=sandbox.id)],
                         [("CreateSandbox", "created"), ("DeleteSandbox", "deleted")])
        time.sleep(0.5)  # a wrongly recorded second deletion would be written by now
        self.changes(2, sandbox_id=sandbox.id)

    def test_a_call_that_fails_leaves_no_row(self):
        store = self.new_store()
        missing = str(uuid.uuid4())
        other_store = self.other.stores.CreateSecretStore(
            S.secret_store_pb2.CreateSecretStoreRequest(name=unique("other")),
            metadata=self.other.metadata, timeout=RPC_TIMEOUT_S)
        NOT_FOUND = grpc.StatusCode.NOT_FOUND
        self.assertFails(NOT_FOUND, self.call, self.api.stores.DeleteSecretStore,
                         S.secret_store_pb2.DeleteSecretStoreRequest(store_id=missing))
        self.assertFails(NOT_FOUND, self.call, self.api.stores.DeleteSecretStore,
                         S.secret_store_pb2.DeleteSecretStoreRequest(store_id=other_store.id))
        self.assertFails(NOT_FOUND, self.call, self.api.secrets.DeleteSecret,
                         S.secret_pb2.DeleteSecretRequest(store_id=store.id, name="NOPE"))
        self.assertFails(NOT_FOUND, self.call, self.api.secrets.SetSecret,
                         S.secret_pb2.SetSecretRequest(store_id=other_store.id, name="K",
                                                       value="v"))
        self.assertFails(grpc.StatusCode.ALREADY_EXISTS, self.call,
                         self.api.stores.CreateSecretStore,
                         S.secret_store_pb2.CreateSecretStoreRequest(name=store.name))
        self.assertFails(INVALID_ARGUMENT, self.call, self.api.stores.CreateSecretStore,
                         S.secret_store_pb2.CreateSecretStoreRequest(name="bad name"))
        self.assertFails(NOT_FOUND, self.call, self.sandboxes.DeleteSandbox,
                         S.sandbox_pb2.DeleteSandboxRequest(sandbox_id=missing))
        self.assertFails(NOT_FOUND, self.call, self.sandboxes.CreateSandbox,
                         S.sandbox_pb2.CreateSandboxRequest(secret_store=unique("none")))
        # A successful call after the failed ones: once its row is there, theirs would be.
        self.call(self.api.stores.DeleteSecretStore,
                  S.secret_store_pb2.DeleteSecretStoreRequest(store_id=store.id))
        self.changes(2, store_id=store.id)
        for sid in (missing, other_store.id):
            self.assertEqual(count_rows(self.db, "store_id = '%s' AND action <> ''" % sid),
                             1 if sid == other_store.id else 0)   # other's own CreateSecretStore
            self.assertEqual(count_rows(self.db, "sandbox_id = '%s'" % sid), 0)
        self.assertEqual(self.changes(1, api=self.other, store_id=other_store.id)[0].action,
                         "CreateSecretStore")

    def test_rows_belong_to_the_organization_that_made_the_call(self):
        store = self.new_store()
        self.changes(1, store_id=store.id)
        self.assertEqual(list(self.other.list(store_id=store.id, kind="all").events), [])
        theirs = [e for e in self.other.list(page_size=1000, kind="management").events
                  if e.store_id == store.id or self.prefix == e.actor]
        self.assertEqual(theirs, [])
        self.assertEqual(count_rows(self.db, "store_id = '%s' AND org_id = '%s'"
                                    % (store.id, self.org)), 1)

    def test_kind_selects_proxy_decisions_or_management_calls_or_all_and_defaults_to_proxy(self):
        store = self.new_store()
        sandbox = str(uuid.uuid4())
        self.api.record(org_id=self.org, sandbox_id=sandbox, store_id=store.id,
                        secret_name="API_KEY", decision="substituted", host="api.example.com")
        self.changes(1, store_id=store.id)

        def by_kind(kind):
            return [(e.decision, e.action) for e in self.api.list(
                page_size=1000, store_id=store.id, kind=kind).events]
        self.assertTrue(wait_until(lambda: len(by_kind("all")) == 2, WRITE_BOUND_S),
                        by_kind("all"))
        self.assertEqual(by_kind("management"), [("created", "CreateSecretStore")])
        self.assertEqual(by_kind("proxy"), [("substituted", "")])
        # The default is the proxy's decisions only: a client written against the decisions
        # SPEC §2 lists (substituted, withheld, denied, redacted) never sees another.
        self.assertEqual(by_kind(""), [("substituted", "")])
        self.assertEqual(sorted(by_kind("all")),
                         [("created", "CreateSecretStore"), ("substituted", "")])
        proxy = self.api.list(store_id=store.id, kind="proxy").events[0]
        self.assertEqual((proxy.actor, proxy.actor_key_id, proxy.resource), ("", "", ""))
        self.assertInvalid("kind", self.api.list, kind="everything")

    def test_another_key_of_the_organization_is_named_as_the_actor(self):
        key = self.db.create_api_key(self.org)
        api = Api(SHARED, key)
        self.addCleanup(api.close)
        store = api.stores.CreateSecretStore(
            S.secret_store_pb2.CreateSecretStoreRequest(name=unique("key2")),
            metadata=api.metadata, timeout=RPC_TIMEOUT_S)
        (event,) = self.changes(1, store_id=store.id)
        self.assertEqual(event.actor, key[:12])
        self.assertNotEqual(event.actor_key_id, self.key_id)
        self.assertEqual(event.actor_key_id, self.db.psql(
            "SELECT id FROM api_keys WHERE prefix = '%s'" % key[:12]).strip())


if __name__ == "__main__":
    unittest.main(verbosity=2)
