"""Integration: the node as its own process (console script), real rclpy, real Fast DDS."""

import random
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -r requirements.txt)")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from fcn_segmentation.data import read_label, read_rgb, split_pairs  # noqa: E402
from node_support import node_running  # noqa: E402
from fcn_segmentation.ros.client import (  # noqa: E402
    SegmentationClient, image_msg, image_to_array, publish_until_answered, spin_until, stamp_key, start_node,
    stop_node)

OUTPUTS = ("class_mask", "color_mask", "overlay", "confidence")
TOPIC = "/test_camera/image_raw"


@pytest.fixture(scope="module")
def node_process(dds_env, bundled_model, tmp_path_factory):
    with node_running({"model_path": str(bundled_model), "diagnostics_period": 0.5, "log_throttle_period": 0.1},
                      {"image": TOPIC, "__ns": "/test_camera"}, tmp_path_factory.mktemp("node")) as running:
        yield running


@pytest.fixture
def client(dds_env):
    rclpy.init()
    node = SegmentationClient(TOPIC, "/test_camera/segmentation", OUTPUTS,
                              name=f"test_client_{random.randint(0, 1 << 30)}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()


def _connect(node, executor, process, log):
    assert spin_until(executor, lambda: node.connected() or process.poll() is not None, 60), "no DDS match"
    assert process.poll() is None, log.read_text()[-3000:]


def test_round_trip_masks_match_header_size_and_ground_truth(node_process, client, sample_dir):
    process, log = node_process
    node, executor = client
    _connect(node, executor, process, log)
    pairs = split_pairs(sample_dir, "val")[:3]
    for index, (image_path, label_path) in enumerate(pairs):
        rgb = read_rgb(image_path)
        msg = image_msg(rgb, "bgr8", 1_700_000_000_000_000_000 + index * 100_000_000 + 7, f"cam_{index}")
        key = stamp_key(msg.header)
        assert publish_until_answered(executor, node, msg, OUTPUTS), f"no outputs for frame {index}"
        entry = node.received[key]
        for name, encoding in (("class_mask", "mono8"), ("color_mask", "rgb8"), ("overlay", "rgb8"),
                               ("confidence", "mono8")):
            out = entry.outputs[name]
            assert (out.encoding, out.width, out.height) == (encoding, 480, 360), name
            assert out.header.frame_id == f"cam_{index}"
            assert stamp_key(out.header) == key
        classes = image_to_array(entry.outputs["class_mask"])
        label = read_label(label_path, 11)
        valid = label < 11
        accuracy = (classes[valid] == label[valid]).mean()
        assert accuracy > 0.75, f"{image_path.name}: only {accuracy:.2f} of labelled pixels right"
        road = label == 3
        assert (classes[road] == 3).mean() > 0.8, "road should be found"
        colors = image_to_array(entry.outputs["color_mask"])
        np.testing.assert_array_equal(colors[classes == 3][:5], [[128, 64, 128]] * min(5, (classes == 3).sum()))
    spin_until(executor, lambda: int(node.last_diagnostic_values().get("processed", 0)) >= 3, 10)
    values = node.last_diagnostic_values()
    assert values["input_size"] == "384x288"
    # backend and precision auto: OpenVINO INT8 on a CPU-only machine, a CUDA backend where there is a GPU
    import onnxruntime
    import torch
    gpu = torch.cuda.is_available() or "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert "(cuda" in values["backend"] if gpu else values["backend"] == "openvino (cpu, int8)", values["backend"]
    assert int(values["processed"]) >= 3


# Every way the fields of an Image can be wrong, and what the node's warning must say about it:
# (encoding, width, height, step, data bytes, is_bigendian, expected text).
BAD_IMAGES = (
    ("32FC1", 8, 8, 32, 256, 0, "unsupported encoding '32FC1': signed or float samples"),
    ("weird42", 8, 8, 24, 192, 0, "unsupported encoding 'weird42' (supported:"),
    ("rgb8", 0, 8, 24, 0, 0, "image size is 0x8; both sides must be positive"),
    ("rgb8", 8, 0, 24, 0, 0, "image size is 8x0; both sides must be positive"),
    ("rgb8", 8, 8, 10, 80, 0, "step 10 is smaller than width x bytes per pixel = 8 x 3 = 24"),
    ("rgb8", 8, 8, 24, 100, 0, "data has 100 bytes but step x height = 24 x 8 = 192"),
    ("rgb8", 8, 8, 24, 300, 0, "data has 300 bytes but step x height = 24 x 8 = 192"),
    ("yuv422", 7, 8, 14, 112, 0, "yuv422 needs an even width, got 7"),
    ("rgb8", 100_000, 100_000, 300_000, 192, 0, "image 100000x100000 has more than max_image_pixels"),
    ("mono16", 8, 8, 16, 128, 2, "is_bigendian is 2; it must be 0 or 1"),
)


def _bad_image(encoding, width, height, step, size, bigendian):
    msg = image_msg(np.zeros((8, 8, 3), np.uint8), "rgb8", time.time_ns(), "bad")
    msg.encoding, msg.width, msg.height, msg.step, msg.data = encoding, width, height, step, bytes(size)
    msg.is_bigendian = bigendian
    return msg


def _reject_then_answer(node, executor, log, bad_msg, expected, good_msg, topic):
    """Send ``bad_msg`` until the node's log names ``expected``, then ``good_msg`` until its mask
    comes back: the node rejected the one and goes on with the next."""
    def named():
        node.publish(bad_msg)  # re-sent: a best-effort subscription may miss a message
        return expected in log.read_text()
    assert spin_until(executor, named, 20, step=0.3), f"no warning naming {expected!r}:\n{log.read_text()[-2000:]}"
    assert f"rejected frame from {topic}: " in log.read_text()
    assert publish_until_answered(executor, node, good_msg), f"no mask for the good frame after {expected!r}"


def test_each_bad_frame_is_rejected_named_and_the_next_good_frame_is_processed(node_process, client, sample_dir):
    process, log = node_process
    node, executor = client
    _connect(node, executor, process, log)
    rgb = read_rgb(split_pairs(sample_dir, "val")[0][0])
    assert publish_until_answered(executor, node, image_msg(rgb, "rgb8", time.time_ns(), "warm_up"))
    spin_until(executor, lambda: bool(node.last_diagnostic_values()), 5)
    before = int(node.last_diagnostic_values().get("rejected", 0))
    for index, (*fields, expected) in enumerate(BAD_IMAGES):
        good = image_msg(rgb, "rgb8", time.time_ns(), f"good_after_{index}")
        _reject_then_answer(node, executor, log, _bad_image(*fields), expected, good, TOPIC)
        assert node.received[stamp_key(good.header)].outputs["class_mask"].header.frame_id == f"good_after_{index}"
    assert spin_until(executor, lambda: int(node.last_diagnostic_values().get("rejected", 0)) >= before
                      + len(BAD_IMAGES), 10)
    assert process.poll() is None
    levels = [status.level for array in node.diagnostics for status in array.status]
    assert DiagnosticStatus.WARN in levels, "rejected frames make the next diagnostics a warning"
    # ... for one period: with no bad frames since, the node is OK again.
    node.diagnostics.clear()
    assert spin_until(executor, lambda: any(status.level == DiagnosticStatus.OK for array in node.diagnostics
                                            for status in array.status), 5)


def _png(rgb):
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _bad_compressed_images(rgb):
    """(format, data, expected text) for the ways a CompressedImage can be wrong, one of each kind of
    problem (test_frames.py has every variant of each)."""
    png = _png(rgb)
    huge_png = png[:16] + (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big") + png[24:]
    corrupt_png = png[:60] + bytes(64) + png[124:]
    bmp = cv2.imencode(".bmp", rgb)[1].tobytes()
    return (
        ("jpeg", b"\xff\xd8\xff\xe0 not really a jpeg", "JPEG data ends before its frame header (SOF)"),
        ("png", corrupt_png, f"compressed image ({len(corrupt_png)} bytes, format 'png') could not be decoded"),
        ("png", huge_png, "image 100000x100000 (from its header, not decoded) has more than max_image_pixels"),
        ("png", bmp, "which is neither a PNG nor a JPEG signature"),
        ("16UC1; compressedDepth png", png, "is a depth image (compressedDepth), not a camera picture"),
        ("jpeg", b"", "compressed image has no data"),
    )


def test_compressed_transport_and_torch_backend(dds_env, bundled_model, sample_dir, tmp_path):
    log = tmp_path / "node.log"
    topic = "/zipped/image_raw"
    process = start_node({"model_path": str(bundled_model), "input_transport": "compressed", "backend": "torch",
                          "network_image_width": 480, "network_image_height": 352, "log_throttle_period": 60.0,
                          "diagnostics_period": 0.5},
                         remaps={"image/compressed": topic + "/compressed", "__ns": "/zipped"}, log_path=str(log))
    rclpy.init()
    node = SegmentationClient(topic + "/compressed", "/zipped/segmentation", ("class_mask",), compressed=True,
                              name="test_compressed_client")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        _connect(node, executor, process, log)
        rgb = read_rgb(split_pairs(sample_dir, "val")[1][0])
        msg = CompressedImage()
        msg.header.stamp.sec, msg.header.frame_id = 42, "zipped_cam"
        msg.format = "rgb8; jpeg compressed bgr8"
        msg.data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
        assert publish_until_answered(executor, node, msg), log.read_text()[-2000:]
        out = node.received[(42, 0)].outputs["class_mask"]
        assert (out.width, out.height, out.header.frame_id) == (480, 360, "zipped_cam")
        assert "backend torch (cpu)" in log.read_text()
        assert "network input 480x352" in log.read_text()
        # Each bad kind, then a good frame. The node throttles its warnings per kind of problem (60 s
        # here), so every one of them is still named although they come seconds apart.
        bad_kinds = _bad_compressed_images(rgb)
        for index, (fmt, data, expected) in enumerate(bad_kinds):
            bad = CompressedImage()
            bad.header.frame_id, bad.format, bad.data = "zipped_cam", fmt, data
            good = CompressedImage()
            good.header.stamp.sec, good.header.frame_id, good.format = 100 + index, "zipped_cam", "png"
            good.data = _png(rgb)
            _reject_then_answer(node, executor, log, bad, expected, good, topic + "/compressed")
        assert spin_until(executor, lambda: int(node.last_diagnostic_values().get("rejected", 0)) >= len(bad_kinds),
                          5)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        process.send_signal(signal.SIGTERM)  # as systemd or a launch file would stop it
        assert process.wait(timeout=20) == 0
        assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("params,message", [
    ({"model_path": "/nonexistent/model.pt"}, "model file /nonexistent/model.pt does not exist"),
    ({"onnx_path": "/nonexistent/model.onnx"}, "onnx file /nonexistent/model.onnx does not exist"),
    ({"backend": "tensorflow"}, "parameter 'backend' is 'tensorflow': choose one of: auto, tensorrt"),
    ({"overlay_alpha": 1.5}, "parameter 'overlay_alpha' is 1.5: must be in [0, 1]"),
    ({"qos_reliability": "sometimes"}, "parameter 'qos_reliability' is 'sometimes': choose one of"),
    ({"drivable_classes": "[Road, Rood]"}, "unknown drivable classes ['Rood']; the model's classes are: Sky"),
    ({"grid_resolution": 0.0}, "parameter 'grid_resolution' is 0.0: must be in (0, 10] m"),
    ({"inference_threads": -1}, "parameter 'inference_threads' is -1: must be >= 0"),
    ({"qos_depth": "deep"}, "parameter 'qos_depth'"),
    ({"network_image_width": 480}, "set both network_image_width and network_image_height, or neither"),
    ({"network_image_width": 100, "network_image_height": 64}, "must be 0 (the model file's) or a positive multiple"),
    ({"publish_overlays": False}, "unknown parameter 'publish_overlays': did you mean 'publish_overlay'?"),
    ({"grid_resolution": 0.001}, "check grid_resolution (metres per cell)"),
    ({"drivable_close_kernel_px": 500}, "parameter 'drivable_close_kernel_px' is 500: must be in [0, 99]"),
])
def test_startup_errors_exit_non_zero_with_a_fix_it_message(dds_env, params, message):
    from fcn_segmentation.ros.client import node_command

    result = subprocess.run(node_command(params), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_corrupt_or_mismatched_model_file_is_a_startup_error(dds_env, tiny_model_file, tmp_path):
    from fcn_segmentation.ros.client import node_command
    from test_model_file import model_file_with_an_extra_class

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(tiny_model_file.read_bytes()[:1000])
    twelve = model_file_with_an_extra_class(tiny_model_file, tmp_path / "twelve.pt")
    for path, message in ((corrupt, f"model file {corrupt} is not a readable fcn_segmentation model"),
                          (twelve, "model with 12 classes its metadata describes: score_fr.weight has shape (11,")):
        result = subprocess.run(node_command({"model_path": str(path)}), capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "startup error: " in result.stderr and message in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("gap_s", [0.001, 0.02])
def test_a_repeated_stop_signal_still_shuts_down_cleanly(dds_env, bundled_model, tmp_path, gap_s):
    """Ctrl-C under `ros2 launch` reaches the node twice: from the terminal and from launch."""
    log = tmp_path / "node.log"
    process = start_node({"model_path": str(bundled_model)}, remaps={"__ns": "/twice"}, log_path=str(log))
    deadline = time.monotonic() + 120
    while "listening on" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, log.read_text()
    time.sleep(0.5)  # spinning
    process.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def test_an_unwritable_onnx_cache_is_a_startup_error_that_says_what_to_check(dds_env, bundled_model, tmp_path):
    import shutil

    from fcn_segmentation.export import onnx_cache_path
    from fcn_segmentation.model.model_file import load_model_file
    from fcn_segmentation.ros.client import node_command

    model = tmp_path / bundled_model.name
    shutil.copy(bundled_model, model)
    onnx_cache_path(model, load_model_file(model)[1]).mkdir()  # a folder where the ONNX file must go
    result = subprocess.run(node_command({"model_path": str(model), "backend": "onnxruntime"}),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "startup error:" in result.stderr and "are writable" in result.stderr
    assert "Traceback" not in result.stderr


def _wait_for_log(process, log, text, timeout=120.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return text in log.read_text()


def test_whole_numbers_for_decimals_and_other_nodes_parameters_are_accepted(dds_env, bundled_model, tmp_path):
    log = tmp_path / "node.log"
    process = start_node({"model_path": str(bundled_model), "camera_height": 2, "overlay_alpha": 1,
                          "wheel_base": 2.7}, remaps={"__ns": "/whole"}, log_path=str(log))
    started = _wait_for_log(process, log, "listening on")
    assert stop_node(process) == 0
    text = log.read_text()
    assert started, text[-3000:]
    assert "ignoring parameter 'wheel_base': fcn_segmentation has no such parameter" in text


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("moment", ["importing", "exporting"])
def test_a_stop_signal_while_starting_exits_cleanly(dds_env, bundled_model, tmp_path, signum, moment):
    """Starting can take minutes (ONNX export, TensorRT engine build): Ctrl-C then is no crash."""
    import shutil

    model = tmp_path / bundled_model.name
    shutil.copy(bundled_model, model)  # no cached ONNX beside it: the node exports one while starting
    log = tmp_path / "node.log"
    process = start_node({"model_path": str(model), "backend": "onnxruntime"}, remaps={"__ns": "/early"},
                         log_path=str(log))
    if moment == "importing":
        time.sleep(0.3)
    else:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("*.onnx*")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
    process.send_signal(signum)
    code = process.wait(timeout=60)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "listening on" not in text, "the signal came after the node had started: the test missed its moment"


def test_diagnostics_report_error_while_a_frame_is_stuck_and_warn_only_for_recent_bad_frames(dds_env, bundled_model):
    from rclpy.parameter import Parameter

    from fcn_segmentation.ros.node import SegmentationNode

    rclpy.init()
    node = None
    try:
        node = SegmentationNode(parameter_overrides=[Parameter("model_path", value=str(bundled_model)),
                                                     Parameter("stall_timeout", value=0.5)])
        assert node._health(node.stats.snapshot())[0] == DiagnosticStatus.OK
        node._in_work_since = time.monotonic() - 2.0  # the worker has been on one frame for 2 s
        level, message = node._health(node.stats.snapshot())
        assert level == DiagnosticStatus.ERROR and message.startswith("stalled: a frame has waited or been in work")
        node._in_work_since = None
        node.stats.count("rejected")
        assert node._health(node.stats.snapshot()) == (DiagnosticStatus.WARN, "1 frames rejected (see the log for why)")
        assert node._health(node.stats.snapshot())[0] == DiagnosticStatus.OK, "no new bad frame since"
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
