#!/usr/bin/env bash
# tools/bench_serve_latency.sh SV72_BIN SNAPSHOT WORKDIR N [DTYPE]: a head checkpoint over SNAPSHOT (trained on
# `demo-data --count 16` scenes, 2 epochs, made once in WORKDIR),
# `sv72 serve` on 127.0.0.1, N sequential signed queries, server-side latency p50/p90/p99 + server CPU.
set -euo pipefail
BIN=$(readlink -f "$1"); SNAP=$(readlink -f "$2"); N=$4; DTYPE=${5:-f32}
mkdir -p "$3"; W=$(readlink -f "$3"); cd "$W"
S="$BIN --set backbone.model=$SNAP --set backbone.dtype=$DTYPE --set serve.prediction_log=$W/pred.jsonl"
if [ ! -e checkpoints/latest ]; then
  $S demo-data --out raw --count 16 >/dev/null 2>&1
  $S ingest --name r --folder raw/real --source real --generator demo-photo >/dev/null 2>&1
  $S ingest --name s --folder raw/synthetic --source synthetic --generator demo-sdxl >/dev/null 2>&1
  $S synth-mix --real r --synthetic s --name mix >/dev/null 2>&1
  $S train-head --manifest mix --set train.epochs=2 --set train.warmup_epochs=0 >/dev/null 2>&1
fi
rm -f pred.jsonl
$BIN query --print-hotkey > v.hk
$BIN query --print-hotkey --hotkey-seed 0101010101010101010101010101010101010101010101010101010101010101 > a.hk
printf '[{"hotkey":"%s","uid":1,"stake":50000.0,"validator_permit":true}]\n' "$(cat v.hk)" > mg.json
PORT=$((19000 + RANDOM % 500))
$S serve --checkpoint checkpoints/latest --hotkey "$(cat a.hk)" --metagraph mg.json --port $PORT --set serve.host=127.0.0.1 2> serve.log &
pid=$!
imgs=(raw/real/roadwork/*.jpg)
t0=$(awk '{print $14+$15}' /proc/$pid/stat 2>/dev/null || echo 0)
$BIN query --axon 127.0.0.1:$PORT --axon-hotkey "$(cat a.hk)" --image "${imgs[0]}" --wait 120 >/dev/null
c0=$(awk '{print $14+$15}' /proc/$pid/stat)
for i in $(seq 1 "$N"); do
  $BIN query --axon 127.0.0.1:$PORT --axon-hotkey "$(cat a.hk)" --image "${imgs[$((i % ${#imgs[@]}))]}" --wait 30 >/dev/null
done
c1=$(awk '{print $14+$15}' /proc/$pid/stat)
kill -TERM $pid; wait $pid || true
python3 - "$W/pred.jsonl" "$c0" "$c1" "$N" <<'PY'
import json,sys
rows=[json.loads(l) for l in open(sys.argv[1])][1:]
lat=sorted(r["latency_ms"] for r in rows)
q=lambda p: lat[min(len(lat)-1,int(round(p*(len(lat)-1))))]
cpu=(int(sys.argv[3])-int(sys.argv[2]))/100/int(sys.argv[4])*1000
print(f"serve: n={len(lat)} p50 {q(.5):.1f} ms p90 {q(.9):.1f} ms p99 {q(.99):.1f} ms max {lat[-1]:.1f} ms; server CPU {cpu:.1f} ms/query")
PY
