"""Raw camera buffers -> RGB arrays, with every inconsistency reported as a FrameError.

Pure numpy/OpenCV so it is tested without ROS; ``ros/conversions.py`` feeds it message fields.
RGB/BGR/mono frames are read as views on the message buffer (no copy) where the rows are packed.
16-bit encodings keep the most significant byte (value >> 8: the full 16-bit range maps to 0..255, no
per-frame stretching); a 12-bit camera packed in the low bits of 16 therefore comes out 16x darker.
"""

import re
from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np


class RawFormat(NamedTuple):
    channels: int            # samples per pixel (2 for packed 4:2:2: luma + one chroma)
    sample_bytes: int        # 1 or 2; 2-byte samples honour is_bigendian
    to_rgb: Optional[int]    # OpenCV conversion after reducing to 8 bits, None when already RGB
    min_side: int = 1


# OpenCV names a Bayer pattern by the pixels at (0-based) row 1, columns 1-2; ROS names the 2x2 block at the top left.
# So ROS rggb is OpenCV BG, etc. test_bayer_colours_come_back checks this mapping on a known mosaic.
_BAYER_TO_RGB = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
                 "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}
# OpenCV's bilinear demosaic returns black for frames narrower or shorter than 3 pixels.
BAYER_MIN_SIDE = 3

