"""The deployment kit under deploy/, checked without running it (no Docker, no cluster here).

- every YAML file parses (multi-document) and passes yamllint --strict with deploy/.yamllint;
- the Kubernetes manifests: the expected kinds; gRPC probes on the gRPC port; non-root,
  read-only, no-privilege containers with resources; Secrets mounted with defaultMode 0400;
  the PodDisruptionBudgets and Services selecting the Deployments' pods; the grace period
  above --shutdown-grace; every referenced Secret and ConfigMap in the examples;
- deploy/compose.yaml: PostgreSQL 15 with pg_isready, the migration, two gateways and a proxy
  node, nginx with the config, secrets and volumes that exist;
- every SEALGATE_* variable the manifests, the compose file, the env example and the
  Dockerfile set is a flag of `sealgate serve` (its --help, from $SEALGATE_BIN);
- deploy/nginx/sealgate.conf passes `nginx -t` inside a minimal main configuration, and its
  upstream lists the compose file's gateways;
- deploy/systemd/sealgate.service passes `systemd-analyze verify` with no warning;
- deploy/Dockerfile: stages FROM debian:bookworm, a non-root USER, HEALTHCHECK with sealctl,
  COPY sources that exist, apt packages that exist (apt-cache show).

Each check returns the problems it finds in a given copy of the tree; the Broken* tests break
a copy on purpose and make sure the check notices.
"""

import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

