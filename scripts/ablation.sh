#!/usr/bin/env bash
# Ablation on CamVid val (issue "Accuracy"): FCN-32s vs 16s vs 8s, and learned vs fixed bilinear
# upsampling, each trained with the default recipe for a short, equal budget. Resumable: rerun to continue.
# Usage: scripts/ablation.sh [DATA_DIR] [EPOCHS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$root/../shared/datasets/camvid}"
epochs="${2:-8}"
fcnseg="${FCNSEG:-$root/.venv/bin/fcnseg}"
out="$root/runs/ablation"
mkdir -p "$out"
for config in "fcn32s" "fcn16s" "fcn8s" "fcn8s --fixed-upsampling"; do
  name="$(echo "$config" | tr -d ' -' | sed 's/fixedupsampling/_fixed/')"
  if [ ! -f "$out/$name.pt" ]; then
    "$fcnseg" train --data "$data" --variant $config --epochs "$epochs" --val-every "$epochs" \
      --run-dir "$out/$name" --out "$out/$name.pt" --resume --threads 2
  fi
  [ -f "$out/$name.json" ] || "$fcnseg" evaluate --data "$data" --split val --model "$out/$name.pt" \
      --backend onnxruntime --json "$out/$name.json"
done
"${PYTHON:-$root/.venv/bin/python}" "$root/scripts/tables.py" ablation "$out"