RAW_ENCODINGS = {
    "rgb8": RawFormat(3, 1, None),
    "bgr8": RawFormat(3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": RawFormat(4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": RawFormat(4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": RawFormat(1, 1, cv2.COLOR_GRAY2RGB),
    "8uc1": RawFormat(1, 1, cv2.COLOR_GRAY2RGB),
    "8uc3": RawFormat(3, 1, cv2.COLOR_BGR2RGB),      # OpenCV's default channel order
    "yuv422_yuy2": RawFormat(2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": RawFormat(2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "yuv422": RawFormat(2, 1, cv2.COLOR_YUV2RGB_UYVY),  # ROS "yuv422" is UYVY byte order
    "uyvy": RawFormat(2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "rgb16": RawFormat(3, 2, None),
    "bgr16": RawFormat(3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": RawFormat(4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": RawFormat(4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": RawFormat(1, 2, cv2.COLOR_GRAY2RGB),
    "16uc1": RawFormat(1, 2, cv2.COLOR_GRAY2RGB),
    "16uc3": RawFormat(3, 2, cv2.COLOR_BGR2RGB),
    **{f"bayer_{pattern}{bits}": RawFormat(1, bits // 8, conversion, BAYER_MIN_SIDE)
       for pattern, conversion in _BAYER_TO_RGB.items() for bits in (8, 16)},
}

# OpenCV-style type names with signed (S) or float (F) samples: depth, disparity, ... not camera pictures.
_SIGNED_OR_FLOAT = re.compile(r"^\d+[sf]c\d+$")
# 4096 x 4096 (16.8 MP) holds a 4K UHD or 12 MP camera; an 8192 x 8192 JPEG of 629 bytes took 1.8 GB.
DEFAULT_MAX_PIXELS = 4096 * 4096


class FrameError(ValueError):
    """A frame that cannot be used; the message names the problem and ``kind`` its category
    (one of FRAME_ERROR_KINDS), so that logs can be throttled per kind without hiding a new problem."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


FRAME_ERROR_KINDS = ("encoding", "byte_order", "size", "too_large", "layout", "data_length", "compressed_format",
                     "corrupt_png", "corrupt_jpeg", "not_png_or_jpeg")


def decode_raw(encoding: str, height: int, width: int, step: int, data, is_bigendian: int = 0,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Raw image buffer -> (H, W, 3) uint8 RGB. The result may be a view on ``data``.

    ``is_bigendian`` (0 or 1, a bool works too) orders the bytes of 16-bit samples; 8-bit encodings ignore it.
    """
    if is_bigendian not in (0, 1):
        raise FrameError(f"is_bigendian is {is_bigendian!r}; it must be 0 or 1", "byte_order")
    key = encoding.lower()
    if key not in RAW_ENCODINGS:
        supported = ", ".join(sorted(RAW_ENCODINGS))
        if _SIGNED_OR_FLOAT.match(key):
            raise FrameError(f"unsupported encoding '{encoding}': signed or float samples (depth, disparity) "
                             f"are not a camera picture (supported: {supported})", "encoding")
        raise FrameError(f"unsupported encoding '{encoding}' (supported: {supported})", "encoding")
    if height <= 0 or width <= 0:
        raise FrameError(f"image size is {width}x{height}; both sides must be positive", "size")
    if height * width > max_pixels:
        raise FrameError(f"image {width}x{height} has more than max_image_pixels={max_pixels} pixels", "too_large")
    layout = RAW_ENCODINGS[key]
    if min(height, width) < layout.min_side:
        raise FrameError(f"{encoding} needs at least {layout.min_side} pixels on each side to demosaic, "
                         f"got {width}x{height}", "size")
    if layout.channels == 2 and width % 2:
        raise FrameError(f"{encoding} needs an even width, got {width}", "layout")
    pixel_bytes = layout.channels * layout.sample_bytes
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise FrameError(f"step {step} is smaller than width x bytes per pixel = {width} x {pixel_bytes} = {row_bytes}",
                         "layout")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size != step * height:
        raise FrameError(f"data has {buffer.size} bytes but step x height = {step} x {height} = {step * height}",
                         "data_length")
    rows = buffer.reshape(height, step)
    if step != row_bytes:
        rows = rows[:, :row_bytes]
    if layout.sample_bytes == 2:
        # The most significant byte of each sample is value >> 8; picking it needs no arithmetic or byteswap.
        rows = rows[:, 0::2] if is_bigendian else rows[:, 1::2]
    pixels = rows.reshape(height, width, layout.channels)
    if layout.to_rgb is None:
        # 8-bit: a view on the message; 16-bit: every other byte, which OpenCV and the network want packed.
        return pixels if layout.sample_bytes == 1 else np.ascontiguousarray(pixels)
    if layout.channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(pixels), layout.to_rgb)


class CompressedFrame(NamedTuple):
    rgb: np.ndarray   # (h, w, 3) uint8: the picture, decoded at a reduced scale when that was asked for
    height: int       # the frame's own size (its header's), which every output takes
    width: int


def compressed_codec(fmt: str) -> str:
    """'jpeg' or 'png' from a ``sensor_msgs/CompressedImage`` format, matched by whole tokens as
    image_transport writes them: "jpeg", "png" (also "jpg"), or "<encoding>; <jpeg|png> compressed
    <encoding>" (e.g. "rgb8; jpeg compressed bgr8"). Anything else (including "jpegxl", or
    compressedDepth) raises FrameError."""
    text = fmt.strip().lower()
    if "compresseddepth" in text.replace(" ", ""):
        raise FrameError(f"compressed format '{fmt}' is a depth image (compressedDepth), not a camera picture",
                         "compressed_format")
    codec = None
    if ";" in text:
        encoding, _, rest = text.partition(";")
        words = rest.split()
        if encoding.strip() and len(words) in (1, 3) and (len(words) == 1 or words[1] == "compressed"):
            codec = words[0]
    else:
        codec = text
    codec = {"jpg": "jpeg"}.get(codec, codec)
    if codec not in ("jpeg", "png"):
        raise FrameError(f"unsupported compressed format '{fmt}' (supported: jpeg, png, or image_transport's "
                         "'<encoding>; jpeg compressed <encoding>' / '...; png compressed ...')", "compressed_format")
    return codec


def _reduction(height: int, width: int, min_size_hw: Optional[Tuple[int, int]]) -> int:
    """The largest JPEG DCT scaling (1/8, 1/4, 1/2) whose picture still covers ``min_size_hw`` (the
    network input): a large frame is decoded small instead of whole and then shrunk."""
    if not min_size_hw:
        return 1
    for factor in (8, 4, 2):
        if -(-height // factor) >= min_size_hw[0] and -(-width // factor) >= min_size_hw[1]:
            return factor
    return 1


def decode_compressed_frame(fmt: str, data, max_pixels: int = DEFAULT_MAX_PIXELS,
                            min_size_hw: Optional[Tuple[int, int]] = None) -> CompressedFrame:
    """JPEG or PNG bytes (``sensor_msgs/CompressedImage``) -> RGB picture and the frame's size.

    The format is matched by whole tokens (``compressed_codec``) and the data's signature must agree
    with it. The size in the PNG / JPEG header is checked against ``max_pixels`` before anything is
    decoded. JPEGs are decoded strictly (libjpeg-turbo via simplejpeg): data that libjpeg finds
    corrupt or cut short ("Corrupt JPEG data", "Premature end of JPEG file": warnings that OpenCV
    ignores, giving grey rows) is rejected. With ``min_size_hw`` a JPEG at least twice that size is
    decoded at 1/2, 1/4 or 1/8 scale, so the work and memory follow the network input, not the frame.
    EXIF orientation is ignored: camera pixels are taken as they are.
    """
    codec = compressed_codec(fmt)
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise FrameError("compressed image has no data", "data_length")
    undecodable = f"compressed image ({buffer.size} bytes, format '{fmt}') could not be decoded"
    found = "png" if bytes(buffer[:8]) == PNG_SIGNATURE else "jpeg" if bytes(buffer[:2]) == JPEG_SOI else None
    if found is None:  # OpenCV would decode BMP, TIFF, WebP, ... whole before we could check their size
        raise FrameError(f"{undecodable}: the data starts with {bytes(buffer[:8])!r}, which is neither a PNG "
                         "nor a JPEG signature", "not_png_or_jpeg")
    if found != codec:
        raise FrameError(f"compressed format '{fmt}' says {codec.upper()} but the data is a {found.upper()} "
                         "(by its signature)", "compressed_format")
    corrupt = f"corrupt_{found}"
    try:
        width, height = compressed_image_size(memoryview(buffer))
    except ValueError as exc:
        raise FrameError(f"{undecodable}: {exc}", corrupt) from None
    _check_size(width, height, max_pixels, source=" (from its header, not decoded)")
    if found == "jpeg":
        import simplejpeg

        factor = _reduction(height, width, min_size_hw)
        minimum = (-(-height // factor), -(-width // factor)) if factor > 1 else (0, 0)
        try:
            rgb = simplejpeg.decode_jpeg(buffer, colorspace="RGB", strict=True,
                                         min_height=minimum[0], min_width=minimum[1])
        except ValueError as exc:  # libjpeg's errors and, strict, its warnings about corrupt data
            raise FrameError(f"{undecodable}: {exc}", corrupt) from None
        return CompressedFrame(rgb, height, width)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise FrameError(undecodable, corrupt)
    _check_size(bgr.shape[1], bgr.shape[0], max_pixels)
    return CompressedFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), bgr.shape[0], bgr.shape[1])


def decode_compressed(fmt: str, data, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """JPEG or PNG bytes (``sensor_msgs/CompressedImage``) -> (H, W, 3) uint8 RGB at full size
    (``decode_compressed_frame`` has the rules)."""
    return decode_compressed_frame(fmt, data, max_pixels).rgb


def _check_size(width: int, height: int, max_pixels: int, source: str = "") -> None:
    if width <= 0 or height <= 0:
        raise FrameError(f"image size is {width}x{height}{source}; both sides must be positive", "size")
    if width * height > max_pixels:
        raise FrameError(f"image {width}x{height}{source} has more than max_image_pixels={max_pixels} pixels",
                         "too_large")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# Frame header (SOF) markers: every 0xC0-0xCF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM and the restart markers.
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])


def compressed_image_size(data) -> Optional[Tuple[int, int]]:
    """(width, height) from a PNG IHDR or JPEG SOF header; None for data that is neither.

    Raises ValueError naming the problem when the data starts like a PNG or JPEG but its header is broken.
    """
    if bytes(data[:8]) == PNG_SIGNATURE:
        return _png_size(data)
    if bytes(data[:2]) == JPEG_SOI:
        return _jpeg_size(data)
    return None


def _png_size(data) -> Tuple[int, int]:
    # Signature, then the IHDR chunk: length (4), type (4), width (4), height (4), all big-endian.
    if len(data) < 24:
        raise ValueError(f"PNG data ends after {len(data)} bytes, before its IHDR header")
    chunk_type = bytes(data[12:16])
    if chunk_type != b"IHDR":
        raise ValueError(f"PNG's first chunk is {chunk_type!r}, not the IHDR header")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg_size(data) -> Tuple[int, int]:
    # Walk the marker segments after SOI until a frame header (SOF); segment lengths let us skip EXIF etc.
    position = 2
    while True:
        if position >= len(data):
            raise ValueError("JPEG data ends before its frame header (SOF)")
        if data[position] != 0xFF:
            raise ValueError(f"JPEG has no marker at byte {position} (found 0x{data[position]:02x})")
        while position < len(data) and data[position] == 0xFF:  # 0xFF fill bytes may precede a marker
            position += 1
        if position >= len(data):
            raise ValueError("JPEG data ends before its frame header (SOF)")
        marker = data[position]
        position += 1
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        if marker == 0xD9:
            raise ValueError("JPEG ends (EOI) before its frame header (SOF)")
        if marker == 0xDA:
            raise ValueError("JPEG scan data (SOS) comes before its frame header (SOF)")
        if position + 2 > len(data):
            raise ValueError("JPEG data ends before its frame header (SOF)")
        length = int.from_bytes(data[position:position + 2], "big")
        if length < 2:
            raise ValueError(f"JPEG segment 0x{marker:02x} at byte {position - 2} has length {length}")
        if marker in _JPEG_SOF_MARKERS:
            # length (2), sample precision (1), height (2), width (2), ...
            if length < 8 or position + 7 > len(data):
                raise ValueError("JPEG frame header (SOF) is truncated")
            height = int.from_bytes(data[position + 3:position + 5], "big")
            width = int.from_bytes(data[position + 5:position + 7], "big")
            if height == 0:
                raise ValueError("JPEG frame header gives height 0 (a DNL-defined height is not supported)")
            return width, height
        position += length


def encode_raw(rgb: np.ndarray, encoding: str) -> bytes:
    """RGB -> raw bytes in ``encoding`` (used by tests, the demo and the bag writer).

    16-bit encodings are written little-endian (is_bigendian = 0) with value = 8-bit value x 257,
    so decode_raw gives the 8-bit image back exactly.
    """
    key = encoding.lower()
    conversions = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
                   "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY}
    if key in ("yuv422_yuy2", "yuyv", "yuv422", "uyvy"):
        return _rgb_to_yuv422(rgb, uyvy=key in ("yuv422", "uyvy")).tobytes()
    bayer = re.fullmatch(r"bayer_([rgb]{4})(8|16)", key)
    if bayer and bayer.group(1) in _BAYER_TO_RGB:
        out = _rgb_to_bayer(rgb, bayer.group(1))
    elif key.endswith("16") and key[:-2] + "8" in conversions:
        conversion = conversions[key[:-2] + "8"]
        out = rgb if conversion is None else cv2.cvtColor(rgb, conversion)
    elif key in conversions:
        out = rgb if conversions[key] is None else cv2.cvtColor(rgb, conversions[key])
    else:
        raise FrameError(f"cannot encode to {encoding}", "encoding")
    if key.endswith("16"):
        out = (out.astype(np.uint16) * 257).astype("<u2")
    return np.ascontiguousarray(out).tobytes()


def _rgb_to_bayer(rgb: np.ndarray, pattern: str) -> np.ndarray:
    # The ROS pattern name lists the colours of the top-left 2x2 block row by row; it repeats every 2 pixels.
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for index, colour in enumerate(pattern):
        row, column = divmod(index, 2)
        mosaic[row::2, column::2] = rgb[row::2, column::2, "rgb".index(colour)]
    return mosaic


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
    layout = RAW_ENCODINGS.get(encoding.lower())
    return layout.channels * layout.sample_bytes if layout else None
