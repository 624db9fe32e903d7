"""Raw camera buffers -> RGB arrays, with every inconsistency reported as a FrameError.

Pure numpy/OpenCV so it is tested without ROS; ``ros/conversions.py`` feeds it message fields.
RGB/BGR/mono frames are read as views on the message buffer (no copy) where the rows are packed.
"""

from typing import Optional

import cv2
import numpy as np

# encoding -> (bytes per pixel, OpenCV conversion to RGB or None when already RGB)
RAW_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8uc1": (1, cv2.COLOR_GRAY2RGB),
    "8uc3": (3, cv2.COLOR_BGR2RGB),      # OpenCV's default channel order
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (2, cv2.COLOR_YUV2RGB_YUY2),
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),  # ROS "yuv422" is UYVY byte order
    "uyvy": (2, cv2.COLOR_YUV2RGB_UYVY),
}
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
DEFAULT_MAX_PIXELS = 8192 * 8192


class FrameError(ValueError):
    """A frame that cannot be used; the message names the problem."""


def decode_raw(encoding: str, height: int, width: int, step: int, data, is_bigendian: bool = False,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Raw image buffer -> (H, W, 3) uint8 RGB. The result may be a view on ``data``."""
    key = encoding.lower()
    if key not in RAW_ENCODINGS:
        raise FrameError(f"unsupported encoding '{encoding}' (supported: {', '.join(sorted(RAW_ENCODINGS))})")
    if height <= 0 or width <= 0:
        raise FrameError(f"image size is {width}x{height}; both sides must be positive")
    if height * width > max_pixels:
        raise FrameError(f"image {width}x{height} has more than max_image_pixels={max_pixels} pixels")
    channels, conversion = RAW_ENCODINGS[key]
    if channels == 2 and width % 2:
        raise FrameError(f"{encoding} needs an even width, got {width}")
    row_bytes = width * channels
    if step < row_bytes:
        raise FrameError(f"step {step} is smaller than width x bytes per pixel = {width} x {channels} = {row_bytes}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size != step * height:
        raise FrameError(f"data has {buffer.size} bytes but step x height = {step} x {height} = {step * height}")
    rows = buffer.reshape(height, step)
    if step != row_bytes:
        rows = rows[:, :row_bytes]
    pixels = rows.reshape(height, width, channels)
    if conversion is None:
        return pixels
    if channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def decode_compressed(fmt: str, data, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """JPEG or PNG bytes (``sensor_msgs/CompressedImage``) -> (H, W, 3) uint8 RGB."""
    # image_transport writes e.g. "rgb8; jpeg compressed bgr8"; plain "jpeg" / "png" are common too.
    if not any(name in fmt.lower() for name in COMPRESSED_FORMATS):
        raise FrameError(f"unsupported compressed format '{fmt}' (supported: jpeg, png)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise FrameError("compressed image has no data")
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FrameError(f"compressed image ({buffer.size} bytes, format '{fmt}') could not be decoded")
    if bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise FrameError(f"image {bgr.shape[1]}x{bgr.shape[0]} has more than max_image_pixels={max_pixels} pixels")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_raw(rgb: np.ndarray, encoding: str) -> bytes:
    """RGB -> raw bytes in ``encoding`` (used by tests, the demo and the bag writer)."""
    key = encoding.lower()
    conversions = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
                   "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY}
    if key in ("yuv422_yuy2", "yuyv", "yuv422", "uyvy"):
        return _rgb_to_yuv422(rgb, uyvy=key in ("yuv422", "uyvy")).tobytes()
    if key not in conversions:
        raise FrameError(f"cannot encode to {encoding}")
    out = rgb if conversions[key] is None else cv2.cvtColor(rgb, conversions[key])
    return np.ascontiguousarray(out).tobytes()


def _rgb_to_yuv422(rgb: np.ndarray, uyvy: bool) -> np.ndarray:
    # BT.601 limited range, the inverse of OpenCV's YUV2RGB_YUY2 / _UYVY.
    r, g, b = (rgb[:, :, i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u_full = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v_full = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u = (u_full[:, 0::2] + u_full[:, 1::2]) / 2
    v = (v_full[:, 0::2] + v_full[:, 1::2]) / 2
    out = np.empty((rgb.shape[0], rgb.shape[1] * 2), np.float32)
    if uyvy:
        out[:, 0::4], out[:, 1::4], out[:, 2::4], out[:, 3::4] = u, y[:, 0::2], v, y[:, 1::2]
    else:
        out[:, 0::4], out[:, 1::4], out[:, 2::4], out[:, 3::4] = y[:, 0::2], u, y[:, 1::2], v
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def bytes_per_pixel(encoding: str) -> Optional[int]:
    entry = RAW_ENCODINGS.get(encoding.lower())
    return entry[0] if entry else None
