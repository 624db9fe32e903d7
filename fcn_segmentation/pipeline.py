"""preprocess -> backend -> postprocess, timed per stage."""

import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from .postprocess import class_map, confidence_map, full_resolution_classes, resize_nearest, resize_scores
from .preprocess import Preprocessor
from .visualize import color_mask, overlay, palette_lut


@dataclass
class Segmentation:
    classes: np.ndarray                 # (H, W) uint8, image size
    scores: np.ndarray                  # (1, C, h, w) float32 class scores (image size with full-resolution logits)
    timings_ms: Dict[str, float]
    network_classes: Optional[np.ndarray] = None  # (h, w) uint8 at the network's input size
    scores_stride: int = 1              # scores of every scores_stride-th network pixel only

    def confidence(self) -> np.ndarray:
        """(H, W) uint8 max softmax probability x 255, computed on demand: the node asks for it
        only while someone subscribes, and after the class mask is out."""
        return resize_nearest(confidence_map(self.scores), self.classes.shape)


class NonFiniteScoresError(RuntimeError):
    """The network gave NaN or infinite scores: its mask would be meaningless (all one class)."""


# full_resolution_logits: scores resized whole up to this size (bytes); larger frames are resized and
# argmaxed in bands of rows, so a 4096 x 4096 frame never holds C x 4096 x 4096 floats at once
# (738 MB for 11 classes; a band is 32 MB).
FULL_RESOLUTION_SCORES_MAX_BYTES = 32 * 1024 * 1024


class Segmenter:
    """Segments RGB uint8 images of any size with one backend."""

    def __init__(self, backend, full_resolution_logits: bool = False, scores_stride: int = 1):
        """``scores_stride`` s: each Segmentation's scores are those of every s-th network pixel (what
        a confidence estimate on sampled pixels needs; faster on OpenVINO), unless a call asks for all."""
        info = backend.info
        self.backend = backend
        self.info = info
        self.full_resolution_logits = full_resolution_logits
        self.scores_stride = 1 if full_resolution_logits else scores_stride
        self.preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)
        self.lut = palette_lut(info.palette)

    def __call__(self, rgb: np.ndarray, output_hw: Optional[Tuple[int, int]] = None,
                 all_scores: bool = False) -> Segmentation:
        """Segment ``rgb``; the class mask has size ``output_hw`` (the frame's, when ``rgb`` was decoded
        at a reduced scale), by default the image's. ``all_scores``: the scores of every pixel, whatever
        the Segmenter's ``scores_stride``. Raises NonFiniteScoresError for NaN / inf scores."""
        stride = 1 if all_scores else self.scores_stride
        t0 = time.perf_counter()
        batch = self.preprocess(rgb)
        t1 = time.perf_counter()
        scores, network_classes = self.backend.segment(batch, stride)
        t2 = time.perf_counter()
        # 0.1 ms at 320x224 (on all scores); a NaN would otherwise argmax to class 0. Sampled scores are
        # checked as sampled: NaN weights or normalisation spoil every pixel, not a few.
        if not np.isfinite(scores).all():
            raise NonFiniteScoresError(f"the network gave {np.count_nonzero(~np.isfinite(scores))} non-finite "
                                       "scores (NaN or inf): check the model file's weights and normalisation")
        size = tuple(output_hw) if output_hw else rgb.shape[:2]
        if self.full_resolution_logits:
            channels = scores.shape[-3]
            if channels * size[0] * size[1] * 4 <= FULL_RESOLUTION_SCORES_MAX_BYTES:
                scores = resize_scores(scores, size)
                classes = class_map(scores)
            else:
                classes = full_resolution_classes(scores, size, FULL_RESOLUTION_SCORES_MAX_BYTES)
        else:
            classes = resize_nearest(network_classes, size)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return Segmentation(classes, scores, timings, network_classes, stride)

    def colorize(self, classes: np.ndarray) -> np.ndarray:
        return color_mask(classes, self.lut)

    def overlay(self, rgb: np.ndarray, classes: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        return overlay(rgb, self.colorize(classes), alpha)
