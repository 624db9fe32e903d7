"""How sure the network is, frame after frame: the mean of the per-pixel max softmax probability and
the share of pixels below a probability threshold, averaged over a diagnostics period, with two
statistics of the picture itself (contrast and pixel noise: the network is as sure of a uniform grey
picture or of noise as of a street; and how much brighter its top is than its bottom: a camera
mounted upside down, by day or dusk), the layout of the mask (is the road below the sky: a turned
camera) and, when asked for, once per diagnostics period whether the network is surer of the picture
turned upside down than as received (a camera mounted upside down; daylight only). A camera that is
covered, blinded, turned or looking at a scene unlike its training data gives masks that look as
confident as any; these numbers do not.

Per frame this costs about 0.5 ms (0.55 ms measured for 384x288 scores on the 2-core AMD EPYC with
AVX-512, beside a training run; 0.28 ms of it without the layout): the probabilities and the layout
come from the network-resolution scores the backend returns, every ``stride``-th pixel in each
direction (384x288 scores: 96x72 samples), the picture statistics from every 8th row and column.
The upright check, when on, costs one more inference per diagnostics period.

Calibration (``fcnseg calibrate-confidence --data CAMVID [--split S --sequences D]``)
measures the per-frame distribution on road frames (val, or a drive held out of training) and on
frames that are not road scenes, and writes the report behind the node's defaults
(``models/eval/confidence_calibration.json``).
"""

import threading
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .classes import CAMVID_CLASSES

# Calibrated on a drive the network never saw: first the recipe of the time trained without sequence
# 0006R0 (scripts/unseen_ablation.sh, bf16_fcn4s_ohem_unweighted), then rechecked with each new
# default's recipe, run as the node runs it (OpenVINO INT8, 384x288) on all 101 frames of 0006R0, on val
# and on pictures that are not road scenes (``fcnseg calibrate-confidence``; the figures below are the
# current recipe's, fp32_fcn4s_ohem_unweighted_lighting_lovasz50:
# models/eval/confidence_unseen_0006R0.json, the dusk drive's confidence_unseen_0001TP.json and val's
# confidence_calibration.json). The network is much less sure on new streets than on val, so a threshold
# fitted to val alarms on ordinary new streets (0.88 flagged 31 of the 101 frames the first time). A
# pixel is unsure below this max softmax probability ...
DEFAULT_LOW_PROBABILITY = 0.5
# ... and a diagnostics period is WARN when the mean max probability of its frames is below this
# (0006R0: 0.80-0.94; 0001TP: 0.80-0.91; val: 0.95-0.97; rotated by 180 degrees: 0.69-0.73, by 90:
# 0.79-0.84, the daytime fold's network) ...
DEFAULT_MIN_MEAN = 0.75
# ... or their share of unsure pixels is above this (0006R0 and 0001TP: 0.10 at most; rotated by 180:
# 0.16-0.19).
DEFAULT_MAX_LOW_SHARE = 0.13
# The network is as sure of a uniform picture (grey and white 0.97-0.99 by the daytime fold's network
# and the shipped one, 0.74-0.80 by the dusk fold's), of pixel noise (0.72-0.93) and of blocks of random
# colour (0.83-0.99) as of a street, so the picture itself is checked too: the grey-level standard
# deviation (road frames: 44 or more; a covered, blinded or uniform picture: 0) ...
DEFAULT_MIN_CONTRAST = 10.0
# ... and the mean grey-level difference of neighbouring pixels (road frames: 19.9 at most; uniform
# noise: 85; a camera's noise at high gain in the dark is the same kind of picture) ...
DEFAULT_MAX_NOISE = 40.0
# ... and the layout of the masks: road rows minus sky rows as a share of the height (upright streets,
# 0006R0, 0001TP and val: 0.59-0.82; turned by 90 degrees: -0.23-0.28). Upside down it is -0.24-0.51: the
# network often calls the sky road and the road sky then, so only some upside-down pictures are caught.
DEFAULT_MIN_SKY_ABOVE_ROAD = 0.45
# Upside down, the network is less sure of a street in daylight than upright, even where it swaps sky
# and road: the mean max probability of a frame as received minus that of the same frame turned by 180
# degrees (one more inference per diagnostics period) is 0.08-0.29 on the upright frames of 0006R0 and
# 0.08-0.28 on val, and -0.13 to -0.22 upside down, so DAYTIME_MIN_UPRIGHT_MARGIN separates them. At
# dusk it does not: on the unseen drive 0001TP upright frames give -0.06 to 0.09 (the first recipe's:
# -0.09 to 0.00, 14 of 62 below -0.05) and upside-down ones -0.04 to 0.04. So the check is off by
# default (-1); turn it on for an installation check in daylight.
DAYTIME_MIN_UPRIGHT_MARGIN = -0.05
DEFAULT_MIN_UPRIGHT_MARGIN = -1.0
# The picture alone tells upside down at dusk too: the mean grey level of its top third minus that of
# its bottom third, over its mean grey level, is 0.18 or more on every frame of CamVid train and val
# (day: 0.18-1.3; the dusk drive 0001TP: 1.06 or more, its sky being the brightest thing in it) and
# so -0.18 or less upside down. A camera turned by 90 degrees is not told apart (-0.8 to 0.6). At
# night a road lit by headlights under a dark sky is brighter below (not measured: CamVid has no
# night), so the check is off by default (-3, the lowest value there is); 0 for an installation check.
DAY_AND_DUSK_MIN_BRIGHTER_ABOVE = 0.0
DEFAULT_MIN_BRIGHTER_ABOVE = -3.0
# Turned by 90 degrees, the bright sky lies at one side: brighter above less the left third's minus the
# right third's mean grey level (absolute, over the mean) is -0.40 or more on every frame of CamVid
# train and val (dusk: 0.71 or more); turned by 90 degrees it is -0.77 or less at dusk and below -0.5 on
# 72-96% of the daytime frames (each drive, each direction). Off by default for the same reason (night).
DAY_AND_DUSK_MIN_BRIGHTER_ABOVE_LESS_SIDEWAYS = -0.5
DEFAULT_MIN_BRIGHTER_ABOVE_LESS_SIDEWAYS = -3.0
DEFAULT_STRIDE = 4
PICTURE_STRIDE = 8
CAMVID_LAYOUT = (CAMVID_CLASSES.index("Sky"), CAMVID_CLASSES.index("Road"))
LAYOUT_MIN_SHARE = 0.01


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


