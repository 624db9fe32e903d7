"""The node's parameters (``PARAMETERS``: default, description, whether it may change at run time,
validator) and the bounds on their values beyond type and validator: a value that is not finite, or
far outside what any car could mean (a pitch in degrees given as radians, a 10 km grid), is refused
at start (exit 2, ``startup error: ...``) or by the parameter callback, with the reason. Pure
checks: no ROS, testable on their own.

The bounds (README, "The node"): every decimal parameter finite; camera_height (0, 100] m;
camera_x, camera_y [-100, 100] m; camera_pitch, camera_roll, camera_yaw [-pi, pi] rad;
grid_resolution (0, 10] m; grid_range_ahead, grid_width (0, 1000] m, at least one cell each;
diagnostics_period [0.01, 3600] s; stall_timeout, log_throttle_period (0, 3600] s; qos_depth,
output_qos_depth [1, 1000]; inference_threads above the core count is capped to it (a warning).
"""

import math
import os
from typing import Optional, Tuple

from ..backends.selection import BACKEND_NAMES, PRECISIONS
from ..confidence import DEFAULT_LOW_PROBABILITY, DEFAULT_MAX_LOW_SHARE, DEFAULT_MAX_NOISE, \
    DEFAULT_MIN_BRIGHTER_ABOVE, DEFAULT_MIN_BRIGHTER_ABOVE_LESS_SIDEWAYS, DEFAULT_MIN_CONTRAST, DEFAULT_MIN_MEAN, \
    DEFAULT_MIN_SKY_ABOVE_ROAD, DEFAULT_MIN_UPRIGHT_MARGIN
from ..frames import DEFAULT_MAX_PIXELS
from ..model.fcn import INPUT_MULTIPLE

MAX_CLOSE_KERNEL_PX = 99  # beyond this the closing costs more than the network and erases the road's shape
MAX_GRID_CELLS = 4_000_000  # e.g. 200 m x 200 m at 0.1 m; more is a typo in the resolution, not a map
RELIABILITY_CHOICES = ("best_effort", "reliable")
DURABILITY_CHOICES = ("volatile", "transient_local")

MAX_DEPTH = 1000  # a keep-last queue of 1000 camera images is already half a gigabyte
# name -> (low, high, whether low itself is allowed, unit)
BOUNDS = {
    "camera_height": (0.0, 100.0, False, "m"),
    "camera_x": (-100.0, 100.0, True, "m"),
    "camera_y": (-100.0, 100.0, True, "m"),
    "camera_pitch": (-math.pi, math.pi, True, "rad"),
    "camera_roll": (-math.pi, math.pi, True, "rad"),
    "camera_yaw": (-math.pi, math.pi, True, "rad"),
    "grid_resolution": (0.0, 10.0, False, "m"),
    "grid_range_ahead": (0.0, 1000.0, False, "m"),
    "grid_width": (0.0, 1000.0, False, "m"),
    "diagnostics_period": (0.01, 3600.0, True, "s"),
    "stall_timeout": (0.0, 3600.0, False, "s"),
    "log_throttle_period": (0.0, 3600.0, False, "s"),
    "qos_depth": (1, MAX_DEPTH, True, ""),
    "output_qos_depth": (1, MAX_DEPTH, True, ""),
}
ANGLE_HINT = " (radians: 10 degrees is 0.1745)"


