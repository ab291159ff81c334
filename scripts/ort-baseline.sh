#!/usr/bin/env bash
# Side-by-side baseline: ONNX Runtime vs our plain CPU executor on the same VGG-16 (seeded
# weights, exported by us), same machine, one after the other, 1 and 2 threads.
# Needs: a release build (cargo build --release -p origami-cli) and `pip install onnxruntime numpy`.
# Usage: scripts/ort-baseline.sh [model=vgg16] [iters=7]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-vgg16}"
iters="${2:-7}"
bin=target/release/origami
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" zoo export "$model" "$tmp/model.onnx" >/dev/null
for t in 1 2; do
  python3 - "$tmp/model.onnx" "$t" "$iters" <<'PY'
import sys, time
import numpy as np, onnxruntime as ort
path, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
shape = [1] + [d for d in s.get_inputs()[0].shape[1:]]
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
s.run(None, {"input": x})
t = []
for _ in range(iters):
    a = time.perf_counter(); s.run(None, {"input": x}); t.append((time.perf_counter() - a) * 1e3)
print(f"onnxruntime {ort.__version__}, {threads} thread(s): median {sorted(t)[len(t)//2]:.1f} ms")
PY
  "$bin" --threads "$t" bench --model "$model" --placements plain --iters "$iters" | grep -E "^plain" | awk -v t="$t" '{print "origami plain, " t " thread(s): median " $2 " ms"}'
done
