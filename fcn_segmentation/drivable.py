"""Where the car may drive: a cleaned drivable-area mask and its projection onto the ground plane
(inverse perspective mapping) as an occupancy grid in the vehicle frame.

Frames: vehicle (base_link) x forward, y left, z up, origin on the ground (REP 103). The camera sits
at (x, y, height) with yaw (positive = looking left), pitch (positive = looking down) and roll
(positive = right side down), composed as tf's rpy (see CameraMount); its optical frame is x right,
y down, z forward. Pixel centres are on integer coordinates, as in ROS and OpenCV. Lens distortion:
plumb_bob or rational_polynomial (OpenCV's model). Flat ground (z = 0) is assumed.
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
    """Where the camera sits on the vehicle, in the vehicle frame (REP 103: x forward, y left, z up).

    The angles are those of the camera's body frame (x along the optical axis, y left, z up; not the
    optical frame), in radians, composed as R = Rz(yaw) @ Ry(pitch) @ Rx(roll): the same as a URDF or
    tf ``rpy`` of a base_link -> camera_link transform.
    """

    height: float = 1.5   # metres, optical centre above the ground
    pitch: float = 0.0    # radians about y (left), positive = looking down
    roll: float = 0.0     # radians about x (forward), positive = right side down (scene turns anticlockwise)
    yaw: float = 0.0      # radians about z (up), positive = looking left
    x: float = 0.0        # metres, optical centre ahead of the vehicle origin
    y: float = 0.0        # metres, optical centre left of the vehicle origin

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

# OpenCV's coefficient vector: (k1, k2, p1, p2[, k3[, k4, k5, k6[, s1, s2, s3, s4[, tau_x, tau_y]]]]).
OPENCV_DISTORTION_LENGTHS = (4, 5, 8, 12, 14)
# camera_info distortion_model -> the D lengths it takes, the usual one first. An empty D means no distortion.
DISTORTION_MODELS = {"plumb_bob": (5, 4, 8, 12, 14), "rational_polynomial": (8, 12, 14)}

MAX_DISTORTION_LENGTH = max(OPENCV_DISTORTION_LENGTHS)
# A camera_info's declared size: no camera has 65536 pixels on a side (4294967295 is an unset uint32).
MAX_CAMERA_INFO_SIDE = 65535
# A pinhole camera sees less than 180 degrees; K whose focal length gives more than this field of view
# (fx = 1e-300, or fx in other units than pixels) would project every grid cell onto one pixel.
MAX_FIELD_OF_VIEW_DEG = 179.0

_MIN_DEPTH = 1e-6  # metres along the optical axis; nearer points count as behind the camera
# Undistortion is iterative; OpenCV's default 5 iterations leave tenths of a pixel near the corners of a strong
# lens, a good share of the round-trip tolerance below.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
# A ray the camera sees comes back from undistorting its own pixel to within the solver's accuracy; a ray
# the lens polynomial folds back into the image comes back as the in-view ray with that pixel, far away.
_ROUND_TRIP_TOLERANCE_PX = 0.5


def _intrinsics_error(k: np.ndarray) -> Optional[str]:
    if k.size != 9:
        return f"K has {k.size} values; a camera matrix has 9 (fx 0 cx 0 fy cy 0 0 1)"
    if not np.isfinite(k).all():
        return "K has non-finite values"
    fx, fy = k.flat[0], k.flat[4]
    if fx <= 0 or fy <= 0:
        return f"K has no positive focal length (fx {fx:g}, fy {fy:g}): the camera is not calibrated"
    if not np.allclose(k.flat[6:9], (0, 0, 1), rtol=0, atol=1e-9):
        return f"K's last row is {' '.join(f'{v:g}' for v in k.flat[6:9])}; a camera matrix has 0 0 1"
    return None


def field_of_view_error(k, width: int, height: int) -> Optional[str]:
    """Why K (positive fx, fy) cannot be a pinhole camera for width x height images, or None: its
    field of view would exceed MAX_FIELD_OF_VIEW_DEG (fx = 1e-300, or a declared size far larger
    than the images, which scales fx down to almost nothing)."""
    k = np.asarray(k, np.float64).ravel()
    fov_x, fov_y = (math.degrees(2 * math.atan(side / (2 * f))) for side, f in ((width, k[0]), (height, k[4])))
    if max(fov_x, fov_y) > MAX_FIELD_OF_VIEW_DEG:
        return (f"K's focal length (fx {k[0]:g}, fy {k[4]:g} pixels) gives a field of view of {fov_x:.1f} x "
                f"{fov_y:.1f} degrees for {width}x{height} images, more than a pinhole camera sees "
                f"({MAX_FIELD_OF_VIEW_DEG:g}): check K (pixels) and the image size")
    return None


def camera_info_error(k, d, distortion_model: str, width: int, height: int) -> Optional[str]:
    """Why a sensor_msgs/CameraInfo cannot be used for the ground projection, or None if it can.

    Needed: K a calibrated pinhole matrix (9 finite values, fx and fy > 0, last row 0 0 1), the image
    size, and a distortion model this module implements: plumb_bob or rational_polynomial with a D length
    OpenCV takes for it, or none (empty model with an empty or all-zero D; an empty D with a supported
    model also means none). A camera_info that passes builds a GroundGridProjector without error.
    """
    try:
        k = np.asarray(k, np.float64).ravel()
        d = np.asarray(d, np.float64).ravel()
    except (TypeError, ValueError):
        return "K and D must be lists of numbers"
    error = _intrinsics_error(k)
    if error:
        return error
    if width <= 0 or height <= 0:
        return f"the image size is {width}x{height}; camera_info must give the size it was calibrated at"
    if width > MAX_CAMERA_INFO_SIDE or height > MAX_CAMERA_INFO_SIDE:
        return f"the image size is {width}x{height}: more than {MAX_CAMERA_INFO_SIDE} pixels on a side"
    error = field_of_view_error(k, width, height)
    if error:
        return error
    if d.size > MAX_DISTORTION_LENGTH:
        return f"D has {d.size} coefficients; no distortion model takes more than {MAX_DISTORTION_LENGTH}"
    if distortion_model and distortion_model not in DISTORTION_MODELS:
        return (f"distortion model '{distortion_model}' is not supported; plumb_bob and rational_polynomial are "
                "(fisheye models such as equidistant are not)")
    if not np.isfinite(d).all():
        return "D has non-finite values"
    if not distortion_model:
        if np.any(d):
            return f"D has {d.size} coefficients but distortion_model is empty, so their meaning is unknown"
        return None
    lengths = DISTORTION_MODELS[distortion_model]
    if d.size and d.size not in lengths:
        others = ", ".join(str(n) for n in lengths[1:-1]) + f" or {lengths[-1]}"
        return f"{distortion_model} takes {lengths[0]} coefficients (OpenCV also {others}); D has {d.size}"
    return None


def camera_info_key(k, d, distortion_model: str, width: int, height: int) -> tuple:
    """What decides whether a camera_info can be used and how: equal for the same calibration, also
    when K or D hold NaN (compared as bytes), and cheap for any D: one longer than any distortion
    model takes is refused whatever it holds, so only its length counts (a D of millions of values
    is not copied per frame)."""
    d_key = np.asarray(d, np.float64).tobytes() if len(d) <= MAX_DISTORTION_LENGTH else ("length", len(d))
    return np.asarray(k, np.float64).tobytes(), d_key, distortion_model, width, height


def _distortion_coefficients(distortion) -> Optional[np.ndarray]:
    """Coefficients in OpenCV's order, or None for no distortion (None, empty or all zero)."""
    if distortion is None:
        return None
    coefficients = np.asarray(distortion, np.float64).ravel()
    if not np.any(coefficients):
        return None
    if coefficients.size not in OPENCV_DISTORTION_LENGTHS:
        raise ValueError(f"distortion has {coefficients.size} coefficients; OpenCV takes 4, 5, 8, 12 or 14")
    if not np.isfinite(coefficients).all():
        raise ValueError("distortion has non-finite coefficients")
    return coefficients