def value_error(name: str, value) -> Optional[str]:
    """Why ``value`` is unusable for parameter ``name`` (finite, within BOUNDS, an ONNX file that is
    not empty), or None. The caller has already checked the type."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"parameter '{name}' is {value!r}: must be a finite number"
    if name in BOUNDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high, low_allowed, unit = BOUNDS[name]
        if not (low <= value <= high) or (value == low and not low_allowed):
            opening = "[" if low_allowed else "("
            hint = ANGLE_HINT if unit == "rad" else ""
            return (f"parameter '{name}' is {value!r}: must be in {opening}{_number(low)}, {_number(high)}]"
                    f"{' ' + unit if unit else ''}{hint}")
    if name == "onnx_path" and value and os.path.isfile(value) and os.path.getsize(value) == 0:
        return f"parameter 'onnx_path': {value} is an empty file (0 bytes); export it again (fcnseg export)"
    return None


def _number(value) -> str:
    if isinstance(value, float) and abs(value - math.pi) < 1e-12:
        return "pi"
    if isinstance(value, float) and abs(value + math.pi) < 1e-12:
        return "-pi"
    return f"{value:g}"


def grid_error(resolution: float, range_ahead: float, width: float, columns: int, rows: int,
               max_cells: int) -> Optional[str]:
    """Why the grid these parameters give cannot be built (no cell, or more than ``max_cells``), or None."""
    if rows < 1 or columns < 1:
        return (f"the drivable grid would have {columns}x{rows} cells: grid_range_ahead ({range_ahead:g} m) and "
                f"grid_width ({width:g} m) must each be at least half a grid_resolution ({resolution:g} m)")
    if rows * columns > max_cells:
        return (f"the drivable grid would have {columns}x{rows} cells (grid_range_ahead / grid_resolution x "
                f"grid_width / grid_resolution), more than {max_cells}: check grid_resolution (metres per cell)")
    return None


def capped_threads(requested: int, cores: Optional[int] = None) -> Tuple[int, Optional[str]]:
    """``inference_threads`` as used: more threads than cores only make inference slower (threads
    wait for each other), so a larger value is capped at the core count; the second item is the
    warning to log, or None."""
    cores = cores or os.cpu_count() or 1
    if requested > cores:
        return cores, (f"inference_threads {requested} is more than the {cores} CPU cores: using {cores} "
                       "(more threads than cores only wait for each other)")
    return requested, None


def _choice(*choices):
    return lambda v: None if v in choices else f"choose one of: {', '.join(choices)}"


def _at_least(low):
    return lambda v: None if v >= low else f"must be >= {low}"


def _positive(v):
    return None if v > 0 else "must be > 0"


def _network_side(v):
    if v >= 0 and v % INPUT_MULTIPLE == 0:
        return None
    return f"must be 0 (the model file's) or a positive multiple of {INPUT_MULTIPLE}"


def _between(low, high):
    return lambda v: None if low <= v <= high else f"must be in [{low}, {high}]"


def _fraction(v):
    return None if 0.0 <= v <= 1.0 else "must be in [0, 1]"


# name -> (default, description, changeable at run time, validator returning an error text or None)
PARAMETERS = {
    "model_path": ("", "model file (.pt), or a bundled model: default (EfficientNet-Lite0, 384x288) or "
                   "accurate (EfficientNet-Lite2, 640x480); empty = default", False, None),
    "onnx_path": ("", "ONNX file for onnxruntime/tensorrt; empty = exported from model_path and cached", False, None),
    "backend": ("auto", "inference backend; auto picks the fastest available", False, _choice(*BACKEND_NAMES)),
    "device": ("auto", "cpu, cuda, or auto", False, _choice("auto", "cpu", "cuda")),
    "engine_cache_dir": ("", "TensorRT engine cache folder; empty = ~/.cache/fcn_segmentation", False, None),
    "precision": ("auto", "auto (the measured default: OpenVINO int8 on the CPU, fp32 elsewhere), fp32, fp16 "
                  "(TensorRT, torch on CUDA), bf16 (OpenVINO on a CPU with BF16 instructions), int8 (TensorRT, "
                  "OpenVINO, ONNX Runtime on the CPU; calibrated on calibration_data, or the bundled model's own "
                  "images)", False, _choice(*PRECISIONS)),
    "inference_threads": (0, "CPU threads for OpenVINO / ONNX Runtime / torch on the CPU; 0 = the runtime's default "
                          "(one per "
                          "core); cap it to leave cores to the rest of the stack", False, _at_least(0)),
    "inference_busy_wait": (False, "let ONNX Runtime's CPU threads spin when out of work (its own default) and "
                            "pin OpenVINO's to cores: a "
                            "little lower latency on an otherwise idle CPU, but the spinning takes cores from the "
                            "camera driver and DDS; off, a 30 Hz stream on 2 cores keeps up", False, None),
    "force_engine_update": (False, "rebuild the TensorRT engine even if a cached one matches", False, None),
    "calibration_data": ("", "precision int8 from a float ONNX: folder of images (or a CamVid-layout dataset: its "
                         "train/) to calibrate on (OpenVINO / ONNX Runtime: quantized once and cached; TensorRT: "
                         "a new engine); empty = the bundled model's own images; not needed for a QDQ INT8 "
                         "onnx_path", False, None),
    "input_transport": ("raw", "raw subscribes image (sensor_msgs/Image); compressed subscribes "
                        "image/compressed (sensor_msgs/CompressedImage)", False, _choice("raw", "compressed")),
    "qos_reliability": ("best_effort", "reliability of the image and camera_info subscriptions", False,
                        _choice(*RELIABILITY_CHOICES)),
    "qos_depth": (1, "history depth of the image subscription", False, _at_least(1)),
    "camera_info_durability": ("volatile", "durability of the camera_info subscription: transient_local hears a "
                               "camera_info latched before the node started (it matches only transient_local "
                               "publishers)", False, _choice(*DURABILITY_CHOICES)),
    "output_qos_depth": (5, "history depth of the reliable output publishers: room to resend a lost "
                         "fragment of a large mask before the next frame replaces it", False, _at_least(1)),
    "publish_class_mask": (True, "publish segmentation/class_mask (mono8 class ids)", True, None),
    "publish_color_mask": (True, "publish segmentation/color_mask (rgb8 palette)", True, None),
    "publish_overlay": (True, "publish segmentation/overlay while it has subscribers", True, None),
    "publish_confidence": (True, "publish segmentation/confidence while it has subscribers", True, None),
    "overlay_alpha": (0.5, "weight of the colour mask in the overlay, 0..1", True, _fraction),
    "network_image_width": (0, "network input width, a multiple of 32; 0 = the model file's (set both or "
                            "neither; larger is more accurate and slower)", False, _network_side),
    "network_image_height": (0, "network input height, a multiple of 32; 0 = the model file's", False,
                             _network_side),
    "full_resolution_logits": (False, "resize scores to the image before argmax (slower, smoother edges)",
                               False, None),
    "test_time_flip": (False, "average the scores of each frame and of its mirror image: twice the network's "
                       "work, +0.6 to +0.8 point mIoU on an unseen drive; not with onnx_path", False, None),
    "max_image_pixels": (DEFAULT_MAX_PIXELS, "frames with more pixels are rejected", False, _at_least(1)),
    "publish_drivable_mask": (True, "publish drivable_area/mask (mono8, 255 = drivable)", True, None),
    "publish_drivable_grid": (True, "publish drivable_area/grid (nav_msgs/OccupancyGrid) once camera_info "
                              "has arrived", True, None),
    "drivable_classes": (["Road"], "class names the car may drive on", True, None),
    "drivable_mask_mode": ("cleaned", "cleaned (holes closed, specks removed, connected to the ego lane) or "
                           "raw (union of the drivable classes)", True, _choice("cleaned", "raw")),
    "drivable_close_kernel_px": (7, "closing kernel for holes and gaps in pixels; 0 = off", True,
                                 _between(0, MAX_CLOSE_KERNEL_PX)),
    "drivable_min_region_px": (200, "drivable regions smaller than this are removed; 0 = off", True, _at_least(0)),
    "drivable_connect_to_ego": (True, "keep only regions touching the bottom-centre ego zone", True, None),
    "ego_zone_width": (0.3, "ego zone width as a share of the image width", True, _fraction),
    "ego_zone_height": (0.1, "ego zone height as a share of the image height", True, _fraction),
    "grid_frame_id": ("base_link", "vehicle frame of the occupancy grid", False, None),
    "grid_resolution": (0.1, "metres per grid cell", False, _positive),
    "grid_range_ahead": (40.0, "metres covered in front of the vehicle origin", False, _positive),
    "grid_width": (20.0, "metres covered across, centred on the vehicle", False, _positive),
    "camera_height": (1.5, "camera height above the ground, metres", False, _positive),
    "camera_pitch": (0.0, "camera pitch about the left axis, radians, positive = looking down (REP 103)", False, None),
    "camera_roll": (0.0, "camera roll about the forward axis, radians, "
                    "positive = right side down (REP 103)", False, None),
    "camera_yaw": (0.0, "camera yaw about the up axis, radians, positive = looking left (REP 103)", False, None),
    "camera_x": (0.0, "camera position ahead of the vehicle origin, metres", False, None),
    "camera_y": (0.0, "camera position left of the vehicle origin, metres", False, None),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages", False, _positive),
    "stall_timeout": (3.0, "diagnostics report ERROR when a frame has waited or been in work this many seconds",
                      False, _positive),
    "log_throttle_period": (5.0, "seconds between repeated warnings about bad frames", False, _positive),
    "confidence_low_probability": (DEFAULT_LOW_PROBABILITY, "a pixel whose max softmax probability is below this "
                                   "is unsure (diagnostics low_confidence_share)", True, _fraction),
    "confidence_min_mean": (DEFAULT_MIN_MEAN, "diagnostics WARN when the period's mean max softmax probability is "
                            "below this (a drive not trained on: 0.78-0.95)", True, _fraction),
    "confidence_max_low_share": (DEFAULT_MAX_LOW_SHARE, "diagnostics WARN when the period's share of unsure pixels "
                                 "is above this (a drive not trained on: 0.10 at most)", True, _fraction),
    "confidence_min_contrast": (DEFAULT_MIN_CONTRAST, "diagnostics WARN when the picture's grey-level standard "
                                "deviation is below this (covered, blinded, uniform; CamVid val: 62 or more)", True,
                                _between(0.0, 255.0)),
    "confidence_max_noise": (DEFAULT_MAX_NOISE, "diagnostics WARN when neighbouring pixels differ by more than this "
                             "on average (pixel noise; CamVid: 20 at most)", True, _between(0.0, 255.0)),
    "confidence_min_sky_above_road": (DEFAULT_MIN_SKY_ABOVE_ROAD, "diagnostics WARN when the masks' road rows minus "
                                      "sky rows, as a share of the height, is below this (a turned or upside-down "
                                      "camera; upright CamVid streets: 0.61-0.86; -1 turns the check off)", True,
                                      _between(-1.0, 1.0)),
    "confidence_min_upright_margin": (DEFAULT_MIN_UPRIGHT_MARGIN, "diagnostics WARN when the network is not surer "
                                      "of the frame as received than turned upside down by this much (mean max "
                                      "softmax probability; one more inference per diagnostics period). An "
                                      "installation check in daylight: -0.05 (upright streets 0.005 or more, upside "
                                      "down -0.13 or less); at dusk upright frames reach -0.09. -1 (default): off",
                                      True, _between(-1.0, 1.0)),
    "confidence_min_brighter_above": (DEFAULT_MIN_BRIGHTER_ABOVE, "diagnostics WARN when the top third of the "
                                      "picture is not brighter than its bottom third by this share of its mean grey "
                                      "level (a camera mounted upside down, by day and at dusk). An installation "
                                      "check: 0 (upright CamVid frames 0.18 or more, upside down -0.18 or less, day "
                                      "and dusk); at night a road lit by headlights is brighter than the sky. -3 "
                                      "(default): off", True, _between(-3.0, 3.0)),
    "confidence_min_brighter_above_less_sideways": (
        DEFAULT_MIN_BRIGHTER_ABOVE_LESS_SIDEWAYS, "diagnostics WARN when the top third minus the bottom third of "
        "the picture, less the absolute difference of its left and right thirds (mean grey levels, over the "
        "picture's mean), is below this (a camera turned by 90 degrees: the sky at one side). An installation "
        "check: -0.5 (upright CamVid frames -0.40 or more; turned by 90 degrees below -0.5 at dusk always, by day "
        "72-96% of frames); at night a road lit by headlights is brighter than the sky. -3 (default): off", True,
        _between(-3.0, 3.0)),
}


def example_value(default) -> str:
    """``default`` as it is written on a ros2 command line (name:=VALUE)."""
    if isinstance(default, list):
        return "[" + ", ".join(str(v) for v in default) + "]"
    return str(default).lower() if isinstance(default, bool) else str(default)
