#!/usr/bin/python3
"""The grpcio side of client.sh: the same load as client_bench.c, from Python.

usage: client_py.py --stubs DIR --health-pb2 FILE --target HOST:PORT
                    --method get-store|health [--store-id ID] [--mode threads|asyncio]
                    [--threads N] [--seconds S] [--warmup S] [--timeout-ms MS]
                    [--watch-pid SERVER_PID]

N calls outstanding at any time on ONE grpcio channel, in one of two shapes:
  threads  N threads share one grpc.insecure_channel, each making one blocking
           call after another (the shape of client_bench.c);
  asyncio  one grpc.aio channel on one event loop, N coroutines each awaiting
           one call after another.
grpcio's blocking API pays for the GIL hand-over on every call, its asyncio
API does not, so client.sh runs both and takes the better as Python's figure.

The API key comes from $SEALGATE_API_KEY (sent as "authorization: Bearer"),
never from argv; client_bench.c sends it the same way, on both methods.

STUBS_DIR holds protoc's --python_out for proto/sealgate/v1/*.proto (put on
sys.path; the top-level package `sealgate` does not clash with grpcio).
FILE is health_pb2.py generated from grpc/health/v1/health.proto, loaded by
path: its tree's top-level `grpc` directory would shadow grpcio on sys.path
(see health_check.py). Calls go through channel.unary_unary with the
messages' own (de)serializers, which is what generated stubs do.

Every response is checked (status OK; the store asked for, or SERVING). A
call counts in the window in which it completed: --warmup seconds untimed,
then --seconds timed. Prints one line of key=value pairs like
client_bench.c's (cpu_s is this process's user + system CPU over the timed
window, grpcio's own threads included) and exits 0 once it has measured;
1 when it could not (the first call failed, ...); 2 on a usage error.
"""

import argparse
import asyncio
import importlib.util
import os
import resource
import sys
import threading
import time

import grpc

GET_STORE_PATH = "/sealgate.v1.SecretStoreService/GetSecretStore"
HEALTH_PATH = "/grpc.health.v1.Health/Check"


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def proc_cpu_seconds(pid):
    """CPU time (user + system) process pid has used, from /proc/PID/stat; -1 if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return -1.0
    # utime and stime are fields 14 and 15; fields[0] here is field 3 (the state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    """CPU time all cores have spent busy (not idle, not iowait), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return -1.0
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def sample_cpu(watch_pid):
    """(this process, the watched server or -1, the whole machine) CPU seconds, now."""
    return (cpu_seconds(), proc_cpu_seconds(watch_pid) if watch_pid else -1.0,
            machine_busy_seconds())


def delta(a, b):
    return -1.0 if a < 0 or b < 0 else b - a


def load_by_path(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Method:
    """What one call sends, and how its answer is checked: check(resp) returns None if
    the answer is right, else what is wrong."""

    def __init__(self, args):
        if args.method == "get-store":
            sys.path.insert(0, args.stubs)
            from sealgate.v1 import resources_pb2, secret_store_pb2
            self.path = GET_STORE_PATH
            self.request = secret_store_pb2.GetSecretStoreRequest(store_id=args.store_id)
            self.serialize = secret_store_pb2.GetSecretStoreRequest.SerializeToString
            self.deserialize = resources_pb2.SecretStore.FromString
            want = args.store_id
            self.check = lambda r: None if r.id == want else f"store {r.id!r}, asked for {want!r}"
        else:
            pb2 = load_by_path("bench_health_pb2", args.health_pb2)
            self.path = HEALTH_PATH
            self.request = pb2.HealthCheckRequest()
            self.serialize = pb2.HealthCheckRequest.SerializeToString
            self.deserialize = pb2.HealthCheckResponse.FromString
            serving = pb2.HealthCheckResponse.SERVING
            self.check = lambda r: None if r.status == serving else f"serving status {r.status}"

    def callable(self, channel):
        return channel.unary_unary(self.path, request_serializer=self.serialize,
                                   response_deserializer=self.deserialize)


class Counts:
    """One worker's tally; a call counts in the window in which it completed."""

    def __init__(self):
        self.calls = self.errors = self.total = 0
        self.first_error = None

    def add(self, window, err):
        t = time.monotonic()
        self.total += 1
        if t >= window[1]:
            return False
        if t >= window[0]:
            if err is None:
                self.calls += 1
            else:
                self.errors += 1
                self.first_error = self.first_error or err
        return True


def rpc_error(err):
    return f"{err.code()} {err.details()}"


def run_threads(args, method, md, timeout):
    with grpc.insecure_channel(args.target) as channel:
        call = method.callable(channel)

        def one():
            try:
                return method.check(call(method.request, metadata=md, timeout=timeout))
            except grpc.RpcError as err:
                return rpc_error(err)

        first = one()
        if first is not None:
            return None, first
        t0 = time.monotonic()
        window = (t0 + args.warmup, t0 + args.warmup + args.seconds)
        counts = [Counts() for _ in range(args.threads)]

        def worker(c):
            while c.add(window, one()):
                pass

        threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in counts]
        for t in threads:
            t.start()
        time.sleep(max(0.0, window[0] - time.monotonic()))
        cpu0 = sample_cpu(args.watch_pid)
        time.sleep(max(0.0, window[1] - time.monotonic()))
        cpu1 = sample_cpu(args.watch_pid)
        for t in threads:
            t.join()
        return (counts, cpu0, cpu1), None


