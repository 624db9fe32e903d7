"""``fcnseg replay``: CamVid -> bag -> node over real DDS (node process, rclpy, Fast DDS) -> report,
and the offline replay through the core with the same report keys."""

import gc
import json
import os
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_segmentation.bags import BagReader, BagWriter, CameraModel, stamp_ns
from fcn_segmentation.cli import main
from fcn_segmentation.data import read_label, read_rgb, split_pairs
from fcn_segmentation.replay_report import FrameStamps, LabelMatcher, Prediction


REPORT_FILES = ("report.json", "report.md", "latency.png")
VOID = 11  # CamVid's void id: not scored, so a frame paired with an all-void label has no pixel accuracy


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
    assert Path(report["node_launcher"]).name == "segmentation_node"  # the console script, not python -m
    assert int(report["node_diagnostics"]["processed"]) >= 3
    assert (report["labels_read"], report["labels_unmatched"], report["frames_restamped"]) == (3, 0, 0)
    assert report["warnings"] == []
    assert (out / "per_class_iou.png").is_file() and (out / "overlays.png").is_file()
    assert "| mIoU |" in (out / "report.md").read_text()
    # --record without --outputs: every output the node publishes, with the stamps of the frames they answer
    assert report["outputs"] == ["class_mask", "color_mask", "overlay", "confidence", "drivable_mask",
                                 "drivable_grid"]
    with BagReader(bag) as source:
        stamps = [stamp_ns(m.msg) for m in source.messages(source.choose_topics(), kinds=("image",))]
    with BagReader(out / "outputs.mcap") as recorded:
        image = "sensor_msgs/msg/Image"
        assert recorded.topics == {
            "/camera/segmentation/class_mask": (image, 3), "/camera/segmentation/color_mask": (image, 3),
            "/camera/segmentation/overlay": (image, 3), "/camera/segmentation/confidence": (image, 3),
            "/camera/drivable_area/mask": (image, 3), "/camera/drivable_area/grid": ("nav_msgs/msg/OccupancyGrid", 3)}
        masks = list(recorded.messages(recorded.choose_topics("/camera/segmentation/class_mask"), kinds=("image",)))
        overlays = list(recorded.messages(recorded.choose_topics("/camera/segmentation/overlay"), kinds=("image",)))
    assert [stamp_ns(m.msg) for m in masks] == [stamp_ns(m.msg) for m in overlays] == stamps
    assert all((m.msg.encoding, m.msg.width, m.msg.height) == ("mono8", 480, 360) for m in masks)
    assert all(m.msg.encoding == "rgb8" for m in overlays)


def test_sqlite3_bag_compared_with_the_offline_core(dds_env, sample_dir, bundled_model, tmp_path):
    bag = _make_bag(sample_dir, tmp_path / "camvid_db3", "--format", "sqlite3", "--encoding", "bgr8", "--limit", "2")
    out = tmp_path / "report"
    assert main(["replay", str(bag), "--out", str(out), "--model", str(bundled_model), "--rate", "1.5",
                 "--compare", "--input-size", "384x288", "--node-param", "inference_threads:=1",
                 "--node-param", "qos_depth:=2"]) == 0
    report = _report(out)
    _assert_mostly_right(report, 2)
    assert report["node_diagnostics"]["input_size"] == report["input_size"] == "384x288"
    offline = report["offline"]
    assert offline["mode"] == "offline"
    assert set(offline) == set(report) - {"offline"}
    _assert_mostly_right(offline, 2)
    # the offline run used the node's core parameters too; qos_depth concerns DDS only
    assert offline["input_size"] == "384x288"
    assert offline["node_params"] == {"inference_threads": 1, "network_image_width": 384, "network_image_height": 288}
    assert report["node_params"]["qos_depth"] == "2"
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
    assert strip.shape[:2] == (2 * 360, 3 * 480)  # 4 frames at full size, 3 to a row
    assert np.isfinite(report["fps"]) and report["fps"] > 0
    assert not (out / "overlays").exists()  # one PNG per frame only on request


