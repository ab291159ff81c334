#!/usr/bin/env bash
# Smoke-runs the fuzz targets (frame and wire decoding, evidence parsing, SGX and TDX quotes, SNP
# reports and certificate tables, ONNX import,
# the enclave process under an adversarial host's byte stream)
# for a short time each.
# Needs the nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). Usage: scripts/fuzz-smoke.sh [seconds per target, default 30]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-30}"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz not found: cargo install cargo-fuzz" >&2; exit 2; }
# Seed the quote target with a real SGX quote, so it reaches DCAP verification.
mkdir -p corpus/sgx_quote
cp ../crates/common/origami-proto/tests/data/sgx_quote corpus/sgx_quote/sample
mkdir -p corpus/tdx_quote
cp ../crates/common/origami-proto/tests/data/tdx_quote corpus/tdx_quote/sample
# The SNP target: a 0 byte (report mode) then the real Milan report.
mkdir -p corpus/snp_report
python3 -c 'import sys; sys.stdout.buffer.write(b"\0" + bytes.fromhex(open(sys.argv[1]).read().strip()))' \
  ../crates/common/origami-proto/tests/data/report_milan.hex > corpus/snp_report/sample
# Seed the ONNX target with real model files, so it starts from graphs that import.
mkdir -p corpus/onnx
for f in ../crates/common/origami-model/tests/fixtures/*.onnx; do cp "$f" corpus/onnx/; done
for t in frame wire evidence sgx_quote tdx_quote snp_report onnx enclave; do
  echo "== $t (${secs}s)"
  # Bounded: inputs up to 64 KiB, 512 MiB of memory, 5 s per input.
  # onnx and enclave run small models: faer's GEMM reserves ~520 MiB of scratch on first use
  # (not a model bomb; see fuzz/regressions/onnx/README.md), so they get a larger limit.
  mem=512
  if [ "$t" = onnx ] || [ "$t" = enclave ]; then mem=2048; fi
  cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb="$mem" -malloc_limit_mb="$mem" -timeout=5
done
