import re

import cv2
import numpy as np
import pytest

from fcn_segmentation import frames
from fcn_segmentation.frames import (DEFAULT_MAX_PIXELS, FRAME_ERROR_KINDS, FrameError, bytes_per_pixel,
                                     compressed_image_size, decode_compressed, decode_raw, encode_raw)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    # Pairs of equal pixels so 4:2:2 chroma subsampling is lossless.
    return rng.integers(20, 230, (6, 4, 3), dtype=np.uint8).repeat(2, axis=1)


@pytest.mark.parametrize("encoding,tolerance", [
    ("rgb8", 0), ("bgr8", 0), ("rgba8", 0), ("bgra8", 0), ("yuv422", 2), ("yuv422_yuy2", 2), ("uyvy", 2),
    ("rgb16", 0), ("bgr16", 0), ("rgba16", 0), ("bgra16", 0)])
def test_round_trip(rgb, encoding, tolerance):
    data = encode_raw(rgb, encoding)
    out = decode_raw(encoding, rgb.shape[0], rgb.shape[1], rgb.shape[1] * bytes_per_pixel(encoding), data)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).max() <= tolerance


def test_mono8_becomes_gray_rgb(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = decode_raw("mono8", 6, 8, 8, gray.tobytes())
    assert (out[..., 0] == gray).all() and (out[..., 1] == gray).all()


def test_rgb8_is_a_view_when_rows_are_packed(rgb):
    data = bytearray(rgb.tobytes())
    out = decode_raw("rgb8", 6, 8, 24, data)
    data[0] = (data[0] + 1) % 256
    assert out[0, 0, 0] == data[0], "expected a zero-copy view on the message buffer"


def test_padded_rows_are_cropped(rgb):
    padded = np.zeros((6, 30), np.uint8)
    padded[:, :24] = rgb.reshape(6, 24)
    np.testing.assert_array_equal(decode_raw("rgb8", 6, 8, 30, padded.tobytes()), rgb)


def test_8bit_encodings_ignore_the_byte_order_flag(rgb):
    for encoding in ("rgb8", "bgr8", "mono8", "yuv422", "bayer_rggb8"):
        data = encode_raw(rgb, encoding)
        step = 8 * bytes_per_pixel(encoding)
        np.testing.assert_array_equal(decode_raw(encoding, 6, 8, step, data, is_bigendian=1),
                                      decode_raw(encoding, 6, 8, step, data, is_bigendian=0))


# --- 16-bit: value >> 8, byte order from is_bigendian ---

@pytest.fixture
def samples16():
    # Random high and low bytes: decoding the wrong byte of a sample gives a different picture.
    return np.random.default_rng(1).integers(0, 65536, (5, 7), dtype=np.uint16)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_mono16_keeps_the_high_byte_in_either_byte_order(samples16, encoding):
    expected = (samples16 >> 8).astype(np.uint8)
    little = decode_raw(encoding, 5, 7, 14, samples16.astype("<u2").tobytes(), is_bigendian=0)
    big = decode_raw(encoding, 5, 7, 14, samples16.astype(">u2").tobytes(), is_bigendian=1)
    assert little.shape == (5, 7, 3) and little.dtype == np.uint8
    np.testing.assert_array_equal(little[..., 1], expected)
    np.testing.assert_array_equal(big, little)


def test_rgb16_and_bgr16_with_odd_row_padding_in_either_byte_order():
    samples = np.random.default_rng(2).integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    expected = (samples >> 8).astype(np.uint8)
    step = 5 * 3 * 2 + 3  # padding that is not a whole sample
    for encoding, channels_in_rgb_order in (("rgb16", samples), ("bgr16", samples[..., ::-1]),
                                            ("16UC3", samples[..., ::-1])):
        for is_bigendian, dtype in ((0, "<u2"), (1, ">u2")):
            padded = np.zeros((4, step), np.uint8)
            padded[:, :30] = np.frombuffer(channels_in_rgb_order.astype(dtype).tobytes(), np.uint8).reshape(4, 30)
            out = decode_raw(encoding, 4, 5, step, padded.tobytes(), is_bigendian=is_bigendian)
            np.testing.assert_array_equal(out, expected, err_msg=f"{encoding} is_bigendian={is_bigendian}")


# --- Bayer: the ROS pattern name lists the top-left 2x2 block row by row ---

def ros_bayer_mosaic(rgb, pattern):
    """Mosaic written out pixel by pixel from the ROS definition, independent of frames.py."""
    mosaic = np.empty(rgb.shape[:2], rgb.dtype)
    for y in range(rgb.shape[0]):
        for x in range(rgb.shape[1]):
            colour = pattern[2 * (y % 2) + x % 2]
            mosaic[y, x] = rgb[y, x, "rgb".index(colour)]
    return mosaic


BAYER_PATTERNS = ("rggb", "bggr", "gbrg", "grbg")


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("height,width", [(8, 10), (7, 9), (3, 3)])
def test_bayer_colours_come_back(pattern, height, width):
    # Three different channel values: any pattern mix-up swaps colours.
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[...] = (200, 100, 30)
    mosaic = ros_bayer_mosaic(rgb, pattern)
    out = decode_raw(f"bayer_{pattern}8", height, width, width, mosaic.tobytes())
    assert out.shape == (height, width, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bayer_keeps_left_and_right(pattern):
    rgb = np.empty((8, 12, 3), np.uint8)
    rgb[:, :6] = (220, 40, 40)
    rgb[:, 6:] = (30, 60, 210)
    out = decode_raw(f"bayer_{pattern}8", 8, 12, 12, ros_bayer_mosaic(rgb, pattern).tobytes())
    # Away from the colour edge, where bilinear interpolation mixes neighbours.
    np.testing.assert_array_equal(out[:, :4], rgb[:, :4])
    np.testing.assert_array_equal(out[:, 8:], rgb[:, 8:])


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_encode_raw_bayer_follows_the_ros_pattern(pattern):
    rgb = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert encode_raw(rgb, f"bayer_{pattern}8") == ros_bayer_mosaic(rgb, pattern).tobytes()


def test_bayer16_big_endian_matches_bayer8():
    rgb = np.empty((6, 8, 3), np.uint8)
    rgb[...] = (200, 100, 30)
    mosaic = ros_bayer_mosaic(rgb, "grbg")
    mosaic16 = mosaic.astype(np.uint16) << 8 | 0x5A  # the low byte must not matter
    out = decode_raw("bayer_grbg16", 6, 8, 16, mosaic16.astype(">u2").tobytes(), is_bigendian=1)
    np.testing.assert_array_equal(out, decode_raw("bayer_grbg8", 6, 8, 8, mosaic.tobytes()))


# --- every malformed raw frame names its problem ---

@pytest.mark.parametrize("kwargs,message", [
    (dict(encoding="32FC1"), "unsupported encoding '32FC1': signed or float samples"),
    (dict(encoding="16SC1"), "unsupported encoding '16SC1': signed or float samples"),
    (dict(encoding="nv12"), "unsupported encoding 'nv12' (supported: 16uc1, "),
    (dict(width=0), "image size is 0x6; both sides must be positive"),
    (dict(height=0), "image size is 8x0; both sides must be positive"),
    (dict(step=20), "step 20 is smaller than width x bytes per pixel = 8 x 3 = 24"),
    (dict(encoding="mono16", step=15, data=bytes(90)), "step 15 is smaller than width x bytes per pixel = 8 x 2 = 16"),
    (dict(data=bytes(6 * 24 - 1)), "data has 143 bytes but step x height = 24 x 6 = 144"),
    (dict(data=bytes(6 * 24 + 5)), "data has 149 bytes but step x height = 24 x 6 = 144"),
    (dict(encoding="yuv422", width=7, step=14, data=bytes(84)), "yuv422 needs an even width, got 7"),
    (dict(max_pixels=10), "image 8x6 has more than max_image_pixels=10 pixels"),
    (dict(width=100_000, height=100_000, step=300_000),
     f"image 100000x100000 has more than max_image_pixels={DEFAULT_MAX_PIXELS} pixels"),
    (dict(encoding="bayer_rggb8", width=2, step=2, data=bytes(12)),
     "bayer_rggb8 needs at least 3 pixels on each side to demosaic, got 2x6"),
    (dict(encoding="bayer_bggr16", height=1, step=16, data=bytes(16)),
     "bayer_bggr16 needs at least 3 pixels on each side to demosaic, got 8x1"),
    (dict(is_bigendian=2), "is_bigendian is 2; it must be 0 or 1"),
    (dict(is_bigendian=255), "is_bigendian is 255; it must be 0 or 1"),
])
def test_inconsistent_frames_name_the_problem(kwargs, message):
    args = dict(encoding="rgb8", height=6, width=8, step=24, data=bytes(6 * 24))
    args.update(kwargs)
    with pytest.raises(FrameError, match=re.escape(message)) as error:
        decode_raw(**args)
    assert error.value.kind in FRAME_ERROR_KINDS


# --- compressed ---

def test_compressed_jpeg_and_png(rgb):
    for ext, fmt, tolerance in ((".png", "png", 0), (".jpg", "rgb8; jpeg compressed bgr8", 40)):
        ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        out = decode_compressed(fmt, data.tobytes())
        assert out.shape == rgb.shape
        assert np.abs(out.astype(int) - rgb).mean() <= tolerance


def encoded(ext, height, width, params=()):
    ok, data = cv2.imencode(ext, np.zeros((height, width), np.uint8), list(params))
    assert ok
    return data.tobytes()


def bilevel_png(height, width):
    # 1 bit per pixel: an 8193 x 8193 PNG is 21 kB and encodes in about 0.1 s.
    return encoded(".png", height, width, (cv2.IMWRITE_PNG_BILEVEL, 1))


@pytest.fixture
def count_imdecode(monkeypatch):
    """Calls of either decoder: OpenCV (PNG) and simplejpeg (JPEG)."""
    import simplejpeg

    calls = []
    real_imdecode, real_decode_jpeg = cv2.imdecode, simplejpeg.decode_jpeg

    def counting_imdecode(*args):
        calls.append(args)
        return real_imdecode(*args)

    def counting_decode_jpeg(*args, **kwargs):
        calls.append(args)
        return real_decode_jpeg(*args, **kwargs)
    monkeypatch.setattr(frames.cv2, "imdecode", counting_imdecode)
    monkeypatch.setattr(simplejpeg, "decode_jpeg", counting_decode_jpeg)
    return calls


def test_data_that_is_neither_png_nor_jpeg_is_refused_without_decoding(count_imdecode):
    # OpenCV would decode a BMP (or TIFF, WebP) whole before its size could be checked.
    bmp = encoded(".bmp", 3000, 3000)
    with pytest.raises(FrameError, match=re.escape("neither a PNG nor a JPEG signature")) as error:
        decode_compressed("png", bmp)
    assert error.value.kind == "not_png_or_jpeg"
    assert not count_imdecode


def test_kinds_tell_different_problems_apart():
    kinds = set()
    for args in (dict(encoding="32FC1"), dict(width=0), dict(step=10), dict(data=bytes(5)), dict(is_bigendian=2),
                 dict(max_pixels=10)):
        full = {**dict(encoding="rgb8", height=6, width=8, step=24, data=bytes(6 * 24)), **args}
        with pytest.raises(FrameError) as error:
            decode_raw(**full)
        kinds.add(error.value.kind)
    for fmt, data in (("tiff", b"abc"), ("png", b"\x89PNG\r\n\x1a\n"), ("jpeg", b"\xff\xd8"), ("png", b"BM")):
        with pytest.raises(FrameError) as error:
            decode_compressed(fmt, data)
        kinds.add(error.value.kind)
    assert kinds == set(FRAME_ERROR_KINDS)


def test_header_sizes_are_read_without_decoding():
    assert compressed_image_size(bilevel_png(37, 53)) == (53, 37)
    assert compressed_image_size(encoded(".jpg", 37, 53)) == (53, 37)
    assert compressed_image_size(encoded(".bmp", 37, 53)) is None


def test_huge_png_is_rejected_from_its_header_before_decoding(count_imdecode):
    huge = bilevel_png(8193, 8193)
    with pytest.raises(FrameError, match=re.escape(
            f"image 8193x8193 (from its header, not decoded) has more than max_image_pixels={DEFAULT_MAX_PIXELS}")):
        decode_compressed("png", huge)
    assert not count_imdecode, "the huge PNG was decoded before it was rejected"


@pytest.mark.parametrize("data", [bilevel_png(30, 40), encoded(".jpg", 30, 40)], ids=["png", "jpeg"])
def test_compressed_max_pixels_is_checked_before_decoding(count_imdecode, data):
    fmt = "png" if data[:4] == b"\x89PNG" else "jpeg"
    assert decode_compressed(fmt, data, max_pixels=1200).shape == (30, 40, 3)
    assert len(count_imdecode) == 1
    with pytest.raises(FrameError, match=r"image 40x30 \(from its header, not decoded\) has more than "
                                         r"max_image_pixels=1199"):
        decode_compressed(fmt, data, max_pixels=1199)
    assert len(count_imdecode) == 1


def test_jpeg_size_is_found_after_a_large_app_segment(count_imdecode):
    jpeg = encoded(".jpg", 30, 40)
    exif_like = b"\xff\xe1" + (5002).to_bytes(2, "big") + b"\xff" * 5000  # 0xFF payload must be skipped, not parsed
    data = jpeg[:2] + exif_like + jpeg[2:]
    assert decode_compressed("jpeg", data).shape == (30, 40, 3)
    with pytest.raises(FrameError, match="40x30"):
        decode_compressed("jpeg", data, max_pixels=100)
    assert len(count_imdecode) == 1


def _sof_offset(jpeg):
    return next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] == 0xC0)


