"""Hostile input to the node (issue 17): parameter service requests any node on the domain may send,
camera_infos that cannot describe a camera, a flood of frames, simulated time without /clock, and
startup arguments, params files and stop signals that once ended the node with a traceback. The
node runs as its own process (console script) over real rclpy and Fast DDS."""

import math
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -r requirements.txt)")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, SetParameters, SetParametersAtomically  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

from fcn_segmentation.data import read_rgb, split_pairs  # noqa: E402
from fcn_segmentation.ros.client import (  # noqa: E402
    SegmentationClient, camera_info_msg, image_msg, node_command, publish_until_answered, spin_until, stamp_key,
    start_node, stop_node)

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample" / "camvid_sample"
NS = "/hardened"
TOPIC = f"{NS}/image_raw"
NODE = f"{NS}/fcn_segmentation"


@pytest.fixture(scope="module")
def hardened(dds_env, bundled_model, tmp_path_factory):
    """One node for the DDS tests here: simulated time with no /clock anywhere, and 1000 inference
    threads asked for."""
    log = tmp_path_factory.mktemp("hardened") / "node.log"
    process = start_node({"model_path": str(bundled_model), "diagnostics_period": 0.5, "log_throttle_period": 0.1,
                          "use_sim_time": True, "inference_threads": 1000},
                         remaps={"__ns": NS, "image": TOPIC}, log_path=str(log))
    rclpy.init()
    client = SegmentationClient(TOPIC, f"{NS}/segmentation", ("class_mask", "drivable_grid"),
                                name=f"hardening_client_{random.randint(0, 1 << 30)}")
    info_pub = client.create_publisher(CameraInfo, f"{NS}/camera_info",
                                       QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    try:
        assert spin_until(executor, lambda: client.connected() or process.poll() is not None, 120), "no DDS match"
        assert process.poll() is None, log.read_text()[-3000:]
        yield process, log, client, info_pub, executor
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()
        code = stop_node(process, timeout=30)
        text = log.read_text()
        assert code == 0, f"node exited with {code}:\n{text[-3000:]}"
        assert "Traceback" not in text, text[-3000:]


def _call(executor, client, srv_type, name, request, timeout=30.0):
    service = client.create_client(srv_type, name)
    try:
        assert service.wait_for_service(timeout_sec=timeout), f"no service {name}"
        future = service.call_async(request)
        assert spin_until(executor, future.done, timeout), f"no answer from {name}"
        return future.result()
    finally:
        client.destroy_client(service)


def _parameter(name, type_, **value):
    return ParameterMsg(name=name, value=ParameterValue(type=type_, **value))


def test_malformed_set_parameters_requests_are_refused_and_the_node_keeps_running(hardened):
    """Issue 17 item 1: a value type out of range (42) or a parameter the node does not have ended
    the node with a traceback from rclpy/parameter_service.py."""
    process, log, client, _, executor = hardened
    bad_type = _parameter("overlay_alpha", 42, double_value=0.3)
    unknown = _parameter("no_such_parameter", ParameterType.PARAMETER_DOUBLE, double_value=1.0)
    read_only = _parameter("camera_height", ParameterType.PARAMETER_DOUBLE, double_value=2.0)
    good = _parameter("overlay_alpha", ParameterType.PARAMETER_DOUBLE, double_value=0.25)

    answer = _call(executor, client, SetParameters, f"{NODE}/set_parameters",
                   SetParameters.Request(parameters=[bad_type, unknown, read_only, good]))
    assert [r.successful for r in answer.results] == [False, False, False, True], answer.results
    assert "overlay_alpha" in answer.results[0].reason and "42" in answer.results[0].reason
    assert "no_such_parameter" in answer.results[1].reason
    assert answer.results[2].reason  # read-only: rclpy's own refusal text
    for request in ([bad_type], [unknown], [good, bad_type]):
        answer = _call(executor, client, SetParametersAtomically, f"{NODE}/set_parameters_atomically",
                       SetParametersAtomically.Request(parameters=request))
        assert not answer.result.successful and answer.result.reason, request
    answer = _call(executor, client, DescribeParameters, f"{NODE}/describe_parameters",
                   DescribeParameters.Request(names=["no_such_parameter"]))
    assert answer is not None
    time.sleep(1.0)
    assert process.poll() is None, log.read_text()[-3000:]
    # ... and it still segments
    rgb = read_rgb(split_pairs(SAMPLE_DIR, "val")[0][0])
    assert publish_until_answered(executor, client, image_msg(rgb, "rgb8", time.time_ns(), "after_bad_requests"))
    assert "Traceback" not in log.read_text()


def test_diagnostics_go_on_with_sim_time_and_no_clock(hardened):
    """Issue 17 item 11: with use_sim_time on and nothing publishing /clock, ROS time stands still;
    a diagnostics timer on it never fired."""
    process, log, client, _, executor = hardened
    assert spin_until(executor, lambda: bool(client.last_diagnostic_values()), 30), \
        "no /diagnostics from a node on simulated time without /clock"
    with client.lock:
        count = len(client.diagnostics)
    assert spin_until(executor, lambda: len(client.diagnostics) >= count + 2, 10), "diagnostics stopped"


def test_inference_threads_beyond_the_cores_are_capped_with_a_warning(hardened):
    """Issue 17 item 9: inference_threads:=1000 ran 1021 threads, inference 25x slower."""
    import os

    process, log, *_ = hardened
    cores = os.cpu_count()
    assert f"inference_threads 1000 is more than the {cores} CPU cores: using {cores}" in log.read_text()


def _frames_with(executor, client, info_pub, info, name, count=3):
    """Send ``count`` frames, each with ``info``; their class masks come back. Returns their stamps."""
    rgb = read_rgb(split_pairs(SAMPLE_DIR, "val")[4][0])
    keys = []
    for index in range(count):
        msg = image_msg(rgb, "rgb8", time.time_ns(), f"{name}_{index}")
        assert publish_until_answered(executor, client, msg, publish_companions=lambda: info_pub.publish(info)), name
        keys.append(stamp_key(msg.header))
        spin_until(executor, lambda: False, 0.3)  # time for the grid, if one comes
    return keys


def _grid_state(executor, client, needle, timeout=10.0):
    spin_until(executor, lambda: needle in client.last_diagnostic_values().get("drivable_grid", ""), timeout)
    return client.last_diagnostic_values().get("drivable_grid", "")


@pytest.mark.parametrize("case, expected", [
    ("nan_fx", "K has non-finite values"),
    ("tiny_fx", "more than a pinhole camera sees"),
    ("huge_size", "more than 65535 pixels on a side"),
])
def test_a_camera_info_that_cannot_be_a_camera_is_named_once_and_gives_no_grid(hardened, case, expected):
    """Issue 17 item 10: NaN in K was warned on every frame; fx = 1e-300 or a declared size of
    4294967295 square published grids of all-occupied cells."""
    process, log, client, info_pub, executor = hardened
    good = camera_info_msg(480, 360, fx=500.0)
    assert _frames_with(executor, client, info_pub, good, f"good_before_{case}", 1)
    assert "published" in _grid_state(executor, client, "published")
    bad = camera_info_msg(480, 360, fx=500.0)
    if case == "nan_fx":
        bad.k[0] = math.nan
    elif case == "tiny_fx":
        bad.k[0] = bad.k[4] = 1e-300
    else:
        bad.width = bad.height = 4294967295
    before = log.read_text().count(expected)
    keys = _frames_with(executor, client, info_pub, bad, case, 6)
    state = _grid_state(executor, client, expected)
    assert expected in state, state
    with client.lock:
        grids = [key for key in keys[1:] if "drivable_grid" in client.received[key].outputs]
    assert not grids, f"{len(grids)} grids published from an unusable camera_info ({case})"
    assert log.read_text().count(expected) - before == 1, "the unusable camera_info is to be named once"
    # a usable one again: grids again
    assert _frames_with(executor, client, info_pub, good, f"good_after_{case}", 1)
    assert "published" in _grid_state(executor, client, "published")
    assert process.poll() is None


def test_frames_that_never_arrive_make_diagnostics_warn(hardened):
    """Issue 17 item 11: the diagnostics level stayed OK while 94% of the frames were missed."""
    process, log, client, _, executor = hardened
    small = image_msg(np.zeros((48, 64, 3), np.uint8), "rgb8", time.time_ns(), "flood")
    client.diagnostics.clear()
    deadline = time.monotonic() + 3.0
    sent = 0
    while time.monotonic() < deadline:  # far faster than the node takes frames from its keep-last-1 queue
        for _ in range(200):
            small.header.stamp.nanosec = sent % 1_000_000_000
            client.image_pub.publish(small)
            sent += 1
        executor.spin_once(timeout_sec=0)

    def warned():
        with client.lock:
            return any(status.level == DiagnosticStatus.WARN and "never reached the node" in status.message
                       for array in client.diagnostics for status in array.status)
    assert spin_until(executor, warned, 10), (sent, client.last_diagnostic_values())
    assert int(client.last_diagnostic_values()["missed"]) > 0
    assert process.poll() is None


def test_a_huge_camera_info_d_costs_the_node_no_time_per_frame(dds_env, bundled_model, tmp_path):
    """Issue 17 item 10: a D of millions of zeros (no distortion model takes more than 14) was turned
    into a comparison key on every frame: 15 -> 3.4 frames/s."""
    log = tmp_path / "node.log"
    ns = "/huge_d"
    process = start_node({"model_path": str(bundled_model), "diagnostics_period": 0.5},
                         remaps={"__ns": ns, "image": f"{ns}/image_raw"}, log_path=str(log))
    owns_rclpy = not rclpy.ok()  # the module's other tests may hold it (one init per process)
    try:
        if owns_rclpy:
            rclpy.init()
    except BaseException:
        stop_node(process)
        raise
    client = SegmentationClient(f"{ns}/image_raw", f"{ns}/segmentation", ("class_mask", "drivable_grid"),
                                name="huge_d_client")
    info_pub = client.create_publisher(CameraInfo, f"{ns}/camera_info",
                                       QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    try:
        assert spin_until(executor, lambda: client.connected() or process.poll() is not None, 120)
        assert process.poll() is None, log.read_text()[-3000:]
        info = camera_info_msg(480, 360, fx=500.0)
        info.distortion_model = ""  # all-zero D without a model: no distortion, so nothing refused it before
        info.d = [0.0] * 1_500_000  # 12 MB, within the DDS profile's shared-memory segment
        _frames_with(executor, client, info_pub, info, "huge_d", 12)
        state = _grid_state(executor, client, "coefficients")
        values = client.last_diagnostic_values()
        assert float(values["drivable_p50_ms"]) < 20.0, values
        assert "D has 1500000 coefficients; no distortion model takes more than 14" in state, state
    finally:
        executor.shutdown()
        client.destroy_node()
        if owns_rclpy:
            rclpy.try_shutdown()
        assert stop_node(process, timeout=30) == 0, log.read_text()[-3000:]


# -- startup errors: exit 2 and `startup error: ...` naming what to fix, never a traceback --------------

def _startup(params=None, extra_args=(), env=None, params_file=None, timeout=90.0):
    """The node's exit code and output; a node still running after ``timeout`` (it took the value)
    is stopped and gives returncode None."""
    import os

    command = node_command(params or {}, params_file=params_file) + list(extra_args)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    try:
        _, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(command, process.returncode, "", stderr)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        return subprocess.CompletedProcess(command, None, "", stderr)


def _assert_startup_error(result, *needles):
    assert result.returncode is not None, f"still running after its timeout: the value was accepted\n" \
                                          f"{result.stderr[-3000:]}"
    assert result.returncode == 2, f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    assert "startup error: " in result.stderr, result.stderr[-3000:]
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("content, needles", [
    (None, ["Couldn't parse params file", "/missing.yaml", "check the --params-file"]),
    (": : [\n", ["Couldn't parse params file", "not_yaml.yaml"]),
    ("fcn_segmentation:\n  ros__parameters:\n    drivable_classes: [Road, 3]\n",
     ["Sequence should be of same type", "mixed.yaml"]),
    ("fcn_segmentation:\n  camera_height: 2.0\n", ["Cannot have a value before ros__parameters", "no_ros.yaml"]),
], ids=["missing", "not_yaml", "mixed_types", "no_ros__parameters"])
def test_a_params_file_rcl_cannot_read_is_a_startup_error(dds_env, tmp_path, content, needles):
    """Issue 17 item 7: errors raised in rclpy.init exited 1 with a traceback."""
    names = {None: "missing.yaml", ": : [\n": "not_yaml.yaml"}
    name = names.get(content) or ("mixed.yaml" if "3]" in content else "no_ros.yaml")
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    _assert_startup_error(_startup(params_file=str(path)), *needles)


def test_a_parameter_without_a_value_is_a_startup_error(dds_env):
    _assert_startup_error(_startup(extra_args=["-p", "camera_height"]), "-p camera_height", "parameter override")


def test_a_log_folder_that_cannot_be_made_is_a_startup_error(dds_env):
    _assert_startup_error(_startup(env={"ROS_LOG_DIR": "/dev/null/log"}), "/dev/null/log", "ROS_LOG_DIR")


@pytest.mark.parametrize("params, message", [
    # item 8: exit 2 already, but with an OverflowError / TypeError / IndexError naming no parameter
    ({"diagnostics_period": "inf"}, "parameter 'diagnostics_period' is inf: must be a finite number"),
    ({"grid_range_ahead": "inf"}, "parameter 'grid_range_ahead' is inf: must be a finite number"),
    ({"qos_depth": 2147483648}, "parameter 'qos_depth' is 2147483648: must be in [1, 1000]"),
    ({"output_qos_depth": 0}, "parameter 'output_qos_depth' is 0: must be in [1, 1000]"),
    ({"drivable_classes": "[]"}, "parameter 'drivable_classes' has no value (an empty list?); give e.g. "
                                 "drivable_classes:=[Road]"),
    # item 9: accepted silently
    ({"camera_pitch": "nan"}, "parameter 'camera_pitch' is nan: must be a finite number"),
    ({"camera_pitch": 10.0}, "parameter 'camera_pitch' is 10.0: must be in [-pi, pi] rad (radians: 10 degrees"),
    ({"grid_resolution": "inf"}, "parameter 'grid_resolution' is inf: must be a finite number"),
    ({"camera_height": "inf"}, "parameter 'camera_height' is inf: must be a finite number"),
    ({"camera_height": 500.0}, "parameter 'camera_height' is 500.0: must be in (0, 100] m"),
    ({"grid_width": "0.000000001"}, "the drivable grid would have 400x0 cells: grid_range_ahead (40 m) and grid_width"),
    ({"log_throttle_period": "inf"}, "parameter 'log_throttle_period' is inf: must be a finite number"),
    ({"stall_timeout": "-inf"}, "parameter 'stall_timeout' is -inf: must be a finite number"),
])
def test_non_finite_and_absurd_values_are_refused_naming_the_parameter(dds_env, params, message):
    _assert_startup_error(_startup(params), message)


def test_an_empty_onnx_file_is_a_startup_error(dds_env, tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.touch()
    _assert_startup_error(_startup({"onnx_path": str(empty)}), f"parameter 'onnx_path': {empty} is an empty file")


# -- stop signals: exit 0 (or the startup error's 2), never -2 / -15 or a traceback ----------------------

@pytest.mark.parametrize("first, second", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGTERM),
                                           (signal.SIGINT, signal.SIGTERM)], ids=["int_int", "term_term", "int_term"])
def test_two_stop_signals_while_importing_exit_cleanly(dds_env, bundled_model, tmp_path, first, second):
    """Issue 17 item 6: two signals while the node imports its libraries gave exit -2 or -15."""
    for attempt, (delay, gap) in enumerate(((0.4, 0.0), (0.8, 0.002), (1.5, 0.02))):
        log = tmp_path / f"node_{attempt}.log"
        process = start_node({"model_path": str(bundled_model)}, remaps={"__ns": "/importing"}, log_path=str(log))
        time.sleep(delay)
        process.send_signal(first)
        time.sleep(gap)
        if process.poll() is None:
            process.send_signal(second)
        code = process.wait(timeout=60)
        text = log.read_text()
        assert code == 0, f"attempt {attempt}: exit {code}\n{text[-3000:]}"
        assert "Traceback" not in text, text[-3000:]


def test_stop_signals_just_after_a_startup_error_keep_its_exit_code(dds_env, tmp_path):
    """Issue 17 item 6: SIGINT just after a startup error (Ctrl-C under `ros2 launch ... respawn:=true`)
    printed a traceback from _ignore_stop_signals and exited -2."""
    for attempt in range(4):
        log = tmp_path / f"node_{attempt}.log"
        process = start_node({"model_path": "/nonexistent/model.pt"}, remaps={"__ns": "/failing"}, log_path=str(log))
        deadline = time.monotonic() + 120
        while "startup error" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        while process.poll() is None:  # Ctrl-C, from the terminal and from launch, while it cleans up
            process.send_signal(signal.SIGINT if attempt % 2 == 0 else signal.SIGTERM)
            time.sleep(0.0005)
        text = log.read_text()
        assert process.returncode == 2, f"attempt {attempt}: exit {process.returncode}\n{text[-3000:]}"
        assert "startup error: model file /nonexistent/model.pt" in text
        assert "Traceback" not in text, text[-3000:]
