"""Markdown table for the model card from the JSON that scripts/unseen_ablation.sh writes:
each variant's mIoU on the held-out drive and on standard val, and the thin / small classes.
Usage: python scripts/unseen_table.py models/eval/unseen [HOLDOUT]"""

import json
import sys
from pathlib import Path

THIN = ("Pole", "SignSymbol", "Pedestrian", "Bicyclist")
ORDER = ("shipped", "baseline", "rare_crops", "ohem", "rare_ohem", "lite1", "lite1_rare_ohem")


def row(out: Path, name: str, holdout: str, size: str):
    unseen, val = out / f"{name}_unseen_{holdout}_{size}.json", out / f"{name}_val_{size}.json"
    if not (unseen.is_file() and val.is_file()):
        return None
    unseen, val = json.loads(unseen.read_text()), json.loads(val.read_text())
    cells = [name, size, f"{unseen['miou']:.3f}", f"{val['miou']:.3f}"]
    cells += [f"{unseen['per_class_iou'][c]:.3f} / {val['per_class_iou'][c]:.3f}" for c in THIN]
    return cells


def table(out: Path, holdout: str) -> str:
    names = sorted({p.name.split("_unseen_")[0] for p in out.glob("*_unseen_*.json")},
                   key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    header = ["variant", "input", f"unseen {holdout} mIoU", "val mIoU", *(f"{c} unseen / val" for c in THIN)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # every input size some variant was scored at, smallest first (names end _WxH.json)
    sizes = sorted({p.stem.rsplit("_", 1)[1] for p in out.glob("*_unseen_*.json")},
                   key=lambda wxh: tuple(int(side) for side in wxh.split("x")))
    for size in sizes:
        for name in names:
            cells = row(out, name, holdout, size)
            if cells:
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "0006R0"))
