"""Accuracy of a segmenter on a labelled split: confusion matrix, IoU, pixel accuracy, plots."""

import json
from collections import Counter
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from tqdm import tqdm

from .data import read_label, read_rgb
from .metrics import ConfusionMatrix
from .splits import count_by_sequence, frames, parse_names


def evaluate_split(segmenter, data_root, split: str, limit: Optional[int] = None,
                   progress: bool = True, sequences=None) -> Dict:
    """Score a split at the images' own size (480x360 for CamVid; any size works) with the
    network at its native input size, as deployed. Also scores at the network's size (labels
    resized nearest), which shows what upsampling the class map costs. ``split`` may name several
    (``train,val``); ``sequences`` keeps only those drives' frames. Returns the JSON summary."""
    import cv2

    info = segmenter.info
    pairs = frames(data_root, split, sequences=sequences)[:limit]
    confusion = ConfusionMatrix(info.num_classes)
    confusion_native = ConfusionMatrix(info.num_classes)
    inference_ms = []
    sizes = Counter()  # (width, height) -> images of that size: a folder may mix cameras
    for image_path, label_path in tqdm(pairs, desc=f"evaluate {split}", disable=not progress, unit="img"):
        rgb = read_rgb(image_path)
        label = read_label(label_path, info.num_classes)
        if label.shape != rgb.shape[:2]:
            raise ValueError(f"{label_path} is {label.shape[::-1]} but {image_path} is {rgb.shape[1::-1]}")
        sizes[rgb.shape[1], rgb.shape[0]] += 1
        result = segmenter(rgb)
        inference_ms.append(sum(result.timings_ms.values()))
        confusion.update(label, result.classes)
        native_label = cv2.resize(label, (info.input_width, info.input_height), interpolation=cv2.INTER_NEAREST_EXACT)
        confusion_native.update(native_label, result.network_classes)
    summary = confusion.summary(info.class_names)
    summary.update({
        "num_images": len(pairs),
        "split": split,
        "sequences": parse_names(sequences) or None,
        "images_by_sequence": count_by_sequence(pairs),
        "data": str(data_root),
        "network_input_size": [info.input_width, info.input_height],
        "image_size": list(sizes.most_common(1)[0][0]),
        "image_sizes": {f"{width}x{height}": count for (width, height), count in sizes.items()},
        "miou_at_network_size": confusion_native.mean_iou(),
        "pixel_accuracy_at_network_size": confusion_native.pixel_accuracy(),
        "backend": segmenter.backend.describe(),
        "segment_ms_p50": float(np.percentile(inference_ms, 50)),
    })
    return summary


def write_report(summary: Dict, json_path, class_names) -> Path:
    """Write the JSON and a PNG of the confusion matrix and per-class IoU beside it."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=2))
    png_path = json_path.with_suffix(".png")
    plot_confusion_and_iou(np.asarray(summary["confusion_matrix"]), summary["per_class_iou"], class_names,
                           png_path, title=f"{summary['split']}: mIoU {summary['miou']:.3f}, "
                                           f"pixel acc {summary['pixel_accuracy']:.3f}")
    return png_path


def plot_confusion_and_iou(matrix: np.ndarray, per_class_iou: Dict, class_names, path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = matrix.sum(axis=1, keepdims=True)
    normalized = matrix / np.maximum(rows, 1)
    fig, (ax_cm, ax_iou) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [1.2, 1]})
    image = ax_cm.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    ax_cm.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right")
    ax_cm.set_yticks(range(len(class_names)), class_names)
    ax_cm.set_xlabel("predicted")
    ax_cm.set_ylabel("ground truth")
    ax_cm.set_title("confusion matrix (row-normalised)")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            if normalized[i, j] >= 0.01:
                ax_cm.text(j, i, f"{normalized[i, j]:.2f}", ha="center", va="center", fontsize=7,
                           color="white" if normalized[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax_cm, fraction=0.046)
    values = [per_class_iou.get(name) or 0.0 for name in class_names]
    ax_iou.barh(range(len(class_names)), values, color="tab:blue")
    ax_iou.set_yticks(range(len(class_names)), class_names)
    ax_iou.invert_yaxis()
    ax_iou.set_xlim(0, 1)
    ax_iou.set_xlabel("IoU")
    ax_iou.set_title("per-class IoU")
    for y, v in enumerate(values):
        ax_iou.text(v + 0.01, y, f"{v:.2f}", va="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_examples(segmenter, data_root, split: str, path, count: int = 4, sequences=None) -> Path:
    """A PNG grid, one row per frame: image, ground truth, prediction, overlay."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .visualize import color_mask

    info = segmenter.info
    pairs = frames(data_root, split, sequences=sequences)
    chosen = [pairs[int(i)] for i in np.linspace(0, len(pairs) - 1, min(count, len(pairs)))]
    fig, axes = plt.subplots(len(chosen), 4, figsize=(16, 3.1 * len(chosen)), squeeze=False)
    for row, (image_path, label_path) in zip(axes, chosen):
        rgb = read_rgb(image_path)
        label = read_label(label_path, info.num_classes)
        classes = segmenter(rgb).classes
        truth = color_mask(np.where(label < info.num_classes, label, 255).astype(np.uint8), segmenter.lut)
        panels = (rgb, truth, segmenter.colorize(classes), segmenter.overlay(rgb, classes))
        for ax, panel, title in zip(row, panels, ("image", "ground truth (void black)", "prediction", "overlay")):
            ax.imshow(panel)
            ax.set_title(f"{title}: {Path(image_path).name}" if title == "image" else title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