def _replace_bytes(png, start, new):
    return png[:start] + new + png[start + len(new):]


@pytest.mark.parametrize("make_data,message", [
    (lambda: b"\xff\xd8 not really a jpeg", "JPEG has no marker at byte 2 (found 0x20)"),
    (lambda: b"\xff\xd8\xff\xe0 not really a jpeg", "JPEG data ends before its frame header (SOF)"),
    (lambda: b"\xff\xd8\xff\xd9", "JPEG ends (EOI) before its frame header (SOF)"),
    (lambda: b"\xff\xd8\xff\xda\x00\x08" + bytes(6), "JPEG scan data (SOS) comes before its frame header (SOF)"),
    (lambda: encoded(".jpg", 30, 40)[:_sof_offset(encoded(".jpg", 30, 40)) + 6], "frame header (SOF) is truncated"),
    (lambda: bilevel_png(30, 40)[:20], "PNG data ends after 20 bytes, before its IHDR header"),
    (lambda: _replace_bytes(bilevel_png(30, 40), 12, b"tEXt"), "PNG's first chunk is b'tEXt', not the IHDR"),
    # Header fine, pixel data broken: found by the decoder.
    (lambda: _replace_bytes(bilevel_png(30, 40), 41, b"\x00" * 8), "could not be decoded"),
    (lambda: encoded(".jpg", 30, 40)[:_sof_offset(encoded(".jpg", 30, 40)) + 40], "could not be decoded"),
], ids=["jpeg-no-marker", "jpeg-segment-past-end", "jpeg-eoi", "jpeg-sos-first", "jpeg-sof-cut", "png-cut",
        "png-no-ihdr", "png-corrupt-pixels", "jpeg-cut-after-header"])
