"""preprocess -> backend -> postprocess, timed per stage."""

import time
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from .postprocess import class_map, confidence_map, resize_nearest, resize_scores
from .preprocess import Preprocessor
from .visualize import color_mask, overlay, palette_lut


@dataclass
class Segmentation:
    classes: np.ndarray                 # (H, W) uint8, image size
    scores: np.ndarray                  # (1, C, h, w) float32 class scores (image size with full-resolution logits)
    timings_ms: Dict[str, float]
    network_classes: Optional[np.ndarray] = None  # (h, w) uint8 at the network's input size

    def confidence(self) -> np.ndarray:
        """(H, W) uint8 max softmax probability x 255, computed on demand: the node asks for it
        only while someone subscribes, and after the class mask is out."""
        return resize_nearest(confidence_map(self.scores), self.classes.shape)


class Segmenter:
    """Segments RGB uint8 images of any size with one backend."""

    def __init__(self, backend, full_resolution_logits: bool = False):
        info = backend.info
        self.backend = backend
        self.info = info
        self.full_resolution_logits = full_resolution_logits
        self.preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)
        self.lut = palette_lut(info.palette)

    def __call__(self, rgb: np.ndarray) -> Segmentation:
        t0 = time.perf_counter()
        batch = self.preprocess(rgb)
        t1 = time.perf_counter()
        scores, network_classes = self.backend.segment(batch)
        t2 = time.perf_counter()
        size = rgb.shape[:2]
        if self.full_resolution_logits:
            scores = resize_scores(scores, size)
            classes = class_map(scores)
        else:
            classes = resize_nearest(network_classes, size)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return Segmentation(classes, scores, timings, network_classes)

    def colorize(self, classes: np.ndarray) -> np.ndarray:
        return color_mask(classes, self.lut)

    def overlay(self, rgb: np.ndarray, classes: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        return overlay(rgb, self.colorize(classes), alpha)
