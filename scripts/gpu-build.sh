#!/usr/bin/env bash
# Builds, on the CPU machine, everything scripts/gpu-check.sh runs on the GPU machine (which has
# no Rust): the origami-cuda test binaries and the `origami` CLI, release mode, debug info
# stripped (the device tool carries at most 64 MiB), into target/gpu-bin/:
#   target/gpu-bin/tests/origami_cuda   unit tests (limb math, C++ emulation of the kernels)
#   target/gpu-bin/tests/cuda           GPU tests (conformance, bit-identity with the CPU, tail)
#   target/gpu-bin/origami              the CLI, for `origami bench --accel cuda`
# Then, with the device tool: command `bash scripts/gpu-check.sh`, carry ["target/gpu-bin"].
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-bin
rm -rf "$out"
mkdir -p "$out/tests"

echo "== building origami-cuda test binaries (release)"
json=$(mktemp)
cargo test -p origami-cuda --release --no-run --message-format=json >"$json"
# One line per compiler artifact; keep the test executables of origami-cuda.
grep '"reason":"compiler-artifact"' "$json" | grep '"test":true' | grep -o '"executable":"[^"]*"' |
    sed 's/"executable":"\(.*\)"/\1/' | while read -r exe; do
    [ -n "$exe" ] || continue
    name=$(basename "$exe")
    name=${name%-*} # drop cargo's hash
    cp "$exe" "$out/tests/$name"
    echo "   $out/tests/$name"
done
rm -f "$json"
for t in origami_cuda cuda; do
    [ -x "$out/tests/$t" ] || { echo "missing test binary $t" >&2; exit 1; }
done

echo "== building the origami CLI (release)"
cargo build -p origami-cli -p origami-enclave-bin --release
cp target/release/origami target/release/origami-enclave "$out/"

# Debug info is most of the size; symbols stay for backtraces.
if command -v strip >/dev/null; then
    strip --strip-debug "$out/origami" "$out/origami-enclave" "$out"/tests/*
fi
du -ah "$out" | sort -h
total=$(du -sb "$out" | cut -f1)
if [ "$total" -gt $((60 * 1024 * 1024)) ]; then
    echo "warning: $out is $((total / 1024 / 1024)) MiB; the device tool carries 64 MiB at most" >&2
fi
echo "ok: run scripts/gpu-check.sh on the GPU machine (carry target/gpu-bin)"
