"""Where the car may drive: a cleaned drivable-area mask and its projection onto the ground plane
(inverse perspective mapping) as an occupancy grid in the vehicle frame.

Frames: vehicle (base_link) x forward, y left, z up, origin on the ground. The camera sits at
(x, y, height) with yaw (left positive), pitch (down positive) and roll; its optical frame is
x right, y down, z forward. Flat ground (z = 0) is assumed.
"""

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

FREE, OCCUPIED, UNKNOWN = 0, 100, -1


def class_ids(names: Sequence[str], class_names: Sequence[str]):
    """Class names -> ids; unknown names raise ValueError listing the valid ones."""
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise ValueError(f"unknown drivable classes {unknown}; the model's classes are: {', '.join(class_names)}")
    if not names:
        raise ValueError("drivable_classes is empty; name at least one class, e.g. Road")
    return [list(class_names).index(n) for n in names]


@dataclass
class MaskCleaning:
    close_kernel_px: int = 7         # closing fills holes and gaps up to about this size; 0 = off
    min_region_px: int = 200         # connected regions smaller than this are removed; 0 = off
    connect_to_ego: bool = True      # keep only regions touching the ego zone at the bottom centre
    ego_zone_width: float = 0.3      # ego zone: this share of the width, centred ...
    ego_zone_height: float = 0.1     # ... and this share of the height, at the bottom


def drivable_mask(classes: np.ndarray, drivable: Sequence[int], cleaning: Optional[MaskCleaning] = None) -> np.ndarray:
    """(H, W) class ids -> uint8 mask, 255 = drivable. ``cleaning=None`` gives the raw union."""
    lut = np.zeros(256, np.uint8)
    lut[list(drivable)] = 255
    mask = lut[classes]
    if cleaning is None:
        return mask
    if cleaning.close_kernel_px > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cleaning.close_kernel_px,) * 2)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    if cleaning.min_region_px > 0 or cleaning.connect_to_ego:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        keep = np.zeros(count, bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= cleaning.min_region_px
        if cleaning.connect_to_ego:
            height, width = mask.shape
            zone_w = max(1, int(width * cleaning.ego_zone_width))
            zone_h = max(1, int(height * cleaning.ego_zone_height))
            left = (width - zone_w) // 2
            in_zone = np.zeros(count, bool)
            in_zone[np.unique(labels[height - zone_h:, left:left + zone_w])] = True
            keep &= in_zone
        keep[0] = False
        mask = np.where(keep[labels], 255, 0).astype(np.uint8)
    return mask


@dataclass(frozen=True)
class CameraMount:
    height: float = 1.5   # metres above the ground
    pitch: float = 0.0    # radians, positive = looking down
    roll: float = 0.0
    yaw: float = 0.0      # radians, positive = looking left
    x: float = 0.0        # metres ahead of the vehicle origin
    y: float = 0.0        # metres left of the vehicle origin

    def rotation(self) -> np.ndarray:
        """Camera body (x fwd, y left, z up) -> vehicle rotation: yaw, then pitch, then roll."""
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
        ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
        rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
        return rz @ ry @ rx


@dataclass(frozen=True)
class GridSpec:
    resolution: float = 0.1   # metres per cell
    range_ahead: float = 40.0  # metres in front of the vehicle origin
    width: float = 20.0        # metres, centred on the vehicle's x axis

    @property
    def cells(self) -> Tuple[int, int]:
        """(rows along y, columns along x)."""
        return int(round(self.width / self.resolution)), int(round(self.range_ahead / self.resolution))

    @property
    def origin_xy(self) -> Tuple[float, float]:
        return 0.0, -self.width / 2


# Camera body (x fwd, y left, z up) -> optical (x right, y down, z fwd).
_BODY_TO_OPTICAL = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], np.float64)


