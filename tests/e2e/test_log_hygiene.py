"""The secret-hygiene sweep over the whole suite (SPEC §3, §4): no log line the suite made any
server or PostgreSQL write holds a secret value, a sealed token, a proxy credential or an API
key that any test used.

The other e2e suites record what they used and keep their logs in SEALGATE_HYGIENE_DIR (see
helpers.py); meson runs this one after them (lowest priority, alone). The shared PostgreSQL
clusters log every statement with its parameters, so a value that reached the database in the
clear would be found here too.
"""

import glob
import json
import os
import sys
import unittest


HYGIENE_DIR = os.environ.get("SEALGATE_HYGIENE_DIR", "")


def load_sensitive(directory):
    found = set()
    for path in glob.glob(os.path.join(directory, "sensitive-*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    found.add(json.loads(line))
    return found


def scan(log_paths, sensitive):
    """(log file name, kind of string, its first characters) for every hit."""
    hits = []
    for path in log_paths:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            data = f.read()
        for s in sensitive:
            if s in data:
                kind = ("token" if s.startswith("osb_sealed_") else
                        "api key" if s.startswith("osk_") else "value or credential")
                hits.append((os.path.basename(path), kind, s[:4] + "..."))
    return hits


class LogHygieneTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not HYGIENE_DIR or not os.path.isdir(HYGIENE_DIR):
            raise unittest.SkipTest("no SEALGATE_HYGIENE_DIR: run the whole suite with meson")
        cls.sensitive = load_sensitive(HYGIENE_DIR)
        cls.logs = sorted(glob.glob(os.path.join(HYGIENE_DIR, "logs", "*.log")))

    def test_the_scan_finds_a_planted_string(self):
        # The sweep below could pass by looking at nothing: show it finds what it looks for.
        planted = os.path.join(HYGIENE_DIR, "planted.txt")
        token = "osb_sealed_" + "0123456789abcdef" * 2
        with open(planted, "w") as f:
            f.write("ts=1 level=info msg=rpc header=" + token + "\n")
        try:
            self.assertEqual(scan([planted], {token, "never-written-value"}),
                             [("planted.txt", "token", "osb_...")])
        finally:
            os.unlink(planted)

    def test_the_suite_recorded_what_it_used_and_kept_its_logs(self):
        tokens = [s for s in self.sensitive if s.startswith("osb_sealed_")]
        keys = [s for s in self.sensitive if s.startswith("osk_")]
        values = [s for s in self.sensitive if not s.startswith(("osb_sealed_", "osk_"))]
        print("recorded: %d tokens, %d API keys, %d values/credentials; %d logs, %d bytes" %
              (len(tokens), len(keys), len(values), len(self.logs),
               sum(os.path.getsize(p) for p in self.logs)), file=sys.stderr)
        self.assertGreater(len(tokens), 10)
        self.assertGreater(len(keys), 10)
        self.assertGreater(len(values), 10)
        self.assertTrue(any("server-" in os.path.basename(p) for p in self.logs))
        self.assertTrue(any("postgresql-" in os.path.basename(p) for p in self.logs))

    def test_no_log_holds_a_value_token_credential_or_api_key(self):
        hits = scan(self.logs, self.sensitive)
        self.assertEqual(hits, [], "secrets found in logs (file, kind, prefix): %s" % hits[:20])


if __name__ == "__main__":
    unittest.main(verbosity=2)
