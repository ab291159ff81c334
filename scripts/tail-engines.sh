#!/usr/bin/env bash
# The plain tail's CPU engine, decided by measurement: this project's float executor, tract
# (a Rust ONNX engine) and ONNX Runtime on the same seeded zoo model, same machine, one after the
# other, at 1 and 2 threads. Prints one line per engine and thread count (median ms).
# Needs `pip install onnxruntime numpy` (PYTHON= picks the interpreter). Builds
# benches/tail-engines (not a workspace member: tract is a large build the tests do not need).
# Usage: scripts/tail-engines.sh [iters=5] [models...]   (default: vgg16 resnet50 densenet121)
set -euo pipefail
cd "$(dirname "$0")/.."
iters="${1:-5}"
shift || true
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(vgg16 resnet50 densenet121)
py="${PYTHON:-python3}"
export CARGO_TARGET_DIR="$PWD/target/tail-engines"
(cd benches/tail-engines && cargo build --release --quiet)
bin="$CARGO_TARGET_DIR/release/tail-engines"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for m in "${models[@]}"; do
  "$bin" export "$m" "$tmp/$m.onnx"
  for t in 1 2; do
    "$bin" "$tmp/$m.onnx" "$t" "$iters"
    "$py" - "$tmp/$m.onnx" "$t" "$iters" <<'PY'
import sys, time
import numpy as np, onnxruntime as ort
path, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
shape = [1] + [d for d in s.get_inputs()[0].shape[1:]]
x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
s.run(None, {"input": x})
t = []
for _ in range(iters):
    a = time.perf_counter(); s.run(None, {"input": x}); t.append((time.perf_counter() - a) * 1e3)
print(f"  onnxruntime {ort.__version__} | {threads} thread(s) | {sorted(t)[len(t)//2]:.1f} ms")
PY
  done
done
