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
from fcn_segmentation.ros.client import (  # noqa: E402
    SegmentationClient, image_msg, image_to_array, publish_until_answered, spin_until, stamp_key, start_node,
    stop_node)

OUTPUTS = ("class_mask", "color_mask", "overlay", "confidence")
TOPIC = "/test_camera/image_raw"


@pytest.fixture(scope="module")
def node_process(dds_env, bundled_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "node.log"
    process = start_node({"model_path": str(bundled_model), "diagnostics_period": 0.5, "log_throttle_period": 0.1},
                         remaps={"image": TOPIC, "__ns": "/test_camera"}, log_path=str(log))
    yield process, log
    code = stop_node(process)
    text = log.read_text()
    assert code == 0, f"node exited with {code}:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]


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
    assert values["input_size"] == "320x224"
    assert "onnxruntime" in values["backend"]
    assert int(values["processed"]) >= 3


def _bad_frames():
    good = np.zeros((8, 8, 3), np.uint8)
    bad = []
    # unknown encoding, zero width, zero height, step < width x 3, data shorter / longer than
    # step x height, odd width for 4:2:2, huge dimensions, a byte-order flag that is neither 0 nor 1
    for encoding, width, height, step, size, bigendian in (
            ("32FC1", 8, 8, 32, 256, 0), ("rgb8", 0, 8, 24, 0, 0), ("rgb8", 8, 0, 24, 0, 0),
            ("rgb8", 8, 8, 10, 80, 0), ("rgb8", 8, 8, 24, 100, 0), ("rgb8", 8, 8, 24, 300, 0),
            ("yuv422", 7, 8, 14, 112, 0), ("rgb8", 100_000, 100_000, 300_000, 192, 0), ("mono16", 8, 8, 16, 128, 2)):
        msg = image_msg(good, "rgb8", time.time_ns(), "bad")
        msg.encoding, msg.width, msg.height, msg.step, msg.data = encoding, width, height, step, bytes(size)
        msg.is_bigendian = bigendian
        bad.append(msg)
    return bad


def test_bad_frames_are_rejected_counted_and_the_next_good_frame_is_processed(node_process, client, sample_dir):
    process, log = node_process
    node, executor = client
    _connect(node, executor, process, log)
    warm_up = image_msg(read_rgb(split_pairs(sample_dir, "val")[0][0]), "rgb8", time.time_ns(), "warm_up")
    assert publish_until_answered(executor, node, warm_up)  # the subscription has matched us
    spin_until(executor, lambda: bool(node.last_diagnostic_values()), 5)
    before = int(node.last_diagnostic_values().get("rejected", 0))
    for msg in _bad_frames():
        node.publish(msg)
        spin_until(executor, lambda: False, 0.3)  # one at a time: newest-frame processing may drop a burst
    good = image_msg(read_rgb(split_pairs(sample_dir, "val")[0][0]), "rgb8", time.time_ns(), "good")
    assert publish_until_answered(executor, node, good)
    assert spin_until(executor, lambda: int(node.last_diagnostic_values().get("rejected", 0)) >= before + 9, 10)
    assert process.poll() is None
    text = log.read_text()
    assert "unsupported encoding '32FC1'" in text and "rejected frame" in text
    levels = [status.level for array in node.diagnostics for status in array.status]
    assert DiagnosticStatus.WARN in levels, "rejected frames make the next diagnostics a warning"
    # ... for one period: with no bad frames since, the node is OK again.
    node.diagnostics.clear()
    assert spin_until(executor, lambda: any(status.level == DiagnosticStatus.OK for array in node.diagnostics
                                            for status in array.status), 5)


def test_compressed_transport_and_torch_backend(dds_env, bundled_model, sample_dir, tmp_path):
    log = tmp_path / "node.log"
    topic = "/zipped/image_raw"
    process = start_node({"model_path": str(bundled_model), "input_transport": "compressed", "backend": "torch",
                          "network_image_width": 480, "network_image_height": 352},
                         remaps={"image/compressed": topic + "/compressed", "__ns": "/zipped"}, log_path=str(log))
    rclpy.init()
    node = SegmentationClient(topic + "/compressed", "/zipped/segmentation", ("class_mask",), compressed=True,
                              name="test_compressed_client")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        _connect(node, executor, process, log)
        corrupt = CompressedImage()
        corrupt.header.frame_id, corrupt.format = "zipped_cam", "jpeg"
        corrupt.data = b"\xff\xd8\xff\xe0 not really a jpeg"

        def corrupt_frame_named():
            node.publish(corrupt)  # re-sent: a best-effort subscription may miss a first message
            return "could not be decoded" in log.read_text()
        assert spin_until(executor, corrupt_frame_named, 20, step=0.3), log.read_text()[-2000:]
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
        assert spin_until(executor, lambda: int(node.last_diagnostic_values().get("rejected", 0)) >= 1, 5)
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
    ({"grid_resolution": 0.0}, "parameter 'grid_resolution' is 0.0: must be > 0"),
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