SOURCE_ROOT = os.environ.get(
    "SEALGATE_SOURCE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SEALGATE_BIN = os.environ.get("SEALGATE_BIN", os.path.join(SOURCE_ROOT, "build", "server", "sealgate"))

GRPC_PORT = 50051
ADMIN_PORT = 9090
PROXY_PORT = 3128


def serve_flags():
    """The SEALGATE_* names `sealgate serve --help` lists."""
    out = subprocess.run([SEALGATE_BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
    names = set(re.findall(r"\[(SEALGATE_[A-Z0-9_]+)\]", out.stdout + out.stderr))
    if len(names) < 10:
        raise AssertionError("sealgate serve --help listed no SEALGATE_* variables:\n" + out.stdout + out.stderr)
    return names


def read(path):
    with open(path) as f:
        return f.read()


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def yaml_files(root):
    files = []
    for pattern in ("**/*.yaml", "**/*.yml"):
        files += glob.glob(os.path.join(root, "deploy", pattern), recursive=True)
    return sorted(set(files))


def k8s_objects(root):
    objs = []
    for path in sorted(glob.glob(os.path.join(root, "deploy", "k8s", "*.yaml"))):
        for doc in load_all(path):
            if doc.get("kind") != "Kustomization":
                objs.append((os.path.basename(path), doc))
    return objs


def port_of(hostport):
    return int(str(hostport).rsplit(":", 1)[1])


def pod_specs(objs):
    """(where, pod spec, pod labels) of every Deployment and Job."""
    out = []
    for fname, o in objs:
        if o.get("kind") in ("Deployment", "Job"):
            tpl = o["spec"]["template"]
            out.append((f"{fname}: {o['kind']} {o['metadata']['name']}", tpl["spec"],
                        tpl.get("metadata", {}).get("labels", {})))
    return out


# ---- checks: each returns a list of problems ---------------------------------------------------

def check_yaml_parses(root):
    problems = []
    files = yaml_files(root)
    if len(files) < 5:
        problems.append(f"only {len(files)} YAML files under deploy/")
    for path in files:
        try:
            load_all(path)
        except yaml.YAMLError as e:
            problems.append(f"{path}: {e}")
    return problems


def check_yamllint(root):
    files = yaml_files(root)
    config = os.path.join(root, "deploy", ".yamllint")
    args = ["yamllint", "--strict", "-f", "parsable"]
    args += ["-c", config] if os.path.exists(config) else ["-d", "relaxed"]
    r = subprocess.run(args + files, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or r.stdout.strip():
        return [f"yamllint (exit {r.returncode}):\n{r.stdout}{r.stderr}"]
    return []


def check_k8s(root):
    p = []
    objs = k8s_objects(root)
    kinds = {}
    for fname, o in objs:
        for field in ("apiVersion", "kind", "metadata"):
            if field not in o:
                p.append(f"{fname}: an object without {field}")
        kinds.setdefault(o.get("kind"), []).append(o)
        if "namespace" in o.get("metadata", {}):
            p.append(f"{fname}: {o['metadata'].get('name')} names a namespace")
    for kind in ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Job", "Secret"):
        if kind not in kinds:
            p.append(f"no {kind} in deploy/k8s")
    if p:
        return p

    kust = load_all(os.path.join(root, "deploy", "k8s", "kustomization.yaml"))[0]
    listed = set(kust.get("resources", []))
    files = {f for f, _ in objs} - {"secrets.example.yaml", "migrate-job.yaml"}
    if listed != files:
        p.append(f"kustomization.yaml lists {sorted(listed)}, the manifests are {sorted(files)}")

    deployments = {o["metadata"]["name"]: o for o in kinds["Deployment"]}
    if "sealgate-gateway" not in deployments or "sealgate-proxy" not in deployments:
        return p + [f"expected Deployments sealgate-gateway and sealgate-proxy, got {sorted(deployments)}"]
    if deployments["sealgate-gateway"]["spec"].get("replicas") != 3:
        p.append("sealgate-gateway: replicas is not 3")

    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in kinds["ConfigMap"]}
    secrets = {}
    for o in kinds["Secret"]:
        data = dict(o.get("stringData", {}))
        data.update(o.get("data", {}) or {})
        secrets[o["metadata"]["name"]] = data
        for key, value in data.items():
            if "REPLACE_ME" not in str(value):
                p.append(f"Secret {o['metadata']['name']}: {key} is not a marked placeholder (REPLACE_ME)")
            if re.search(r"\b[0-9a-fA-F]{64}\b", str(value)) or "-----BEGIN" in str(value):
                p.append(f"Secret {o['metadata']['name']}: {key} looks like real key material")

    shared = {}
    for data in configmaps.values():
        shared.update(data)
    grace = int(shared.get("SEALGATE_SHUTDOWN_GRACE", 30))
    if "SEALGATE_GRPC_LISTEN" in shared and port_of(shared["SEALGATE_GRPC_LISTEN"]) != GRPC_PORT:
        p.append(f"ConfigMap: SEALGATE_GRPC_LISTEN is not on port {GRPC_PORT}")
    if "SEALGATE_ADMIN_LISTEN" in shared and port_of(shared["SEALGATE_ADMIN_LISTEN"]) != ADMIN_PORT:
        p.append(f"ConfigMap: SEALGATE_ADMIN_LISTEN is not on port {ADMIN_PORT}")

    for where, spec, labels in pod_specs(objs):
        sc = spec.get("securityContext", {})
        is_deployment = "Deployment" in where
        if spec.get("enableServiceLinks") is not False:
            p.append(f"{where}: enableServiceLinks is not false (Kubernetes would inject SEALGATE_* look-alikes)")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "secret" in v:
                if v["secret"].get("defaultMode") != 0o400:
                    p.append(f"{where}: Secret volume {v['name']} without defaultMode 0400")
                for item in v["secret"].get("items", []):
                    if item.get("mode", 0o400) != 0o400:
                        p.append(f"{where}: Secret volume {v['name']} item {item['key']} mode is not 0400")
                if v["secret"]["secretName"] not in secrets:
                    p.append(f"{where}: Secret {v['secret']['secretName']} is not in secrets.example.yaml")
        containers = spec.get("initContainers", []) + spec.get("containers", [])
        for c in containers:
            cw = f"{where} container {c['name']}"
            csc = c.get("securityContext", {})
            if csc.get("runAsNonRoot", sc.get("runAsNonRoot")) is not True:
                p.append(f"{cw}: runAsNonRoot is not true")
            if csc.get("runAsUser", sc.get("runAsUser")) == 0:
                p.append(f"{cw}: runs as uid 0")
            if csc.get("allowPrivilegeEscalation") is not False:
                p.append(f"{cw}: allowPrivilegeEscalation is not false")
            if csc.get("readOnlyRootFilesystem") is not True:
                p.append(f"{cw}: readOnlyRootFilesystem is not true")
            if "ALL" not in csc.get("capabilities", {}).get("drop", []):
                p.append(f"{cw}: capabilities are not all dropped")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        p.append(f"{cw}: no resources.{kind}.{r}")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    p.append(f"{cw}: mounts {m['name']}, which is not a volume")
                elif "secret" in volumes[m["name"]] and not m.get("readOnly"):
                    p.append(f"{cw}: Secret volume {m['name']} mounted writable")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in secrets.get(ref["name"], {}):
                    p.append(f"{cw}: Secret {ref['name']} key {ref['key']} is not in secrets.example.yaml")
                if e["name"] == "SEALGATE_DB" and ref is None:
                    p.append(f"{cw}: SEALGATE_DB is not from a Secret")
            for ef in c.get("envFrom", []):
                name = ef.get("configMapRef", {}).get("name")
                if name is not None and name not in configmaps:
                    p.append(f"{cw}: ConfigMap {name} is not defined")
        if not is_deployment:
            continue
        main = spec["containers"][0]
        ports = {cp["name"]: cp["containerPort"] for cp in main.get("ports", [])}
        if ports.get("grpc") != GRPC_PORT or ports.get("admin") != ADMIN_PORT:
            p.append(f"{where}: container ports grpc/admin are not {GRPC_PORT}/{ADMIN_PORT}: {ports}")
        for probe in ("readinessProbe", "livenessProbe"):
            pr = main.get(probe)
            if pr is None or "grpc" not in pr:
                p.append(f"{where}: no {probe} of type grpc")
            elif pr["grpc"].get("port") != GRPC_PORT:
                p.append(f"{where}: {probe} is not on the gRPC port {GRPC_PORT}")
        prestop = main.get("lifecycle", {}).get("preStop", {})
        sleep = 0
        if "exec" in prestop:
            cmd = prestop["exec"]["command"]
            if "sleep" in cmd[0]:
                sleep = int(cmd[1])
        elif "sleep" in prestop:
            sleep = int(prestop["sleep"]["seconds"])
        if sleep <= 0:
            p.append(f"{where}: no preStop sleep")
        tgp = spec.get("terminationGracePeriodSeconds", 30)
        if tgp <= grace + sleep:
            p.append(f"{where}: terminationGracePeriodSeconds {tgp} is not above preStop {sleep} + "
                     f"--shutdown-grace {grace}")
        tpl_labels = labels
        sel = deployments[where.split()[-1]]["spec"]["selector"]["matchLabels"]
        if any(tpl_labels.get(k) != v for k, v in sel.items()):
            p.append(f"{where}: selector does not match the pod labels")

    def selected(selector):
        return [n for n, d in deployments.items()
                if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())]

    for pdb in kinds["PodDisruptionBudget"]:
        sel = pdb["spec"].get("selector", {}).get("matchLabels", {})
        if not sel or len(selected(sel)) != 1:
            p.append(f"PDB {pdb['metadata']['name']}: selector {sel} matches {selected(sel)}, not one Deployment")
    covered = {n for pdb in kinds["PodDisruptionBudget"] for n in selected(pdb["spec"]["selector"]["matchLabels"])}
    if covered != set(deployments):
        p.append(f"Deployments without a PodDisruptionBudget: {set(deployments) - covered}")

    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    for name, s in services.items():
        targets = selected(s["spec"].get("selector", {}))
        if not targets:
            p.append(f"Service {name}: selects no Deployment")
        for port in s["spec"]["ports"]:
            for t in targets:
                names = {cp["name"] for cp in deployments[t]["spec"]["template"]["spec"]["containers"][0]["ports"]}
                if isinstance(port.get("targetPort"), str) and port["targetPort"] not in names:
                    p.append(f"Service {name}: targetPort {port['targetPort']} is not a port of {t}")
    grpc_svc = services.get("sealgate-grpc")
    if grpc_svc is None or selected(grpc_svc["spec"]["selector"]) != ["sealgate-gateway"]:
        p.append("no Service sealgate-grpc selecting the gateways")
    else:
        gp = [x for x in grpc_svc["spec"]["ports"] if x["port"] == GRPC_PORT]
        if not gp or gp[0].get("appProtocol") not in ("kubernetes.io/h2c", "grpc", "h2c"):
            p.append("Service sealgate-grpc: the gRPC port has no appProtocol h2c/grpc")
    proxy_svc = services.get("sealgate-proxy")
    if proxy_svc is None or selected(proxy_svc["spec"]["selector"]) != ["sealgate-proxy"] or \
            proxy_svc["spec"]["ports"][0]["port"] != PROXY_PORT:
        p.append(f"no Service sealgate-proxy on {PROXY_PORT} selecting the proxy nodes")
    admin = services.get("sealgate-admin")
    if admin is None:
        p.append("no Service sealgate-admin")
    else:
        ann = admin["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(ADMIN_PORT):
            p.append("Service sealgate-admin: no prometheus.io scrape annotations for the admin port")
        if sorted(selected(admin["spec"]["selector"])) != sorted(deployments):
            p.append("Service sealgate-admin does not select every node")

    proxy_env = {e["name"]: e.get("value") for e in deployments["sealgate-proxy"]["spec"]["template"]["spec"]
                 ["containers"][0].get("env", [])}
    if "SEALGATE_PROXY_LISTEN" not in proxy_env or port_of(proxy_env["SEALGATE_PROXY_LISTEN"]) != PROXY_PORT:
        p.append(f"sealgate-proxy: SEALGATE_PROXY_LISTEN is not set to port {PROXY_PORT}")
    jobs = [o for o in kinds["Job"] if o["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate"]]
    if not jobs:
        p.append("no Job running `sealgate migrate`")
    return p


def compose(root):
    return load_all(os.path.join(root, "deploy", "compose.yaml"))[0]


def check_compose(root):
    p = []
    c = compose(root)
    svcs = c.get("services", {})
    pg = svcs.get("postgres", {})
    if pg.get("image") != "postgres:15-bookworm":
        p.append("compose: no postgres service on postgres:15-bookworm")
    if "pg_isready" not in " ".join(pg.get("healthcheck", {}).get("test", [])):
        p.append("compose: the postgres healthcheck does not run pg_isready")
    if svcs.get("migrate", {}).get("command") != ["migrate"]:
        p.append("compose: no migrate service running `sealgate migrate`")
    serving = {n: s for n, s in svcs.items() if s.get("command") == ["serve"]}
    gateways = sorted(n for n, s in serving.items() if "SEALGATE_PROXY_LISTEN" not in s.get("environment", {}))
    proxies = sorted(n for n, s in serving.items() if "SEALGATE_PROXY_LISTEN" in s.get("environment", {}))
    if len(gateways) < 2 or len(proxies) < 1:
        p.append(f"compose: gateways {gateways}, proxies {proxies}: want two gateways and one proxy node")
    for name, s in serving.items():
        env = s.get("environment", {})
        for key in ("SEALGATE_DB", "SEALGATE_ROOT_KEY_FILE", "SEALGATE_DATA_DIR", "SEALGATE_GRPC_LISTEN"):
            if key not in env:
                p.append(f"compose: {name} does not set {key}")
        grace = int(env.get("SEALGATE_SHUTDOWN_GRACE", 30))
        sgp = s.get("stop_grace_period", "10s")
        if not re.fullmatch(r"\d+s", sgp) or int(sgp[:-1]) <= grace:
            p.append(f"compose: {name} stop_grace_period {sgp} is not above {grace}s")
        if s.get("depends_on", {}).get("migrate", {}).get("condition") != "service_completed_successfully":
            p.append(f"compose: {name} does not wait for the migration")
    secrets = c.get("secrets", {})
    for name, s in secrets.items():
        if "file" not in s:
            p.append(f"compose: secret {name} is not a file")
    for name, s in svcs.items():
        for ref in s.get("secrets", []):
            ref = ref if isinstance(ref, str) else ref["source"]
            if ref not in secrets:
                p.append(f"compose: {name} uses undefined secret {ref}")
        for v in s.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source")
            if src.startswith("."):
                if not os.path.exists(os.path.join(root, "deploy", src)):
                    p.append(f"compose: {name} mounts {src}, which does not exist")
            elif src not in (c.get("volumes") or {}):
                p.append(f"compose: {name} uses undeclared volume {src}")
    if "root_key" not in secrets or not any("proxy_ca" in s for s in secrets):
        p.append("compose: the root key and the proxy CA are not secrets")
    nginx = svcs.get("nginx", {})
    mounts = " ".join(v if isinstance(v, str) else v["source"] for v in nginx.get("volumes", []))
    if "nginx/sealgate.conf" not in mounts:
        p.append("compose: nginx does not mount nginx/sealgate.conf")
    conf = read(os.path.join(root, "deploy", "nginx", "sealgate.conf"))
    upstream = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.M)
    if sorted(h for h, _ in upstream) != gateways or any(int(port) != GRPC_PORT for _, port in upstream):
        p.append(f"nginx upstream {upstream} is not the compose gateways {gateways} on {GRPC_PORT}")
    return p


def env_names(root):
    """(where, name) of every SEALGATE_* variable the deployment files set."""
    out = []
    for fname, o in k8s_objects(root):
        if o.get("kind") == "ConfigMap":
            out += [(fname, k) for k in o.get("data", {})]
        if o.get("kind") == "Secret":
            # Secrets' keys become variables only through secretKeyRef, checked below.
            continue
    for where, spec, _ in pod_specs(k8s_objects(root)):
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            out += [(where, e["name"]) for e in c.get("env", [])]
    comp_path = os.path.join(root, "deploy", "compose.yaml")
    c = compose(root)
    for name, s in c.get("services", {}).items():
        env = s.get("environment", {})
        keys = env.keys() if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        if name != "postgres":
            out += [(f"compose {name}", k) for k in keys]
    out += [("compose interpolation", k) for k in re.findall(r"\$\{(\w+)", read(comp_path))]
    example = os.path.join(root, "deploy", "systemd", "sealgate.env.example")
    for line in read(example).splitlines(True):
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            out.append(("sealgate.env.example", m.group(1)))
    for instr, arg in dockerfile(root):
        if instr == "ENV":
            out += [("Dockerfile ENV", k) for k in re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", arg)]
    return out


def check_env_names(root):
    flags = serve_flags()
    p = []
    names = env_names(root)
    if len(names) < 20:
        p.append(f"only {len(names)} variables found: the scan is broken")
    for where, name in names:
        if not name.startswith("SEALGATE_"):
            p.append(f"{where}: {name} is not a SEALGATE_* variable")
        elif name not in flags:
            p.append(f"{where}: {name} is not a `sealgate serve` flag")
    return p


def check_nginx(root):
    with tempfile.TemporaryDirectory(prefix="sealgate-nginx-") as tmp:
        conf = read(os.path.join(root, "deploy", "nginx", "sealgate.conf"))
        # Upstream host names must resolve when nginx reads the file: the compose names do not here.
        conf = re.sub(r"^(\s*server\s+)[\w.-]+:", r"\g<1>127.0.0.1:", conf, flags=re.M)
        with open(os.path.join(tmp, "sealgate.conf"), "w") as f:
            f.write(conf)
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
                    f"http {{\n  access_log off;\n  client_body_temp_path {tmp}/body;\n"
                    f"  proxy_temp_path {tmp}/proxy;\n  fastcgi_temp_path {tmp}/fastcgi;\n"
                    f"  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n"
                    f"  include {tmp}/sealgate.conf;\n}}\n")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        r = subprocess.run([nginx, "-t", "-p", tmp, "-e", f"{tmp}/error.log", "-c", f"{tmp}/nginx.conf"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or "[warn]" in r.stderr or "[emerg]" in r.stderr:
            return [f"nginx -t (exit {r.returncode}):\n{r.stderr}"]
        if "grpc_pass" not in conf or not re.search(r"listen\s+\S+\s+http2", conf + " ") and "http2 on" not in conf:
            return ["nginx config: no grpc_pass or no HTTP/2 listener"]
    return []


def check_systemd(root):
    unit = read(os.path.join(root, "deploy", "systemd", "sealgate.service"))
    p = []
    for want in (r"^Type=simple$", r"^User=sealgate$", r"^EnvironmentFile=/etc/sealgate/sealgate\.env$",
                 r"^ExecStart=/usr/local/bin/sealgate serve$", r"^ExecReload=/bin/kill -HUP \$MAINPID$",
                 r"^KillSignal=SIGTERM$", r"^Restart=on-failure$", r"^NoNewPrivileges=yes$",
                 r"^ProtectSystem=strict$", r"^ReadWritePaths=/var/lib/sealgate$", r"^CapabilityBoundingSet=$",
                 r"^SystemCallFilter=@system-service$", r"^MemoryDenyWriteExecute=yes$", r"^LimitCORE=0$"):
        if not re.search(want, unit, re.M):
            p.append(f"sealgate.service: no line matching {want}")
    m = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M)
    env = read(os.path.join(root, "deploy", "systemd", "sealgate.env.example"))
    g = re.search(r"^SEALGATE_SHUTDOWN_GRACE=(\d+)$", env, re.M)
    grace = int(g.group(1)) if g else 30
    if m is None or int(m.group(1)) <= grace:
        p.append(f"sealgate.service: TimeoutStopSec is not above the shutdown grace ({grace} s)")
    with tempfile.TemporaryDirectory(prefix="sealgate-unit-") as tmp:
        path = os.path.join(tmp, "sealgate.service")
        with open(path, "w") as f:
            f.write(unit.replace("/usr/local/bin/sealgate", os.path.abspath(SEALGATE_BIN)))
        r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, SYSTEMD_LOG_COLOR="0"))
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or "sealgate.service" in out:
            p.append(f"systemd-analyze verify (exit {r.returncode}):\n{out}")
    return p


def dockerfile(root):
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    out, cur = [], ""
    for line in read(os.path.join(root, "deploy", "Dockerfile")).splitlines(True):
        s = line.rstrip("\n")
        if not cur and (s.strip().startswith("#") or not s.strip()):
            continue
        if s.strip().startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        instr, _, arg = cur.strip().partition(" ")
        out.append((instr.upper(), arg.strip()))
        cur = ""
    return out


def check_dockerfile(root):
    p = []
    ins = dockerfile(root)
    args = {}
    for i, a in ins:
        if i == "ARG" and "=" in a:
            k, v = a.split("=", 1)
            args[k] = v
    stages = []
    for i, a in ins:
        if i == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), a.split()[0])
            stages.append(image)
            if not re.fullmatch(r"debian:bookworm(-slim)?", image):
                p.append(f"Dockerfile: FROM {image} is not debian:bookworm(-slim)")
    if len(stages) < 2:
        p.append("Dockerfile: not a multi-stage build")
    last = max(n for n, (i, _) in enumerate(ins) if i == "FROM")
    final = ins[last:]
    users = [a for i, a in final if i == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        p.append("Dockerfile: the final stage does not switch to a non-root USER")
    hc = [a for i, a in final if i == "HEALTHCHECK"]
    if not hc or "sealctl" not in hc[0] or "health" not in hc[0]:
        p.append("Dockerfile: no HEALTHCHECK running `sealctl health`")
    if ("ENTRYPOINT", '["sealgate"]') not in final or ("CMD", '["serve"]') not in final:
        p.append('Dockerfile: not ENTRYPOINT ["sealgate"] CMD ["serve"]')
    exposed = {int(x.split("/")[0]) for i, a in final if i == "EXPOSE" for x in a.split()}
    for port in (GRPC_PORT, PROXY_PORT, ADMIN_PORT):
        if port not in exposed:
            p.append(f"Dockerfile: port {port} is not exposed")
    for i, a in ins:
        if i not in ("COPY", "ADD"):
            continue
        if i == "ADD":
            p.append("Dockerfile: ADD (use COPY)")
        words = [w for w in a.split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in a.split()):
            continue
        for src in words[:-1]:
            if not glob.glob(os.path.join(root, src)):
                p.append(f"Dockerfile: COPY source {src} does not exist in the repository")
    packages = set()
    for i, a in ins:
        if i == "RUN" and "apt-get install" in a:
            for cmd in a.split("&&"):
                if "apt-get install" in cmd:
                    words = cmd.split("apt-get install", 1)[1].split()
                    packages |= {w for w in words if not w.startswith("-") and re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", w)}
    if len(packages) < 10:
        p.append(f"Dockerfile: only {sorted(packages)} installed")
    r = subprocess.run(["apt-cache", "show", "--no-all-versions"] + sorted(packages), capture_output=True,
                       text=True, timeout=120)
    known = set(re.findall(r"^Package: (\S+)$", r.stdout, re.M))
    for pkg in sorted(packages - known):
        p.append(f"Dockerfile: apt package {pkg} is unknown to apt-cache")
    ignore = os.path.join(root, ".dockerignore")
    if not os.path.exists(ignore) or not {".git", "build*/"} <= set(read(ignore).split()):
        p.append(".dockerignore does not leave out .git and build*/")
    return p


# ---- the tests ---------------------------------------------------------------------------------

CHECKS = {
    "yaml": check_yaml_parses,
    "yamllint": check_yamllint,
    "k8s": check_k8s,
    "compose": check_compose,
    "env": check_env_names,
    "nginx": check_nginx,
    "systemd": check_systemd,
    "dockerfile": check_dockerfile,
}


class DeployTest(unittest.TestCase):
    def check(self, name):
        problems = CHECKS[name](SOURCE_ROOT)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_yaml_parses(self):
        self.check("yaml")

    def test_yamllint(self):
        self.check("yamllint")

    def test_kubernetes_manifests(self):
        self.check("k8s")

    def test_compose(self):
        self.check("compose")

    def test_env_names_are_serve_flags(self):
        self.check("env")

    def test_nginx_config(self):
        self.check("nginx")

    def test_systemd_unit(self):
        self.check("systemd")

    def test_dockerfile(self):
        self.check("dockerfile")


class BrokenDeployTest(unittest.TestCase):
    """Each check, run on a copy of the tree with one thing broken, reports it."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sealgate-deploy-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def broken(self, check, path, old, new, expect):
        root = tempfile.mkdtemp(dir=self.tmp)
        shutil.copytree(os.path.join(SOURCE_ROOT, "deploy"), os.path.join(root, "deploy"), symlinks=True)
        shutil.copy(os.path.join(SOURCE_ROOT, ".dockerignore"), root)
        for d in ("server", "client", "include", "proto", "tests"):
            os.symlink(os.path.join(SOURCE_ROOT, d), os.path.join(root, d))
        for f in ("meson.build", "meson_options.txt"):
            if os.path.exists(os.path.join(SOURCE_ROOT, f)):
                shutil.copy(os.path.join(SOURCE_ROOT, f), root)
        target = os.path.join(root, path)
        text = read(target)
        self.assertIn(old, text, f"{path} no longer has {old!r}: update this test")
        with open(target, "w") as f:
            f.write(text.replace(old, new, 1))
        problems = CHECKS[check](root)
        self.assertTrue(any(re.search(expect, x) for x in problems),
                        f"check {check} missed a broken {path}: {problems}")

    def test_yaml_syntax(self):
        self.broken("yaml", "deploy/k8s/pdb.yaml", "  maxUnavailable: 1\n", "  maxUnavailable: [1\n", "pdb.yaml")

    def test_yamllint_style(self):
        self.broken("yamllint", "deploy/k8s/pdb.yaml", "kind: PodDisruptionBudget\n",
                    "kind: PodDisruptionBudget   \n", "trailing")

    def test_probe_port(self):
        self.broken("k8s", "deploy/k8s/gateway.yaml", "          readinessProbe:\n            grpc:\n              port: 50051",
                    "          readinessProbe:\n            grpc:\n              port: 50052", "readinessProbe")

    def test_secret_mode(self):
        self.broken("k8s", "deploy/k8s/proxy.yaml", "defaultMode: 0400", "defaultMode: 0440", "defaultMode 0400")

    def test_pdb_selector(self):
        self.broken("k8s", "deploy/k8s/pdb.yaml", "app.kubernetes.io/component: gateway\n---",
                    "app.kubernetes.io/component: gateways\n---", "PDB")

    def test_run_as_non_root(self):
        self.broken("k8s", "deploy/k8s/migrate-job.yaml", "runAsNonRoot: true\n            allowPrivilegeEscalation",
                    "runAsNonRoot: false\n            allowPrivilegeEscalation", "runAsNonRoot")

    def test_placeholder_secret(self):
        self.broken("k8s", "deploy/k8s/secrets.example.yaml", '"REPLACE_ME_WITH_THE_OUTPUT_OF_openssl_rand_-hex_32"',
                    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "placeholder")

    def test_compose_migration(self):
        self.broken("compose", "deploy/compose.yaml", "condition: service_completed_successfully\n    stop_grace",
                    "condition: service_started\n    stop_grace", "wait for the migration")

    def test_unknown_env_name(self):
        self.broken("env", "deploy/k8s/configmap.yaml", "SEALGATE_THREADS:", "SEALGATE_THREAD_COUNT:",
                    "SEALGATE_THREAD_COUNT is not")

    def test_unknown_env_name_in_example(self):
        self.broken("env", "deploy/systemd/sealgate.env.example", "#SEALGATE_TLS_CLIENT_CA=", "#SEALGATE_CLIENT_CA=",
                    "SEALGATE_CLIENT_CA is not")

    def test_nginx_directive(self):
        self.broken("nginx", "deploy/nginx/sealgate.conf", "grpc_next_upstream error timeout",
                    "grpc_next_upstream error timeout unavailable", "nginx -t")

    def test_systemd_directive(self):
        self.broken("systemd", "deploy/systemd/sealgate.service", "ProtectHome=yes", "ProtectHomes=yes",
                    "systemd-analyze")

    def test_dockerfile_package(self):
        self.broken("dockerfile", "deploy/Dockerfile", "libpq5 ", "libpq6 ", "libpq6")

    def test_dockerfile_user(self):
        self.broken("dockerfile", "deploy/Dockerfile", "USER 10001:10001", "USER root", "non-root USER")

    def test_dockerfile_copy(self):
        self.broken("dockerfile", "deploy/Dockerfile", "COPY include/ include/", "COPY includes/ include/",
                    "includes/")


if __name__ == "__main__":
    unittest.main(verbosity=2)
