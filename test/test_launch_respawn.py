"""launch_testing: with respawn:=true a node that exits (here: a startup error, a missing model) is
started again. Skipped where launch_testing / launch_ros are not installed."""

import re
import unittest

import pytest

# Without launch_testing its pytest plugin is absent too and this skips the module as usual.
launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed: run in a ROS 2 workspace (docs/launch.md)")

MISSING_MODEL = "/nonexistent/launch_test_model.pt"


from launch_support import launch_for_test, missing_launch_requirement  # noqa: E402

MISSING = missing_launch_requirement()


@pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
@pytest.mark.launch_test
def generate_test_description():
    # No DDS traffic: the node stops before it creates its publishers.
    return launch_for_test("seg.launch.py", {"camera": "launch_test_respawn", "model_path": MISSING_MODEL,
                                             "respawn": "true", "respawn_delay": "0.5"})


class TestRespawn(unittest.TestCase):
    def test_the_node_is_started_again_after_it_exits(self, proc_output):
        error = re.escape(f"startup error: model file {MISSING_MODEL}")
        proc_output.assertWaitFor(re.compile(f"{error}.*{error}", re.DOTALL), timeout=180, stream="stderr")
