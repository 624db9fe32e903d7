"""Score a distillation teacher (the averaged probabilities of model files, as `fcnseg train --teacher`
computes them) on a held-out drive: how much better than the student it is, what there is to learn.
Usage: python scripts/teacher_score.py DATA_DIR SEQUENCE WxH MODEL.pt[,MODEL.pt] OUT.json [--no-flip]"""

import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fcn_segmentation.cli import parse_network_size
from fcn_segmentation.data import read_label, read_rgb
from fcn_segmentation.metrics import ConfusionMatrix
from fcn_segmentation.splits import frames
from fcn_segmentation.teacher import Teacher


def main(argv):
    data, sequence, size, models, out = argv[:5]
    teacher = Teacher(models.split(","), parse_network_size(size), flip="--no-flip" not in argv)
    confusion = ConfusionMatrix(len(teacher.class_names))
    pairs = frames(data, "train,val", sequences=[sequence])
    for image, label in tqdm(pairs, desc=f"teacher on {sequence}", unit="img"):
        probabilities = teacher.probabilities(read_rgb(image))
        confusion.update(read_label(label, len(teacher.class_names)), probabilities.argmax(-1).astype(np.uint8))
    summary = confusion.summary(teacher.class_names)
    summary.update({"teacher": teacher.describe(), "sequences": [sequence], "num_images": len(pairs),
                    "command": "python " + " ".join(["scripts/teacher_score.py", *argv])})
    Path(out).write_text(json.dumps(summary, indent=2))
    print(f"{sequence}: mIoU {summary['miou']:.3f} ({teacher.describe()}); wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
