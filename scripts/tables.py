"""Markdown tables for the model card from the JSON that scripts/ablation.sh and
scripts/resolution_sweep.sh write. Usage: python scripts/tables.py {ablation,resolution} RUN_DIR"""

import json
import sys
from pathlib import Path


def markdown(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def ablation(out: Path) -> str:
    rows = []
    for name in ("fcn32s", "fcn16s", "fcn8s", "fcn8s_fixed"):
        result = json.loads((out / f"{name}.json").read_text())
        iou = result["per_class_iou"]
        rows.append([name.split("_")[0], "fixed bilinear" if "fixed" in name else "learned (bilinear init)",
                     f"{result['miou']:.3f}", f"{result['pixel_accuracy']:.3f}",
                     *(f"{iou[c]:.3f}" for c in ("Pole", "SignSymbol", "Pedestrian", "Bicyclist"))])
    return markdown(["model", "upsampling", "val mIoU", "val pixel acc", "Pole", "SignSymbol", "Pedestrian",
                     "Bicyclist"], rows)


def resolution(out: Path) -> str:
    rows = []
    for size in ("320x224", "384x288", "480x352", "640x480"):
        val = json.loads((out / f"val_{size}.json").read_text())
        bench = json.loads((out / f"bench_{size}.json").read_text())
        ort = bench["backends"]["onnxruntime-cpu"]
        rows.append([size, f"{val['miou']:.3f}", f"{bench['gflops_per_frame']:.2f}", f"{ort['total']['p50']:.1f} ms",
                     f"{ort['fps']:.1f}"])
    return markdown(["network input", "val mIoU (480x360)", "GFLOP/frame", "ONNX Runtime CPU total p50", "fps"], rows)


if __name__ == "__main__":
    table = {"ablation": ablation, "resolution": resolution}[sys.argv[1]]
    print(table(Path(sys.argv[2])))