def test_offline_replay_writes_one_full_size_overlay_per_strip_frame_on_request(sample_dir, bundled_model, tmp_path):
    bag = _make_bag(sample_dir, tmp_path / "camvid.mcap")
    out = tmp_path / "report"
    assert main(["replay", str(bag), "--out", str(out), "--model", str(bundled_model), "--offline", "--limit", "2",
                 "--frame-pngs"]) == 0
    report = _report(out)
    assert report["plots"]["overlay_frames"] == "overlays"
    pngs = sorted((out / "overlays").glob("*.png"))
    assert [p.name for p in pngs] == ["frame_00000.png", "frame_00001.png"]
    first = cv2.imread(str(pngs[0]))
    assert first.shape == (360, 480, 3)
    strip = cv2.imread(str(out / "overlays.png"))
    np.testing.assert_array_equal(strip[:, :480], first)  # the strip's thumbnail is the frame itself


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
    matcher.forget(Prediction(2, 30, 0.2, None))
    matcher.add_prediction(Prediction(3, 25, 0.3, 5.0))  # no label at 25 and labels passed it: unlabelled
    matcher.finish()
    assert [(i, None if lab is None else int(lab[0, 0])) for i, lab in pairs] == [(0, 0), (1, 1), (3, None)]
    assert matcher.labels == {} and matcher.waiting == {}
    assert matcher.labels_unmatched == 0


def test_frames_sharing_a_stamp_pair_with_the_labels_of_that_stamp_in_bag_order():
    stamps = FrameStamps(after=None)
    keys = [stamps.next(stamp) for stamp in (0, 0, 0, 5, 3)]
    assert [key for key, _ in keys] == [(0, 0), (0, 1), (0, 2), (5, 0), (3, 0)]
    assert [published for _, published in keys] == [0, 1, 2, 5, 6]  # unique and increasing
    assert (stamps.repeated, stamps.backwards, stamps.restamped) == (2, 1, 3)

    pairs = []
    matcher = LabelMatcher(True, lambda prediction, label: pairs.append((prediction.index, label)))
    for index in range(3):
        matcher.add_frame((0, index))
    for index in (2, 0, 1):  # masks come back in any order
        matcher.add_prediction(Prediction(index, 0, 0.0, 5.0, occurrence=index))
    for value in range(4):  # one label more than frames of that stamp
        matcher.add_label(0, np.full((2, 2), value, np.uint8))
    matcher.finish()
    assert sorted((i, int(lab[0, 0])) for i, lab in pairs) == [(0, 0), (1, 1), (2, 2)]
    assert matcher.labels_unmatched == 1


def test_labels_of_no_frame_are_counted_not_kept():
    pairs = []
    matcher = LabelMatcher(True, lambda prediction, label: pairs.append((prediction.index, label)))
    label = np.zeros((2, 2), np.uint8)
    matcher.add_label(5, label)      # before the first frame: no frame has it
    matcher.add_frame((10, 0))
    assert matcher.labels_unmatched == 1 and matcher.labels == {}
    matcher.add_frame((20, 0))
    matcher.add_label(10, label)
    matcher.add_label(15, label)     # between two frames read in order
    matcher.add_prediction(Prediction(0, 10, 0.0, 5.0))
    matcher.add_prediction(Prediction(1, 20, 0.1, 5.0))
    matcher.add_label(20, label)
    matcher.add_label(99, label)     # past the last frame read: unmatched only if that was the bag's last
    matcher.finish(all_frames_read=False)
    assert [i for i, lab in pairs if lab is not None] == [0, 1]
    assert matcher.labels_unmatched == 2 and matcher.labels_read == 5


