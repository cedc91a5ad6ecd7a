#!/usr/bin/env bash
# Sweep of the tiny CPU configuration: runs `--set` variants in parallel ($THREADS threads each, default 2)
# data and prints each variant's validation purity per epoch and its last atom-by-class counts.
# Used to choose configs/tiny.yaml (numbers in NOTES.md).
# Usage: bench/tiny_sweep.sh STEPS OUTDIR ["name|--set k=v --set k2=v2" ...]
set -u
steps=${1:-1000}; out=${2:-runs/sweep}; shift 2 || true
mkdir -p "$out"
[ -f data/synth/train.v3ds ] || ./v3 data synth --out data/synth --train 512 --val 64 --test 64 >/dev/null
if [ $# -gt 0 ]; then variants=("$@"); else variants=(
  "base|"
  "ch32d32|--set model_config.n_channels=32 --set model_config.d_emb_c=32 --set model_config.d_emb_s=32"
  "K12|--set model_config.n_atoms=12"
  "r5|--set loss_config.relativity=5"
); fi
for v in "${variants[@]}"; do
  name=${v%%|*}; args=${v#*|}
  ( OMP_NUM_THREADS=${THREADS:-2} OPENBLAS_NUM_THREADS=1 ./v3 train --config configs/tiny.yaml --out "$out/$name" --steps "$steps" \
      --quiet $args > "$out/$name.stdout" 2>&1 ) &
done
wait
for v in "${variants[@]}"; do
  name=${v%%|*}
  printf '%-10s ' "$name"
  grep '"kind":"val"' "$out/$name/log.jsonl" | sed 's/.*"purity":\([0-9.]*\).*/\1/' | awk '{printf "%.2f ", $1}'
  echo
  grep '"kind":"val"' "$out/$name/log.jsonl" | tail -1 | sed 's/.*"atoms":\(\[.*\]\)\].*/   atoms \1]/'
done