def sky_above_road(scores: np.ndarray, layout: Optional[Tuple[int, int]] = None, stride: int = DEFAULT_STRIDE,
                   min_share: float = LAYOUT_MIN_SHARE) -> float:
    """How far the road lies below the sky in the predicted classes of (1, C, h, w) or (C, h, w) scores,
    on every ``stride``-th pixel (``layout``: the (Sky, Road) class indices, CamVid's by default): the
    mean row of Road pixels minus the mean row of Sky pixels, as a fraction of the height (upright
    street: about 0.6; a camera turned by 90 degrees: about 0; upside down: below 0 when the network
    is not fooled). NaN when either class covers less than ``min_share`` of the samples (a tunnel, a
    truck ahead: the layout says nothing then)."""
    if scores.ndim == 4:
        scores = scores[0]
    classes = scores[:, ::stride, ::stride].argmax(axis=0)
    rows = np.arange(classes.shape[0], dtype=np.float64)
    means = []
    for class_index in layout or CAMVID_LAYOUT:
        per_row = np.count_nonzero(classes == class_index, axis=1)
        if per_row.sum() < min_share * classes.size:
            return float("nan")
        means.append(float(per_row @ rows) / per_row.sum())
    return (means[1] - means[0]) / max(classes.shape[0] - 1, 1)


def picture_statistics(rgb: np.ndarray, stride: int = PICTURE_STRIDE) -> Tuple[float, float, float, float]:
    """(contrast, noise, brighter above, brighter above less sideways) of an RGB uint8 picture: the
    standard deviation of the grey level on every ``stride``-th pixel; the mean absolute difference of
    horizontally neighbouring pixels on every ``stride``-th row (channels averaged); the mean grey level
    of the top third minus that of the bottom third, over the mean grey level (0 for a uniform picture;
    negative when the picture is darker above than below); and that less the absolute difference of
    the left and right thirds, over the mean grey level (negative when one side is brighter than the
    top is above the bottom: a camera turned by 90 degrees). About 0.2 ms for 480x360."""
    sparse = rgb[::stride, ::stride]
    grey = sparse.mean(axis=2) if sparse.size else np.zeros((0, 0))
    contrast = float(grey.std()) if grey.size else 0.0
    rows = rgb[::stride].astype(np.int16)
    noise = float(np.abs(rows[:, 1:] - rows[:, :-1]).mean()) if rows.shape[1] > 1 else 0.0
    mean = max(float(grey.mean()), 1.0) if grey.size else 1.0
    third, column_third = grey.shape[0] // 3, grey.shape[1] // 3
    brighter_above = float(grey[:third].mean() - grey[-third:].mean()) / mean if third else 0.0
    sideways = (abs(float(grey[:, :column_third].mean() - grey[:, -column_third:].mean())) / mean
                if column_third else 0.0)
    return contrast, noise, brighter_above, brighter_above - sideways