async def run_asyncio(args, method, md, timeout):
    async with grpc.aio.insecure_channel(args.target) as channel:
        call = method.callable(channel)

        async def one():
            try:
                return method.check(await call(method.request, metadata=md, timeout=timeout))
            except grpc.RpcError as err:
                return rpc_error(err)

        first = await one()
        if first is not None:
            return None, first
        t0 = time.monotonic()
        window = (t0 + args.warmup, t0 + args.warmup + args.seconds)
        counts = [Counts() for _ in range(args.threads)]

        async def worker(c):
            while c.add(window, await one()):
                pass

        tasks = [asyncio.create_task(worker(c)) for c in counts]
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        cpu0 = sample_cpu(args.watch_pid)
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        cpu1 = sample_cpu(args.watch_pid)
        await asyncio.gather(*tasks)
        return (counts, cpu0, cpu1), None


def parse_args():
    p = argparse.ArgumentParser(description="grpcio load generator for client.sh")
    p.add_argument("--stubs", required=True)
    p.add_argument("--health-pb2", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--method", required=True, choices=("get-store", "health"))
    p.add_argument("--store-id")
    p.add_argument("--mode", default="asyncio", choices=("threads", "asyncio"))
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--timeout-ms", type=int, default=5000)
    p.add_argument("--watch-pid", type=int, default=0)
    args = p.parse_args()
    if args.method == "get-store" and not args.store_id:
        p.error("--method get-store needs --store-id")
    if not (1 <= args.threads <= 1024 and 0.1 <= args.seconds <= 600 and 0 <= args.warmup <= 600
            and 1 <= args.timeout_ms <= 600000):
        p.error("--threads 1..1024, --seconds 0.1..600, --warmup 0..600, --timeout-ms 1..600000")
    return args


def main():
    args = parse_args()
    method = Method(args)
    key = os.environ.get("SEALGATE_API_KEY", "")
    md = (("authorization", "Bearer " + key),) if key else None
    timeout = args.timeout_ms / 1000.0
    if args.mode == "threads":
        result, first = run_threads(args, method, md, timeout)
    else:
        result, first = asyncio.run(run_asyncio(args, method, md, timeout))
    if result is None:
        print(f"client_py: first call failed: {first}", file=sys.stderr)
        return 1
    counts, cpu0, cpu1 = result
    cpu = cpu1[0] - cpu0[0]
    calls = sum(c.calls for c in counts)
    errors = sum(c.errors for c in counts)
    first_error = next((c.first_error for c in counts if c.first_error), None)
    if first_error:
        print(f"client_py: first error: {first_error}", file=sys.stderr)
    print(f"client=py-{args.mode} method={args.method} threads={args.threads} "
          f"seconds={args.seconds:.3f} calls={calls} errors={errors} "
          f"calls_per_s={calls / args.seconds:.1f} cpu_s={cpu:.3f} "
          f"cpu_us_per_call={cpu * 1e6 / calls if calls else 0:.1f} "
          f"server_cpu_s={delta(cpu0[1], cpu1[1]):.3f} machine_busy_s={delta(cpu0[2], cpu1[2]):.3f} "
          f"total_calls={sum(c.total for c in counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
