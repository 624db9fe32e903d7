#!/usr/bin/env bash
# Re-create the bundled default model with the exact recipe of models/MODEL_CARD.md (seed 0, CPU): the
# recipe chosen on the unseen-sequence validation (scripts/unseen_ablation.sh, variant
# fp32_fcn4s_ohem_unweighted_lighting_lovasz50, 56 epochs: the FCN-4s head, cross entropy over the hardest
# 25% of the labelled pixels of each batch without class weights plus the Lovasz-softmax loss at half
# weight, stronger brightness/contrast/saturation jitter and a per-channel colour cast for unseen
# light), trained on CamVid train + val (the usual protocol for test figures), BF16 autocast where the
# CPU has it (FP32 elsewhere), written with the 384x288 default input size (weights trained at 480x352
# scale).
# Resumable: rerun after an interruption. Usage: scripts/train_default_model.sh [DATA_DIR] [OUT.pt]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$root/runs/default_lovasz50"
# OpenMP threads that sleep instead of spinning: a step took 3.4 instead of 20 s on 2 shared cores
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
"${FCNSEG:-$root/.venv/bin/fcnseg}" train --data "${1:-$root/../shared/datasets/camvid}" --train-splits train,val \
  --val-split "" --bf16 auto --variant fcn4s --class-weights none --hard-pixel-fraction 0.25 --epochs 56 \
  --photometric-strength 0.5 --colour-cast 0.2 --lovasz-weight 0.5 \
  --deploy-input-size 384x288 --run-dir "$run" --out "${2:-$run/model.pt}" --resume --threads 2