class ConfidenceSummary(NamedTuple):
    frames: int
    mean: float        # mean over the period's frames of each frame's mean max probability
    low_share: float   # mean over the frames of each frame's share of unsure pixels
    contrast: float    # mean of the frames' grey-level standard deviations
    noise: float       # mean of the frames' neighbouring-pixel differences
    sky_above_road: float = float("nan")  # mean over the frames that showed both; NaN when none did
    upright_margin: float = float("nan")  # mean of the period's upright checks; NaN when none ran
    brighter_above: float = float("nan")  # mean of the frames' top-minus-bottom grey levels (over their mean)
    brighter_above_less_sideways: float = float("nan")  # ... less their |left-minus-right| (over their mean)


class Thresholds(NamedTuple):
    """When a period's masks should not be trusted (the node's confidence_* parameters)."""
    min_mean: float = DEFAULT_MIN_MEAN
    max_low_share: float = DEFAULT_MAX_LOW_SHARE
    low_probability: float = DEFAULT_LOW_PROBABILITY
    min_contrast: float = DEFAULT_MIN_CONTRAST
    max_noise: float = DEFAULT_MAX_NOISE
    min_sky_above_road: float = DEFAULT_MIN_SKY_ABOVE_ROAD
    min_upright_margin: float = DEFAULT_MIN_UPRIGHT_MARGIN
    min_brighter_above: float = DEFAULT_MIN_BRIGHTER_ABOVE
    min_brighter_above_less_sideways: float = DEFAULT_MIN_BRIGHTER_ABOVE_LESS_SIDEWAYS


def turned_over(rgb: np.ndarray) -> np.ndarray:
    """The picture turned by 180 degrees: what a camera mounted upside down shows."""
    return np.ascontiguousarray(rgb[::-1, ::-1])


def layout_classes(class_names: Sequence[str]) -> Optional[Tuple[int, int]]:
    """(Sky, Road) class indices of a model, or None when it has not both (no layout check then)."""
    names = list(class_names)
    return (names.index("Sky"), names.index("Road")) if "Sky" in names and "Road" in names else None


class ConfidenceMonitor:
    """Accumulates ``frame_confidence``, ``picture_statistics`` and ``sky_above_road`` between two
    ``take`` calls (the worker adds, the diagnostics timer takes), and the upright margin of the frames
    the caller also segmented turned over (``wants_upright_check``, ``add_upright_check``).
    ``layout``: the model's (Sky, Road) class indices (``layout_classes``), None to leave the layout out."""

    def __init__(self, stride: int = DEFAULT_STRIDE, layout: Optional[Tuple[int, int]] = CAMVID_LAYOUT):
        self.stride = stride
        self.layout = layout
        self._lock = threading.Lock()
        self._reset()

    def _reset(self):
        self._frames, self._sums = 0, np.zeros(6)  # mean, low share, contrast, noise, brighter above (less sideways)
        self._layout_frames, self._layout_sum = 0, 0.0
        self._upright_checks, self._upright_sum = 0, 0.0

    def measure(self, scores: np.ndarray, rgb: np.ndarray, low_probability: float = DEFAULT_LOW_PROBABILITY,
                scores_stride: int = 1) -> Tuple[float, float, float, float, float, float, float]:
        """One frame's (mean, low share, contrast, noise, sky above road, brighter above, brighter above less
        sideways), not accumulated.
        ``scores_stride``: ``scores`` are already those of every scores_stride-th pixel (a divisor of
        the monitor's stride: the same pixels are read)."""
        stride = self._sample_stride(scores_stride)
        layout = sky_above_road(scores, self.layout, stride) if self.layout else float("nan")
        contrast, noise, *brightness = picture_statistics(rgb)
        return (*frame_confidence(scores, low_probability, stride), contrast, noise, layout, *brightness)

    def _sample_stride(self, scores_stride: int) -> int:
        if self.stride % scores_stride:
            raise ValueError(f"scores sampled every {scores_stride} pixels cannot give every {self.stride}-th")
        return self.stride // scores_stride

    def upright_margin(self, mean: float, turned_scores: np.ndarray, scores_stride: int = 1) -> float:
        """``mean`` (the frame's mean max probability, from ``measure``) minus that of the scores of the
        same frame turned over (``turned_over``): below 0, the network is surer of the picture upside down."""
        return mean - frame_confidence(turned_scores, stride=self._sample_stride(scores_stride))[0]

    def wants_upright_check(self) -> bool:
        """True until the period has one upright check: one extra inference per period is enough."""
        with self._lock:
            return self._upright_checks == 0

    def add_upright_check(self, mean: float, turned_scores: np.ndarray, scores_stride: int = 1) -> float:
        """``upright_margin``, counted in the period."""
        margin = self.upright_margin(mean, turned_scores, scores_stride)
        with self._lock:
            self._upright_checks += 1
            self._upright_sum += margin
        return margin

    def add(self, scores: np.ndarray, rgb: np.ndarray, low_probability: float = DEFAULT_LOW_PROBABILITY,
            scores_stride: int = 1) -> Tuple[float, float, float, float, float, float, float]:
        """``measure`` the frame and count it in the period."""
        values = self.measure(scores, rgb, low_probability, scores_stride)
        mean, low_share, contrast, noise, layout, *brightness = values
        with self._lock:
            self._frames += 1
            self._sums += (mean, low_share, contrast, noise, *brightness)
            if not np.isnan(layout):
                self._layout_frames += 1
                self._layout_sum += layout
        return values

    def take(self) -> Optional[ConfidenceSummary]:
        """What was added since the last call, or None when no frame was."""
        with self._lock:
            frames, sums = self._frames, self._sums
            layout = self._layout_sum / self._layout_frames if self._layout_frames else float("nan")
            upright = self._upright_sum / self._upright_checks if self._upright_checks else float("nan")
            self._reset()
        if not frames:
            return None
        mean, low_share, contrast, noise, *brightness = (float(v) for v in sums / frames)
        return ConfidenceSummary(frames, mean, low_share, contrast, noise, layout, upright, *brightness)


