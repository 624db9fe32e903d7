"""Code style (what ament_flake8 checks in ROS packages, with this package's 120-column lines).
Skipped where flake8 is not installed; requirements.txt installs it, so CI runs it."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_flake8():
    legacy = pytest.importorskip("flake8.api.legacy", reason="flake8 is not installed")
    style = legacy.get_style_guide(max_line_length=120)
    paths = [ROOT / "fcn_segmentation", ROOT / "launch", ROOT / "test", ROOT / "setup.py", ROOT / "scripts"]
    report = style.check_files([str(path) for path in paths])
    assert report.total_errors == 0, "flake8 found style errors (listed above)"
