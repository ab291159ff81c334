#!/usr/bin/env bash
# Throughput and latency of `origami serve` (enclave in its own process) under 1, 8 and 32
# concurrent clients, on loopback; then the enclave process's peak memory (VmHWM).
# Usage: scripts/serve-bench.sh MODEL MODE SPLIT REQUESTS PAD_HIGH [CLIENTS]
#   scripts/serve-bench.sh fashion slalom - 20 64
#   scripts/serve-bench.sh vgg16 origami 4 2 64 1,8,32
set -euo pipefail
bin="${ORIGAMI:-target/release/origami}"
model="$1"; mode="$2"; split="$3"; requests="$4"; pad_high="$5"; clients="${6:-1,8,32}"
dir="$(mktemp -d)"
args=(serve --listen 127.0.0.1:0 --model "$model" --mode "$mode" --pad-low 8 --pad-high "$pad_high")
[ "$split" != "-" ] && args+=(--split "$split")
"$bin" "${args[@]}" > "$dir/serve.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$dir"' EXIT
until grep -q "^policy for clients" "$dir/serve.log"; do
  kill -0 "$server" 2>/dev/null || { cat "$dir/serve.log" >&2; exit 1; }
  sleep 0.2
done
url="$(sed -n 's/^listening on //p' "$dir/serve.log")"
pid="$(sed -n 's/^enclave process: pid //p' "$dir/serve.log")"
{
  echo 'allow_simulated = true'
  echo '[[measurements]]'
  sed -n 's/^policy for clients: //p' "$dir/serve.log" | tr ',' '\n' | sed 's/^ *//'
} > "$dir/policy.toml"
# Let the pad pool fill to the high watermark first (offline precompute is not request time).
until curl -s "$url/metrics" | grep -q "^origami_pads_ready $pad_high\$"; do sleep 0.5; done
echo "model $model | placement $mode ${split/-/} | $(nproc) cores | enclave pid $pid"
"$bin" loadtest --server "$url" --policy "$dir/policy.toml" --model "$model" --clients "$clients" --requests "$requests"
echo "enclave process peak memory: $(grep VmHWM /proc/$pid/status | awk '{print $2/1024 " MiB"}')"
curl -s "$url/metrics" | grep -E "^origami_(requests_total|batch_size|tail_batch_size|pads_precomputed)"
