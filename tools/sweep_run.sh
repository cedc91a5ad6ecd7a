#!/usr/bin/env bash
# One run of a sweep (issue 18): trains CONFIG with the given --set overrides into runs/sweep/NAME, evaluates its
# final checkpoint on the test split (no few-shot, no t-SNE, no figures) and prints the summary row
# (tools/sweep_table.py). Usage: tools/sweep_run.sh NAME CONFIG [KEY=VALUE ...]
# Environment: DATA (dataset directory, default data/phonenums), STEPS (default 1500), THREADS (default 2).
set -euo pipefail
name=$1; cfg=$2; shift 2
sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
out=runs/sweep/$name
rm -rf "$out"; mkdir -p runs/sweep
export OMP_NUM_THREADS=${THREADS:-2}
start=$(date +%s)
./v3 train --config "$cfg" --data "${DATA:-data/phonenums}" --out "$out" --device cpu --steps "${STEPS:-1500}" \
  "${sets[@]}" > "$out.train.log" 2>&1
mid=$(date +%s)
./v3 eval --run "$out" --checkpoint "$out/checkpoints/latest.v3ck" --no-few-shot --tsne-points 0 --no-figures \
  --quiet > "$out.eval.log" 2>&1
end=$(date +%s)
echo "{\"train_s\": $((mid - start)), \"eval_s\": $((end - mid)), \"sets\": \"$*\"}" > "$out/sweep.json"
python3 tools/sweep_table.py "$out"
