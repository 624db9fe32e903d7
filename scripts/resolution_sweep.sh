#!/usr/bin/env bash
# Input resolution vs accuracy and speed for the bundled model (issue "Accuracy"): val mIoU at
# 480x360 and ONNX Runtime CPU frames/s for several network input sizes. Usage: scripts/resolution_sweep.sh [DATA_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$root/../shared/datasets/camvid}"
fcnseg="${FCNSEG:-$root/.venv/bin/fcnseg}"
python="${PYTHON:-$root/.venv/bin/python}"
out="$root/runs/resolution"
mkdir -p "$out"
for size in 320x224 384x288 480x352 640x480; do
  "$fcnseg" evaluate --data "$data" --split val --backend onnxruntime --input-size "$size" --json "$out/val_$size.json" > /dev/null
  "$fcnseg" bench --no-dds --frames 30 --input-size "$size" --json "$out/bench_$size.json" > /dev/null
done
"$python" "$root/scripts/tables.py" resolution "$out"
