#!/usr/bin/env bash
# Sweep of the tiny CPU configuration: runs several `--set` variants in parallel (2 threads each) on the
# synthetic data and prints the validation purity trajectory of each. Used to choose configs/tiny.yaml
# (numbers in NOTES.md). Usage: bench/tiny_sweep.sh STEPS OUTDIR
set -u
steps=${1:-1000}; out=${2:-runs/sweep}
mkdir -p "$out"
[ -f data/synth/train.v3ds ] || ./v3 data synth --out data/synth --train 512 --val 64 --test 64 >/dev/null
variants=(
  "base|"
  "ch64|--set model_config.n_channels=64"
  "K12|--set model_config.n_atoms=12"
  "dead2|--set model_config.threshold_ema_dead_code=2"
  "ch64d64|--set model_config.n_channels=64 --set model_config.d_emb_c=64 --set model_config.d_emb_s=64"
  "r5|--set loss_config.relativity=5"
  "lr3e-3|--set optimizer_config.lr=3e-3"
  "ema095|--set model_config.vq_ema_decay=0.95"
)
for v in "${variants[@]}"; do
  name=${v%%|*}; args=${v#*|}
  ( OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1 ./v3 train --config configs/tiny.yaml --out "$out/$name" --steps "$steps" \
      --quiet $args > "$out/$name.stdout" 2>&1 ) &
done
wait
for v in "${variants[@]}"; do
  name=${v%%|*}
  printf '%-10s ' "$name"
  grep '"kind":"val"' "$out/$name/log.jsonl" | sed 's/.*"purity":\([0-9.]*\).*/\1/' | awk '{printf "%.2f ", $1}'
  echo
done
