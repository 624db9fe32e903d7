"""launch_testing: seg.launch.py starts the node for a camera; sample frames and camera_info go in
over real DDS and class masks, drivable-area mask and grid, and diagnostics come back. Skipped
where launch_testing / launch_ros are not installed (docs/launch.md says how to run it)."""

import os
import random
import sys
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
import pytest

# Without launch_testing its pytest plugin is absent too and this skips the module as usual.
launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed: run in a ROS 2 workspace (docs/launch.md)")

import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import yaml  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

# `launch_test test/<this file>` (docs/launch.md) loads the file by path, without test/ on sys.path
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_support import launch_for_test, missing_launch_requirement, open_dds_session  # noqa: E402

from fcn_segmentation.data import read_label, read_rgb, split_pairs  # noqa: E402
from fcn_segmentation.ros.client import (  # noqa: E402
    SegmentationClient, camera_info_msg, image_msg, image_to_array, publish_until_answered, spin_until, stamp_key)

ROOT = Path(__file__).resolve().parents[1]
CAMERA = "launch_test_cam"
DDS_ENV = {"ROS_DOMAIN_ID": str(random.randint(100, 200)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
ROAD = 3


MISSING = missing_launch_requirement()


def write_params_file() -> str:
    """The package's seg.yaml with values the tests can see: the backend argument must beat the
    file's backend, and the file's qos_reliability must reach the node in its camera namespace."""
    sections = yaml.safe_load((ROOT / "config" / "seg.yaml").read_text())
    sections["fcn_segmentation"]["ros__parameters"].update(
        backend="torch", qos_reliability="reliable", diagnostics_period=0.5)
    path = Path(tempfile.mkdtemp(prefix="fcnseg_launch_test_")) / "seg.yaml"
    path.write_text(yaml.safe_dump(sections))
    return str(path)


@pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
@pytest.mark.launch_test
def generate_test_description():
    return launch_for_test("seg.launch.py", {"camera": CAMERA, "params_file": write_params_file(),
                                             "backend": "onnxruntime"}, DDS_ENV)


class TestSegmentationNode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.executor = open_dds_session(cls, DDS_ENV)
        cls.client = SegmentationClient(f"/{CAMERA}/image_raw", f"/{CAMERA}/segmentation",
                                        ("class_mask", "drivable_mask", "drivable_grid"), name="launch_test_client")
        cls.addClassCleanup(cls.client.destroy_node)
        cls.camera_info_pub = cls.client.create_publisher(CameraInfo, f"/{CAMERA}/camera_info", 5)  # reliable
        cls.executor.add_node(cls.client)
        # The node loads its model first; on a busy CI machine that takes a while.
        assert spin_until(cls.executor, cls.client.connected, 180), "the launched node never matched the client"

    def send(self, rgb, frame_id: str):
        msg = image_msg(rgb, "rgb8", time.time_ns(), frame_id)
        self.assertTrue(publish_until_answered(self.executor, self.client, msg), f"no class mask for {frame_id}")
        return msg, self.client.received[stamp_key(msg.header)].outputs["class_mask"]

    def test_node_runs_in_the_camera_namespace_on_the_camera_topics(self):
        # the node list reaches the graph a little after the topics match
        self.assertTrue(spin_until(self.executor, lambda: ("fcn_segmentation", f"/{CAMERA}") in
                                   self.client.get_node_names_and_namespaces(), 10))
        image_subs = self.client.get_subscriptions_info_by_topic(f"/{CAMERA}/image_raw")
        self.assertEqual([sub.node_namespace for sub in image_subs], [f"/{CAMERA}"])
        # qos_reliability comes from the params file: its section reached the namespaced node
        self.assertEqual(image_subs[0].qos_profile.reliability, ReliabilityPolicy.RELIABLE)
        self.assertTrue(spin_until(self.executor, lambda: self.client.count_subscribers(f"/{CAMERA}/camera_info"), 10))

    def test_class_masks_have_the_frame_size_stamp_and_frame_id(self):
        for index, (image_path, label_path) in enumerate(split_pairs(ROOT / "sample" / "camvid_sample", "val")[:2]):
            rgb = read_rgb(image_path)
            msg, mask = self.send(rgb, f"{CAMERA}_optical_frame_{index}")
            self.assertEqual((mask.encoding, mask.height, mask.width), ("mono8", *rgb.shape[:2]))
            self.assertEqual(mask.header.frame_id, msg.header.frame_id)
            self.assertEqual(stamp_key(mask.header), stamp_key(msg.header))
            road = read_label(label_path, 11) == ROAD
            self.assertGreater((image_to_array(mask)[road] == ROAD).mean(), 0.8, f"road not found in {image_path.name}")

    def test_drivable_mask_and_grid_show_the_road_ahead(self):
        image_path, label_path = split_pairs(ROOT / "sample" / "camvid_sample", "val")[4]  # road straight ahead
        msg = image_msg(read_rgb(image_path), "rgb8", time.time_ns(), f"{CAMERA}_optical_frame")
        info = camera_info_msg(480, 360, fx=500.0, frame_id=f"{CAMERA}_optical_frame")
        self.assertTrue(publish_until_answered(self.executor, self.client, msg, ("drivable_mask", "drivable_grid"),
                                               publish_companions=lambda: self.camera_info_pub.publish(info)),
                        "no drivable mask and grid")
        outputs = self.client.received[stamp_key(msg.header)].outputs
        mask = image_to_array(outputs["drivable_mask"])
        road = read_label(label_path, 11) == ROAD
        self.assertGreater((mask[road] == 255).mean(), 0.8, "the road in front of the car is drivable")
        grid = outputs["drivable_grid"]
        self.assertEqual((grid.header.frame_id, stamp_key(grid.header)), ("base_link", stamp_key(msg.header)))
        # config/seg.yaml: 0.1 m cells, 40 m ahead x 20 m wide, camera 1.5 m up looking level
        values = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
        self.assertEqual(values.shape, (200, 400))
        self.assertGreater((values[95:105, 50:150] == 0).mean(), 0.7, "free cells straight ahead, 5-15 m")

    def test_diagnostics_report_the_node_and_the_backend_argument(self):
        rgb = read_rgb(split_pairs(ROOT / "sample" / "camvid_sample", "val")[0][0])
        self.send(rgb, "diagnostics_frame")
        self.assertTrue(spin_until(self.executor, lambda: self.client.last_diagnostic_values().get("processed", "0")
                                   != "0", 10), "no /diagnostics about processed frames")
        with self.client.lock:
            status = [s for array in self.client.diagnostics for s in array.status if "fcn_segmentation" in s.name][-1]
        self.assertEqual(status.level, DiagnosticStatus.OK, status.message)
        self.assertIn("onnxruntime", self.client.last_diagnostic_values()["backend"])  # the argument, not the file


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_node_exits_cleanly(self, proc_info, proc_output):
        launch_testing.asserts.assertExitCodes(proc_info)
        for output in proc_output:
            self.assertNotIn(b"Traceback", output.text)
