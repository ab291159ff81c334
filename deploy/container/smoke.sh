#!/usr/bin/env bash
# Builds the runtime image of deploy/container/Dockerfile (`--target prebuilt`) around
# binaries built outside it, and checks it: the image's user and entrypoint, `origami demo`
# inside it, and `origami serve` inside it answering health and readiness (and, with
# $ORIGAMI_PYTHON, a private inference from the Python client on the host), then stopping
# gracefully on SIGTERM (dumb-init forwards it to origami) with its enclave child gone.
#
#     deploy/container/smoke.sh [BIN_DIR]     (BIN_DIR: origami and origami-enclave; default target/release)
#     KEEP_IMAGE=1 deploy/container/smoke.sh   keeps localhost/origami:smoke afterwards
#
# Where no registry of container images is reachable (the development machines and CI reach
# only crates.io, PyPI, npm and Debian), the base image is made here from Debian's packages
# (mmdebstrap --variant=minbase bookworm: close to debian:bookworm-slim, not the same image)
# and passed as RUNTIME_IMAGE; the Dockerfile's Rust build stage (rust:1-bookworm) cannot be
# fetched, so it is not run. Containers run with `buildah run --isolation=chroot`: the image's
# filesystem, user and environment, on the host's network, without namespaces or cgroups (a
# full container runtime could not start in this sandbox: podman/crun fail on
# setrlimit and on hybrid cgroups). Needs root, buildah and mmdebstrap (installed from Debian
# when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bin_dir=$(cd "${1:-target/release}" && pwd)
work=$root/target/container-smoke
log() { echo "container-smoke: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
for b in origami origami-enclave; do
    [ -x "$bin_dir/$b" ] || fail "$bin_dir/$b not found (build: cargo build --release -p origami-cli -p origami-enclave-bin)"
done
if ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null; then
    [ "$(id -u)" = 0 ] || fail "needs buildah and mmdebstrap (apt-get install buildah mmdebstrap)"
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah mmdebstrap >&2 \
        || fail "could not install buildah and mmdebstrap from Debian"
fi
B=(buildah --cgroup-manager=cgroupfs)
mkdir -p "$work"

base=localhost/origami-smoke-base:bookworm-minbase
if ! "${B[@]}" inspect --type image "$base" >/dev/null 2>&1; then
    log "base image from Debian's packages (mmdebstrap minbase bookworm)"
    mmdebstrap --quiet --variant=minbase bookworm "$work/rootfs.tar" \
        || fail "mmdebstrap could not build a bookworm root filesystem"
    c=$("${B[@]}" from scratch)
    "${B[@]}" add "$c" "$work/rootfs.tar" / >/dev/null
    "${B[@]}" config --cmd /bin/bash "$c"
    "${B[@]}" commit -q "$c" "$base" >/dev/null
    "${B[@]}" rm "$c" >/dev/null
    rm -f "$work/rootfs.tar"
fi

log "building the image (--target prebuilt) from $bin_dir"
ctx=$work/ctx
rm -rf "$ctx" && mkdir -p "$ctx/bin"
for b in origami origami-enclave; do
    ln "$bin_dir/$b" "$ctx/bin/$b" 2>/dev/null || cp "$bin_dir/$b" "$ctx/bin/$b"
done
image=localhost/origami:smoke
start=$(date +%s)
"${B[@]}" build -q --isolation=chroot -f deploy/container/Dockerfile \
    --build-arg RUNTIME_IMAGE="$base" --build-arg PREBUILT_DIR=bin \
    --target prebuilt -t "$image" "$ctx" >&2 || fail "buildah build"
log "built $image in $(( $(date +%s) - start )) s"
rm -rf "$ctx"

cfg=$("${B[@]}" inspect --type image --format '{{.OCIv1.Config.User}}|{{.OCIv1.Config.Entrypoint}}' "$image")
log "image config: user|entrypoint = $cfg"
[[ $cfg == "10001:10001|"*dumb-init* ]] || fail "unexpected image config: $cfg"

ctr=$("${B[@]}" from "$image")
# The image is removed at exit unless KEEP_IMAGE=1 (the base image stays, as a cache).
cleanup() {
    "${B[@]}" rm "$ctr" >/dev/null 2>&1 || true
    [ "${KEEP_IMAGE:-0}" = 1 ] || "${B[@]}" rmi "$image" >/dev/null 2>&1 || true
}
trap cleanup EXIT
run() { "${B[@]}" run --isolation=chroot "$@"; }
# The image's entrypoint, spelled out (buildah run does not apply it).
entry=(/usr/bin/dumb-init --single-child -- /opt/origami/bin/origami)

log "origami demo in the image"
demo=$(run "$ctr" -- "${entry[@]}" demo 2>&1) || { echo "$demo" >&2; fail "origami demo exited non-zero"; }
echo "$demo" | grep -E "^(enclave platform|check|answer):" >&2
grep -q "bit-identical to the quantized reference: yes" <<<"$demo" || fail "demo: no bit-identical check"
[ "$(run "$ctr" -- id -u)" = 10001 ] || fail "the container does not run as uid 10001"

log "origami serve in the image"
out=$work/serve && rm -rf "$out" && mkdir -p "$out" && chmod 0777 "$out"
run -v "$out:/out:rw" "$ctr" -- sh -c 'echo $$ > /out/pid; exec "$@"' sh \
    "${entry[@]}" serve --listen 127.0.0.1:0 --model fashion --mode slalom >"$out/log" 2>&1 &
runner=$!
for _ in $(seq 600); do
    grep -q "^policy for clients: " "$out/log" 2>/dev/null && break
    kill -0 "$runner" 2>/dev/null || { cat "$out/log" >&2; fail "serve exited at start"; }
    sleep 0.1
done
grep -q "^policy for clients: " "$out/log" || { cat "$out/log" >&2; kill "$runner"; fail "serve did not start in 60 s"; }
cat "$out/log" >&2
url=$(sed -n 's/^listening on //p' "$out/log")
enclave_pid=$(sed -n 's/^enclave process: pid //p' "$out/log")
init_pid=$(cat "$out/pid")
python3 - "$url" <<'PY' || { kill -TERM "$init_pid"; fail "health routes"; }
import sys, time, urllib.request, urllib.error
url = sys.argv[1]
def get(path):
    try:
        with urllib.request.urlopen(url + path, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
for path in ("/healthz", "/v2/health/live"):
    assert get(path) == 200, path
for _ in range(100):
    if get("/v2/health/ready") == 200:
        break
    time.sleep(0.1)
else:
    raise SystemExit("/v2/health/ready never 200")
print("container-smoke: /healthz, /v2/health/live, /v2/health/ready: 200", file=sys.stderr)
PY
if [ -n "${ORIGAMI_PYTHON:-}" ]; then
    "$ORIGAMI_PYTHON" - "$url" "$(sed -n 's/^policy for clients: //p' "$out/log")" <<'PY' || { kill -TERM "$init_pid"; fail "private inference"; }
import json, sys
import numpy as np, origami_client
url, line = sys.argv[1], sys.argv[2]
m = {k: json.loads(v) for k, v in (p.split(" = ", 1) for p in line.split(", "))}
c = origami_client.Client(url, policy={"allow_simulated": True, "placements": ["slalom"], "measurements": [m]})
y = c.infer(np.zeros((1, 1, 28, 28), np.float32))
assert y.shape == (1, 10), y.shape
print(f"container-smoke: private inference through the image's server: output {y.shape}, platform {c.evidence.platform}", file=sys.stderr)
PY
fi
log "SIGTERM to the image's init (dumb-init, pid $init_pid; PID 1 in a real container)"
kill -TERM "$init_pid"
rc=0
wait "$runner" || rc=$?
cat "$out/log" | tail -n 2 >&2
[ "$rc" = 0 ] || fail "serve exited with status $rc after SIGTERM"
grep -q "shutting down: finishing requests in flight" "$out/log" || fail "no graceful shutdown on SIGTERM"
[ -n "$enclave_pid" ] && [ -e "/proc/$enclave_pid" ] && fail "the enclave child (pid $enclave_pid) outlived the server"
log "ok: image built, demo and serve ran in it, SIGTERM stopped it gracefully"
