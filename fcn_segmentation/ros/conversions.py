"""sensor_msgs <-> numpy. Decoding rules live in the ROS-free ``fcn_segmentation.frames``."""

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from ..frames import DEFAULT_MAX_PIXELS, decode_compressed, decode_raw


def image_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian, max_pixels)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return decode_compressed(msg.format, msg.data, max_pixels)


def array_to_image(array: np.ndarray, encoding: str, header) -> Image:
    """(H, W) mono8 or (H, W, 3) rgb8 array -> Image carrying ``header`` (same stamp and frame_id)."""
    array = np.ascontiguousarray(array)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(array.strides[0])
    msg.data = array.tobytes()
    return msg