def _normalised_rays(points_vehicle: np.ndarray, mount: CameraMount) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3) vehicle-frame points -> mask of those in front of the camera, and their (x/z, y/z) in the optical
    frame (undistorted normalised image coordinates)."""
    camera_position = np.array([mount.x, mount.y, mount.height])
    optical = (points_vehicle - camera_position) @ mount.rotation() @ _BODY_TO_OPTICAL.T
    in_front = optical[:, 2] > _MIN_DEPTH
    return in_front, optical[in_front, :2] / optical[in_front, 2:3]


def _distort(normalised: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    if not len(normalised):
        return normalised.copy()  # OpenCV returns None for no points
    rays = np.concatenate([normalised, np.ones((len(normalised), 1))], axis=1).reshape(-1, 1, 3)
    distorted, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), np.eye(3), coefficients)
    return distorted.reshape(-1, 2)


def _undistort(distorted: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    if not len(distorted):
        return distorted.copy()
    points = distorted.reshape(-1, 1, 2)
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4 takes termination criteria only here
        undistorted = cv2.undistortPointsIter(points, np.eye(3), coefficients, None, None, _UNDISTORT_CRITERIA)
    else:  # OpenCV 5 folded them into undistortPoints
        undistorted = cv2.undistortPoints(points, np.eye(3), coefficients, criteria=_UNDISTORT_CRITERIA)
    return undistorted.reshape(-1, 2)


def _pixels(distorted: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Distorted normalised coordinates -> pixel (u, v); K's last row is 0 0 1."""
    return distorted @ K[:2, :2].T + K[:2, 2]


