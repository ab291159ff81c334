#!/usr/bin/env bash
# Peak resident memory (VmHWM) of the enclave process: once it listens (model loaded, plan
# built), then after precomputing PADS pads through `origami precompute`.
#   scripts/enclave-memory.sh [BIN] [MODEL] [MODE] [SPLIT] [PADS]
#   scripts/enclave-memory.sh target/release/origami vgg16 origami 4 8
set -euo pipefail
bin=${1:-target/release/origami}
model=${2:-vgg16}
mode=${3:-origami}
split=${4:-4}
pads=${5:-8}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
args=(enclave --socket "$dir/e.sock" --model "$model" --mode "$mode")
[ "$mode" = origami ] && args+=(--split "$split")
RAYON_NUM_THREADS=1 "$bin" "${args[@]}" >"$dir/log" 2>&1 &
pid=$!
t0=$(date +%s)
until [ -S "$dir/e.sock" ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/log"; exit 1; }
    sleep 0.2
done
hwm() { awk '/VmHWM/ {h=$2} /VmRSS/ {r=$2} END {printf "%.1f MiB (resident now %.1f MiB)", h / 1024, r / 1024}' "/proc/$pid/status"; }
echo "$model $mode ${split}: listening after $(($(date +%s) - t0)) s, peak $(hwm)"
if [ "$pads" -gt 0 ] && "$bin" help precompute >/dev/null 2>&1; then
    "$bin" precompute --enclave "unix:$dir/e.sock" --count "$pads" --out "$dir/pads.bin" >/dev/null 2>&1
    echo "$model $mode ${split}: after $pads pads ($(du -m "$dir/pads.bin" | cut -f1) MiB sealed, kept by the host), peak $(hwm)"
fi
