#!/usr/bin/env bash
# What each answer-time option (issue #15) buys on the demo set: the README table
# "What each option bought on the demo set". Needs the artifacts of `make demo PROFILE=...`
# (datasets/demo-mix, datasets/demo/deployed.run, the MLP challenger run) in the repo root.
# For each option it writes a model spec under datasets/demo/options/, calibrates it on
# demo-mix:val, A/B tests it against the plain deployed checkpoint on demo-mix:test, and
# prints the table rows (markdown) plus plain A's line.
#
#   tools/demo_options.sh                       # the release binary, target/release/sv72
#   SV72=$CARGO_TARGET_DIR/debug/sv72 tools/demo_options.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SV72=${SV72:-${CARGO_TARGET_DIR:-target}/release/sv72}
DEMO=${DEMO:-datasets/demo}
BB=${DEMO_BACKBONE:-assets/demo-backbone}
OUT=$DEMO/options
[ -x "$SV72" ] || { echo "demo_options: no sv72 binary at $SV72 (set SV72=...)" >&2; exit 1; }
[ -f "$DEMO/deployed.run" ] || { echo "demo_options: $DEMO/deployed.run missing; run make demo first" >&2; exit 1; }
A=$(cat "$DEMO/deployed.run")
[ -f "checkpoints/$A/head.safetensors" ] || { echo "demo_options: checkpoints/$A is not a checkpoint" >&2; exit 1; }
# The MLP challenger: the newest head-only MLP run of demo-mix.
MLP=""
for r in $(ls -1 checkpoints | sort -r); do
  y=checkpoints/$r/run.yaml
  [ -f "checkpoints/$r/head.safetensors" ] && [ -f "$y" ] || continue
  if grep -q "kind: mlp" "$y" && ! grep -q "^finetune:" "$y" && grep -q "demo-mix" "$y"; then MLP=$r; break; fi
done
[ -n "$MLP" ] || { echo "demo_options: no MLP head run of demo-mix under checkpoints/" >&2; exit 1; }
run() { "$SV72" --set backbone.model="$BB" --set ab_test.out_dir="$OUT/abtests" "$@"; }
mkdir -p "$OUT"
root=$(pwd)
# name|views per image|spec body
specs=(
  "hflip|2|model: $root/checkpoints/$A
views: [identity, hflip]"
  "crops|7|model: $root/checkpoints/$A
views: [identity, hflip, {centre: 0.8}, {corners: 0.8}]"
  "grid|10|model: $root/checkpoints/$A
views: [identity, {grid: 3}]
aggregate: {top_k: 3}"
  "ensemble|1 (2 heads, 1 backbone forward)|members: [$root/checkpoints/$A, $root/checkpoints/$MLP]"
)
label() {
  case $1 in
    hflip) echo '`[identity, hflip]`, mean logit' ;;
    crops) echo '`[identity, hflip, {centre: 0.8}, {corners: 0.8}]`, mean logit' ;;
    grid) echo '`[identity, {grid: 3}]`, `{top_k: 3}`' ;;
    ensemble) echo 'ensemble `members: [linear run, MLP run]`, stacked' ;;
  esac
}
rows=()
for s in "${specs[@]}"; do
  name=${s%%|*}; rest=${s#*|}; views=${rest%%|*}; body=${rest#*|}
  spec=$OUT/$name.yaml
  printf '%s\n' "$body" > "$spec"
  run calibrate "$spec" --on demo-mix:val >&2
  rc=0; run ab-test "checkpoints/$A" "$spec" --on demo-mix:test --out "$OUT/ab-$name" >&2 || rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 3 ] || { echo "demo_options: ab-test $name exited $rc" >&2; exit $rc; }
  rows+=("$(python3 - "$OUT/ab-$name/decision.json" "$(label "$name")" "$views" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def iv(k, nd=3):
    x = d["delta"][k]
    f = lambda v: f"{v:+.{nd}f}".replace("-", "−")
    return f"{f(x['estimate'])} [{f(x['lo'])}, {f(x['hi'])}]"
la, lb = d["latency"]["a"], d["latency"]["b"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {iv('accuracy')} | {iv('mcc')} | {iv('score')} | "
      f"{d['mcnemar']['p_value']:.2f} | {la['p50_ms']:.1f} / {la['p99_ms']:.1f} → "
      f"{lb['p50_ms']:.1f} / {lb['p99_ms']:.1f} |")
if sys.argv[2].startswith("`[identity, hflip]`"):
    m = d["metrics_a"]
    print(f"PLAIN_A accuracy {m['overall']['accuracy']:.3f}, MCC {m['overall']['mcc']:.3f}, "
          f"expected score {m['expected_score']['mean']:.4f} ({d['images']} test images, "
          f"{d['answers']} paired answers)", file=sys.stderr)
PY
)")
done
echo "A = checkpoints/$A (linear head), MLP = checkpoints/$MLP"
echo "| B (spec) | views per image | Δ accuracy | Δ MCC | Δ expected score | McNemar p | latency p50 / p99 A → B (ms) |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
