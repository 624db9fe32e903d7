"""Training losses over (N, C, H, W) class scores and (N, H, W) labels, void pixels ignored."""

from typing import Optional, Sequence, Tuple

import torch

from .data import IGNORE_INDEX


class HardPixelLoss(torch.nn.Module):
    """Cross entropy averaged over only the hardest ``fraction`` of the batch's labelled pixels
    (online hard example mining, per pixel); the class weights still scale each pixel's loss."""

    def __init__(self, fraction: float, weight: Optional[torch.Tensor] = None, ignore_index: int = IGNORE_INDEX,
                 min_kept: int = 1024):
        super().__init__()
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"the hard-pixel fraction must be in (0, 1], got {fraction}")
        self.fraction, self.ignore_index, self.min_kept = fraction, ignore_index, min_kept
        self.register_buffer("weight", weight)

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = torch.nn.functional.cross_entropy(scores, labels, weight=self.weight,
                                                   ignore_index=self.ignore_index, reduction="none")
        losses = losses[labels != self.ignore_index]
        if losses.numel() == 0:
            return scores.sum() * 0.0
        kept = min(losses.numel(), max(self.min_kept, int(round(self.fraction * losses.numel()))))
        return losses.topk(kept, sorted=False).values.mean()


def lovasz_gradient(foreground_sorted: torch.Tensor, foreground_total: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss, for foreground flags sorted by
    decreasing error (Berman, Rannen Triki, Blaschko 2018, Algorithm 1). ``foreground_total``: the
    class's pixel count where ``foreground_sorted`` holds only the largest errors (default: its sum)."""
    if foreground_total is None:
        foreground_total = foreground_sorted.sum()
    intersection = foreground_total - foreground_sorted.cumsum(0)
    union = foreground_total + (1.0 - foreground_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


class LovaszSoftmaxLoss(torch.nn.Module):
    """Lovász-softmax: a convex surrogate of 1 - IoU per class, averaged over the classes present in
    the batch's labels. It scores the batch as one picture, as mIoU does, so a thin class counts as
    much as the road however few pixels it has. On confident (one-hot) predictions it equals the
    mean of 1 - IoU over those classes.

    Pixels whose error for a class is at most ``min_error`` are left out of that class's sort (the
    sort is the cost: 11 sorts of a batch's 655k pixels took longer than the network's step). The
    kept terms are exact, since each depends only on the errors above it and the class's pixel
    count; the ones left out add at most ``min_error`` to the loss.

    ``classes``: score only these class indices (those of them present in the batch; default all),
    e.g. the thin classes alone, leaving the large regions to the cross entropy."""

    def __init__(self, ignore_index: int = IGNORE_INDEX, min_error: float = 1e-3,
                 classes: Optional[Sequence[int]] = None):
        super().__init__()
        self.ignore_index, self.min_error = ignore_index, min_error
        self.classes = None if classes is None else frozenset(int(c) for c in classes)

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        num_classes = scores.shape[1]
        probabilities = scores.softmax(1).permute(0, 2, 3, 1).reshape(-1, num_classes)
        labels = labels.reshape(-1)
        labelled = labels != self.ignore_index
        probabilities, labels = probabilities[labelled], labels[labelled]
        if labels.numel() == 0:
            return scores.sum() * 0.0
        present = labels.unique().tolist()
        if self.classes is not None:
            present = [cls for cls in present if cls in self.classes]
        if not present:
            return scores.sum() * 0.0
        per_class = []
        for cls in present:
            foreground = (labels == cls).float()
            errors = (foreground - probabilities[:, cls]).abs()
            above = errors > self.min_error
            errors_sorted, order = errors[above].sort(descending=True)
            per_class.append(errors_sorted @ lovasz_gradient(foreground[above][order], foreground.sum()))
        return torch.stack(per_class).mean()


class WeightedLossSum(torch.nn.Module):
    """sum of weight * loss(scores, labels) over (weight, loss) pairs."""

    def __init__(self, terms: Sequence[Tuple[float, torch.nn.Module]]):
        super().__init__()
        self.weights = [float(weight) for weight, _ in terms]
        self.losses = torch.nn.ModuleList(loss for _, loss in terms)

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return sum(weight * loss(scores, labels) for weight, loss in zip(self.weights, self.losses))


class DistillationLoss(torch.nn.Module):
    """Kullback-Leibler divergence of the network's class probabilities from a teacher's, per pixel,
    averaged over the labelled pixels (those the metric scores; padding is unlabelled too)."""

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``teacher``: (N, H, W, C) probabilities."""
        labelled = labels != self.ignore_index
        if not labelled.any():
            return scores.sum() * 0.0
        log_student = scores.log_softmax(1).permute(0, 2, 3, 1)[labelled]
        teacher = teacher.float()[labelled]
        return (teacher * (teacher.clamp_min(1e-8).log() - log_student)).sum(1).mean()
