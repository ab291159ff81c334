#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with binaries built on the CPU machine by
# scripts/gpu-build.sh (the GPU machine has no Rust). Whole run: under 8 minutes.
#   1. the device and driver (nvidia-smi);
#   2. origami-cuda's unit tests (limb arithmetic; kernel emulation if a C++ compiler is there);
#   3. origami-cuda's GPU tests: conformance suite, bit-identity with the CPU accelerator on field
#      layers (worst cases included), tails vs the CPU executor (differences printed);
#      on failure, the failing tests again with ORIGAMI_CUDA_SYNC=1 (each kernel synchronized,
#      so the error names the step);
#   4. `origami --accel cuda bench` on VGG-16 and VGG-19, batch 1 and 64, JSON results.
# Outputs: $OUT (the device tool's folder) or target/gpu-check, one log per step + summary.txt.
# Environment: GPU_BIN (default target/gpu-bin), BENCH_ARGS (extra bench flags),
# CUDA_LIB (default /usr/local/cuda/lib64).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
BUDGET=470 # seconds for the whole script (the limit is 480)
BIN=${GPU_BIN:-target/gpu-bin}
OUTD=${OUT:-target/gpu-check}
mkdir -p "$OUTD"
export LD_LIBRARY_PATH="${CUDA_LIB:-/usr/local/cuda/lib64}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUST_BACKTRACE=1
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
head -20 "$OUTD/nvidia-smi.log" 2>/dev/null
ls "${CUDA_LIB:-/usr/local/cuda/lib64}" 2>/dev/null | grep -E '^lib(cublas|cublasLt|nvrtc)\.so' >>"$OUTD/nvidia-smi.log"

step unit-tests 60 "$BIN/tests/origami_cuda" --test-threads=2
tail -3 "$OUTD/unit-tests.log"

# One test at a time: clearer logs, and each prints the device and its measured differences.
if ! step gpu-tests 180 "$BIN/tests/cuda" --test-threads=1 --nocapture; then
    failed=$(grep -E '^test .* FAILED$' "$OUTD/gpu-tests.log" | awk '{print $2}')
    for t in $failed; do
        ORIGAMI_CUDA_SYNC=1 step "gpu-sync-$t" 60 "$BIN/tests/cuda" --exact "$t" --nocapture
    done
fi
grep -E '^(test |skipped|.*running on|.*max \|gpu)' "$OUTD/gpu-tests.log" | head -60

# Benchmarks: batch 1, all four placements; then batch 64 (heads one by one through the
# enclave, one batched tail call) without the enclave-only placement (64 images at one enclave
# thread would not fit the budget; compare per-image times with its batch-1 run). JSON results.
for m in vgg16 vgg19; do
    # shellcheck disable=SC2086
    step "bench-$m" 120 "$BIN/origami" --accel cuda bench --model "$m" --iters 3 --json "$OUTD/bench-$m.json" ${BENCH_ARGS:-}
    tail -12 "$OUTD/bench-$m.log"
done
for m in vgg16 vgg19; do
    # shellcheck disable=SC2086
    step "bench-$m-bs64" 90 "$BIN/origami" --accel cuda bench --model "$m" --batch 64 --iters 2 \
        --placements slalom,origami,plain --json "$OUTD/bench-$m-bs64.json" ${BENCH_ARGS:-}
    tail -10 "$OUTD/bench-$m-bs64.log"
done

note "total $(($(date +%s) - start))s"
cat "$summary"
grep -q '^FAIL\|^TIME' "$summary" && exit 1
exit 0
