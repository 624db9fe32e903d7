"""Integration (issue 17): damaged, mislabelled, oversized and EXIF-rotated compressed frames, model
files with bad normalisation or non-finite scores, the ONNX export's log, and the confidence monitor,
all through the node as its own process over real Fast DDS."""

import random
import shutil
import subprocess
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -r requirements.txt)")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from fcn_segmentation.confidence import DAY_AND_DUSK_MIN_BRIGHTER_ABOVE, \
    DAY_AND_DUSK_MIN_BRIGHTER_ABOVE_LESS_SIDEWAYS, DAYTIME_MIN_UPRIGHT_MARGIN, unlike_training_frames  # noqa: E402
from fcn_segmentation.data import read_rgb, split_pairs  # noqa: E402
from node_support import node_running  # noqa: E402
from fcn_segmentation.ros.client import (  # noqa: E402
    SegmentationClient, image_msg, image_to_array, node_command, publish_until_answered, spin_until, stamp_key,
    start_node, stop_node)

TOPIC = "/squeezed/image_raw/compressed"


def _jpeg(rgb, quality=90):
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _compressed(data, fmt="jpeg", frame_id="squeezed_cam"):
    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
    msg.header.frame_id, msg.format, msg.data = frame_id, fmt, data
    return msg


def _scan_start(jpeg):
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")


def _exif_orientation(jpeg, orientation):
    ifd = (b"MM\x00*" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big") + (0x0112).to_bytes(2, "big")
           + (3).to_bytes(2, "big") + (1).to_bytes(4, "big") + orientation.to_bytes(2, "big") + bytes(2) + bytes(4))
    body = b"Exif\x00\x00" + ifd
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


@pytest.fixture(scope="module")
def compressed_node(dds_env, bundled_model, tmp_path_factory):
    with node_running({"model_path": str(bundled_model), "input_transport": "compressed",
                       "diagnostics_period": 0.5, "log_throttle_period": 0.1,
                       # off by default: installation checks
                       "confidence_min_upright_margin": DAYTIME_MIN_UPRIGHT_MARGIN,
                       "confidence_min_brighter_above": DAY_AND_DUSK_MIN_BRIGHTER_ABOVE,
                       "confidence_min_brighter_above_less_sideways": DAY_AND_DUSK_MIN_BRIGHTER_ABOVE_LESS_SIDEWAYS},
                      {"image/compressed": TOPIC, "__ns": "/squeezed"}, tmp_path_factory.mktemp("node")) as running:
        yield running


