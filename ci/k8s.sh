#!/usr/bin/env bash
# The Kubernetes manifests of k8s/, offline (no cluster, no Docker; a few seconds after
# the installs):
#
#   1. the copies kustomize needs (course CSVs, rules, dashboards) match their originals;
#   2. every overlay, and every overlay plus the components a user would add, renders
#      with `kubectl kustomize` (kustomize v5) from the repository as it is: no Secret,
#      no generated file needed;
#   3. every rendered object validates with `kubernetes-validate --strict` for each
#      Kubernetes version EKS supports (1.30 to 1.34, or the newest the package holds);
#      Istio's objects (CRDs, no schema there) get a check of the fields we use;
#   4. a policy test over every rendered workload: both probes on the course paths,
#      requests and limits, non-root / read-only / no capabilities / seccomp, images
#      scalelab/<binary>:0.1.0 and never :latest, the whole app's requests under 0.5 CPU
#      and 512 Mi, secrets only by name, NetworkPolicies, PDBs, RBAC, ...; and that the
#      policy refuses what it must (hpa + scaler on one Deployment, both Istio fault
#      components at once, and mutations of a passing render);
#   5. k8s/secrets.sh against a stub kubectl, and k8s/eks/cluster.yaml's fields.
#
#   bash ci/k8s.sh
set -euo pipefail
cd "$(dirname "$0")/.."

command -v kubectl >/dev/null || { echo "ci/k8s.sh: kubectl (with kustomize) is required" >&2; exit 1; }
python3 -c 'import kubernetes_validate, yaml' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check 'kubernetes-validate>=1.34' PyYAML
command -v kubernetes-validate >/dev/null || { echo "ci/k8s.sh: kubernetes-validate is not on PATH" >&2; exit 1; }
echo "ci/k8s.sh: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"

echo "== copies kustomize reads (k8s/sync-copies.sh --check)"
bash k8s/sync-copies.sh --check

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== k8s/secrets.sh against a stub kubectl"
real_kubectl=$(command -v kubectl)
mkdir -p "$work/stub" "$work/applied"
cat >"$work/stub/kubectl" <<EOF
#!/usr/bin/env bash
# No API server here: \`get\` answers as the stub is told, \`apply\` records its input,
# the rest (create --dry-run=client, label --local) is the real kubectl.
for a in "\$@"; do
  case \$a in
    get) [ -e "$work/secret-exists" ] && exit 0; echo 'Error from server (NotFound)' >&2; exit 1 ;;
    apply) n=\$(ls "$work/applied" | wc -l); cat >"$work/applied/\$n.yaml"; exit 0 ;;
  esac
