#!/usr/bin/env bash
# Re-create the bundled default model with the exact recipe of models/MODEL_CARD.md (seed 0, CPU):
# the shipped run was stopped after epoch 15 of a 40-epoch schedule and resumed with a 28-epoch one,
# which --stop-after-epoch replays; the file is written with the 320x224 default input size.
# Resumable: rerun after an interruption. Usage: scripts/train_default_model.sh [DATA_DIR] [OUT.pt]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$root/runs/default"
recipe=(--data "${1:-$root/../shared/datasets/camvid}" --run-dir "$run" --out "${2:-$run/model.pt}"
        --threads 2 --deploy-input-size 320x224 --resume)
"${FCNSEG:-$root/.venv/bin/fcnseg}" train "${recipe[@]}" --epochs 40 --stop-after-epoch 15
"${FCNSEG:-$root/.venv/bin/fcnseg}" train "${recipe[@]}" --epochs 28
