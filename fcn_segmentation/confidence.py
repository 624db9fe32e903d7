"""How sure the network is, frame after frame: the mean of the per-pixel max softmax probability and
the share of pixels below a probability threshold, averaged over a diagnostics period, with two
statistics of the picture itself (contrast and pixel noise: the network is as sure of a uniform grey
picture or of noise as of a street). A camera that is covered, blinded or looking at a scene unlike its
training data gives masks that look as confident as any; these numbers do not.

Per frame this costs about 0.5 ms: the probabilities come from the network-resolution scores the
backend returns, every ``stride``-th pixel in each direction (320x224 scores: 80x56 samples), the
picture statistics from every 8th row and column.

Calibration (``python -m fcn_segmentation.confidence --data CAMVID``) measures the per-frame
distribution on the validation frames and on frames that are not road scenes, and writes the report
behind the node's defaults (``models/eval/confidence_calibration.json``).
"""

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import numpy as np

# Calibrated with the bundled model at 320x224 on the 101 CamVid val frames and on frames that are not
# road scenes (``python -m fcn_segmentation.confidence``, models/eval/confidence_calibration.json):
# a pixel is unsure below this max softmax probability ...
DEFAULT_LOW_PROBABILITY = 0.5
# ... and a diagnostics period is WARN when the mean max probability of its frames is below this
# (val frames not trained on: 0.937-0.962 with the mined default's recipe; rotated: 0.79-0.87) ...
DEFAULT_MIN_MEAN = 0.88
# ... or their share of unsure pixels is above this (val: 0.019-0.049; those frames: 0.11-0.31).
DEFAULT_MAX_LOW_SHARE = 0.08
# The network is as sure of a uniform picture (grey 0.99, white 1.00) and of pixel noise (0.89-0.91)
# as of a street, so the picture itself is checked too: the grey-level standard deviation (val: 62 or
# more; a covered, blinded or uniform picture: 0) ...
DEFAULT_MIN_CONTRAST = 10.0
# ... and the mean grey-level difference of neighbouring pixels (val: 11.9 at most, train 19.9;
# uniform noise: 85; a camera's noise at high gain in the dark is the same kind of picture).
DEFAULT_MAX_NOISE = 40.0
DEFAULT_STRIDE = 4
PICTURE_STRIDE = 8


def frame_confidence(scores: np.ndarray, low_probability: float = DEFAULT_LOW_PROBABILITY,
                     stride: int = DEFAULT_STRIDE) -> Tuple[float, float]:
    """(mean max softmax probability, share of pixels whose max probability < low_probability) of
    (1, C, h, w) or (C, h, w) scores, on every ``stride``-th pixel."""
    if scores.ndim == 4:
        scores = scores[0]
    sampled = scores[:, ::stride, ::stride]
    top = sampled.max(axis=0)
    probability = 1.0 / np.exp(sampled - top[None]).sum(axis=0)  # max softmax = 1 / sum(exp(s - max))
    return float(probability.mean()), float(np.count_nonzero(probability < low_probability) / probability.size)


def picture_statistics(rgb: np.ndarray, stride: int = PICTURE_STRIDE) -> Tuple[float, float]:
    """(contrast, noise) of an RGB uint8 picture: the standard deviation of the grey level on every
    ``stride``-th pixel, and the mean absolute difference of horizontally neighbouring pixels on every
    ``stride``-th row (channels averaged). About 0.2 ms for 480x360."""
    sparse = rgb[::stride, ::stride]
    contrast = float(sparse.reshape(-1, sparse.shape[-1]).mean(axis=1).std()) if sparse.size else 0.0
    rows = rgb[::stride].astype(np.int16)
    noise = float(np.abs(rows[:, 1:] - rows[:, :-1]).mean()) if rows.shape[1] > 1 else 0.0
    return contrast, noise


class ConfidenceSummary(NamedTuple):
    frames: int
    mean: float        # mean over the period's frames of each frame's mean max probability
    low_share: float   # mean over the frames of each frame's share of unsure pixels
    contrast: float    # mean of the frames' grey-level standard deviations
    noise: float       # mean of the frames' neighbouring-pixel differences


class ConfidenceMonitor:
    """Accumulates ``frame_confidence`` and ``picture_statistics`` between two ``take`` calls (the
    worker adds, the diagnostics timer takes)."""

    def __init__(self, stride: int = DEFAULT_STRIDE):
        self.stride = stride
        self._lock = threading.Lock()
        self._frames, self._sums = 0, np.zeros(4)

    def add(self, scores: np.ndarray, rgb: np.ndarray, low_probability: float = DEFAULT_LOW_PROBABILITY,
            scores_stride: int = 1) -> Tuple[float, float, float, float]:
        """``scores_stride``: ``scores`` are already those of every scores_stride-th pixel (a divisor
        of the monitor's stride: the same pixels are read)."""
        if self.stride % scores_stride:
            raise ValueError(f"scores sampled every {scores_stride} pixels cannot give every {self.stride}-th")
        stride = self.stride // scores_stride
        values = (*frame_confidence(scores, low_probability, stride), *picture_statistics(rgb))
        with self._lock:
            self._frames += 1
            self._sums += values
        return values

    def take(self) -> Optional[ConfidenceSummary]:
        """What was added since the last call, or None when no frame was."""
        with self._lock:
            frames, sums = self._frames, self._sums
            self._frames, self._sums = 0, np.zeros(4)
        return ConfidenceSummary(frames, *(float(v) for v in sums / frames)) if frames else None


