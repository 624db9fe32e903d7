"""The drivable-area outputs of the node over real DDS: mask, occupancy grid, camera_info handling,
run-time parameter validation."""

import time
from functools import partial

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -r requirements.txt)")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

from fcn_segmentation.data import read_label, read_rgb, split_pairs  # noqa: E402
from fcn_segmentation.ros.client import (  # noqa: E402
    SegmentationClient, camera_info_msg, image_msg, image_to_array, publish_until_answered, spin_until, start_node,
    stop_node)

NS = "/drive_cam"


@pytest.fixture(scope="module")
def running_node(dds_env, bundled_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("drivable") / "node.log"
    process = start_node({"model_path": str(bundled_model), "diagnostics_period": 0.3, "camera_height": 1.3,
                          "grid_resolution": 0.25},
                         remaps={"__ns": NS, "image": f"{NS}/image_raw"}, log_path=str(log))
    rclpy.init()
    client = SegmentationClient(f"{NS}/image_raw", f"{NS}/segmentation", ("drivable_mask", "drivable_grid"),
                                name="drivable_client")
    info_pub = client.create_publisher(CameraInfo, f"{NS}/camera_info",
                                       QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    assert spin_until(executor, lambda: client.connected() or process.poll() is not None, 60)
    assert process.poll() is None, log.read_text()
    yield process, client, executor, info_pub, log
    executor.shutdown()
    client.destroy_node()
    rclpy.try_shutdown()
    assert stop_node(process) == 0, log.read_text()[-3000:]


def _outputs(client, msg):
    return client.received[(msg.header.stamp.sec, msg.header.stamp.nanosec)].outputs


def _mask_and_grid(executor, client, msg, info_pub, info) -> bool:
    """Send the frame until its drivable mask and grid come back, re-sending camera_info with it: a
    best-effort subscription may miss the first messages of a publisher it is still matching."""
    return publish_until_answered(executor, client, msg, ("drivable_mask", "drivable_grid"), timeout=20,
                                  publish_companions=lambda: info_pub.publish(info))


def test_mask_without_camera_info_and_diagnostics_say_why_no_grid(running_node, sample_dir):
    process, client, executor, info_pub, log = running_node
    image_path, label_path = split_pairs(sample_dir, "val")[0]
    msg = image_msg(read_rgb(image_path), "rgb8", time.time_ns(), "camera_optical_frame")
    assert publish_until_answered(executor, client, msg, ("drivable_mask",))
    mask_msg = _outputs(client, msg)["drivable_mask"]
    assert (mask_msg.encoding, mask_msg.width, mask_msg.height) == ("mono8", 480, 360)
    mask = image_to_array(mask_msg)
    assert set(np.unique(mask)) <= {0, 255}
    road = read_label(label_path, 11) == 3
    assert (mask[road] == 255).mean() > 0.8, "the road in front of the car is drivable"
    assert (mask[~road] == 0).mean() > 0.9
    assert not any("drivable_grid" in entry.outputs for entry in client.received.values())
    assert spin_until(executor, lambda: "no camera_info" in client.last_diagnostic_values().get("drivable_grid", ""), 5)


def test_grid_after_camera_info_has_free_cells_ahead(running_node, sample_dir):
    process, client, executor, info_pub, log = running_node
    info_pub.publish(camera_info_msg(480, 360, 500.0))
    spin_until(executor, lambda: False, 0.5)
    # Frame 4: the road runs straight ahead (in frame 2 it bends to the right).
    msg = image_msg(read_rgb(split_pairs(sample_dir, "val")[4][0]), "rgb8", time.time_ns(), "camera_optical_frame")

    assert _mask_and_grid(executor, client, msg, info_pub, camera_info_msg(480, 360, 500.0)), log.read_text()[-2000:]
    grid = _outputs(client, msg)["drivable_grid"]
    assert grid.header.frame_id == "base_link"
    assert grid.info.resolution == pytest.approx(0.25)
    assert (grid.info.width, grid.info.height) == (160, 80)  # 40 m ahead x 20 m wide
    values = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
    assert set(np.unique(values)) <= {-1, 0, 100}
    ahead = values[38:42, 20:60]  # |y| < 0.5 m, x from 5 m to 15 m
    assert (ahead == 0).mean() > 0.7, "the road straight ahead is free"
    assert (values[:, :8] == -1).all(), "the first 2 m are below the camera's view"

    # camera_info for the camera's full 960x720 resolution (the images are half size): the node
    # rebuilds its projection with scaled intrinsics and the grid is the same.
    full_size = camera_info_msg(960, 720, 1000.0)
    later = image_msg(read_rgb(split_pairs(sample_dir, "val")[4][0]), "rgb8", time.time_ns(), "camera_optical_frame")
    info_pub.publish(full_size)
    spin_until(executor, lambda: False, 0.5)
    assert _mask_and_grid(executor, client, later, info_pub, full_size)
    rebuilt = np.asarray(_outputs(client, later)["drivable_grid"].data, np.int8)
    rebuilt = rebuilt.reshape(grid.info.height, grid.info.width)
    np.testing.assert_array_equal(rebuilt, values)
    assert log.read_text().count("ground projection built") == 2


def test_runtime_parameters_are_validated(running_node):
    process, client, executor, info_pub, log = running_node
    parameters = AsyncParameterClient(client, f"{NS}/fcn_segmentation")
    assert parameters.wait_for_services(10.0)

    def set_one(name, value):
        future = parameters.set_parameters([Parameter(name, value=value)])
        executor.spin_until_future_complete(future, timeout_sec=10)
        return future.result().results[0]

    bad = set_one("drivable_classes", ["Road", "Runway"])
    assert not bad.successful and "unknown drivable classes ['Runway']" in bad.reason
    assert not set_one("overlay_alpha", 2.0).successful
    assert not set_one("drivable_mask_mode", "smooth").successful
    assert set_one("drivable_classes", ["Road", "Pavement"]).successful
    assert set_one("overlay_alpha", 0.3).successful
    read_only = set_one("backend", "torch")
    assert not read_only.successful and "read-only" in read_only.reason
    assert set_one("overlay_alpha", 1).successful, "a whole number is a fine decimal"


def _set_parameters(client, executor, **values):
    parameters = AsyncParameterClient(client, f"{NS}/fcn_segmentation")
    assert parameters.wait_for_services(10.0)
    future = parameters.set_parameters([Parameter(name, value=value) for name, value in values.items()])
    executor.spin_until_future_complete(future, timeout_sec=10)
    results = future.result().results
    assert all(r.successful for r in results), [r.reason for r in results]


def test_runtime_parameters_take_effect(running_node, sample_dir):
    process, client, executor, info_pub, log = running_node
    image_path, label_path = split_pairs(sample_dir, "val")[4]
    info = camera_info_msg(480, 360, 500.0)

    _set_parameters(client, executor, publish_drivable_mask=False)
    msg = image_msg(read_rgb(image_path), "rgb8", time.time_ns(), "camera_optical_frame")
    assert publish_until_answered(executor, client, msg, ("drivable_grid",), timeout=20,
                                  publish_companions=lambda: info_pub.publish(info))
    spin_until(executor, lambda: False, 0.5)  # the mask would have gone out before the grid
    assert "drivable_mask" not in _outputs(client, msg)

    # The sky as the "drivable" class, uncleaned: the mask follows the new classes at once.
    _set_parameters(client, executor, publish_drivable_mask=True, drivable_classes=["Sky"], drivable_mask_mode="raw")
    msg = image_msg(read_rgb(image_path), "rgb8", time.time_ns(), "camera_optical_frame")
    assert publish_until_answered(executor, client, msg, ("drivable_mask",))
    mask = image_to_array(_outputs(client, msg)["drivable_mask"])
    sky = read_label(label_path, 11) == 0
    assert (mask[sky] == 255).mean() > 0.8 and (mask[~sky] == 0).mean() > 0.9
    _set_parameters(client, executor, drivable_classes=["Road"], drivable_mask_mode="cleaned")


@pytest.mark.parametrize("problem,expected", [
    ("short_distortion", "plumb_bob"),
    ("zero_focal_length", "focal"),
])
def test_a_bad_camera_info_stops_only_the_grid_and_diagnostics_say_why(running_node, sample_dir, problem, expected):
    process, client, executor, info_pub, log = running_node
    bad = camera_info_msg(480, 360, 500.0)
    if problem == "short_distortion":
        bad.d = [0.1, 0.0, 0.0]  # three coefficients: no distortion model takes three
    else:
        bad.k = [0.0] * 9  # what an uncalibrated driver sends
    msg = image_msg(read_rgb(split_pairs(sample_dir, "val")[4][0]), "rgb8", time.time_ns(), "camera_optical_frame")
    assert publish_until_answered(executor, client, msg, ("drivable_mask",), timeout=20,
                                  publish_companions=lambda: info_pub.publish(bad))
    spin_until(executor, lambda: False, 0.5)
    assert "drivable_grid" not in _outputs(client, msg)
    assert spin_until(executor, lambda: expected in client.last_diagnostic_values().get("drivable_grid", ""), 5), \
        client.last_diagnostic_values()
    assert process.poll() is None
    assert "the drivable grid is not published until a usable one arrives" in log.read_text()

    if problem == "zero_focal_length":
        # Nobody listens to the grid for a while, then someone does again: diagnostics give the
        # camera_info's problem again, not "no subscriber".
        grid_sub = client.output_subs[list(client.output_topics).index("drivable_grid")]
        topic, msg_type = client.output_topics["drivable_grid"]
        rgb = read_rgb(split_pairs(sample_dir, "val")[4][0])

        def grid_state_says(text):
            def check():  # frames keep coming, with the bad camera_info
                info_pub.publish(bad)
                client.publish(image_msg(rgb, "rgb8", time.time_ns(), "cam"))
                return text in client.last_diagnostic_values().get("drivable_grid", "")
            return check
        client.output_subs.remove(grid_sub)
        client.destroy_subscription(grid_sub)
        assert spin_until(executor, grid_state_says("no subscriber"), 20, step=0.3), client.last_diagnostic_values()
        client.output_subs.append(client.create_subscription(msg_type, topic, partial(client._on_output,
                                                                                      "drivable_grid"), 10))
        assert spin_until(executor, grid_state_says(expected), 20, step=0.3), client.last_diagnostic_values()

    # A good camera_info brings the grid back.
    good = camera_info_msg(480, 360, 500.0)
    later = image_msg(read_rgb(split_pairs(sample_dir, "val")[4][0]), "rgb8", time.time_ns(), "camera_optical_frame")
    assert _mask_and_grid(executor, client, later, info_pub, good)
    assert spin_until(executor, lambda: client.last_diagnostic_values().get("drivable_grid", "").startswith(
        "published"), 5)


def test_a_latched_camera_info_from_before_the_node_started_is_heard(dds_env, bundled_model, sample_dir, tmp_path):
    """A driver that publishes camera_info once, transient_local, before the node exists."""
    from rclpy.qos import DurabilityPolicy

    namespace = "/latched_cam"
    started_rclpy = not rclpy.ok()  # the module's running_node may hold rclpy already
    if started_rclpy:
        rclpy.init()
    client = SegmentationClient(f"{namespace}/image_raw", f"{namespace}/segmentation", ("drivable_grid",),
                                name="latched_client")
    latched = client.create_publisher(CameraInfo, f"{namespace}/camera_info", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    latched.publish(camera_info_msg(480, 360, 500.0))  # once, before the node starts
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    log = tmp_path / "node.log"
    process = start_node({"model_path": str(bundled_model), "camera_info_durability": "transient_local",
                          "qos_reliability": "reliable", "grid_resolution": 0.25},
                         remaps={"__ns": namespace, "image": f"{namespace}/image_raw"}, log_path=str(log))
    try:
        assert spin_until(executor, lambda: client.connected() or process.poll() is not None, 60), log.read_text()
        msg = image_msg(read_rgb(split_pairs(sample_dir, "val")[4][0]), "rgb8", time.time_ns(), "cam")
        assert publish_until_answered(executor, client, msg, ("drivable_grid",), timeout=20), log.read_text()[-2000:]
        assert "ground projection built for 480x360 images (fx 500.0)" in log.read_text()
    finally:
        executor.shutdown()
        client.destroy_node()
        if started_rclpy:
            rclpy.try_shutdown()
        assert stop_node(process) == 0, log.read_text()[-3000:]
