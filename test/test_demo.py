"""The README's main command: node + sample bag over DDS, outputs saved, summary written."""

import json

import cv2
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -r requirements.txt)")


def test_demo_replays_the_sample_bag_and_saves_masks_overlays_and_grids(dds_env, tmp_path):
    from fcn_segmentation.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0, (out / "node.log").read_text()[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["frames_sent"] == report["frames_received"] == 6
    assert report["miou"] > 0.5
    for index in range(6):
        for name in ("class_mask", "color_mask", "overlay"):
            assert (out / f"frame_{index:03d}_{name}.png").is_file()
        combined = cv2.imread(str(out / f"frame_{index:03d}_overlay_grid.png"))
        assert combined.shape[0] == 360 and combined.shape[1] > 480
        grid_part = combined[:, 488:]
        assert (grid_part == (60, 200, 40)).all(axis=2).any(), "some free (green) cells in front of the car"
    assert "Traceback" not in (out / "node.log").read_text()
