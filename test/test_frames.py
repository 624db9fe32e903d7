import cv2
import numpy as np
import pytest

from fcn_segmentation.frames import FrameError, bytes_per_pixel, decode_compressed, decode_raw, encode_raw


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    # Pairs of equal pixels so 4:2:2 chroma subsampling is lossless.
    return rng.integers(20, 230, (6, 4, 3), dtype=np.uint8).repeat(2, axis=1)


@pytest.mark.parametrize("encoding,tolerance", [
    ("rgb8", 0), ("bgr8", 0), ("rgba8", 0), ("bgra8", 0), ("yuv422", 2), ("yuv422_yuy2", 2), ("uyvy", 2)])
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


@pytest.mark.parametrize("kwargs,message", [
    (dict(encoding="32FC1"), "unsupported encoding '32FC1'"),
    (dict(width=0), "both sides must be positive"),
    (dict(height=0), "both sides must be positive"),
    (dict(step=20), "step 20 is smaller than"),
    (dict(data=bytes(6 * 24 - 1)), "data has 143 bytes but step x height = 24 x 6 = 144"),
    (dict(data=bytes(6 * 24 + 5)), "data has 149 bytes"),
    (dict(encoding="yuv422", width=7, step=14, data=bytes(84)), "even width"),
    (dict(max_pixels=10), "max_image_pixels"),
])
def test_inconsistent_frames_name_the_problem(kwargs, message):
    args = dict(encoding="rgb8", height=6, width=8, step=24, data=bytes(6 * 24))
    args.update(kwargs)
    with pytest.raises(FrameError, match=message.replace("(", r"\(").replace("x", "x")):
        decode_raw(**args)


def test_compressed_jpeg_and_png(rgb):
    for ext, fmt, tolerance in ((".png", "png", 0), (".jpg", "rgb8; jpeg compressed bgr8", 40)):
        ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        out = decode_compressed(fmt, data.tobytes())
        assert out.shape == rgb.shape
        assert np.abs(out.astype(int) - rgb).mean() <= tolerance


def test_corrupt_compressed_data_is_rejected():
    with pytest.raises(FrameError, match="could not be decoded"):
        decode_compressed("jpeg", b"\xff\xd8 not really a jpeg")
    with pytest.raises(FrameError, match="unsupported compressed format"):
        decode_compressed("tiff", b"abc")
    with pytest.raises(FrameError, match="no data"):
        decode_compressed("png", b"")