def doubts(summary: ConfidenceSummary, thresholds: Thresholds = Thresholds()) -> Dict[str, str]:
    """The checks a period fails, by name (``CHECKS``), with why."""
    t = thresholds
    found = {}
    if summary.mean < t.min_mean:
        found["mean"] = f"mean max probability {summary.mean:.2f} < {t.min_mean:.2f}"
    if summary.low_share > t.max_low_share:
        found["low_share"] = (f"{summary.low_share:.0%} of pixels below probability {t.low_probability:.2f} "
                              f"(more than {t.max_low_share:.0%})")
    if summary.contrast < t.min_contrast:
        found["contrast"] = (f"the picture is almost uniform (grey-level deviation {summary.contrast:.1f} < "
                             f"{t.min_contrast:.1f})")
    if summary.noise > t.max_noise:
        found["noise"] = (f"the picture is mostly noise (neighbouring pixels differ by {summary.noise:.1f} > "
                          f"{t.max_noise:.1f})")
    if summary.sky_above_road < t.min_sky_above_road:  # False for NaN: no frame showed both
        found["layout"] = (f"the sky is not above the road (road rows minus sky rows {summary.sky_above_road:.2f} "
                           f"of the height < {t.min_sky_above_road:.2f}: is the camera turned or upside down?)")
    if summary.upright_margin < t.min_upright_margin:  # False for NaN: no check ran
        found["upside_down"] = (f"the network is surer of the picture turned upside down (mean max probability "
                                f"as received minus turned over {summary.upright_margin:.2f} < "
                                f"{t.min_upright_margin:.2f}: is the camera mounted upside down?)")
    if summary.brighter_above < t.min_brighter_above:
        found["dark_above"] = (f"the picture is darker above than below (top third minus bottom third "
                               f"{summary.brighter_above:.2f} of its mean grey level < {t.min_brighter_above:.2f}: "
                               "is the camera mounted upside down?)")
    if summary.brighter_above_less_sideways < t.min_brighter_above_less_sideways:
        found["bright_sideways"] = (f"the picture is brighter at one side than above (top third minus bottom "
                                    f"third less |left third minus right third| "
                                    f"{summary.brighter_above_less_sideways:.2f} of its mean grey level < "
                                    f"{t.min_brighter_above_less_sideways:.2f}: is the camera turned by 90 degrees?)")
    return found


CHECKS = ("mean", "low_share", "contrast", "noise", "layout", "upside_down", "dark_above", "bright_sideways")