def project_to_image(points_vehicle: np.ndarray, K: np.ndarray, mount: CameraMount,
                     distortion: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3) vehicle-frame points -> (N, 2) pixel (u, v) and a mask of points in front of the camera.

    Pixel centres are on integer coordinates (ROS and OpenCV); points behind the camera get NaN.
    ``distortion`` is OpenCV's coefficient vector (plumb_bob / rational_polynomial D). With it, (u, v) is
    where the lens model sends the point, which for points far outside the field of view can be back
    inside the image; GroundGridProjector leaves those out.
    """
    coefficients = _distortion_coefficients(distortion)
    in_front, normalised = _normalised_rays(np.asarray(points_vehicle, np.float64), mount)
    distorted = normalised if coefficients is None else _distort(normalised, coefficients)
    uv = np.full((len(in_front), 2), np.nan)
    uv[in_front] = _pixels(distorted, np.asarray(K, np.float64))
    return uv, in_front


def _undistorts_back(normalised: np.ndarray, distorted: np.ndarray, coefficients: np.ndarray,
                     K: np.ndarray) -> np.ndarray:
    """Which rays the camera really sees: undistorting their distorted position gives the ray back."""
    back = _undistort(distorted, coefficients)
    with np.errstate(invalid="ignore"):
        error_px = np.abs(back - normalised) * (K[0, 0], K[1, 1])
        return (error_px <= _ROUND_TRIP_TOLERANCE_PX).all(axis=1)


class GroundGridProjector:
    """Precomputed cell -> pixel lookup (once per camera_info); each frame only gathers mask pixels.

    A cell is seen when its centre is in front of the camera, the nearest pixel centre to its projection
    lies in the image and, with distortion, that position undistorts back to the cell's own ray: the lens
    polynomial folds rays far outside the field of view back into the image, and those cells stay unknown.
    Raises ValueError for an unusable K, image size or distortion vector (see camera_info_error).
    """

    def __init__(self, K: np.ndarray, image_size: Tuple[int, int], mount: CameraMount, grid: GridSpec,
                 distortion: Optional[np.ndarray] = None):
        K = np.asarray(K, np.float64)
        error = _intrinsics_error(K)
        if error:
            raise ValueError(error)
        self.image_height, self.image_width = image_size
        if self.image_height <= 0 or self.image_width <= 0:
            raise ValueError(f"the image size is {self.image_width}x{self.image_height}")
        coefficients = _distortion_coefficients(distortion)
        K = K.reshape(3, 3)
        self.grid, self.mount = grid, mount
        rows, cols = grid.cells
        x0, y0 = grid.origin_xy
        xs = x0 + (np.arange(cols) + 0.5) * grid.resolution
        ys = y0 + (np.arange(rows) + 0.5) * grid.resolution
        gx, gy = np.meshgrid(xs, ys)  # (rows, cols): row = y index, column = x index
        points = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
        in_front, normalised = _normalised_rays(points, mount)
        distorted = normalised if coefficients is None else _distort(normalised, coefficients)
        with np.errstate(invalid="ignore", over="ignore"):
            uv = np.floor(_pixels(distorted, K) + 0.5)  # nearest pixel centre
            inside = np.isfinite(uv).all(axis=1) & (uv[:, 0] >= 0) & (uv[:, 0] < self.image_width) \
                & (uv[:, 1] >= 0) & (uv[:, 1] < self.image_height)
        if coefficients is not None:
            inside[inside] = _undistorts_back(normalised[inside], distorted[inside], coefficients, K)
        u, v = uv[inside].astype(np.int64).T
        self.seen_cells = np.flatnonzero(in_front)[inside]
        self.seen_pixels = v * self.image_width + u
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
    """Intrinsics of a camera_info for a different image size (the image was resized, as cv2.resize
    does: the images' outer edges, half a pixel beyond the corner pixel centres, stay aligned)."""
    (info_h, info_w), (img_h, img_w) = info_size, image_size
    if (info_h, info_w) == (img_h, img_w) or not info_h or not info_w:
        return np.asarray(K, np.float64)
    sx, sy = img_w / info_w, img_h / info_h
    # Pixel centres on integer coordinates: u' = (u + 0.5) * s - 0.5.
    scale = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
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