def project_to_image(points_vehicle: np.ndarray, K: np.ndarray, mount: CameraMount,
                     distortion: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3) vehicle-frame points -> (N, 2) pixel (u, v) and a mask of points in front of the camera."""
    rotation = mount.rotation()
    camera_position = np.array([mount.x, mount.y, mount.height])
    optical = (points_vehicle - camera_position) @ rotation @ _BODY_TO_OPTICAL.T
    in_front = optical[:, 2] > 1e-6
    if distortion is not None and np.any(distortion):
        pixels, _ = cv2.projectPoints(optical[in_front].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, distortion)
        uv = np.full((len(optical), 2), np.nan)
        uv[in_front] = pixels.reshape(-1, 2)
        return uv, in_front
    with np.errstate(divide="ignore", invalid="ignore"):
        homogeneous = optical @ K.T
        uv = homogeneous[:, :2] / homogeneous[:, 2:3]
    return uv, in_front


class GroundGridProjector:
    """Precomputed cell -> pixel lookup (once per camera_info); each frame only gathers mask pixels."""

    def __init__(self, K: np.ndarray, image_size: Tuple[int, int], mount: CameraMount, grid: GridSpec,
                 distortion: Optional[np.ndarray] = None):
        self.grid, self.mount = grid, mount
        self.image_height, self.image_width = image_size
        rows, cols = grid.cells
        x0, y0 = grid.origin_xy
        xs = x0 + (np.arange(cols) + 0.5) * grid.resolution
        ys = y0 + (np.arange(rows) + 0.5) * grid.resolution
        gx, gy = np.meshgrid(xs, ys)  # (rows, cols): row = y index, column = x index
        points = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
        uv, in_front = project_to_image(points, np.asarray(K, np.float64), mount, distortion)
        with np.errstate(invalid="ignore"):
            u = np.floor(uv[:, 0]).astype(np.int64, copy=False)
            v = np.floor(uv[:, 1]).astype(np.int64, copy=False)
            seen = in_front & np.isfinite(uv).all(axis=1) & (u >= 0) & (u < self.image_width) \
                & (v >= 0) & (v < self.image_height)
        self.seen_cells = np.flatnonzero(seen)
        self.seen_pixels = v[seen] * self.image_width + u[seen]
        self.shape = (rows, cols)

    def grid_values(self, mask: np.ndarray) -> np.ndarray:
        """uint8 mask (255 = drivable) -> int8 (rows, cols): 0 free, 100 occupied, -1 unknown."""
        if mask.shape != (self.image_height, self.image_width):
            raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, projector expects "
                             f"{self.image_width}x{self.image_height}")
        values = np.full(self.shape[0] * self.shape[1], UNKNOWN, np.int8)
        drivable = mask.ravel()[self.seen_pixels] > 0
        values[self.seen_cells] = np.where(drivable, FREE, OCCUPIED)
        return values.reshape(self.shape)


def scaled_intrinsics(K: np.ndarray, info_size: Tuple[int, int], image_size: Tuple[int, int]) -> np.ndarray:
    """Intrinsics of a camera_info for a different image size (the image was resized)."""
    (info_h, info_w), (img_h, img_w) = info_size, image_size
    if (info_h, info_w) == (img_h, img_w) or not info_h or not info_w:
        return np.asarray(K, np.float64)
    scale = np.diag([img_w / info_w, img_h / info_h, 1.0])
    return scale @ np.asarray(K, np.float64)


def grid_image(values: np.ndarray, pixels_per_cell: int = 2) -> np.ndarray:
    """Occupancy values -> RGB picture, forward = up: free green, occupied red, unknown grey."""
    colors = np.zeros((values.shape[0], values.shape[1], 3), np.uint8)
    colors[values == UNKNOWN] = (90, 90, 90)
    colors[values == FREE] = (40, 200, 60)
    colors[values == OCCUPIED] = (200, 40, 40)
    # Grid rows run along +y (right to left), columns along +x (forward); the picture puts the
    # farthest cells on top and the leftmost on the left.
    picture = colors.transpose(1, 0, 2)[::-1, ::-1]
    return cv2.resize(np.ascontiguousarray(picture), None, fx=pixels_per_cell, fy=pixels_per_cell,
                      interpolation=cv2.INTER_NEAREST)