def unsure(summary: Optional[ConfidenceSummary], min_mean: float = DEFAULT_MIN_MEAN,
           max_low_share: float = DEFAULT_MAX_LOW_SHARE, low_probability: float = DEFAULT_LOW_PROBABILITY,
           min_contrast: float = DEFAULT_MIN_CONTRAST, max_noise: float = DEFAULT_MAX_NOISE) -> Optional[str]:
    """Why the period's masks should not be trusted, or None (also when no frame was segmented)."""
    if summary is None:
        return None
    reasons = []
    if summary.mean < min_mean:
        reasons.append(f"mean max probability {summary.mean:.2f} < {min_mean:.2f}")
    if summary.low_share > max_low_share:
        reasons.append(f"{summary.low_share:.0%} of pixels below probability {low_probability:.2f} "
                       f"(more than {max_low_share:.0%})")
    if summary.contrast < min_contrast:
        reasons.append(f"the picture is almost uniform (grey-level deviation {summary.contrast:.1f} < "
                       f"{min_contrast:.1f})")
    if summary.noise > max_noise:
        reasons.append(f"the picture is mostly noise (neighbouring pixels differ by {summary.noise:.1f} > "
                       f"{max_noise:.1f})")
    if not reasons:
        return None
    return (f"unsure over the last {summary.frames} frames: {'; '.join(reasons)}; the camera may be covered, "
            "blinded or looking at a scene unlike the training data")


# -- calibration ---------------------------------------------------------------------------------

def unlike_training_frames(rgb: np.ndarray, seed: int = 0):
    """(name, picture) of frames that are not road scenes, made from a real frame ``rgb``."""
    rng = np.random.default_rng(seed)
    height, width = rgb.shape[:2]
    yield "uniform_noise", rng.integers(0, 256, rgb.shape, dtype=np.uint8)
    yield "grey", np.full(rgb.shape, 128, np.uint8)
    yield "black", np.zeros(rgb.shape, np.uint8)
    yield "white", np.full(rgb.shape, 255, np.uint8)
    yield "rotated_90", np.ascontiguousarray(np.rot90(rgb))
    yield "rotated_180", np.ascontiguousarray(rgb[::-1, ::-1])
    blocks = rng.integers(0, 256, (height // 40 + 1, width // 40 + 1, 3), dtype=np.uint8)
    yield "colour_blocks", np.ascontiguousarray(np.kron(blocks, np.ones((40, 40, 1), np.uint8))[:height, :width])


def calibrate(data: Path, model_path: Optional[str] = None, backend_name: str = "auto",
              low_probability: float = DEFAULT_LOW_PROBABILITY, stride: int = DEFAULT_STRIDE) -> dict:
    from .backends import create_backend
    from .data import read_rgb, split_pairs
    from .defaults import default_model_path
    from .pipeline import Segmenter

    model_path = model_path or str(default_model_path())
    backend, _ = create_backend(backend_name, model_path)
    segmenter = Segmenter(backend)
    pairs = split_pairs(data, "val")

    def measure(rgb):
        return (*frame_confidence(segmenter(rgb).scores, low_probability, stride), *picture_statistics(rgb))

    val = np.array([measure(read_rgb(image)) for image, _ in pairs])
    others = {}
    for index in (0, len(pairs) // 2, len(pairs) - 1):
        for name, rgb in unlike_training_frames(read_rgb(pairs[index][0]), seed=index):
            others.setdefault(name, []).append(measure(rgb))

    def describe(values):
        values = np.asarray(values)
        return {"min": float(values.min()), "p1": float(np.percentile(values, 1)),
                "p5": float(np.percentile(values, 5)), "median": float(np.median(values)),
                "p95": float(np.percentile(values, 95)), "p99": float(np.percentile(values, 99)),
                "max": float(values.max())}
    return {"model": model_path, "backend": backend.describe(),
            "input_size": f"{backend.info.input_width}x{backend.info.input_height}",
            "low_probability": low_probability, "stride": stride, "val_frames": len(pairs),
            "val_mean_max_probability": describe(val[:, 0]), "val_low_share": describe(val[:, 1]),
            "val_contrast": describe(val[:, 2]), "val_noise": describe(val[:, 3]),
            "not_road_scenes": {name: {key: [round(float(v[column]), 4) for v in values]
                                       for column, key in enumerate(("mean_max_probability", "low_share",
                                                                     "contrast", "noise"))}
                                for name, values in others.items()},
            "defaults": {"confidence_low_probability": DEFAULT_LOW_PROBABILITY,
                         "confidence_min_mean": DEFAULT_MIN_MEAN, "confidence_max_low_share": DEFAULT_MAX_LOW_SHARE,
                         "confidence_min_contrast": DEFAULT_MIN_CONTRAST, "confidence_max_noise": DEFAULT_MAX_NOISE},
            "val_frames_unsure": int(sum(unsure(ConfidenceSummary(1, *row)) is not None for row in val)),
            "not_road_scene_frames_unsure": {name: int(sum(unsure(ConfidenceSummary(1, *v)) is not None
                                                           for v in values)) for name, values in others.items()}}


def main(argv=None) -> int:
    from .defaults import model_argument

    parser = argparse.ArgumentParser(description="Measure the confidence distribution on CamVid val and on "
                                                 "frames that are not road scenes (calibrates the node's "
                                                 "confidence_* parameters)")
    parser.add_argument("--data", required=True, help="CamVid folder (val/ and valannot/)")
    parser.add_argument("--model", type=model_argument, help="model file, or a bundled model: default, accurate; "
                        "default: the default one")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--low-probability", type=float, default=DEFAULT_LOW_PROBABILITY)
    parser.add_argument("--out", help="JSON report (models/eval/confidence_calibration.json)")
    args = parser.parse_args(argv)
    report = calibrate(Path(args.data), args.model, args.backend, args.low_probability)
    report["command"] = "python -m fcn_segmentation.confidence " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