def _write_frames(path, sample_dir, stamps, label_stamps=None, label_delay_ns=0, label_scale=1.0,
                  void_labels=(), labels_topic="/camera/labels", camera_info=True, frame_period_ns=500_000_000):
    """A bag of sample frames with the given header stamps, one every ``frame_period_ns`` of bag time.
    Labels: stamped ``label_stamps`` (default: the frames' stamps; more than frames is allowed, they
    reuse the last picture), written ``label_delay_ns`` after their frame in bag time, scaled by
    ``label_scale``; the frames in ``void_labels`` get an all-void label."""
    pairs = split_pairs(sample_dir, "val")
    label_stamps = list(stamps) if label_stamps is None else list(label_stamps)
    with BagWriter(path) as bag:
        for index, stamp in enumerate(stamps):
            rgb = read_rgb(pairs[index % len(pairs)][0])
            bag_time = 10_000_000_000 + index * frame_period_ns
            bag.write("/camera/image_raw", bag.image(rgb, "rgb8", stamp, "cam"), bag_time)
            if camera_info:
                bag.write("/camera/camera_info", bag.camera_info(CameraModel(), 480, 360, stamp), bag_time)
        for index, stamp in enumerate(label_stamps):
            label = read_label(pairs[min(index, len(stamps) - 1) % len(pairs)][1], 256)
            if index in void_labels:
                label = np.full_like(label, VOID)
            if label_scale != 1.0:
                label = cv2.resize(label, None, fx=label_scale, fy=label_scale, interpolation=cv2.INTER_NEAREST)
            bag_time = 10_000_000_000 + index * frame_period_ns + label_delay_ns
            bag.write(labels_topic, bag.image(np.ascontiguousarray(label), "mono8", stamp, "cam"), bag_time)
    return path


def test_frames_with_one_stamp_are_replayed_apart_and_scored_against_their_own_labels(
        dds_env, sample_dir, bundled_model, tmp_path):
    """A simulator stamping every frame 0, labels written 600 ms after their frames, and one label
    too many: over DDS every frame is published with its own stamp and matched with its own label."""
    frames = 6
    bag = _write_frames(tmp_path / "sim.mcap", sample_dir, [0] * frames, label_stamps=[0] * (frames + 1),
                        label_delay_ns=600_000_000, void_labels=(1, 3, 5), camera_info=False)
    out = tmp_path / "report"
    assert main(["replay", str(bag), "--out", str(out), "--model", str(bundled_model), "--rate", "1.5",
                 "--record", "--outputs", "overlay"]) == 0
    report = _report(out)
    assert (report["frames_sent"], report["frames_received"], report["frames_dropped"]) == (frames, frames, 0)
    assert (report["frames_repeating_a_stamp"], report["frames_restamped"]) == (frames - 1, frames)
    assert report["frames_labelled"] == frames and report["labels_unmatched"] == 1
    # odd frames have all-void labels: a frame scored against another frame's label shows here
    assert [f["pixel_accuracy"] is None for f in report["frames"]] == [False, True] * 3
    assert all(f["pixel_accuracy"] > 0.7 for f in report["frames"][::2])
    assert [f["stamp_ns"] for f in report["frames"]] == [0] * frames
    published = [f["published_stamp_ns"] for f in report["frames"]]
    assert len(set(published)) == frames and published == sorted(published)
    assert any("over DDS, 6 frames published under a new, unique stamp" in w for w in report["warnings"])
    assert "/camera/labels: 1 label matching no frame's header stamp" in report["warnings"]
    assert "## Warnings" in (out / "report.md").read_text()
    # --outputs overlay: class_mask (latency) and the overlay, recorded under the stamps they were published with
    assert report["outputs"] == ["class_mask", "overlay"]
    with BagReader(out / "outputs.mcap") as recorded:
        assert set(recorded.topics) == {"/camera/segmentation/class_mask", "/camera/segmentation/overlay"}
        masks = list(recorded.messages(recorded.choose_topics("/camera/segmentation/class_mask"), kinds=("image",)))
    assert sorted(stamp_ns(m.msg) for m in masks) == published


