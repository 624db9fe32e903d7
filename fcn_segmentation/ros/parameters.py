"""Bounds on the node's parameter values, beyond their type and the per-parameter validators in
``node.PARAMETERS``: a value that is not finite, or far outside what any car could mean (a pitch in
degrees given as radians, a 10 km grid), is refused at start (exit 2, ``startup error: ...``) or by
the parameter callback, with the reason. Pure checks: no ROS, testable on their own.

The bounds (README, "The node"): every decimal parameter finite; camera_height (0, 100] m;
camera_x, camera_y [-100, 100] m; camera_pitch, camera_roll, camera_yaw [-pi, pi] rad;
grid_resolution (0, 10] m; grid_range_ahead, grid_width (0, 1000] m, at least one cell each;
diagnostics_period [0.01, 3600] s; stall_timeout, log_throttle_period (0, 3600] s; qos_depth,
output_qos_depth [1, 1000]; inference_threads above the core count is capped to it (a warning).
"""

import math
import os
from typing import Optional, Tuple

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
