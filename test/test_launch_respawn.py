"""launch_testing: with respawn:=true a node that exits (here: a startup error, a missing model) is
started again. Skipped where launch_testing / launch_ros are not installed."""

import os
import re
import sys
import unittest

import pytest

# Without launch_testing its pytest plugin is absent too and this skips the module as usual.
launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed: run in a ROS 2 workspace (docs/launch.md)")

MISSING_MODEL = "/nonexistent/launch_test_model.pt"


# `launch_test test/<this file>` (docs/launch.md) loads the file by path, without test/ on sys.path
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_the_stop_finds_the_node_starting_or_failing_and_it_exits_cleanly(self, proc_info, proc_output):
        """Shutdown stops a node that is importing (exit 0) or has just failed (exit 2): never -2
        or a traceback from a signal in its clean-up."""
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, 2])
        for output in proc_output:
            self.assertNotIn(b"Traceback", output.text)
