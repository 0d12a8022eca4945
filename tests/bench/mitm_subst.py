"""mitmproxy addon for tests/bench/proxy.sh: the header substitution a user would write for
mitmproxy instead of running sealgate's proxy, as the reference row of the benchmark.

    mitmdump -s mitm_subst.py --set subst_map=FILE --set subst_resolve=HOST:ADDR ...

subst_map: a file of "TOKEN VALUE" lines (read at start, never logged). In every request header
value, each sealed token (osb_sealed_ + 32 lowercase hex) found in the map is replaced by its
value; nothing else is touched (no query, no body: the benchmark's requests carry their token in
one header only, and sealgate's own scan of the query and the body costs it more than this).

subst_resolve: HOST:ADDR, a fixed address for HOST (like sealgate's --proxy-resolve), so the
benchmark's test name needs no /etc/hosts entry; the TLS SNI and the certificate check upstream
still use HOST.
"""

import re

from mitmproxy import ctx

TOKEN = re.compile(r"osb_sealed_[0-9a-f]{32}")


class Subst:
    def __init__(self):
        self.values = {}
        self.resolve = None

    def load(self, loader):
        loader.add_option("subst_map", str, "", "file of 'TOKEN VALUE' lines")
        loader.add_option("subst_resolve", str, "", "HOST:ADDR, a fixed address for HOST")

    def configure(self, updated):
        if "subst_map" in updated and ctx.options.subst_map:
            values = {}
            with open(ctx.options.subst_map) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2:
                        values[parts[0]] = parts[1]
            self.values = values
        if "subst_resolve" in updated and ctx.options.subst_resolve:
            host, _, addr = ctx.options.subst_resolve.partition(":")
            self.resolve = (host.lower(), addr)

    def _swap(self, m):
        return self.values.get(m.group(0), m.group(0))

    def request(self, flow):
        headers = flow.request.headers
        for name in list(headers.keys()):
            values = headers.get_all(name)
            if any("osb_sealed_" in v for v in values):
                headers.set_all(name, [TOKEN.sub(self._swap, v) for v in values])

    def server_connect(self, data):
        if self.resolve is not None and data.server.address is not None:
            host, port = data.server.address
            if host.lower() == self.resolve[0]:
                if data.server.sni is None:
                    data.server.sni = host
                data.server.address = (self.resolve[1], port)


addons = [Subst()]
