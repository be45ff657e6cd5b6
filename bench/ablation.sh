#!/usr/bin/env bash
# Ablation of the default recipe at a short, equal budget (10 epochs x 512 crops each), on the fixed split.
# Run: bash bench/ablation.sh [DATA] [OUT]   -> OUT/<variant>/history.csv, OUT/<variant>.txt (val_eval table)
set -euo pipefail
DATA=${1:-../shared/data/dsb2018/stage1_train}
OUT=${2:-runs/ablation}
mkdir -p "$OUT"
short=(--preset default --epochs 10 --samples-per-epoch 512)
variant() {  # name, extra --set arguments...
  local name=$1; shift
  [ -f "$OUT/$name/history.csv" ] && [ "$(wc -l < "$OUT/$name/history.csv")" -gt 10 ] && return 0
  rm -rf "${OUT:?}/$name"
  nucleiseg train --data "$DATA" --out "$OUT/$name" "${short[@]}" "$@"
  python bench/val_eval.py --model "$OUT/$name" --no-tta > "$OUT/$name.txt"
}
variant default
variant no_augment --set augment=false
variant foreground_targets --set targets=foreground --set model.out_channels=1
variant width24 --set model.widths=24,48,96,192,384