done
exec "$real_kubectl" "\$@"
EOF
chmod +x "$work/stub/kubectl"
PATH="$work/stub:$PATH" bash k8s/secrets.sh >"$work/secrets-1.log"
mkdir -p "$work/applied-1" && mv "$work/applied"/* "$work/applied-1/"
PATH="$work/stub:$PATH" bash k8s/secrets.sh --rotate >"$work/secrets-2.log"
mkdir -p "$work/applied-2" && mv "$work/applied"/* "$work/applied-2/"
touch "$work/secret-exists"
PATH="$work/stub:$PATH" bash k8s/secrets.sh >"$work/secrets-3.log"
python3 - "$work" <<'PY'
import base64, glob, re, sys, yaml
work = sys.argv[1]
def secret(d):
    for f in sorted(glob.glob(f"{d}/*.yaml")):
        doc = yaml.safe_load(open(f))
        if doc["kind"] == "Secret":
            return doc
    sys.exit(f"k8s/secrets.sh applied no Secret ({d})")
a, b = secret(f"{work}/applied-1"), secret(f"{work}/applied-2")
keys = {"jwt-secret", "datastore-token", "loader-token", "scaler-token", "postgres-password", "postgres-url"}
for s in (a, b):
    assert s["metadata"]["name"] == "scalelab-secrets" and s["metadata"]["namespace"] == "scalelab", s["metadata"]
    assert set(s["data"]) == keys, sorted(s["data"])
    v = {k: base64.b64decode(x).decode() for k, x in s["data"].items()}
    for k in keys - {"postgres-url"}:
        assert re.fullmatch(r"[0-9a-f]{64}", v[k]), f"{k}: not 32 random bytes in hex"
    assert v["postgres-url"] == f"postgres://scalelab:{v['postgres-password']}@postgres:5432/scalelab"
    assert len(set(v[k] for k in keys - {"postgres-url"})) == 5, "two keys share a value"
va = {k: base64.b64decode(x) for k, x in a["data"].items()}
vb = {k: base64.b64decode(x) for k, x in b["data"].items()}
assert all(va[k] != vb[k] for k in keys), "two runs gave the same value"
assert glob.glob(f"{work}/applied/*") == [], "an existing Secret was replaced without --rotate"
assert "kept" in open(f"{work}/secrets-3.log").read()
print(f"k8s/secrets.sh: ok ({len(keys)} keys, 64 hex digits each, new values per run, an existing Secret kept)")
PY

# Render from the files a fresh clone has (tracked, or new and not ignored): nothing
# generated or ignored may be needed. Outside a git work tree, the tree itself.
mkdir -p "$work/clone"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard -- k8s | xargs -0 cp --parents -t "$work/clone"
else
  cp -r k8s "$work/clone/"
fi
echo "== render (from the $(find "$work/clone/k8s" -type f | wc -l) files of k8s/ a clone has), validate, policy"
python3 - "$work" <<'PY'
import copy, glob, json, os, re, subprocess, sys, time, tomllib
import yaml
import kubernetes_validate.utils as kv
from kubernetes_validate.version import __version__ as kv_version

WORK = sys.argv[1]
ROOT = os.getcwd()  # the originals (gatling/resources, observability/)
CLONE = os.path.join(WORK, "clone")  # what kustomize renders
T0 = time.monotonic()

OVERLAYS = ["local", "local-postgres", "eks"]
# What a user would add to an overlay (fault components go after istio, one at a time).
COMBOS = [
    (),
    ("hpa",),
    ("scaler",),
    ("observability",),
    ("istio",),
    ("istio", "istio-fault-abort"),
    ("istio", "istio-fault-delay"),
    ("hpa", "istio", "observability"),
    ("scaler", "istio", "observability"),
    ("scaler", "istio", "istio-fault-delay", "observability"),
]
# Must be refused by the policy test: two controllers for one Deployment's count.
REFUSED = [("hpa", "scaler")]
# Must be refused by the Istio check: both fault components (the second would replace
# the first's `fault`).
REFUSED_ISTIO = [("istio", "istio-fault-abort", "istio-fault-delay")]
WANTED_VERSIONS = ["1.30", "1.31", "1.32", "1.33", "1.34"]

VERSION = "0.1.0"
BINARIES = {"database-gateway", "user", "music", "playlist", "fibonacci", "loader", "scaler"}
# Container -> (port, path prefix of its probes): the course's.
PROBES = {
    "database-gateway": (30002, "/api/v1/datastore"),
    "user": (30000, "/api/v1/user"),
    "music": (30001, "/api/v1/music"),
    "playlist": (30003, "/api/v1/playlist"),
    "fibonacci": (30004, "/api/v1/fibonacci"),
    "scaler": (30010, ""),
}
# Images not ours, each pinned.
THIRD_PARTY = {"postgres": "docker.io/library/postgres:15"}
BUDGET_CPU, BUDGET_MEM = 0.5, 512 * 2**20
APP_SERVICES = ["user", "music", "playlist", "fibonacci"]
GATEWAY_CLIENTS = {"user", "music", "playlist", "loader"}
SCALER_RULES = {
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    ("apps", "deployments/scale"): {"get", "update"},
    ("discovery.k8s.io", "endpointslices"): {"list"},
}


def fail(msg):
    print(f"ci/k8s.sh: FAILED: {msg}")
    sys.exit(1)


# ---------------------------------------------------------------- rendering
def render(overlay, comps):
    name = "+".join((overlay,) + comps)
    d = os.path.join(WORK, "kustomize", name)
    os.makedirs(d, exist_ok=True)
    rel = lambda p: os.path.relpath(os.path.join(CLONE, "k8s", p), d)
    k = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel(f"overlays/{overlay}")],
    }
    if comps:
        k["components"] = [rel(f"components/{c}") for c in comps]
    with open(os.path.join(d, "kustomization.yaml"), "w") as f:
        yaml.safe_dump(k, f)
    p = subprocess.run(["kubectl", "kustomize", d], capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"{name}: kubectl kustomize: {p.stderr.strip()}")
    objs = [o for o in yaml.safe_load_all(p.stdout) if o]
    return name, objs


def key(o):
    return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])


def is_istio(o):
    return o["apiVersion"].split("/")[0].endswith("istio.io")


# ---------------------------------------------------------------- helpers
def cpu(q):
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def mem(q):
    q = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for u, m in units.items():
        if q.endswith(u):
            return float(q[: -len(u)]) * m
    return float(q)


def selects(selector, labels):
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def workloads(objs):
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "Job")]


def pod(o):
    return o["spec"]["template"]


def find(objs, kind, name=None):
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def scaler_targets(objs):
    """Deployments the scaler's config autoscales ([autoscale.<name>] in scaler.toml)."""
    out = {}
    for cm in find(objs, "ConfigMap"):
        text = (cm.get("data") or {}).get("scaler.toml")
        if text is not None:
            out.update(tomllib.loads(text).get("autoscale", {}))
    return out


# ---------------------------------------------------------------- the policy test
def policy(objs, overlay):
    """{check: (items checked, [violations])} over one rendered combination."""
    R = {}

    def check(name):
        def deco(fn):
            probs = []
            n = fn(probs)
            R[name] = (n, probs)
        return deco

    wl = workloads(objs)
    containers = [(o, c) for o in wl for c in pod(o)["spec"].get("initContainers", []) + pod(o)["spec"]["containers"]]
    cname = lambda o, c: f"{o['kind']} {o['metadata']['name']}/{c['name']}"

    @check("probes on the course paths")
    def _(p):
        n = 0
        for o, c in containers:
            if o["kind"] == "Job":
                continue  # one-shots: no probes
            n += 1
            live, ready = c.get("livenessProbe"), c.get("readinessProbe")
            if not live or not ready:
                p.append(f"{cname(o, c)}: needs both a liveness and a readiness probe")
                continue
            if c["name"] in PROBES:
                port, prefix = PROBES[c["name"]]
                ports = {x.get("name"): x["containerPort"] for x in c.get("ports", [])}
                if port not in ports.values():
                    p.append(f"{cname(o, c)}: does not listen on its course port {port}")
                for probe, leaf in ((live, "health"), (ready, "readiness")):
                    g = probe.get("httpGet") or {}
                    pp = ports.get(g.get("port"), g.get("port"))
                    if g.get("path") != f"{prefix}/{leaf}" or pp != port:
                        p.append(f"{cname(o, c)}: probe {g.get('path')} on {pp}, want {prefix}/{leaf} on {port}")
        return n

    @check("requests and limits")
    def _(p):
        for o, c in containers:
            r = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in (r.get(kind) or {}):
                        p.append(f"{cname(o, c)}: no {kind}.{res}")
            try:
                if cpu(r["requests"]["cpu"]) > cpu(r["limits"]["cpu"]) or mem(r["requests"]["memory"]) > mem(r["limits"]["memory"]):
                    p.append(f"{cname(o, c)}: requests above limits")
            except KeyError:
                pass
        return len(containers)

    @check("security context")
    def _(p):
        for o, c in containers:
            ps = pod(o)["spec"].get("securityContext") or {}
            cs = c.get("securityContext") or {}
            eff = lambda k: cs.get(k, ps.get(k))
            bad = []
            if eff("runAsNonRoot") is not True:
                bad.append("runAsNonRoot")
            if eff("runAsUser") != 65532:
                bad.append("runAsUser 65532")
            if cs.get("readOnlyRootFilesystem") is not True:
                bad.append("readOnlyRootFilesystem")
            if cs.get("allowPrivilegeEscalation") is not False:
                bad.append("allowPrivilegeEscalation false")
            if cs.get("privileged"):
                bad.append("not privileged")
            caps = cs.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
                bad.append("capabilities drop ALL, add none")
            if (eff("seccompProfile") or {}).get("type") != "RuntimeDefault":
                bad.append("seccompProfile RuntimeDefault")
            if bad:
                p.append(f"{cname(o, c)}: wants {', '.join(bad)}")
        for o in wl:
            s = pod(o)["spec"]
            if s.get("hostNetwork") or s.get("hostPID") or s.get("hostIPC"):
                p.append(f"{o['kind']} {o['metadata']['name']}: host namespaces")
            if any("hostPath" in v for v in s.get("volumes", [])):
                p.append(f"{o['kind']} {o['metadata']['name']}: hostPath volume")
        return len(containers)

    @check("images")
    def _(p):
        for o, c in containers:
            img = c["image"]
            if img.endswith(":latest") or ":" not in img.rsplit("/", 1)[-1]:
                p.append(f"{cname(o, c)}: {img} is not pinned (never :latest)")
            elif img.startswith("scalelab/") or c["name"] in BINARIES:
                if img != f"scalelab/{c['name']}:{VERSION}" or c["name"] not in BINARIES:
                    p.append(f"{cname(o, c)}: {img}, want scalelab/<binary>:{VERSION} (docker/build.sh)")
            elif THIRD_PARTY.get(c["name"]) != img:
                p.append(f"{cname(o, c)}: {img} is not an allowed third-party image")
        return len(containers)

    @check("requests of the whole app < 0.5 CPU, 512 Mi")
    def _(p):
        tc = tm = 0.0
        for o in wl:
            n = o["spec"].get("replicas", 1) if o["kind"] != "Job" else o["spec"].get("parallelism", 1)
            for c in pod(o)["spec"]["containers"]:
                r = (c.get("resources") or {}).get("requests") or {}
                tc += n * cpu(r.get("cpu", 0))
                tm += n * mem(r.get("memory", 0))
        R["_sum"] = (tc, tm)
        if tc >= BUDGET_CPU or tm >= BUDGET_MEM:
            p.append(f"requests {tc * 1000:.0f}m CPU, {tm / 2**20:.0f} Mi: over 500m / 512 Mi")
        return len(wl)

    @check("service accounts and tokens")
    def _(p):
        sas = {o["metadata"]["name"]: o for o in find(objs, "ServiceAccount")}
        for o in wl:
            s = pod(o)["spec"]
            sa = s.get("serviceAccountName", "default")
            if sa not in sas or sa == "default":
                p.append(f"{o['kind']} {o['metadata']['name']}: its own ServiceAccount, not {sa}")
                continue
            mount = s.get("automountServiceAccountToken", sas[sa].get("automountServiceAccountToken", True))
            if mount != (sa == "scaler"):
                p.append(f"{o['kind']} {o['metadata']['name']}: API token mounted={mount} (only the scaler's)")
        for name, sa in sas.items():
            if sa.get("automountServiceAccountToken", True) != (name == "scaler"):
                p.append(f"ServiceAccount {name}: automountServiceAccountToken should be {name == 'scaler'}")
        return len(wl) + len(sas)

    @check("secrets by name only")
    def _(p):
        n = 0
        if find(objs, "Secret"):
            p.append("a Secret is rendered: its values would be in the repository")
        for o, c in containers:
            s = pod(o)["spec"]
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            vols = {v["name"]: v for v in s.get("volumes", [])}
            for e in c.get("env", []):
                n += 1
                if re.search(r"TOKEN|SECRET|PASSWORD", e["name"]) and not e["name"].endswith("_FILE"):
                    p.append(f"{cname(o, c)}: {e['name']} set in the manifest; use {e['name']}_FILE")
                if e["name"].endswith("_FILE") and e["name"] != "SCALER_CONFIG":
                    path = e.get("value", "")
                    d, f = os.path.split(path)
                    v = vols.get(mounts.get(d, ""), {})
                    items = {i["path"] for i in (v.get("secret") or {}).get("items", [])}
                    if (v.get("secret") or {}).get("secretName") != "scalelab-secrets" or f not in items:
                        p.append(f"{cname(o, c)}: {e['name']}={path} is not a key of the mounted scalelab-secrets")
            for v in s.get("volumes", []):
                if "secret" in v and v["secret"]["secretName"] != "scalelab-secrets":
                    p.append(f"{cname(o, c)}: mounts secret {v['secret']['secretName']}")
        for name in ("user", "music", "playlist"):
            for o in find(objs, "Deployment", name):
                env = {e["name"]: e.get("value") for e in pod(o)["spec"]["containers"][0].get("env", [])}
                if env.get("AUTH_MODE") != "jwt" or "JWT_SECRET_FILE" not in env:
                    p.append(f"Deployment {name}: AUTH_MODE=jwt with JWT_SECRET_FILE")
        return n

    @check("disruption budgets")
    def _(p):
        pdbs = find(objs, "PodDisruptionBudget")
        n = 0
        for o in wl:
            if o["kind"] == "Job":
                continue
            n += 1
            labels = pod(o)["metadata"].get("labels", {})
            if not any(selects(b["spec"].get("selector"), labels) for b in pdbs):
                p.append(f"{o['kind']} {o['metadata']['name']}: no PodDisruptionBudget")
        return n

    @check("network policies")
    def _(p):
        nps = find(objs, "NetworkPolicy")
        if not any(n["spec"].get("podSelector") == {} and "Ingress" in n["spec"].get("policyTypes", []) and not n["spec"].get("ingress") for n in nps):
            p.append("no default deny of ingress")
        gw = [pod(o)["metadata"]["labels"] for o in find(objs, "Deployment", "database-gateway")]
        for n in nps:
            if not gw or not selects(n["spec"]["podSelector"], gw[0]):
                continue
            for rule in n["spec"].get("ingress", []):
                for peer in rule.get("from", [{}]) or [{}]:
                    names = set()
                    sel = peer.get("podSelector")
                    if sel and not peer.get("namespaceSelector") and not peer.get("ipBlock"):
                        names = {v for e in sel.get("matchExpressions", []) if e["key"] == "app.kubernetes.io/name" and e["operator"] == "In" for v in e["values"]}
                        if "app.kubernetes.io/name" in sel.get("matchLabels", {}):
                            names.add(sel["matchLabels"]["app.kubernetes.io/name"])
                    if not names or not names <= GATEWAY_CLIENTS:
                        p.append(f"NetworkPolicy {n['metadata']['name']}: lets {peer} reach the gateway (only {sorted(GATEWAY_CLIENTS)})")
        for o in wl:
            if o["kind"] == "Job":
                continue
            labels = pod(o)["metadata"]["labels"]
            if not any(selects(n["spec"]["podSelector"], labels) and n["spec"].get("ingress") for n in nps):
                p.append(f"{o['kind']} {o['metadata']['name']}: no NetworkPolicy admits anything to it")
        return len(nps)

    @check("services select pods")
    def _(p):
        svcs = find(objs, "Service")
        for s in svcs:
            pods = [pod(o) for o in wl if selects({"matchLabels": s["spec"].get("selector", {})}, pod(o)["metadata"]["labels"])]
            if not pods:
                p.append(f"Service {s['metadata']['name']}: selects no pod")
            for port in s["spec"]["ports"]:
                tp = port.get("targetPort", port["port"])
                for t in pods:
                    cps = [(x.get("name"), x["containerPort"]) for c in t["spec"]["containers"] for x in c.get("ports", [])]
                    if not any(tp in (nm, num) for nm, num in cps):
                        p.append(f"Service {s['metadata']['name']}: targetPort {tp} not on its pods")
        return len(svcs)

    @check("autoscaling: one controller per Deployment")
    def _(p):
        hpas = find(objs, "HorizontalPodAutoscaler")
        hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in hpas}
        sc = scaler_targets(objs)
        deps = {o["metadata"]["name"]: o for o in find(objs, "Deployment")}
        for both in sorted(hpa_targets & set(sc)):
            p.append(f"Deployment {both}: both an HPA and the scaler (scaler.toml [autoscale.{both}]) set its replicas")
        for h in hpas:
            s, t = h["spec"], h["spec"]["scaleTargetRef"]
            if t["kind"] != "Deployment" or t["name"] not in deps:
                p.append(f"HPA {h['metadata']['name']}: targets no Deployment here")
            m = s.get("metrics", [])
            if (s.get("minReplicas"), s.get("maxReplicas")) != (1, 10) or len(m) != 1 or m[0]["resource"]["name"] != "cpu" \
                    or m[0]["resource"]["target"].get("averageUtilization") != 50 \
                    or "stabilizationWindowSeconds" not in s.get("behavior", {}).get("scaleDown", {}):
                p.append(f"HPA {h['metadata']['name']}: want CPU 50%, min 1, max 10, a scaleDown stabilization")
        for name, cfg in sc.items():
            if name not in deps:
                p.append(f"scaler.toml [autoscale.{name}]: no such Deployment")
            if (cfg.get("policy"), cfg.get("min"), cfg.get("max")) != ("littles", 1, 10):
                p.append(f"scaler.toml [autoscale.{name}]: want policy littles, min 1, max 10")
        if sc and set(sc) != set(APP_SERVICES):
            p.append(f"scaler.toml autoscales {sorted(sc)}, want {APP_SERVICES}")
        for name in hpa_targets | set(sc):
            if name in deps and "replicas" in deps[name]["spec"]:
                p.append(f"Deployment {name}: `replicas` in the manifest would undo the autoscaler's count on apply")
        return len(hpas) + len(sc)

    @check("scaler: leader election and least-privilege RBAC")
    def _(p):
        dep = find(objs, "Deployment", "scaler")
        if not dep:
            return 0
        d = dep[0]
        c = pod(d)["spec"]["containers"][0]
        env = {e["name"]: e for e in c.get("env", [])}
        if d["spec"].get("replicas") != 2:
            p.append("scaler: 2 replicas (a leader and a standby)")
        if c.get("args") != ["k8s"]:
            p.append(f"scaler: args {c.get('args')}, want ['k8s']")
        for var, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
            if env.get(var, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != path:
                p.append(f"scaler: {var} from the downward API ({path})")
        cfg = env.get("SCALER_CONFIG", {}).get("value", "")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in pod(d)["spec"]["volumes"]}
        cmv = vols.get(mounts.get(os.path.dirname(cfg), ""), {}).get("configMap", {}).get("name")
        cm = find(objs, "ConfigMap", cmv) if cmv else []
        if cfg != "/etc/scalelab/scaler.toml" or not cm or os.path.basename(cfg) not in cm[0]["data"]:
            p.append("scaler: SCALER_CONFIG=/etc/scalelab/scaler.toml from its ConfigMap")
        roles = find(objs, "Role", "scaler")
        got = {}
        for r in roles[0]["rules"] if roles else []:
            if r.get("resourceNames") or r.get("nonResourceURLs"):
                p.append(f"scaler Role: unexpected rule {r}")
            for g in r["apiGroups"]:
                for res in r["resources"]:
                    got.setdefault((g, res), set()).update(r["verbs"])
        if got != SCALER_RULES:
            p.append(f"scaler Role: {got}, want only {SCALER_RULES}")
        if find(objs, "ClusterRole") or find(objs, "ClusterRoleBinding"):
            p.append("cluster-wide RBAC: the scaler works in its namespace only")
        rb = find(objs, "RoleBinding", "scaler")
        if not rb or rb[0]["roleRef"] != {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scaler"} \
                or rb[0]["subjects"] != [{"kind": "ServiceAccount", "name": "scaler", "namespace": "scalelab"}]:
            p.append("scaler RoleBinding: Role scaler to ServiceAccount scalelab/scaler")
        if pod(d)["spec"].get("serviceAccountName") != "scaler":
            p.append("scaler: runs as ServiceAccount scaler")
        return 1

    @check("loader Job and course data")
    def _(p):
        jobs = find(objs, "Job", "loader")
        if len(jobs) != 1:
            p.append("one loader Job")
            return 0
        s = pod(jobs[0])["spec"]
        c = s["containers"][0]
        if c.get("args") != ["data", "/course"]:
            p.append(f"loader: args {c.get('args')}, want ['data', '/course'] (as Compose)")
        m = {x["mountPath"]: x["name"] for x in c.get("volumeMounts", [])}
        v = {x["name"]: x for x in s["volumes"]}
        cmn = v.get(m.get("/course", ""), {}).get("configMap", {}).get("name")
        cm = find(objs, "ConfigMap", cmn) if cmn else []
        if not cm:
            p.append("loader: /course from a generated ConfigMap")
            return 1
        for f in ("users.csv", "music.csv", "playlist.csv"):
            if cm[0]["data"].get(f) != open(os.path.join(ROOT, "gatling/resources", f), newline="").read():
                p.append(f"loader: {f} differs from gatling/resources/{f}")
        if not re.fullmatch(r"course-data-[a-z0-9]{10}", cmn):
            p.append(f"loader: ConfigMap {cmn} without a content hash (a Job would not see new data)")
        if "sidecar.istio.io/inject" not in pod(jobs[0])["metadata"].get("annotations", {}) and \
                any(n["metadata"].get("labels", {}).get("istio-injection") == "enabled" for n in find(objs, "Namespace")):
            p.append("loader: a sidecar would keep the Job from completing")
        return 1

    @check("writable paths")
    def _(p):
        for o, c in containers:
            mounts = [m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")]
            vols = {v["name"]: v for v in pod(o)["spec"].get("volumes", [])}
            for m in c.get("volumeMounts", []):
                v = vols.get(m["name"])
                if v is None and not any(t["metadata"]["name"] == m["name"] for t in o["spec"].get("volumeClaimTemplates", [])):
                    p.append(f"{cname(o, c)}: mounts {m['name']}, no such volume")
            if c["name"] in ("user", "music", "playlist", "fibonacci", "loader") and mounts:
                p.append(f"{cname(o, c)}: writes nowhere, yet mounts {mounts} writable")
        return len(containers)

    @check(f"overlay {overlay}")
    def _(p):
        gw = find(objs, "Deployment", "database-gateway")[0]
        s = gw["spec"]
        c = pod(gw)["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        vols = {v["name"]: v for v in pod(gw)["spec"].get("volumes", [])}
        if overlay == "local":
            claim = vols.get("data", {}).get("persistentVolumeClaim", {}).get("claimName")
            if s.get("replicas") != 1 or s.get("strategy", {}).get("type") != "Recreate":
                p.append("local: the SQLite gateway has one replica and the Recreate strategy")
            if not env.get("DATABASE_URL", "").startswith("sqlite:///data/") or not find(objs, "PersistentVolumeClaim", claim or "-") \
                    or "emptyDir" in vols.get("data", {}):
                p.append("local: SQLite under /data on a PersistentVolumeClaim")
        elif overlay == "local-postgres":
            st = find(objs, "StatefulSet", "postgres")
            if "DATABASE_URL" in env or env.get("DATABASE_URL_FILE") != "/run/scalelab/postgres-url" or not st \
                    or not st[0]["spec"].get("volumeClaimTemplates") or not find(objs, "Service", "postgres"):
                p.append("local-postgres: a postgres StatefulSet on a claim, the gateway's URL from the secret file")
        elif overlay == "eks":
            sa = find(objs, "ServiceAccount", "database-gateway")[0]
            arn = sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
            if not re.fullmatch(r"arn:aws:iam::\d{12}:role/scalelab-database-gateway", arn):
                p.append(f"eks: the gateway's ServiceAccount needs its IRSA role ARN, got {arn!r}")
            if not (env.get("DATABASE_URL") or "").startswith("dynamodb://") or not env.get("AWS_REGION") or "data" in vols:
                p.append("eks: DATABASE_URL=dynamodb://, AWS_REGION, no data volume")
        return 1

    return R


# ---------------------------------------------------------------- Istio's fields
def istio_check(objs):
    """The fields of Istio's CRDs that we use; [] when fine."""
    p = []
    ist = [o for o in objs if is_istio(o)]
    svcs = {s["metadata"]["name"]: s for s in find(objs, "Service")}
    gws = {g["metadata"]["name"] for g in find(objs, "Gateway")}
    drs = {d["spec"]["host"]: d for d in find(objs, "DestinationRule")}
    pods = [pod(o) for o in find(objs, "Deployment")]
    known = {"Gateway", "VirtualService", "DestinationRule"}
    dur = re.compile(r"^\d+(\.\d+)?(ms|s|m|h)$")
    for o in ist:
        if o["kind"] not in known or o["apiVersion"] not in ("networking.istio.io/v1", "networking.istio.io/v1beta1"):
            p.append(f"{o['apiVersion']} {o['kind']}: not checked by ci/k8s.sh")
        if o["metadata"].get("namespace") != "scalelab":
            p.append(f"{o['kind']} {o['metadata']['name']}: not in scalelab")
    for g in find(objs, "Gateway"):
        s = g["spec"]
        if not s.get("selector"):
            p.append(f"Gateway {g['metadata']['name']}: no selector")
        for srv in s.get("servers", []):
            pt = srv.get("port", {})
            if not isinstance(pt.get("number"), int) or pt.get("protocol") not in ("HTTP", "HTTPS", "HTTP2", "GRPC", "TCP", "TLS") \
                    or not pt.get("name") or not srv.get("hosts"):
                p.append(f"Gateway {g['metadata']['name']}: server {srv} needs port number/name/protocol and hosts")
    for d in find(objs, "DestinationRule"):
        host = d["spec"]["host"]
        if host not in svcs:
            p.append(f"DestinationRule {d['metadata']['name']}: host {host} is no Service")
            continue
        names = [s["name"] for s in d["spec"].get("subsets", [])]
        if len(names) != len(set(names)):
            p.append(f"DestinationRule {host}: duplicate subsets")
        for sub in d["spec"].get("subsets", []):
            want = dict(svcs[host]["spec"]["selector"], **sub.get("labels", {}))
            if not any(selects({"matchLabels": want}, t["metadata"]["labels"]) for t in pods):
                p.append(f"DestinationRule {host}: subset {sub['name']} {sub.get('labels')} matches no pod")
    for v in find(objs, "VirtualService"):
        s, name = v["spec"], v["metadata"]["name"]
        # The fault components label what they set: both at once would leave one.
        for kind in ("abort", "delay"):
            if v["metadata"].get("labels", {}).get(f"scalelab.io/fault-{kind}") == "true" and \
                    not all(kind in (r.get("fault") or {}) for r in s.get("http", [])[:1]):
                p.append(f"VirtualService {name}: labelled fault-{kind} but has no {kind} (two fault components?)")
        if not s.get("hosts") or not all(isinstance(h, str) for h in s["hosts"]):
            p.append(f"VirtualService {name}: hosts")
        for g in s.get("gateways", ["mesh"]):
            if g != "mesh" and g not in gws:
                p.append(f"VirtualService {name}: gateway {g} not rendered")
        for r in s.get("http", []):
            extra = set(r) - {"name", "match", "route", "fault", "retries", "timeout"}
            if extra:
                p.append(f"VirtualService {name}: unchecked route fields {sorted(extra)}")
            for m in r.get("match", []):
                if set(m) - {"uri"} or set(m.get("uri", {})) - {"prefix", "exact", "regex"}:
                    p.append(f"VirtualService {name}: match {m}")
            dests = r.get("route", [])
            if not dests:
                p.append(f"VirtualService {name}: a route without destinations")
            weights = [d.get("weight") for d in dests]
            if len(dests) > 1 and (None in weights or sum(weights) != 100):
                p.append(f"VirtualService {name}/{r.get('name')}: weights {weights} do not sum to 100")
            if len(dests) == 1 and weights[0] not in (None, 100):
                p.append(f"VirtualService {name}/{r.get('name')}: a single destination weighted {weights[0]}")
            for d in dests:
                dst = d.get("destination", {})
                if set(d) - {"destination", "weight"} or set(dst) - {"host", "subset", "port"}:
                    p.append(f"VirtualService {name}: unchecked destination fields {d}")
                host = dst.get("host")
                if host not in svcs:
                    p.append(f"VirtualService {name}: destination {host} is no Service")
                    continue
                if "port" in dst and dst["port"].get("number") not in [x["port"] for x in svcs[host]["spec"]["ports"]]:
                    p.append(f"VirtualService {name}: port {dst['port']} not on Service {host}")
                if "subset" in dst and dst["subset"] not in [x["name"] for x in drs.get(host, {}).get("spec", {}).get("subsets", [])]:
                    p.append(f"VirtualService {name}: subset {host}/{dst['subset']} in no DestinationRule")
            f = r.get("fault")
            if f is not None:
                if not f or set(f) - {"abort", "delay"}:
                    p.append(f"VirtualService {name}: fault {f}")
                a = f.get("abort")
                if a is not None:
                    pct = a.get("percentage", {}).get("value")
                    if set(a) != {"percentage", "httpStatus"} or not (isinstance(pct, (int, float)) and 0 < pct <= 100) \
                            or not (isinstance(a["httpStatus"], int) and 200 <= a["httpStatus"] <= 599):
                        p.append(f"VirtualService {name}: abort {a}")
                dl = f.get("delay")
                if dl is not None:
                    pct = dl.get("percentage", {}).get("value")
                    if set(dl) != {"percentage", "fixedDelay"} or not (isinstance(pct, (int, float)) and 0 < pct <= 100) \
                            or not dur.match(str(dl["fixedDelay"])):
                        p.append(f"VirtualService {name}: delay {dl}")
    return p, len(ist)


def istio_expect(objs, comps):
    """The course's settings: the 90/10 canary, music v2, the faults."""
    p = []
    vs = {v["metadata"]["name"]: v for v in find(objs, "VirtualService")}
    try:
        music = [r for r in vs["scalelab"]["spec"]["http"] if r.get("name") == "music"][0]
        split = {d["destination"].get("subset"): d.get("weight") for d in music["route"]}
        if split != {"v1": 90, "v2": 10}:
            p.append(f"music canary {split}, want v1 90 / v2 10")
        fault = vs["database-gateway"]["spec"]["http"][0].get("fault")
    except (KeyError, IndexError) as e:
        return [f"missing route {e}"]
    want = None
    if "istio-fault-abort" in comps:
        want = {"abort": {"percentage": {"value": 10}, "httpStatus": 500}}
    if "istio-fault-delay" in comps:
        want = {"delay": {"percentage": {"value": 100}, "fixedDelay": "500ms"}}
    if fault != want:
        p.append(f"database-gateway fault {fault}, want {want}")
    v2 = find(objs, "Deployment", "music-v2")
    env = {e["name"]: e.get("value") for e in pod(v2[0])["spec"]["containers"][0]["env"]} if v2 else {}
    if env.get("MUSIC_VERSION") != "v2" or "MUSIC_ERROR_PERCENT" not in env or pod(v2[0])["metadata"]["labels"].get("version") != "v2":
        p.append("music-v2: MUSIC_VERSION=v2, MUSIC_ERROR_PERCENT, label version: v2")
    for o in find(objs, "Deployment"):
        if "version" not in pod(o)["metadata"]["labels"]:
            p.append(f"Deployment {o['metadata']['name']}: no version label")
    return p


def observability_check(objs):
    p = []
    cms = {c["metadata"]["name"]: c for c in find(objs, "ConfigMap")}
    dash = cms.get("grafana-dashboards", {}).get("data", {})
    originals = sorted(os.path.basename(f) for f in glob.glob("observability/grafana/dashboards/*.json"))
    if sorted(dash) != originals:
        p.append(f"grafana-dashboards holds {sorted(dash)}, observability/ has {originals} (list them in the component)")
    for f, text in dash.items():
        try:
            json.loads(text)
        except ValueError as e:
            p.append(f"dashboard {f}: {e}")
    if cms.get("grafana-dashboards", {}).get("metadata", {}).get("labels", {}).get("grafana_dashboard") != "1":
        p.append("grafana-dashboards: label grafana_dashboard=1")
    rules = cms.get("prometheus-rules", {}).get("data", {})
    originals = sorted(os.path.basename(f) for f in glob.glob("observability/prometheus/rules/*.yml"))
    if sorted(rules) != originals:
        p.append(f"prometheus-rules holds {sorted(rules)}, observability/ has {originals}")
    for f, text in rules.items():
        if not yaml.safe_load(text).get("groups"):
            p.append(f"rules {f}: no groups")
    try:
        prom = yaml.safe_load(cms["prometheus-config"]["data"]["prometheus.yml"])
        job = prom["scrape_configs"][0]
        sd = job["kubernetes_sd_configs"][0]
        keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
        if sd["role"] != "pod" or sd["namespaces"]["names"] != ["scalelab"] or \
                not any("__meta_kubernetes_pod_annotation_prometheus_io_scrape" in r["source_labels"] for r in keep):
            p.append("prometheus.yml: kubernetes_sd pod discovery in scalelab, kept by the prometheus.io/scrape annotation")
        if not any(r.get("target_label") == "service" for r in job["relabel_configs"]):
            p.append("prometheus.yml: the `service` label")
        if prom.get("rule_files") != ["/etc/prometheus/rules/*.yml"]:
            p.append("prometheus.yml: rule_files")
    except (KeyError, IndexError, TypeError) as e:
        p.append(f"prometheus-config: {e!r}")
    for o in find(objs, "Deployment"):
        a = pod(o)["metadata"].get("annotations", {})
        if a.get("prometheus.io/scrape") != "true":
            p.append(f"Deployment {o['metadata']['name']}: not annotated for scraping")
    return p


# ---------------------------------------------------------------- run
available = sorted({kv.major_minor(v) for v in kv.all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
versions = [v for v in WANTED_VERSIONS if v in available]
missing = [v for v in WANTED_VERSIONS if v not in available]
print(f"kubernetes-validate {kv_version}: offline schemas for {available[0]} .. {available[-1]}")
if missing:
    if available[-1] not in versions:
        versions.append(available[-1])
    print(f"  it lacks {', '.join(missing)}: validating {', '.join(versions)} (the newest it has instead)")
else:
    print(f"  validating every object for Kubernetes {', '.join(versions)} (the EKS versions asked for)")

rendered = {}
for ov in OVERLAYS:
    for comps in COMBOS + REFUSED + REFUSED_ISTIO:
        name, objs = render(ov, comps)
        rendered[name] = (ov, comps, objs)
nref = sum(1 for _, c, _ in rendered.values() if c in REFUSED + REFUSED_ISTIO)
print(f"rendered {len(rendered)} combinations with kubectl kustomize: {len(rendered) - nref} to apply, "
      f"{nref} that must be refused ({time.monotonic() - T0:.1f} s)")

# Every distinct non-Istio object once, in one kubernetes-validate run for all versions.
unique, owners = {}, {}
for name, (_, _, objs) in rendered.items():
    for o in objs:
        if is_istio(o):
            continue
        blob = json.dumps(o, sort_keys=True)
        unique.setdefault(blob, o)
        owners.setdefault(blob, name)
odir = os.path.join(WORK, "objects")
os.makedirs(odir)
files = []
for i, (blob, o) in enumerate(unique.items()):
    f = os.path.join(odir, f"{i:04d}-{o['kind']}-{o['metadata']['name']}.yaml")
    with open(f, "w") as fh:
        yaml.safe_dump(o, fh)
    files.append(f)
cmd = ["kubernetes-validate", "--strict"] + [a for v in versions for a in ("-k", v)] + files
out = subprocess.run(cmd, capture_output=True, text=True)
passed = {v: 0 for v in versions}
bad = []
for line in out.stdout.splitlines() + out.stderr.splitlines():
    m = re.match(r"INFO .* passed for resource .* against version (\d+\.\d+)", line)
    if m and m.group(1) in passed:
        passed[m.group(1)] += 1
    elif line.strip():
        bad.append(line)  # ERROR, FATAL, or WARN (no schema: an unknown kind)
for v in versions:
    print(f"  kubernetes-validate --strict --kubernetes-version {v}: {passed[v]}/{len(files)} distinct objects valid")
if bad or out.returncode != 0 or any(n != len(files) for n in passed.values()):
    print("\n".join(bad[:40]))
    fail("kubernetes-validate")

totals = {}
ok = True
for name, (ov, comps, objs) in rendered.items():
    if comps in REFUSED + REFUSED_ISTIO:
        continue
    kinds = {}
    for o in objs:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    res = policy(objs, ov)
    tc, tm = res.pop("_sum")
    probs = [f"{c}: {x}" for c, (_, xs) in res.items() for x in xs]
    for c, (n, xs) in res.items():
        t = totals.setdefault(c if not c.startswith("overlay ") else "overlay specifics", [0, 0, 0])
        t[0] += 1
        t[1] += n
        t[2] += len(xs)
    extra = []
    if "istio" in comps:
        ip, n = istio_check(objs)
        ip += istio_expect(objs, comps)
        probs += [f"istio: {x}" for x in ip]
        extra.append(f"{n} Istio objects checked")
        t = totals.setdefault("istio fields (hosts, gateways, weights, subsets, faults)", [0, 0, 0])
        t[0] += 1; t[1] += n; t[2] += len(ip)
    if "observability" in comps:
        op = observability_check(objs)
        probs += [f"observability: {x}" for x in op]
        t = totals.setdefault("observability ConfigMaps", [0, 0, 0])
        t[0] += 1; t[1] += 3; t[2] += len(op)
    nvalid = sum(1 for o in objs if not is_istio(o))
    status = "ok" if not probs else f"{len(probs)} VIOLATIONS"
    print(f"  {name:<60} {len(objs):3d} objects ({nvalid} validated x {len(versions)} versions"
          f"{', ' + ', '.join(extra) if extra else ''}); requests {tc * 1000:.0f}m CPU {tm / 2**20:.0f}Mi; policy {status}")
    for x in probs:
        print(f"      {x}")
    ok &= not probs
if not ok:
    fail("policy test")

print("policy checks (combinations / items checked / violations):")
for c, (ncomb, n, nv) in totals.items():
    print(f"  {c:<58} {ncomb:3d} / {n:4d} / {nv}")

# ---------------------------------------------------------------- must be refused
print("refused combinations (the policy must fail them):")
for name, (ov, comps, objs) in rendered.items():
    if comps not in REFUSED:
        continue
    res = policy(objs, ov)
    res.pop("_sum")
    failing = {c: xs for c, (_, xs) in res.items() if xs}
    if set(failing) != {"autoscaling: one controller per Deployment"}:
        fail(f"{name}: the policy should refuse it for the HPA/scaler conflict alone, got {failing or 'a pass'}")
    n = len(failing["autoscaling: one controller per Deployment"])
    print(f"  {name:<58} refused as expected: {n} Deployments with two controllers, e.g. {failing['autoscaling: one controller per Deployment'][0]}")
for name, (ov, comps, objs) in rendered.items():
    if comps not in REFUSED_ISTIO:
        continue
    ip = istio_check(objs)[0]
    if not ip:
        fail(f"{name}: the Istio check should refuse both fault components at once")
    print(f"  {name:<58} refused as expected: {ip[0]}")


# Mutations of a passing render: each must make the named check fail.
def mutate(fn):
    objs = copy.deepcopy(rendered["local"][2])
    fn(objs)
    return objs


def cont(objs, dep, i=0):
    return pod(find(objs, "Deployment", dep)[0])["spec"]["containers"][i]


MUTATIONS = [
    ("an image :latest", "images", lambda o: cont(o, "user").update(image="scalelab/user:latest")),
    ("another registry's image", "images", lambda o: cont(o, "music").update(image="docker.io/library/nginx:1.27")),
    ("a container without limits", "requests and limits", lambda o: cont(o, "playlist")["resources"].pop("limits")),
    ("root", "security context", lambda o: cont(o, "fibonacci")["securityContext"].update(runAsUser=0)),
    ("a writable root", "security context", lambda o: cont(o, "user")["securityContext"].update(readOnlyRootFilesystem=False)),
    ("an added capability", "security context", lambda o: cont(o, "user")["securityContext"]["capabilities"].update(add=["NET_ADMIN"])),
    ("no readiness probe", "probes on the course paths", lambda o: cont(o, "music").pop("readinessProbe")),
    ("a probe off the course path", "probes on the course paths",
     lambda o: cont(o, "database-gateway")["livenessProbe"]["httpGet"].update(path="/health")),
    ("requests over the budget", "requests of the whole app < 0.5 CPU, 512 Mi",
     lambda o: find(o, "Deployment", "user")[0]["spec"].update(replicas=12)),
    ("a token in the manifest", "secrets by name only",
     lambda o: cont(o, "user")["env"].append({"name": "JWT_SECRET", "value": "x" * 32})),
    ("a rendered Secret", "secrets by name only",
     lambda o: o.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "scalelab"}})),
    ("the API token mounted", "service accounts and tokens",
     lambda o: pod(find(o, "Deployment", "user")[0])["spec"].update(automountServiceAccountToken=True)),
    ("the gateway open to fibonacci", "network policies",
     lambda o: find(o, "NetworkPolicy", "database-gateway")[0]["spec"]["ingress"][0]["from"][0]["podSelector"]
     ["matchExpressions"][0]["values"].append("fibonacci")),
    ("no default deny", "network policies",
     lambda o: o.remove(find(o, "NetworkPolicy", "default-deny-ingress")[0])),
    ("no PodDisruptionBudget", "disruption budgets", lambda o: o.remove(find(o, "PodDisruptionBudget", "music")[0])),
]
print("mutations (each must fail its check):")
for what, check_name, fn in MUTATIONS:
    res = policy(mutate(fn), "local")
    res.pop("_sum")
    if not res[check_name][1]:
        fail(f"the policy let {what} through ({check_name})")
    print(f"  {what:<36} refused by '{check_name}'")


# And Istio's field check must catch what Istio would refuse or route wrongly.
def vs_route(objs, vs, route):
    return [r for r in find(objs, "VirtualService", vs)[0]["spec"]["http"] if r["name"] == route][0]


ISTIO_MUTATIONS = [
    ("canary weights 90 + 20", lambda o: vs_route(o, "scalelab", "music")["route"][1].update(weight=20)),
    ("a subset in no DestinationRule", lambda o: vs_route(o, "scalelab", "music")["route"][1]["destination"].update(subset="v3")),
    ("a route to no Service", lambda o: vs_route(o, "scalelab", "user")["route"][0]["destination"].update(host="users")),
    ("a Gateway not rendered", lambda o: find(o, "VirtualService", "scalelab")[0]["spec"].update(gateways=["other"])),
    ("an abort without httpStatus", lambda o: vs_route(o, "database-gateway", "database-gateway")["fault"]["abort"].pop("httpStatus")),
    ("an abort of 110%", lambda o: vs_route(o, "database-gateway", "database-gateway")["fault"]["abort"]["percentage"].update(value=110)),
    ("a delay of 'half a second'", lambda o: vs_route(o, "database-gateway", "database-gateway")["fault"].update(
        delay={"percentage": {"value": 100}, "fixedDelay": "half a second"})),
    ("a subset whose pods are gone", lambda o: o.remove(find(o, "Deployment", "music-v2")[0])),
]
base = rendered["local+istio+istio-fault-abort"][2]
for what, fn in ISTIO_MUTATIONS:
    objs = copy.deepcopy(base)
    fn(objs)
    if not istio_check(objs)[0]:
        fail(f"the Istio check let {what} through")
    print(f"  {what:<36} refused by 'istio fields'")

print(f"render, validate, policy: {time.monotonic() - T0:.1f} s")
PY

echo "== k8s/eks/cluster.yaml"
python3 - <<'PY'
import re, sys, yaml
c = yaml.safe_load(open("k8s/eks/cluster.yaml"))
cf = yaml.safe_load(open("k8s/aws/dynamodb-tables.yaml"))
p = []
region = c["metadata"]["region"]
if c["apiVersion"] != "eksctl.io/v1alpha5" or c["kind"] != "ClusterConfig":
    p.append("an eksctl ClusterConfig (eksctl.io/v1alpha5)")
ng = c.get("managedNodeGroups", []) + c.get("nodeGroups", [])
if len(ng) != 1 or (ng[0]["instanceType"], ng[0]["desiredCapacity"], ng[0]["minSize"], ng[0]["maxSize"]) != ("t3.medium", 2, 2, 10):
    p.append("one node group: 2 x t3.medium, min 2, max 10")
if c["iam"].get("withOIDC") is not True:
    p.append("iam.withOIDC")
sas = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in c["iam"]["serviceAccounts"]}
sa = sas.get(("scalelab", "database-gateway"))
# The tables' default names, from the CloudFormation template (Fn::If [HasSuffix, ..., name]).
tables = sorted(r["Properties"]["TableName"]["Fn::If"][2] for r in cf["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table")
if not sa:
    p.append("an IAM service account scalelab/database-gateway")
else:
    overlay = open("k8s/overlays/eks/gateway-irsa.yaml").read()
    if sa.get("roleOnly") is not True or f":role/{sa.get('roleName')}" not in overlay:
        p.append("the gateway's role: roleOnly, its roleName the one the eks overlay's annotation names")
    res = set()
    for st in sa["attachPolicy"]["Statement"]:
        if st["Effect"] == "Allow":
            if not all(a.startswith("dynamodb:") and "*" not in a for a in st["Action"]):
                p.append(f"actions {st['Action']}: DynamoDB, named one by one")
            res.update(st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])
    want = {f"arn:aws:dynamodb:{region}:*:table/{t}{s}" for t in tables for s in ("", "/index/*")}
    if res != want:
        p.append(f"policy resources {sorted(res)}, want the three tables {tables} (and their indexes) in {region}")
region_env = re.search(r"name: AWS_REGION\s+value: (\S+)", open("k8s/overlays/eks/gateway-dynamodb.yaml").read())
if not region_env or region_env.group(1) != region:
    p.append(f"AWS_REGION of the eks overlay is not the cluster's region {region}")
if p:
    sys.exit("ci/k8s.sh: FAILED: k8s/eks/cluster.yaml: " + "; ".join(p))
print(f"k8s/eks/cluster.yaml: ok (2 x t3.medium, 2..10 nodes, OIDC, gateway role on tables {', '.join(tables)} in {region})")
PY

echo "ci/k8s.sh: passed"
