"""`launch_test test/test_launch_respawn.py`, as docs/launch.md says to run a launch test: the file
is loaded by path, so its imports must not depend on pytest putting test/ on sys.path. Skipped
where launch_testing or the installed package (ament index) is missing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _missing():
    try:
        import launch_testing.launch_test  # noqa: F401
    except ImportError as exc:
        return f"launch_testing is not installed ({exc}): run in a ROS 2 workspace (docs/launch.md)"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from launch_support import missing_launch_requirement
    return missing_launch_requirement()


MISSING = _missing()


@pytest.mark.skipif(MISSING is not None, reason=str(MISSING))
def test_launch_test_runs_a_launch_test_file_by_its_path(tmp_path):
    # from another folder, with nothing of the checkout's test/ on the path
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in environment.get("PYTHONPATH", "").split(os.pathsep)
                                                if p and Path(p).resolve() != ROOT / "test")
    result = subprocess.run([sys.executable, "-m", "launch_testing.launch_test",
                             str(ROOT / "test" / "test_launch_respawn.py")],
                            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert "No module named 'launch_support'" not in output, output[-3000:]
    assert result.returncode == 0, output[-3000:]
    assert "test_the_node_is_started_again_after_it_exits" in output, output[-3000:]
