"""For each architecture written by make_zoo9.py: does Origami import it, does its plain
placement agree with ONNX Runtime, and does `--mode origami --split 2` (two blinded layers in the
simulated enclave, the rest in float) agree with the float result within quantization tolerance?

    python check.py ORIGAMI_BIN DIR [NAME...]

prints one markdown table row per model. "agrees" for plain: largest difference ≤ 1e-4 of the
largest output (float reassociation only); for origami: top-1 equal to plain where plain's top-1
is decided by more than the difference, and the largest difference ≤ 10% of the largest output.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

bin_, d = sys.argv[1], sys.argv[2]
names = sys.argv[3:] or sorted(f[:-5] for f in os.listdir(d) if f.endswith(".onnx"))
tmp = tempfile.mkdtemp()


def origami(path, x_path, out, *mode):
    r = subprocess.run([bin_, "run", "--model", path, "--input", x_path, "--output", out, *mode],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, (r.stderr.strip().splitlines() or ["?"])[-1]
    return np.load(out), None


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


print("| architecture | opset | imports | plain vs ONNX Runtime (max rel. diff) | origami --split 2 vs float (max rel. diff, top-1) |")
print("|---|---|---|---|---|")
for name in names:
    path = os.path.join(d, name + ".onnx")
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    import onnx
    opset = onnx.load(path, load_external_data=False).opset_import[0].version
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    x_path = os.path.join(tmp, name + "_x.npy")
    np.save(x_path, x)
    want = s.run(None, {s.get_inputs()[0].name: x})[0].reshape(1, -1)
    plain, err = origami(path, x_path, os.path.join(tmp, "p.npy"), "--mode", "plain")
    if plain is None:
        print(f"| {name} | {opset} | no: {err} | — | — |", flush=True)
        continue
    plain = plain.reshape(1, -1)
    dp = rel(plain, want)
    ok = "yes" if dp <= 1e-4 else "**no**"
    q, err = origami(path, x_path, os.path.join(tmp, "q.npy"), "--mode", "origami", "--split", "2")
    if q is None:
        print(f"| {name} | {opset} | yes | {ok} ({dp:.1e}) | fails: {err} |", flush=True)
        continue
    q = q.reshape(1, -1)
    dq = rel(q, plain)
    top = np.sort(plain[0])[::-1]
    decided = (top[0] - top[1]) / max(abs(top[0]), 1e-12) > 2 * dq
    same = int(np.argmax(q)) == int(np.argmax(plain))
    verdict = "yes" if dq <= 0.1 and (same or not decided) else "**no**"
    t1 = "same" if same else ("differs (near tie)" if not decided else "differs")
    print(f"| {name} | {opset} | yes | {ok} ({dp:.1e}) | {verdict} ({dq:.1e}, top-1 {t1}) |", flush=True)