def test_corrupt_compressed_data_names_the_problem(make_data, message):
    data = make_data()
    with pytest.raises(FrameError, match=re.escape(message)) as error:
        decode_compressed("jpeg" if data[:2] == b"\xff\xd8" else "png", data)
    assert "could not be decoded" in str(error.value)


def test_compressed_zero_size_header_is_rejected():
    png = _replace_bytes(bilevel_png(30, 40), 16, bytes(4))
    with pytest.raises(FrameError, match=re.escape("image size is 0x30 (from its header, not decoded); both sides")):
        decode_compressed("png", png)
    jpeg = encoded(".jpg", 30, 40)
    sof = _sof_offset(jpeg)
    with pytest.raises(FrameError, match="JPEG frame header gives height 0"):
        decode_compressed("jpeg", _replace_bytes(jpeg, sof + 5, bytes(2)))


def test_unusable_compressed_messages_are_rejected():
    with pytest.raises(FrameError, match="could not be decoded"):
        decode_compressed("png", b"neither PNG nor JPEG")
    with pytest.raises(FrameError, match="unsupported compressed format 'tiff'"):
        decode_compressed("tiff", b"abc")
    with pytest.raises(FrameError, match="compressed image has no data"):
        decode_compressed("png", b"")
    with pytest.raises(FrameError, match="is a depth image"):
        decode_compressed("16UC1; compressedDepth png", bilevel_png(30, 40))


