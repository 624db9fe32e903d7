"""Network scores -> class mask, confidence, colour mask. Argmax at network resolution, then a
nearest-neighbour resize of the class map to the image size (cheap, and exact class ids)."""

from typing import Optional, Tuple

import cv2
import numpy as np


def class_map(scores: np.ndarray) -> np.ndarray:
    """(C, H, W) or (1, C, H, W) scores -> (H, W) uint8 class indices."""
    if scores.ndim == 4:
        scores = scores[0]
    return np.argmax(scores, axis=0).astype(np.uint8)


def confidence_map(scores: np.ndarray) -> np.ndarray:
    """Max softmax probability per pixel as uint8 (x 255)."""
    if scores.ndim == 4:
        scores = scores[0]
    top = scores.max(axis=0)
    denom = np.exp(scores - top[None]).sum(axis=0)  # max prob = 1 / sum(exp(s - max))
    return np.clip(255.0 / denom + 0.5, 0, 255).astype(np.uint8)


def resize_nearest(mask: np.ndarray, size_hw: Tuple[int, int], out: Optional[np.ndarray] = None) -> np.ndarray:
    height, width = size_hw
    if mask.shape[:2] == (height, width):
        return mask
    # NEAREST_EXACT maps pixel centres to pixel centres; plain NEAREST shifts the mask by up to half
    # a source pixel towards the top left (0.002 val mIoU on the bundled model).
    return cv2.resize(mask, (width, height), dst=out, interpolation=cv2.INTER_NEAREST_EXACT)


def resize_scores(scores: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (C, H, W) scores: full-resolution logits, for when exact edges matter."""
    if scores.ndim == 4:
        scores = scores[0]
    height, width = size_hw
    if scores.shape[1:] == (height, width):
        return scores
    hwc = cv2.resize(np.ascontiguousarray(scores.transpose(1, 2, 0)), (width, height),
                     interpolation=cv2.INTER_LINEAR)
    return hwc.reshape(height, width, -1).transpose(2, 0, 1)
