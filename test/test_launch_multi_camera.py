"""launch_testing: multi_camera.launch.py starts one node per camera, each answering only on its own
camera's topics (real DDS). Skipped where launch_testing / launch_ros are not installed."""

import os
import random
import sys
import time
import unittest
from pathlib import Path

import pytest

# Without launch_testing its pytest plugin is absent too and this skips the module as usual.
launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed: run in a ROS 2 workspace (docs/launch.md)")

import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402

# `launch_test test/<this file>` (docs/launch.md) loads the file by path, without test/ on sys.path
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from launch_support import launch_for_test, missing_launch_requirement, open_dds_session  # noqa: E402

from fcn_segmentation.data import read_rgb, split_pairs  # noqa: E402
from fcn_segmentation.ros.client import (  # noqa: E402
    SegmentationClient, image_msg, publish_until_answered, spin_until, stamp_key)

ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ("launch_test_front", "launch_test_rear")
DDS_ENV = {"ROS_DOMAIN_ID": str(random.randint(100, 200)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


MISSING = missing_launch_requirement()


@pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
@pytest.mark.launch_test
def generate_test_description():
    # params_file left at its default: the package's seg.yaml, found through the ament index
    return launch_for_test("multi_camera.launch.py", {"cameras": ",".join(CAMERAS)}, DDS_ENV)


class TestOneNodePerCamera(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.executor = open_dds_session(cls, DDS_ENV)
        cls.clients = {camera: SegmentationClient(f"/{camera}/image_raw", f"/{camera}/segmentation",
                                                  name=f"{camera}_client") for camera in CAMERAS}
        for client in cls.clients.values():
            cls.addClassCleanup(client.destroy_node)
            cls.executor.add_node(client)
        # Both nodes load their model at once; on a busy CI machine that takes a while.
        assert spin_until(cls.executor, lambda: all(c.connected() for c in cls.clients.values()), 240), \
            "the launched nodes never matched the clients"

    def test_each_camera_has_its_own_node(self):
        nodes = {("fcn_segmentation", f"/{camera}") for camera in CAMERAS}
        client = self.clients[CAMERAS[0]]
        # the node list reaches the graph a little after the topics match
        self.assertTrue(spin_until(self.executor, lambda: nodes <= set(client.get_node_names_and_namespaces()), 10),
                        client.get_node_names_and_namespaces())
        for camera in CAMERAS:
            subscribers = self.clients[camera].get_subscriptions_info_by_topic(f"/{camera}/image_raw")
            self.assertEqual([sub.node_namespace for sub in subscribers], [f"/{camera}"])

    def test_each_node_answers_its_own_camera_only(self):
        rgb = read_rgb(split_pairs(ROOT / "sample" / "camvid_sample", "val")[0][0])
        for camera, client in self.clients.items():
            msg = image_msg(rgb, "rgb8", time.time_ns(), f"{camera}_optical_frame")
            self.assertTrue(publish_until_answered(self.executor, client, msg), f"no class mask from {camera}")
            mask = client.received[stamp_key(msg.header)].outputs["class_mask"]
            self.assertEqual((mask.header.frame_id, mask.height, mask.width), (msg.header.frame_id, *rgb.shape[:2]))
            for other in set(CAMERAS) - {camera}:
                self.assertNotIn(stamp_key(msg.header), self.clients[other].received)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_nodes_exit_cleanly(self, proc_info, proc_output):
        launch_testing.asserts.assertExitCodes(proc_info)
        self.assertEqual(len(proc_info.process_names()), len(CAMERAS))
        for output in proc_output:
            self.assertNotIn(b"Traceback", output.text)