# --- compressed: format tokens, signatures, damaged real JPEGs, EXIF, reduced decoding (issue 17) ---

def _camvid_jpeg(sample_dir, index=0, quality=90):
    path = sorted((sample_dir / "val").glob("*.png"))[index]
    return cv2.imencode(".jpg", cv2.imread(str(path)), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


@pytest.mark.parametrize("fmt,codec", [("jpeg", "jpeg"), ("JPEG", "jpeg"), ("jpg", "jpeg"), ("png", "png"),
                                       ("rgb8; jpeg compressed bgr8", "jpeg"), ("bgr8; png compressed bgr8", "png"),
                                       ("mono8; jpeg compressed mono8", "jpeg"), (" png ", "png")])
def test_compressed_format_tokens_are_matched_whole(fmt, codec):
    assert frames.compressed_codec(fmt) == codec


@pytest.mark.parametrize("fmt", ["jpegxl", "jxl", "png8", "apng", "jpeg2000", "rgb8; tiff", "rgb8; jpegxl compressed "
                                 "bgr8", "rgb8; jpeg packed bgr8", "", "rgb8 jpeg"])
def test_compressed_formats_that_only_contain_jpeg_or_png_are_refused(fmt):
    with pytest.raises(FrameError, match="unsupported compressed format") as error:
        frames.compressed_codec(fmt)
    assert error.value.kind == "compressed_format"


def test_the_data_must_be_what_the_format_says(sample_dir):
    jpeg = _camvid_jpeg(sample_dir)
    png = bilevel_png(30, 40)
    with pytest.raises(FrameError, match=re.escape("compressed format 'png' says PNG but the data is a JPEG")) as error:
        decode_compressed("png", jpeg)
    assert error.value.kind == "compressed_format"
    with pytest.raises(FrameError, match=re.escape("'rgb8; jpeg compressed bgr8' says JPEG but the data is a PNG")):
        decode_compressed("rgb8; jpeg compressed bgr8", png)


def _scan_start(jpeg):
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")


@pytest.mark.parametrize("cut", [0.1, 0.25, 0.5, 0.75, 0.9, 0.95])
def test_a_real_jpeg_cut_short_but_ending_with_eoi_is_rejected(sample_dir, cut):
    """What an MJPEG camera sends when USB packets are lost: OpenCV decodes it to grey rows."""
    jpeg = _camvid_jpeg(sample_dir)
    start = _scan_start(jpeg)
    damaged = jpeg[:start + int((len(jpeg) - 2 - start) * cut)] + b"\xff\xd9"
    assert cv2.imdecode(np.frombuffer(damaged, np.uint8), cv2.IMREAD_COLOR) is not None  # what the node had
    with pytest.raises(FrameError, match=r"could not be decoded: .*(Corrupt JPEG data|Premature end)") as error:
        decode_compressed("jpeg", damaged)
    assert error.value.kind == "corrupt_jpeg"


def test_spliced_and_inserted_jpeg_data_is_rejected(sample_dir):
    jpeg, other = _camvid_jpeg(sample_dir, 0), _camvid_jpeg(sample_dir, 1)
    a, b = _scan_start(jpeg) + 20_000, _scan_start(other) + 5_000
    spliced = jpeg[:a] + other[b:b + 3000] + jpeg[a:]
    inserted = jpeg[:a] + bytes(range(64)) + jpeg[a:]
    for damaged in (spliced, inserted):
        assert cv2.imdecode(np.frombuffer(damaged, np.uint8), cv2.IMREAD_COLOR) is not None
        with pytest.raises(FrameError, match="Corrupt JPEG data") as error:
            decode_compressed("jpeg", damaged)
        assert error.value.kind == "corrupt_jpeg"


def test_an_intact_jpeg_decodes_exactly_as_opencv_did(sample_dir):
    jpeg = _camvid_jpeg(sample_dir)
    opencv = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decode_compressed("rgb8; jpeg compressed bgr8", jpeg), opencv)


