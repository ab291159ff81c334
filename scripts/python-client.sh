#!/usr/bin/env bash
# Builds the Python client's wheel (crates/client/origami-python, maturin + PyO3, abi3: one
# wheel for every CPython >= 3.9) into target/wheels/ and installs it into a fresh venv,
# target/py-client-venv, with NumPy, pytest, mypy (checks the stubs) and tritonclient[http] (a
# stock KServe v2 client) from PyPI. Prints the exports the Rust test that runs the Python suite needs
# (crates/tools/origami-cli/tests/python.rs); use as
#     eval "$(scripts/python-client.sh)"
# Needs python3 with venv and pip, the Rust toolchain, and PyPI. On failure it says so on
# stderr, prints nothing and exits 1. The wheel's size and build time go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
crate=crates/client/origami-python
venv=$root/target/py-client-venv
wheels=$root/target/wheels
log() { echo "python-client: $*" >&2; }
fail() { log "$*"; exit 1; }

# A fresh venv every time: what is installed is the wheel built now, from PyPI's packages only.
rm -rf "$venv"
python3 -m venv "$venv" >&2 || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
"$venv/bin/pip" install -q --upgrade pip >&2 || fail "pip upgrade failed"
"$venv/bin/pip" install -q "numpy>=1.21" pytest mypy >&2 \
    || fail "could not install numpy, pytest and mypy from PyPI"
rm -f "$wheels"/origami_client-*.whl
start=$(date +%s)
# What `pip install ./crates/client/origami-python` does (the README's command): pip fetches
# maturin into an isolated build environment and builds a release wheel.
"$venv/bin/pip" wheel -q --no-deps -w "$wheels" "./$crate" >&2 \
    || fail "pip could not build the wheel (maturin)"
secs=$(( $(date +%s) - start ))
whl=$(ls "$wheels"/origami_client-*.whl 2>/dev/null | head -n1)
[ -n "$whl" ] || fail "no wheel in $wheels"
log "built $(basename "$whl") ($(du -k "$whl" | cut -f1) KiB) in ${secs} s"
"$venv/bin/pip" install -q --no-deps --force-reinstall "$whl" >&2 || fail "could not install $whl"
"$venv/bin/python" -c "import origami_client" >&2 || fail "the installed wheel does not import"
echo "export ORIGAMI_PYTHON=$venv/bin/python"
# A stock KServe v2 client for the v2 routes' test; where it installs, that test must run.
if "$venv/bin/pip" install -q "tritonclient[http]" >&2; then
    echo "export ORIGAMI_REQUIRE_TRITON=1"
else
    log "tritonclient[http] did not install: the stock v2 client test will skip"
fi