def unsure(summary: Optional[ConfidenceSummary], thresholds: Thresholds = Thresholds()) -> Optional[str]:
    """Why the period's masks should not be trusted, or None (also when no frame was segmented)."""
    reasons = doubts(summary, thresholds) if summary is not None else {}
    if not reasons:
        return None
    return (f"unsure over the last {summary.frames} frames: {'; '.join(reasons.values())}; the camera may be "
            "covered, blinded, turned or looking at a scene unlike the training data")


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


STATISTICS = ("mean_max_probability", "low_share", "contrast", "noise", "sky_above_road", "upright_margin",
              "brighter_above", "brighter_above_less_sideways")  # in ConfidenceSummary's order


def calibrate(data: Path, segmenter, splits="val", sequences=None,
              low_probability: float = DEFAULT_LOW_PROBABILITY, stride: int = DEFAULT_STRIDE) -> dict:
    """The per-frame statistics of ``segmenter`` (a ``pipeline.Segmenter``) on the road frames of
    ``splits`` (only the drives ``sequences``, if named: a drive the model was not trained on says
    what new streets give) and on frames that are not road scenes, and which frames the default
    thresholds flag and why."""
    from tqdm import tqdm

    from .data import read_rgb
    from .splits import frames, parse_names

    pairs = frames(data, splits, sequences=sequences)
    monitor = ConfidenceMonitor(stride, layout_classes(segmenter.info.class_names))

    def measure(rgb):  # as the node measures a frame, with the upright check it runs once per period
        result = segmenter(rgb)
        mean, low_share, contrast, noise, layout, *brightness = monitor.measure(
            result.scores, rgb, low_probability, result.scores_stride)
        turned = segmenter(turned_over(rgb))
        upright = monitor.upright_margin(mean, turned.scores, turned.scores_stride)
        return mean, low_share, contrast, noise, layout, upright, *brightness

    road = np.array([measure(read_rgb(image)) for image, _ in tqdm(pairs, desc="road frames", unit="frame")])
    others = {}
    for index in (0, len(pairs) // 2, len(pairs) - 1):
        for name, rgb in unlike_training_frames(read_rgb(pairs[index][0]), seed=index):
            others.setdefault(name, []).append(measure(rgb))
    thresholds = Thresholds(low_probability=low_probability)
    installation = thresholds._replace(min_upright_margin=DAYTIME_MIN_UPRIGHT_MARGIN,
                                       min_brighter_above=DAY_AND_DUSK_MIN_BRIGHTER_ABOVE,
                                       min_brighter_above_less_sideways=DAY_AND_DUSK_MIN_BRIGHTER_ABOVE_LESS_SIDEWAYS)

    def flagged(rows, checked=thresholds):
        failed = [doubts(ConfidenceSummary(1, *row), checked) for row in rows]
        return {"frames": sum(bool(checks) for checks in failed),
                "by_check": {check: sum(check in checks for checks in failed) for check in CHECKS}}

    def describe(values):
        values = np.asarray(values)
        values = values[~np.isnan(values)]
        if not values.size:
            return None
        return {"frames": int(values.size), "min": float(values.min()), "p1": float(np.percentile(values, 1)),
                "p5": float(np.percentile(values, 5)), "median": float(np.median(values)),
                "p95": float(np.percentile(values, 95)), "p99": float(np.percentile(values, 99)),
                "max": float(values.max())}
    info = segmenter.info
    return {"backend": segmenter.backend.describe(), "input_size": f"{info.input_width}x{info.input_height}",
            "low_probability": low_probability, "stride": stride,
            "splits": parse_names(splits), "sequences": parse_names(sequences) or None, "road_frames": len(pairs),
            "road": {key: describe(road[:, column]) for column, key in enumerate(STATISTICS)},
            "not_road_scenes": {name: {key: [round(float(v[column]), 4) for v in values]
                                       for column, key in enumerate(STATISTICS)}
                                for name, values in others.items()},
            "thresholds": {f"confidence_{key}": value for key, value in thresholds._asdict().items()},
            "road_frames_flagged": flagged(road),
            "not_road_scene_frames_flagged": {name: flagged(values)["frames"] for name, values in others.items()},
            # the checks that are off by default, at their installation settings
            "installation_thresholds": {f"confidence_{key}": getattr(installation, key) for key in (
                "min_upright_margin", "min_brighter_above", "min_brighter_above_less_sideways")},
            "road_frames_flagged_with_installation_checks": flagged(road, installation),
            "not_road_scene_frames_flagged_with_installation_checks": {
                name: flagged(values, installation)["frames"] for name, values in others.items()}}
