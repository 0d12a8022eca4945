"""End-to-end: the installed C client library, as a user of it sees it.

`meson install` puts the build into a scratch root (DESTDIR); the README's example program
(the ```c block after the "example.c" marker) is compiled exactly as the README says,
`cc example.c $(pkg-config --cflags --libs sealgate)`, with pkg-config pointed at that root
(PKG_CONFIG_SYSROOT_DIR), and run against the test server. Also checked: a static build with
`pkg-config --static`, every installed header compiling on its own, and the shared library
exporting the public API only.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers  # noqa: E402

BUILD_DIR = os.environ.get("SEALGATE_BUILD_DIR", os.path.join(helpers.SOURCE_ROOT, "build"))
# The build's sanitizers: a program linked with an instrumented library needs them too.
SANITIZE = os.environ.get("SEALGATE_SANITIZE", "none")


def readme_example():
    with open(os.path.join(helpers.SOURCE_ROOT, "README.md")) as f:
        text = f.read()
    m = re.search(r"<!-- example\.c:[^>]*-->\s*```c\n(.*?)```", text, re.S)
    if m is None:
        raise AssertionError("README.md has no ```c block after an <!-- example.c --> marker")
    # The block is indented as part of a list item: take the indentation off.
    lines = m.group(1).split("\n")
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


class InstalledLibraryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sealgate-e2e-install-")
        cls.root = os.path.join(cls.tmp, "root")
        subprocess.run(["meson", "install", "-C", BUILD_DIR, "--no-rebuild", "--quiet",
                        "--destdir", cls.root], check=True, stdout=subprocess.DEVNULL)
        pcs = glob.glob(os.path.join(cls.root, "**", "sealgate.pc"), recursive=True)
        assert len(pcs) == 1, pcs
        cls.env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]),
                       PKG_CONFIG_SYSROOT_DIR=cls.root)
        cls.libdir = os.path.dirname(os.path.dirname(pcs[0]))
        cls.server = helpers.Server()
        _, cls.key = helpers.shared_db().create_org("install")

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def pkg_config(self, *args):
        out = subprocess.run(["pkg-config", *args, "sealgate"], env=self.env, check=True,
                             capture_output=True, text=True).stdout
        return out.split()

    def cc(self, source, output, *extra):
        cflags = [] if SANITIZE == "none" else ["-fsanitize=" + SANITIZE]
        proc = subprocess.run(["cc", *cflags, source, "-o", output, *extra], env=self.env,
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def run_example(self, exe):
        env = dict(os.environ, SEALGATE_ADDR=self.server.target, SEALGATE_API_KEY=self.key,
                   LD_LIBRARY_PATH=self.libdir, MY_ANTHROPIC_KEY="sk-ant-install-test")
        return subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60)

    def test_readme_example_builds_and_runs(self):
        src = os.path.join(self.tmp, "example.c")
        with open(src, "w") as f:
            f.write(readme_example())
        exe = os.path.join(self.tmp, "example")
        self.cc(src, exe, *self.pkg_config("--cflags", "--libs"))
        r = self.run_example(exe)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "store agents-c: ANTHROPIC_API_KEY version 1\n")
        # Run again: the store exists now, and the program says so and fails.
        r = self.run_example(exe)
        self.assertEqual(r.returncode, 1)
        self.assertIn("CreateSecretStore: ALREADY_EXISTS", r.stderr)
        self.assertNotIn("sk-ant-install-test", r.stdout + r.stderr + self.server.log())

    def test_static_link(self):
        src = os.path.join(self.tmp, "static.c")
        with open(src, "w") as f:
            f.write(readme_example().replace('"agents-c"', '"agents-static"'))
        exe = os.path.join(self.tmp, "example-static")
        libs = [x for x in self.pkg_config("--static", "--libs") if x != "-lsealgate"]
        self.cc(src, exe, *self.pkg_config("--cflags"), os.path.join(self.libdir,
                                                                        "libsealgate.a"), *libs)
        r = self.run_example(exe)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("agents-static", r.stdout)

    def test_every_header_compiles_alone(self):
        include = os.path.join(self.root, "usr", "local", "include")
        headers = glob.glob(os.path.join(include, "sealgate", "**", "*.h"), recursive=True)
        self.assertGreaterEqual(len(headers), 12)
        for h in headers:
            src = os.path.join(self.tmp, "one.c")
            rel = os.path.relpath(h, include)
            if rel.startswith("sealgate/imports/"):
                rel = os.path.relpath(h, os.path.join(include, "sealgate", "imports"))
            with open(src, "w") as f:
                f.write("#include <%s>\nint main(void) { return 0; }\n" % rel)
            proc = subprocess.run(["cc", "-Wall", "-Werror", "-c", src, "-o",
                                   os.path.join(self.tmp, "one.o"),
                                   *self.pkg_config("--cflags")],
                                  env=self.env, capture_output=True, text=True)
            self.assertEqual(proc.returncode, 0, "%s: %s" % (rel, proc.stderr))

    def test_shared_library_exports_the_api_only(self):
        so = glob.glob(os.path.join(self.libdir, "libsealgate.so.*.*"))
        self.assertEqual(len(so), 1, so)
        out = subprocess.run(["nm", "-D", "--defined-only", so[0]], check=True,
                             capture_output=True, text=True).stdout
        names = [line.split()[-1] for line in out.splitlines() if line.strip()]
        self.assertIn("sg_channel_new", names)
        self.assertIn("sealgate_v1_secret_store_service_create_secret_store", names)
        self.assertIn("sealgate__v1__secret_store__descriptor", names)
        allowed = re.compile(r"^(sealgate_|sg_channel_|sg_stream_|sg_status_code_name$|"
                             r"sealgate__v1__|grpc_health_v1_|grpc__health__v1__|"
                             r"google__protobuf__(empty|field_mask)__|_init$|_fini$|__)")
        leaked = [n for n in names if not allowed.match(n) and not n.startswith("_")]
        self.assertEqual(leaked, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
