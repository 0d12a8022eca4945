"""Interop: the store/secret scenario run by clients in other languages, generated from proto/.

  - python/scenario.py: grpcio with the stubs protoc and grpc_python_plugin generate (the
    README's example for other-language users);
  - node/scenario.js: @grpc/grpc-js with @grpc/proto-loader reading proto/ at run time, its
    npm dependencies pinned by node/package-lock.json (`npm ci` in tests/interop/node, which
    tests/run.sh runs).

Each client runs as its own process against sealgate-test-server on a private PostgreSQL
cluster (tests/e2e/helpers.py), with a fresh organization, exactly as a user runs it:
SEALGATE_ADDR and SEALGATE_API_KEY in the environment. It must exit 0 having printed every
check of the scenario; the two clients print the same checks.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import helpers  # noqa: E402  (after the path tweak)

# Bound on one client run: the scenario is some 30 calls, each with a 10 s deadline of its own.
CLIENT_TIMEOUT_S = 120

# The lines both clients print, in order ("ok  <check>" then, for most, ": <detail>").
CHECKS = [
    "CreateSecretStore",
    "GetSecretStore",
    "ListSecretStores",
    "UpdateSecretStore rename",
    "UpdateSecretStore clear allowlist",
    "SetSecret version 1",
    "SetSecret version 2",
    "ListSecrets",
    "DeleteSecret",
    "duplicate store name: ALREADY_EXISTS",
    "bad store name: INVALID_ARGUMENT 'name:",
    "unknown store: NOT_FOUND",
    "no API key: UNAUTHENTICATED",
    "bad update_mask path: INVALID_ARGUMENT 'update_mask:",
    "value too large: INVALID_ARGUMENT 'value:",
    "errors changed nothing",
    "DeleteSecretStore",
    "GetSecretStore after delete: NOT_FOUND",
]

NODE_DIR = os.path.join(HERE, "node")
NODE_SETUP = "run `npm ci` in tests/interop/node (tests/run.sh does it before the tests)"

SERVER = None


def setUpModule():
    global SERVER
    SERVER = helpers.Server("--threads", "2")


def tearDownModule():
    if SERVER is not None:
        SERVER.cleanup()   # raises on a bad exit or a sanitizer report in the server's log


def generate_python_stubs(out):
    """The stubs a Python user generates: protoc + grpc_python_plugin over proto/sealgate/v1."""
    proto_root = os.path.join(helpers.SOURCE_ROOT, "proto")
    protos = sorted(os.path.join("sealgate", "v1", f)
                    for f in os.listdir(os.path.join(proto_root, "sealgate", "v1"))
                    if f.endswith(".proto"))
    subprocess.run(["protoc", "-I" + proto_root, "-I" + helpers.PROTOBUF_INCLUDE,
                    "--python_out=" + out, "--grpc_out=" + out,
                    "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin"] + protos,
                   check=True, timeout=60)


class ClientScenarioTest(unittest.TestCase):
    """Base: runs one client's scenario with a new organization's key."""

    def run_client(self, argv, extra_env=None, cwd=None):
        _, api_key = helpers.shared_db().create_org("interop-" + self.id().rsplit(".", 1)[-1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALGATE_")}
        env.update(SEALGATE_ADDR=SERVER.target, SEALGATE_API_KEY=api_key, **(extra_env or {}))
        try:
            out = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            self.fail("%s did not finish within %ss\n--- stdout\n%s\n--- stderr\n%s" % (
                " ".join(argv), CLIENT_TIMEOUT_S, e.stdout, e.stderr))
        report = "%s exited %d\n--- stdout\n%s--- stderr\n%s--- server log (tail)\n%s" % (
            " ".join(argv), out.returncode, out.stdout, out.stderr, SERVER.log()[-3000:])
        self.assertEqual(out.returncode, 0, report)
        lines = [l for l in out.stdout.splitlines() if l.startswith("ok  ")]
        self.assertEqual(len(lines), len(CHECKS), report)
        for line, expected in zip(lines, CHECKS):
            self.assertTrue(line.startswith("ok  " + expected), "%r is not the check %r\n%s" % (
                line, expected, report))
        self.assertEqual(out.stdout.splitlines()[-1], "scenario passed", report)
        self.assertNotIn("FAIL", out.stderr, report)
        return out


class PythonClientTest(ClientScenarioTest):

    def test_python_grpcio_client_runs_the_store_secret_scenario(self):
        stubs = tempfile.mkdtemp(prefix="sealgate-interop-py-")
        self.addCleanup(shutil.rmtree, stubs, ignore_errors=True)
        generate_python_stubs(stubs)
        out = self.run_client([sys.executable, os.path.join(HERE, "python", "scenario.py")],
                              extra_env={"PYTHONPATH": stubs})
        self.assertIn("Python grpcio", out.stdout)


class NodeClientTest(ClientScenarioTest):

    def test_node_grpc_js_client_runs_the_store_secret_scenario(self):
        node = shutil.which("node")
        self.assertIsNotNone(node, "no `node` on PATH: deploy/install-deps.sh test installs "
                             "Debian's nodejs and npm; then " + NODE_SETUP)
        for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
            self.assertTrue(
                os.path.isfile(os.path.join(NODE_DIR, "node_modules", package, "package.json")),
                "%s is not installed in tests/interop/node/node_modules: %s" % (package,
                                                                                NODE_SETUP))
        out = self.run_client([node, os.path.join(NODE_DIR, "scenario.js")], cwd=NODE_DIR)
        self.assertIn("Node @grpc/grpc-js", out.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
