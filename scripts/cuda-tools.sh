#!/usr/bin/env bash
# Fetches NVIDIA's NVRTC library and ptxas assembler (CUDA 13.0, the GPU machine's version) from
# PyPI's official nvidia-* wheels into target/cuda-tools/, for the test that compiles the CUDA
# kernels without a GPU (crates/host/origami-cuda/tests/nvrtc.rs). No GPU, driver or CUDA install is
# needed. Prints the two exports the test needs; use as
#     eval "$(scripts/cuda-tools.sh)"
# Idempotent: an existing download is reused. Needs python3 with pip and network access to
# PyPI; on failure it says so on stderr, prints nothing and exits 1 (the test then skips).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=13.0.88
dir=$PWD/target/cuda-tools
lib=$dir/lib
bin=$dir/bin
if [ ! -f "$lib/libnvrtc.so.13" ] || [ ! -x "$bin/ptxas" ]; then
    mkdir -p "$dir/wheels" "$lib" "$bin"
    platforms=()
    for p in manylinux2010_x86_64 manylinux_2_12_x86_64 manylinux2014_x86_64 manylinux_2_17_x86_64; do
        platforms+=(--platform "$p")
    done
    if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d "$dir/wheels" \
        "nvidia-cuda-nvrtc==$VERSION" "nvidia-cuda-nvcc==$VERSION" >&2; then
        echo "cuda-tools: could not download the NVRTC/ptxas wheels from PyPI" >&2
        exit 1
    fi
    python3 - "$dir/wheels" "$lib" "$bin" <<'PY'
import os, sys, zipfile, glob
wheels, lib, bin_ = sys.argv[1:]
want = {
    "nvidia/cu13/lib/libnvrtc.so.13": lib,
    "nvidia/cu13/lib/libnvrtc-builtins.so.13.0": lib,
    "nvidia/cu13/bin/ptxas": bin_,
}
for whl in glob.glob(os.path.join(wheels, "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name in want:
                dest = os.path.join(want.pop(name), os.path.basename(name))
                with z.open(name) as src, open(dest + ".tmp", "wb") as dst:
                    dst.write(src.read())
                os.chmod(dest + ".tmp", 0o755)
                os.replace(dest + ".tmp", dest)
if want:
    sys.exit("cuda-tools: missing from the wheels: " + ", ".join(want))
PY
    rm -rf "$dir/wheels"
fi
echo "export LD_LIBRARY_PATH=$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export ORIGAMI_PTXAS=$bin/ptxas"
