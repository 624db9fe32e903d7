"""``fcnseg replay``: CamVid -> bag -> node over real DDS (node process, rclpy, Fast DDS) -> report,
and the offline replay through the core with the same report keys."""

import json

import cv2
import numpy as np
import pytest

from fcn_segmentation.bags import BagReader, BagWriter, CameraModel, stamp_ns
from fcn_segmentation.cli import main
from fcn_segmentation.data import read_rgb, split_pairs
from fcn_segmentation.replay_report import LabelMatcher, Prediction

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -r requirements.txt)")

REPORT_FILES = ("report.json", "report.md", "latency.png")


def _make_bag(sample_dir, path, *extra):
    assert main(["make-bag", "--data", str(sample_dir), "--out", str(path), "--rate", "2", *extra]) == 0
    return path


def _report(folder) -> dict:
    for name in REPORT_FILES:
        assert (folder / name).is_file(), name
    return json.loads((folder / "report.json").read_text())


def _assert_mostly_right(report, frames):
    assert (report["frames_sent"], report["frames_received"], report["frames_dropped"]) == (frames, frames, 0)
    assert report["frames_labelled"] == frames
    assert report["miou"] > 0.4 and report["pixel_accuracy"] > 0.75, report["per_class_iou"]
    assert report["per_class_iou"]["Road"] > 0.8
    assert all(f["pixel_accuracy"] > 0.7 for f in report["frames"])
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["max"] < 30_000


def test_camvid_mcap_bag_replayed_over_dds_gives_a_report_and_a_recording(dds_env, sample_dir, bundled_model,
                                                                          tmp_path):
    bag = _make_bag(sample_dir, tmp_path / "camvid.mcap", "--limit", "3")
    out = tmp_path / "report"
    assert main(["replay", str(bag), "--out", str(out), "--model", str(bundled_model), "--record"]) == 0
    report = _report(out)
    _assert_mostly_right(report, 3)
    assert (report["mode"], report["image_topic"], report["labels_topic"], report["camera_info_topic"]) == (
        "dds", "/camera/image_raw", "/camera/labels", "/camera/camera_info")
    assert report["node_exit_code"] == 0
    assert int(report["node_diagnostics"]["processed"]) >= 3
    assert (out / "per_class_iou.png").is_file() and (out / "overlays.png").is_file()
    assert "| mIoU |" in (out / "report.md").read_text()
    # the node's class masks, recorded with the stamps of the frames they answer
    with BagReader(bag) as source:
        stamps = [stamp_ns(m.msg) for m in source.messages(source.choose_topics(), kinds=("image",))]
    with BagReader(out / "outputs.mcap") as recorded:
        assert recorded.topics == {"/camera/segmentation/class_mask": ("sensor_msgs/msg/Image", 3)}
        masks = list(recorded.messages(recorded.choose_topics("/camera/segmentation/class_mask"), kinds=("image",)))
    assert [stamp_ns(m.msg) for m in masks] == stamps
    assert all((m.msg.encoding, m.msg.width, m.msg.height) == ("mono8", 480, 360) for m in masks)


def test_sqlite3_bag_compared_with_the_offline_core(dds_env, sample_dir, bundled_model, tmp_path):
    bag = _make_bag(sample_dir, tmp_path / "camvid_db3", "--format", "sqlite3", "--encoding", "bgr8", "--limit", "2")
    out = tmp_path / "report"
    assert main(["replay", str(bag), "--out", str(out), "--model", str(bundled_model), "--rate", "1.5",
                 "--compare", "--input-size", "384x288"]) == 0
    report = _report(out)
    _assert_mostly_right(report, 2)
    assert report["node_diagnostics"]["input_size"] == "384x288"
    offline = report["offline"]
    assert offline["mode"] == "offline"
    assert set(offline) == set(report) - {"offline"}
    _assert_mostly_right(offline, 2)
    assert offline["miou"] == pytest.approx(report["miou"], abs=0.02)  # same frames, model and input size
    sent = [f["sent_s"] for f in report["frames"]]
    assert sent[1] - sent[0] == pytest.approx(0.5 / 1.5, abs=0.1)  # 2 Hz in the bag, played 1.5x
    assert "offline (core, no DDS)" in (out / "report.md").read_text()
    assert "ROS overhead" in (out / "report.md").read_text()


def test_compressed_camera_without_labels_is_found_and_replayed(dds_env, sample_dir, bundled_model, tmp_path):
    """A bag another recorder made: JPEG frames under another name, no labels, an unrelated topic."""
    bag = tmp_path / "robot_run"
    with BagWriter(bag, "sqlite3") as writer:
        for index, (image_path, _) in enumerate(split_pairs(sample_dir, "val")[:2]):
            stamp = 1_600_000_000_000_000_000 + index * 500_000_000
            writer.write("/front/color/image_raw/compressed",
                         writer.compressed_image(read_rgb(image_path), "jpeg", stamp, "front_optical"), stamp)
            writer.write("/front/color/camera_info", writer.camera_info(CameraModel(), 480, 360, stamp), stamp)
            writer.write("/odom_text", writer.typestore.types["std_msgs/msg/String"](data="x"), stamp)
    out = tmp_path / "report"
    assert main(["replay", str(bag), "--out", str(out), "--model", str(bundled_model)]) == 0
    report = _report(out)
    assert (report["image_topic"], report["image_type"], report["labels_topic"]) == (
        "/front/color/image_raw/compressed", "sensor_msgs/msg/CompressedImage", None)
    assert (report["frames_sent"], report["frames_received"], report["frames_labelled"]) == (2, 2, 0)
    assert report["miou"] is None and report["per_class_iou"] == {}
    assert not (out / "per_class_iou.png").exists()
    assert "labels: none in the bag" in (out / "report.md").read_text()


def test_offline_replay_needs_no_dds_and_scores_the_frames(sample_dir, bundled_model, tmp_path):
    bag = _make_bag(sample_dir, tmp_path / "camvid.mcap")
    out = tmp_path / "report"
    assert main(["replay", str(bag), "--out", str(out), "--model", str(bundled_model), "--offline",
                 "--limit", "4"]) == 0
    report = _report(out)
    _assert_mostly_right(report, 4)
    assert report["mode"] == "offline" and report["node_exit_code"] is None
    assert [f["index"] for f in report["frames"]] == [0, 1, 2, 3]
    strip = cv2.imread(str(out / "overlays.png"))
    assert strip.shape[:2] == (180, 4 * 240)  # 4 frames, 480x360 halved
    assert np.isfinite(report["fps"]) and report["fps"] > 0


def test_labels_are_paired_by_stamp_whatever_comes_first():
    pairs = []
    matcher = LabelMatcher(True, lambda prediction, label: pairs.append((prediction.index, label)))
    label = np.zeros((2, 2), np.uint8)
    matcher.add_label(10, label)                       # label before its mask (DDS: the mask is late)
    matcher.add_prediction(Prediction(0, 10, 0.0, 5.0))
    matcher.add_prediction(Prediction(1, 20, 0.1, 5.0))  # mask before its label (offline: same bag time)
    assert [i for i, _ in pairs] == [0]
    matcher.add_label(20, label + 1)
    matcher.add_label(30, label + 2)                   # frame 30 is lost: its label must not pair later
    matcher.forget(30)
    matcher.add_prediction(Prediction(3, 25, 0.3, 5.0))  # no label at 25 and labels passed it: unlabelled
    matcher.finish()
    assert [(i, None if lab is None else int(lab[0, 0])) for i, lab in pairs] == [(0, 0), (1, 1), (3, None)]
    assert matcher.labels == {} and matcher.waiting == {}
