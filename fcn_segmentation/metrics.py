"""Confusion-matrix metrics: pixel accuracy, per-class IoU, mean IoU."""

from typing import Dict, Sequence

import numpy as np


class ConfusionMatrix:
    """Accumulates a (C, C) matrix, rows = ground truth, columns = prediction; labels outside
    0..C-1 (void) are ignored."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        if truth.shape != prediction.shape:
            raise ValueError(f"label shape {truth.shape} differs from prediction shape {prediction.shape}")
        n = self.num_classes
        valid = truth < n
        index = n * truth[valid].astype(np.int64) + prediction[valid].astype(np.int64)
        self.matrix += np.bincount(index, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.diag(self.matrix).sum() / total) if total else float("nan")

    def mean_iou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def summary(self, class_names: Sequence[str]) -> Dict:
        iou = self.iou()
        return {
            "miou": self.mean_iou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
            "confusion_matrix": self.matrix.tolist(),
        }
