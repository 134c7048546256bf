#!/usr/bin/env bash
# GPU check for issue #11, one call on a GPU machine with no network and no registry.
#
# Prepare the bundle on a machine with the toolchain (CUDA build, stripped):
#     make gpu-bundle            # -> dist/gpu-check/ (sv72, backbone test binary, fixtures, this script)
# Carry dist/gpu-check to the GPU machine and run, from inside it:
#     ./gpu_check.sh [OUT_DIR]   # default OUT_DIR=gpu-out
#
# It runs, in order, each step's output under OUT_DIR:
#   1. parity: every backbone fixture on CUDA f32 against the CPU forward (max |Δ| <= 1e-4);
#   2. `sv72 bench --device cuda` for ViT-S/B/L (random weights of the real sizes) at batch
#      1,8,32,64 in f32, f16 and bf16 (img/s, ms/batch, host memory; JSON per run);
#   3. serve latency when SV72_SERVE_EXPORT names an export folder (a real-size ViT-S one):
#      `sv72 serve --device cuda` on 127.0.0.1 and 50 sequential `sv72 query` calls; the times
#      include each query process's start, so they are an upper bound on the axon's latency.
# nvidia-smi's view of the device is saved first. Nothing here downloads anything.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-gpu-out}"
mkdir -p "$OUT"
SV72="$HERE/sv72"
export SV72_NO_PROGRESS=1
status=0

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed (see $OUT/nvidia-smi.txt)"

echo "== 1. CUDA vs CPU parity (f32, <= 1e-4)"
SV72_FIXTURES="$HERE/fixtures" "$HERE/backbone-tests" --ignored --nocapture cuda_f32_matches_cpu \
  2>&1 | tee "$OUT/parity.txt" || status=1

echo "== 2. sv72 bench --device cuda"
for size in vits14 vitb14 vitl14; do
  for dtype in f32 f16 bf16; do
    echo "-- $size $dtype"
    timeout 300 "$SV72" bench --device cuda --backbone "$size" --dtype "$dtype" \
      --batch 1,8,32,64 --secs "${SV72_BENCH_SECS:-4}" --json "$OUT/bench-$size-$dtype.json" \
      2>&1 | tee "$OUT/bench-$size-$dtype.txt" || status=1
  done
done

if [ -n "${SV72_SERVE_EXPORT:-}" ]; then
  echo "== 3. serve latency (50 sequential queries, client start included)"
  port=18097
  img="$HERE/fixtures/images/$(ls "$HERE/fixtures/images" | grep -m1 -i '\.jpe\?g$')"
  axon_seed=0101010101010101010101010101010101010101010101010101010101010101
  "$SV72" query --print-hotkey > "$OUT/validator.hotkey"
  "$SV72" query --print-hotkey --hotkey-seed "$axon_seed" > "$OUT/axon.hotkey"
  printf '[{"hotkey":"%s","uid":1,"stake":50000.0,"validator_permit":true}]\n' \
    "$(cat "$OUT/validator.hotkey")" > "$OUT/metagraph.json"
  "$SV72" --set serve.host=127.0.0.1 --set serve.prediction_log="$OUT/predictions.jsonl" \
    serve --device cuda --checkpoint "$SV72_SERVE_EXPORT" --hotkey "$(cat "$OUT/axon.hotkey")" \
    --metagraph "$OUT/metagraph.json" --port "$port" 2> "$OUT/serve.log" & pid=$!
  : > "$OUT/serve-ms.txt"
  for i in $(seq 1 50); do
    t0=$(date +%s%N)
    wait_s=0; [ "$i" = 1 ] && wait_s=120
    "$SV72" query --axon "127.0.0.1:$port" --axon-hotkey "$(cat "$OUT/axon.hotkey")" \
      --image "$img" --wait "$wait_s" > /dev/null || { status=1; break; }
    t1=$(date +%s%N)
    [ "$i" = 1 ] || echo $(( (t1 - t0) / 1000000 )) >> "$OUT/serve-ms.txt"
  done
  kill -TERM "$pid"; wait "$pid"
  sort -n "$OUT/serve-ms.txt" | awk '{v[NR]=$1} END {if (NR) printf "serve query ms: n=%d p50=%d p99=%d max=%d\n", NR, v[int(NR*0.5)+1], v[int(NR*0.99)+1 > NR ? NR : int(NR*0.99)+1], v[NR]}' \
    | tee "$OUT/serve-latency.txt"
else
  echo "== 3. serve latency skipped (set SV72_SERVE_EXPORT to an export folder)"
fi
echo "gpu_check: exit $status; results in $OUT"
exit $status
