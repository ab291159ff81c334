#!/usr/bin/env bash
# Bring-your-own-model check: writes the nine classic ImageNet architectures the way the public
# ONNX model zoo's caffe2-era files are written (benches/zoo9/make_zoo9.py: IR 3, opset 7-9,
# initializers as inputs, seeded weights), then runs each through the release CLI in plain and
# `--mode origami --split 2` placement against ONNX Runtime and prints a markdown table.
# Needs `pip install onnx onnxruntime numpy` (PYTHON= picks the interpreter) and builds the
# release CLI. Usage: scripts/zoo9.sh [NAME...]   (default: all nine)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
cargo build --release --quiet -p origami-cli
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$py" benches/zoo9/make_zoo9.py "$tmp" "$@"
"$py" benches/zoo9/check.py "$PWD/target/release/origami" "$tmp" "$@"