def exif_orientation_segment(orientation):
    """An APP1 EXIF segment whose only tag is Orientation (0x0112)."""
    ifd = (b"MM\x00*" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big") + (0x0112).to_bytes(2, "big")
           + (3).to_bytes(2, "big") + (1).to_bytes(4, "big") + orientation.to_bytes(2, "big") + bytes(2) + bytes(4))
    body = b"Exif\x00\x00" + ifd
    return b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body


@pytest.mark.parametrize("orientation", [6, 3])
def test_exif_orientation_is_ignored(sample_dir, orientation):
    jpeg = _camvid_jpeg(sample_dir)
    tagged = jpeg[:2] + exif_orientation_segment(orientation) + jpeg[2:]
    applied = cv2.imdecode(np.frombuffer(tagged, np.uint8), cv2.IMREAD_COLOR)  # OpenCV turns the picture
    assert applied.shape[:2] == ((480, 360) if orientation == 6 else (360, 480))
    np.testing.assert_array_equal(decode_compressed("jpeg", tagged), decode_compressed("jpeg", jpeg))
    png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))[1].tobytes()
    assert decode_compressed("png", png).shape == (360, 480, 3)


def test_large_jpegs_are_decoded_at_the_scale_the_network_needs():
    big = encoded(".jpg", 2880, 3840)
    frame = frames.decode_compressed_frame("jpeg", big, min_size_hw=(224, 320))
    assert (frame.height, frame.width) == (2880, 3840)
    assert frame.rgb.shape == (360, 480, 3)  # 1/8: still covers 320x224
    assert frames.decode_compressed_frame("jpeg", big, min_size_hw=(720, 960)).rgb.shape == (720, 960, 3)  # 1/4
    small = encoded(".jpg", 360, 480)
    assert frames.decode_compressed_frame("jpeg", small, min_size_hw=(224, 320)).rgb.shape == (360, 480, 3)
    assert frames.decode_compressed_frame("jpeg", big).rgb.shape == (2880, 3840, 3)


def test_the_default_pixel_limit_refuses_an_8192_square_jpeg_from_its_header(count_imdecode):
    tiny_huge = encoded(".jpg", 8192, 8192)  # a few hundred kB that would decode to 200 MB
    with pytest.raises(FrameError, match=r"image 8192x8192 \(from its header, not decoded\)") as error:
        decode_compressed("jpeg", tiny_huge)
    assert error.value.kind == "too_large" and DEFAULT_MAX_PIXELS == 4096 * 4096
    assert not count_imdecode