def test_client_latency_is_the_dds_receipt_not_when_the_callback_ran(dds_env, sample_dir, bundled_model, tmp_path):
    """The replay's thread also reads the bag between spins; latency must not include that wait."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from fcn_segmentation.ros.client import (SegmentationClient, image_msg, publish_until_answered, spin_until,
                                             stamp_key, start_node, stop_node, use_large_image_dds_profile)

    log = tmp_path / "node.log"
    open_fds = len(os.listdir("/proc/self/fd"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        process = start_node({"model_path": str(bundled_model)}, remaps={"__ns": "/latency"}, log_path=str(log))
        gc.collect()
    # the log is the child's: this process closed its copy, rather than leaving it to the garbage collector
    assert len(os.listdir("/proc/self/fd")) == open_fds
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    assert Path(process.launcher).name == "segmentation_node"
    use_large_image_dds_profile()
    rclpy.init()
    client = SegmentationClient("/latency/image", "/latency/segmentation", name="latency_probe")
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    try:
        assert spin_until(executor, client.connected, 60), log.read_text()
        rgb = read_rgb(split_pairs(sample_dir, "val")[0][0])
        assert publish_until_answered(executor, client, image_msg(rgb, "rgb8", 1_000_000_000, "cam"), timeout=60)
        msg = image_msg(rgb, "rgb8", 2_000_000_000, "cam")
        client.publish(msg)
        time.sleep(1.5)  # busy elsewhere: the mask arrives while nobody spins
        assert spin_until(executor, lambda: client.complete(stamp_key(msg.header), ["class_mask"]), 30)
        latency = client.latency_ms(stamp_key(msg.header))
        assert 0 < latency < 1200, latency
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()
        assert stop_node(process) == 0, log.read_text()[-2000:]


def test_offline_replay_reads_late_labels_resizes_them_and_counts_strays(sample_dir, bundled_model, tmp_path):
    """Labels written 600 ms after their frames at half size, and one stamped between two frames."""
    stamps = [1_000_000_000 + i * 500_000_000 for i in range(3)]
    bag = _write_frames(tmp_path / "late.mcap", sample_dir, stamps, label_stamps=stamps + [stamps[1] + 1],
                        label_delay_ns=600_000_000, label_scale=0.5)
    out = tmp_path / "report"
    assert main(["replay", str(bag), "--out", str(out), "--model", str(bundled_model), "--offline"]) == 0
    report = _report(out)
    assert (report["frames_labelled"], report["labels_read"], report["labels_unmatched"]) == (3, 4, 1)
    assert report["labels_resized"] == 3
    assert report["pixel_accuracy"] > 0.75
    assert "/camera/labels: 1 label matching no frame's header stamp" in report["warnings"]
    assert "3 labels of another size than the frame, resized to it (nearest neighbour)" in report["warnings"]


def test_labels_that_match_no_frame_are_a_warning(sample_dir, bundled_model, tmp_path, capsys):
    stamps = [1_000_000_000 + i * 500_000_000 for i in range(2)]
    bag = _write_frames(tmp_path / "shifted.mcap", sample_dir, stamps, label_stamps=[s + 7 for s in stamps])
    out = tmp_path / "report"
    assert main(["replay", str(bag), "--out", str(out), "--model", str(bundled_model), "--offline"]) == 0
    report = _report(out)
    assert (report["frames_labelled"], report["labels_unmatched"], report["miou"]) == (0, 2, None)
    assert "2 labels, none matching a received frame's header stamp" in capsys.readouterr().out


def test_a_mono8_topic_not_named_like_labels_is_offered_not_guessed(sample_dir, bundled_model, tmp_path):
    stamps = [1_000_000_000]
    bag = _write_frames(tmp_path / "gt.mcap", sample_dir, stamps, labels_topic="/sim/class_ids")
    out = tmp_path / "report"
    assert main(["replay", str(bag), "--out", str(out), "--model", str(bundled_model), "--offline",
                 "--topic", "/camera/image_raw"]) == 0
    report = _report(out)
    assert report["labels_topic"] is None and report["labels_candidates"] == ["/sim/class_ids"]
    text = (out / "report.md").read_text()
    assert "no labels topic chosen (use --labels-topic)" in text and "/sim/class_ids" in text
    assert "none in the bag" not in text
    again = tmp_path / "again"
    assert main(["replay", str(bag), "--out", str(again), "--model", str(bundled_model), "--offline",
                 "--topic", "/camera/image_raw", "--labels-topic", "/sim/class_ids"]) == 0
    assert _report(again)["frames_labelled"] == 1
