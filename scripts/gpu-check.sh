#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with binaries built on the CPU machine by
# scripts/gpu-build.sh (the GPU machine has no Rust). Whole run: under 7.5 minutes
# (BUDGET seconds).
#   1. the device and driver (nvidia-smi);
#   2. origami-cuda's unit tests (limb arithmetic; kernel emulation if a C++ compiler is there);
#   3. origami-cuda's GPU tests: conformance suite, bit-identity with the CPU accelerator on field
#      layers (worst cases included), tails vs the CPU executor (differences printed);
#      on failure, the failing tests again with ORIGAMI_CUDA_SYNC=1 (each kernel synchronized,
#      so the error names the step);
#   4. `origami --accel cuda bench` on VGG-16 and VGG-19, batch 1 and 64, JSON results, and
#      the PyTorch baseline (scripts/torch-baseline.py) in the same call;
#   5. report.md (scripts/gpu-report.py): every figure and the issue's goals as ratios.
# Outputs: target/gpu-check (one log per step, JSON results, summary.txt, report.md), packed on
# exit into $OUT (the device tool's folder, if set) as gpu-check.tar.gz + summary.txt + report.md.
# Environment: GPU_BIN (default target/gpu-bin), BENCH_ARGS (extra bench flags),
# CUDA_LIB (default /usr/local/cuda/lib64).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
BUDGET=${BUDGET:-430} # seconds for the whole script (give the device call a limit ~60 s above)
BIN=${GPU_BIN:-target/gpu-bin}
# Work in target/gpu-check; the device tool brings back at most 8 files from $OUT, so on exit
# everything is packed into $OUT/gpu-check.tar.gz, next to summary.txt and report.md.
OUTD=target/gpu-check
rm -rf "$OUTD"
mkdir -p "$OUTD"
pack() {
    [ -n "${OUT:-}" ] || return 0
    mkdir -p "$OUT"
    tar -czf "$OUT/gpu-check.tar.gz" -C "$(dirname "$OUTD")" "$(basename "$OUTD")"
    cp "$OUTD/summary.txt" "$OUT/" 2>/dev/null
    cp "$OUTD/report.md" "$OUT/" 2>/dev/null
    return 0
}
trap pack EXIT
export LD_LIBRARY_PATH="${CUDA_LIB:-/usr/local/cuda/lib64}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The driver's libcuda.so.1 is normally in the loader's cache; these are fallbacks.
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
# Fallback: the CUDA libraries PyTorch's wheels ship (nvidia-cublas, nvidia-cuda-nvrtc), after
# the system ones.
for d in /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do
    [ -d "$d" ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
export RUST_BACKTRACE=1
# A GPU test that cannot find the GPU (or NVRTC) fails here instead of skipping.
export ORIGAMI_REQUIRE_GPU=1
summary="$OUTD/summary.txt"
: >"$summary"

note() { echo "$*" | tee -a "$summary"; }
left() { echo $((BUDGET - ($(date +%s) - start))); }

# step NAME LIMIT_SECONDS COMMAND...: runs with a timeout capped by the time left, logs to
# $OUTD/NAME.log, records the outcome.
step() {
    local name=$1 limit=$2
    shift 2
    local l
    l=$(left)
    if [ "$l" -lt 15 ]; then
        note "SKIP  $name (only ${l}s left)"
        return 99
    fi
    [ "$limit" -gt "$l" ] && limit=$l
    local t0=$(date +%s)
    timeout -k 5 "$limit" "$@" >"$OUTD/$name.log" 2>&1
    local rc=$?
    local dt=$(($(date +%s) - t0))
    if [ $rc -eq 0 ]; then
        note "PASS  $name (${dt}s)"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        note "TIME  $name (killed after ${limit}s)"
    else
        note "FAIL  $name (exit $rc, ${dt}s): see $name.log"
    fi
    return $rc
}

note "origami gpu-check on $(hostname), $(date -u +%FT%TZ)"
for f in "$BIN/tests/origami_cuda" "$BIN/tests/cuda" "$BIN/origami"; do
    [ -x "$f" ] || { note "missing $f: run scripts/gpu-build.sh on the CPU machine and carry $BIN"; exit 2; }
done

step nvidia-smi 20 nvidia-smi
{ echo "cpus: $(nproc)"; grep -m1 'model name' /proc/cpuinfo; grep -m1 -o 'avx512_vnni\|avx_vnni' /proc/cpuinfo; } >>"$OUTD/nvidia-smi.log" 2>&1
head -20 "$OUTD/nvidia-smi.log" 2>/dev/null
ls "${CUDA_LIB:-/usr/local/cuda/lib64}" 2>/dev/null | grep -E '^lib(cublas|cublasLt|nvrtc)\.so' >>"$OUTD/nvidia-smi.log"

step unit-tests 60 "$BIN/tests/origami_cuda" --test-threads=2
tail -3 "$OUTD/unit-tests.log"

# One test at a time: clearer logs, and each prints the device and its measured differences.
if ! step gpu-tests 150 "$BIN/tests/cuda" --test-threads=1 --nocapture; then
    failed=$(grep -E '^test .* FAILED$' "$OUTD/gpu-tests.log" | awk '{print $2}')
    # The first three failures again, synchronized (each capped: the benches matter too).
    for t in $(echo "$failed" | head -3); do
        ORIGAMI_CUDA_SYNC=1 step "gpu-sync-$t" 30 "$BIN/tests/cuda" --exact "$t" --nocapture
    done
fi
grep -E '^(test |skipped|.*running on|.*max \|gpu)' "$OUTD/gpu-tests.log" | head -60

# Benchmarks, most important first (each step is capped by the time left). Every bench run
# writes JSON; the report at the end computes the issue's ratios from them.
#   a. batch 1, all five placements side by side (one process per model): enclave (quantized,
#      one thread), tee-plain (the float model on the enclave's one thread), slalom, origami,
#      plain;
#   b. the PyTorch baseline (torchvision VGG-16/19, batch 1 and 64, fp32 and PyTorch's defaults);
#   c. origami and plain at batch 64 in one run (heads one by one through the one enclave
#      thread, one batched tail call): the per-image ratio;
#   d. tee-plain on all the machine's cores (a confidential VM with no GPU);
#   e. origami with --enclave-threads 4 and 16 (a many-core enclave);
#   f. --tf32 (tail GEMMs on TF32 tensor cores) at batch 1 and 64, for PyTorch's defaults.
# Pads are precomputed on all cores (offline work; --precompute-threads); the timed runs use one
# enclave thread unless said otherwise.
PRE=$(nproc 2>/dev/null || echo 1)
bench() { # bench NAME LIMIT [--tf32] bench flags...
    local name=$1 limit=$2
    shift 2
    local global=()
    if [ "${1:-}" = --tf32 ]; then global=(--tf32); shift; fi
    # shellcheck disable=SC2086
    step "$name" "$limit" "$BIN/origami" --accel cuda "${global[@]}" bench \
        --precompute-threads "$PRE" --json "$OUTD/$name.json" "$@" ${BENCH_ARGS:-}
    tail -9 "$OUTD/$name.log"
}
for m in vgg19 vgg16; do
    bench "bench-$m" 100 --model "$m" --iters 5
done
if command -v python3 >/dev/null; then
    # Without our LD_LIBRARY_PATH: the CUDA directory's cuDNN (9.14 on the H200 machine) is older
    # than the one PyTorch's wheels were built against (9.19), and torch refuses to load it.
    PYTHONUNBUFFERED=1 step torch-baseline 100 env -u LD_LIBRARY_PATH python3 scripts/torch-baseline.py \
        --iters 20 --json "$OUTD/torch-baseline.json"
    cat "$OUTD/torch-baseline.log"
else
    note "SKIP  torch-baseline (no python3)"
fi
for m in vgg19 vgg16; do
    bench "bench-$m-bs64" 70 --model "$m" --placements origami,plain --batch 64 --warmup 1 --iters 2
done
for m in vgg19 vgg16; do
    bench "bench-$m-cvm$PRE" 40 --model "$m" --placements tee-plain --enclave-threads "$PRE" --iters 5
done
for t in 4 16; do
    bench "bench-vgg19-et$t" 40 --model vgg19 --placements origami --enclave-threads "$t" --iters 5
done
for m in vgg19 vgg16; do
    bench "bench-$m-tf32" 30 --tf32 --model "$m" --placements origami,plain --iters 10
    bench "bench-$m-tf32-plain-bs64" 30 --tf32 --model "$m" --placements plain --batch 64 --iters 10
done
if command -v python3 >/dev/null; then
    python3 scripts/gpu-report.py "$OUTD" --out "$OUTD/report.md" >/dev/null &&
        note "report: $OUTD/report.md" && cat "$OUTD/report.md"
fi

note "total $(($(date +%s) - start))s"
cat "$summary"
grep -q '^FAIL\|^TIME' "$summary" && exit 1
exit 0