@pytest.fixture
def client(dds_env, compressed_node):
    process, log = compressed_node
    rclpy.init()
    node = SegmentationClient(TOPIC, "/squeezed/segmentation", ("class_mask",), compressed=True,
                              name=f"test_input_client_{random.randint(0, 1 << 30)}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    assert spin_until(executor, lambda: node.connected() or process.poll() is not None, 60), "no DDS match"
    assert process.poll() is None, log.read_text()[-3000:]
    yield node, executor, log
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def frames(sample_dir):
    return [read_rgb(image) for image, _ in split_pairs(sample_dir, "val")]


def _rejected_and_named(node, executor, log, bad, expected):
    def named():
        node.publish(bad)  # re-sent: a best-effort subscription may miss a message
        return expected in log.read_text()
    assert spin_until(executor, named, 30, step=0.3), f"no warning naming {expected!r}:\n{log.read_text()[-2000:]}"
    assert f"rejected frame from {TOPIC}: " in log.read_text()
    assert stamp_key(bad.header) not in node.received, "a mask came back for a frame the node should reject"


def test_damaged_jpegs_are_rejected_named_and_counted(client, frames):
    """Item 2: an MJPEG frame cut short that still ends with EOI, and spliced data, decoded to grey
    rows and Sky masks before; now each is rejected with libjpeg's reason and the next frame goes on."""
    node, executor, log = client
    jpeg, other = _jpeg(frames[0]), _jpeg(frames[1])
    assert publish_until_answered(executor, node, _compressed(jpeg, frame_id="warm_up"))
    spin_until(executor, lambda: bool(node.last_diagnostic_values()), 5)
    before = int(node.last_diagnostic_values().get("rejected", 0))
    start = _scan_start(jpeg)
    cut = jpeg[:start + (len(jpeg) - start) // 2] + b"\xff\xd9"
    spliced = jpeg[:start + 20_000] + other[_scan_start(other) + 5_000:][:3000] + jpeg[start + 20_000:]
    for bad in (cut, spliced):
        expected = f"compressed image ({len(bad)} bytes, format 'jpeg') could not be decoded: Corrupt JPEG data"
        _rejected_and_named(node, executor, log, _compressed(bad), expected)
        good = _compressed(jpeg, frame_id="good_after_damage")
        assert publish_until_answered(executor, node, good), f"no mask after {expected!r}"
    assert spin_until(executor, lambda: int(node.last_diagnostic_values().get("rejected", 0)) >= before + 2, 10)


def test_the_compressed_format_is_matched_whole_and_must_agree_with_the_data(client, frames):
    """Item 11: "jpegxl" was accepted (substring "jpeg"), and "png" with JPEG data."""
    node, executor, log = client
    jpeg = _jpeg(frames[0])
    _rejected_and_named(node, executor, log, _compressed(jpeg, "jpegxl"), "unsupported compressed format 'jpegxl'")
    _rejected_and_named(node, executor, log, _compressed(jpeg, "png"),
                        "compressed format 'png' says PNG but the data is a JPEG")
    good = _compressed(jpeg, "rgb8; jpeg compressed bgr8")
    assert publish_until_answered(executor, node, good)


@pytest.mark.parametrize("orientation", [6, 3])
def test_exif_orientation_is_ignored(client, frames, orientation):
    """Item 4: orientation 6 gave 360x480 masks, 3 an upside-down mask."""
    node, executor, _ = client
    jpeg = _jpeg(frames[2])
    plain = _compressed(jpeg, frame_id="plain")
    tagged = _compressed(_exif_orientation(jpeg, orientation), frame_id="tagged")
    tagged.header.stamp.nanosec = (plain.header.stamp.nanosec + 1) % 1_000_000_000
    assert publish_until_answered(executor, node, plain) and publish_until_answered(executor, node, tagged)
    expected = image_to_array(node.received[stamp_key(plain.header)].outputs["class_mask"])
    out = node.received[stamp_key(tagged.header)].outputs["class_mask"]
    assert (out.width, out.height) == (480, 360)
    np.testing.assert_array_equal(image_to_array(out), expected)


def _peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def test_large_jpegs_cost_memory_by_the_network_input_and_huge_ones_are_refused(client, compressed_node, frames):
    """Item 3: a 629-byte 8192x8192 JPEG took 1.8 GB and 2 s a frame. Now the default max_image_pixels
    (4096 x 4096) refuses it from its header, and a 4096 x 3072 frame is decoded at 1/8 scale."""
    node, executor, log = client
    process, _ = compressed_node
    huge = cv2.imencode(".jpg", np.zeros((8192, 8192, 3), np.uint8))[1].tobytes()
    _rejected_and_named(node, executor, log, _compressed(huge),
                        "image 8192x8192 (from its header, not decoded) has more than max_image_pixels=16777216")
    large = _compressed(_jpeg(cv2.resize(frames[0], (4096, 3072))), frame_id="large")
    assert publish_until_answered(executor, node, _compressed(_jpeg(frames[0])))
    before = _peak_rss_mb(process.pid)
    started = time.monotonic()
    for _ in range(3):
        large.header.stamp.nanosec = (large.header.stamp.nanosec + 1) % 1_000_000_000
        assert publish_until_answered(executor, node, large)
    elapsed = (time.monotonic() - started) / 3
    out = node.received[stamp_key(large.header)].outputs["class_mask"]
    assert (out.width, out.height) == (4096, 3072)
    grown = _peak_rss_mb(process.pid) - before
    # The 12.6 MB mask, its message and DDS's copies; a full decode alone would be 38 MB, 8192x8192 was 1300 MB.
    assert grown < 150, f"peak memory grew by {grown:.0f} MB for a 4096x3072 frame"
    assert elapsed < 5.0, f"{elapsed:.1f} s a frame"


def _levels_while_sending(node, executor, pictures, seconds):
    """Send the pictures (JPEG) round and round for ``seconds``; (level, message, values) of every
    diagnostics status that came meanwhile and counted only frames of these pictures."""
    messages = [_compressed(_jpeg(rgb), frame_id=f"picture_{index}") for index, rgb in enumerate(pictures)]
    node.diagnostics.clear()
    seen, deadline, index = [], time.monotonic() + seconds, 0
    skip = 2  # the first statuses may still count frames sent before
    while time.monotonic() < deadline:
        msg = messages[index % len(messages)]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
        node.publish(msg)
        index += 1
        spin_until(executor, lambda: False, 0.1)
        with node.lock:
            arrays, node.diagnostics[:] = list(node.diagnostics), []
        for array in arrays:
            for status in array.status:
                if status.name != f"{node.node_fqn}: segmentation":
                    continue
                if skip:
                    skip -= 1
                    continue
                values = {kv.key: kv.value for kv in status.values}
                if int(values.get("confidence_frames", 0)) > 0:
                    seen.append((status.level, status.message, values))
    return seen


def test_the_node_says_when_it_is_unsure(client, frames):
    """New in issue 17: confidence in /diagnostics, WARN for pictures that are not road scenes."""
    node, executor, _ = client
    assert publish_until_answered(executor, node, _compressed(_jpeg(frames[0])))
    real = _levels_while_sending(node, executor, frames, 4.0)
    assert real, "no diagnostics with confidence values"
    assert all(level == DiagnosticStatus.OK for level, _, _ in real), real
    assert all(float(values["confidence_mean"]) > 0.85 for _, _, values in real), real
    assert all(float(values["low_confidence_share"]) < 0.08 for _, _, values in real), real
    assert all(float(values["picture_brighter_above"]) > 0.5 for _, _, values in real), real
    assert all(float(values["picture_brighter_above_less_sideways"]) > 0.3 for _, _, values in real), real
    others = dict(unlike_training_frames(frames[0]))
    for name, reasons in (("uniform_noise", ["the picture is mostly noise"]), ("grey", ["almost uniform"]),
                          ("rotated_90", ["the sky is not above the road", "brighter at one side than above"]),
                          ("rotated_180", ["surer of the picture turned upside down",
                                           "the picture is darker above than below"])):
        statuses = _levels_while_sending(node, executor, [others[name]], 3.0)
        assert statuses, name
        level, message, values = statuses[-1]
        assert level == DiagnosticStatus.WARN and message.startswith("unsure over the last"), (name, statuses)
        assert all(reason in message for reason in reasons), (name, statuses)
    again = _levels_while_sending(node, executor, frames, 3.0)
    assert again and again[-1][0] == DiagnosticStatus.OK, again


# -- model files --------------------------------------------------------------------------------

def _startup_error(params):
    result = subprocess.run(node_command(params), capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "startup error: " in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr


def test_a_model_file_with_image_std_0_is_a_startup_error(dds_env, tiny_model_file, tmp_path):
    """Item 5: image_std 0 gave non-finite scores and all-Sky masks with diagnostics OK."""
    import json

    import torch

    blob = torch.load(tiny_model_file, weights_only=True)
    meta = json.loads(blob["info"])
    meta["image_std"] = [0.0, 0.0, 0.0]
    blob["info"] = json.dumps(meta)
    path = tmp_path / "std0.pt"
    torch.save(blob, path)
    stderr = _startup_error({"model_path": str(path), "backend": "torch"})
    assert "image_std [0.0, 0.0, 0.0] must be > 0 in every channel" in stderr


def test_a_model_path_that_is_a_device_is_named_as_such(dds_env):
    """Item 11: /dev/zero was reported as "does not exist"."""
    stderr = _startup_error({"model_path": "/dev/zero"})
    assert "model file /dev/zero is not a regular file (a device)" in stderr


def test_frames_with_non_finite_scores_fail_and_publish_no_mask(dds_env, tiny_model_file, tmp_path, frames):
    """Item 5: frames whose scores are NaN / inf are counted as failed, logged, and get no mask."""
    from test_processing import model_file_with_infinite_scores

    path = model_file_with_infinite_scores(tiny_model_file, tmp_path / "inf.pt")
    log = tmp_path / "node.log"
    process = start_node({"model_path": str(path), "backend": "torch", "diagnostics_period": 0.5,
                          "log_throttle_period": 0.1}, remaps={"__ns": "/infinite"}, log_path=str(log))
    rclpy.init()
    node = SegmentationClient("/infinite/image", "/infinite/segmentation", ("class_mask",), name="test_inf_client")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        assert spin_until(executor, lambda: node.connected() or process.poll() is not None, 90), log.read_text()
        msg = image_msg(frames[0], "rgb8", time.time_ns(), "inf_cam")

        def failed():
            node.publish(msg)
            return int(node.last_diagnostic_values().get("failed", 0)) >= 2
        assert spin_until(executor, failed, 60, step=0.3), log.read_text()[-3000:]
        assert "segmentation failed: NonFiniteScoresError: the network gave" in log.read_text()
        assert stamp_key(msg.header) not in node.received, "a mask was published for non-finite scores"
        levels = [status.level for array in node.diagnostics for status in array.status]
        assert DiagnosticStatus.WARN in levels
        assert int(node.last_diagnostic_values()["processed"]) == 0
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        assert stop_node(process) == 0, log.read_text()[-3000:]


def test_the_onnx_export_at_startup_is_logged_with_its_duration(dds_env, tiny_model_file, tmp_path):
    """Item 11: nothing was logged while the ONNX export ran (it takes some seconds to minutes)."""
    model = tmp_path / "fresh.pt"
    shutil.copy(tiny_model_file, model)  # no cached export beside it
    log = tmp_path / "node.log"
    process = start_node({"model_path": str(model), "backend": "onnxruntime"}, remaps={"__ns": "/fresh"},
                         log_path=str(log))
    deadline = time.monotonic() + 180
    while "listening on" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    code = stop_node(process)
    text = log.read_text()
    assert code == 0 and "listening on" in text, text[-3000:]
    exporting, exported = text.find(f"exporting {model} to "), text.find(" in ", text.find("exported "))
    assert 0 <= exporting < exported < text.find("listening on"), text[-3000:]
    assert " s" in text[exported:text.find("\n", exported)]
