"""rosbag2 writing and reading with rosbags (no ROS): make-bag round trips, topic choice, errors."""

import time

import numpy as np
import pytest

from fcn_segmentation.bags import (BagError, BagReader, BagWriter, CameraModel, _typestore, message_to_label,
                                   message_to_rgb, stamp_ns)
from fcn_segmentation.cli import main
from fcn_segmentation.data import read_label, read_rgb, split_pairs


@pytest.mark.parametrize("name,extra,encoding", [
    ("sample.mcap", [], "rgb8"),                          # one MCAP file
    ("sample_db3", ["--format", "sqlite3"], "bgr8"),      # a rosbag2 folder with a .db3
])
def test_make_bag_holds_the_frames_labels_and_camera_info_at_the_given_rate(
        sample_dir, tmp_path, name, extra, encoding):
    bag_path = tmp_path / name
    code = main(["make-bag", "--data", str(sample_dir), "--split", "val", "--out", str(bag_path), "--rate", "4",
                 "--limit", "3", "--encoding", encoding, "--fx", "480", "--cy", "170"] + extra)
    assert code == 0
    assert bag_path.is_file() == name.endswith(".mcap")
    pairs = split_pairs(sample_dir, "val")[:3]
    with BagReader(bag_path) as bag:
        assert bag.topics == {"/camera/camera_info": ("sensor_msgs/msg/CameraInfo", 3),
                              "/camera/image_raw": ("sensor_msgs/msg/Image", 3),
                              "/camera/labels": ("sensor_msgs/msg/Image", 3)}
        choice = bag.choose_topics()
        assert (choice.image, choice.labels, choice.camera_info) == ("/camera/image_raw", "/camera/labels",
                                                                     "/camera/camera_info")
        messages = list(bag.messages(choice))
    images = [m for m in messages if m.kind == "image"]
    labels = [m for m in messages if m.kind == "labels"]
    infos = [m for m in messages if m.kind == "camera_info"]
    assert [m.msg.encoding for m in images] == [encoding] * 3
    for (image_path, label_path), image, label in zip(pairs, images, labels):
        np.testing.assert_array_equal(message_to_rgb(image), read_rgb(image_path))
        np.testing.assert_array_equal(message_to_label(label), read_label(label_path, 256))  # void (11) kept
    stamps = [stamp_ns(m.msg) for m in images]
    assert np.diff(stamps).tolist() == [250_000_000, 250_000_000]
    assert [m.bag_time_ns for m in images] == stamps
    assert [stamp_ns(m.msg) for m in labels] == [stamp_ns(m.msg) for m in infos] == stamps
    info = infos[0].msg
    assert (info.width, info.height, info.distortion_model, info.header.frame_id) == (
        480, 360, "plumb_bob", "camera_optical_frame")
    np.testing.assert_allclose(info.k, [480, 0, 239.5, 0, 500, 170, 0, 0, 1])  # cx: the centre, (480 - 1) / 2
    np.testing.assert_allclose(info.d, 0)


def _foreign_bag(path, topics):
    """A bag as another recorder would write it: topic name -> kind (raw, compressed, info, other)."""
    rgb = np.zeros((24, 32, 3), np.uint8)
    with BagWriter(path) as bag:
        for index in range(2):
            stamp = 5_000_000_000 + index * 100_000_000
            for topic, kind in topics.items():
                if kind == "raw":
                    bag.write(topic, bag.image(rgb, "rgb8", stamp, "cam"), stamp)
                elif kind == "compressed":
                    bag.write(topic, bag.compressed_image(rgb, "jpeg", stamp, "cam"), stamp)
                elif kind == "info":
                    bag.write(topic, bag.camera_info(CameraModel(), 32, 24, stamp), stamp)
                else:
                    types = bag.typestore.types
                    bag.write(topic, types["std_msgs/msg/String"](data="hello"), stamp)


def test_a_humble_sqlite3_bag_written_without_this_package_is_read(tmp_path):
    """Written with rosbags' own Writer and ROS 2 Humble's message definitions, as `ros2 bag record`
    on a Humble car would: a rosbag2 folder with metadata.yaml, bgr8 frames and their JPEG twins."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    ramp = np.linspace(0, 1, 32)[None, :, None] * np.linspace(0.2, 1, 24)[:, None, None]  # smooth: JPEG keeps it
    frames = [(ramp * np.array([250, 120, 30 + 100 * index])).astype(np.uint8) for index in range(2)]
    path = tmp_path / "humble_drive"
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        raw = writer.add_connection("/front/image_raw", "sensor_msgs/msg/Image", typestore=store)
        jpeg = writer.add_connection("/front/image_raw/compressed", "sensor_msgs/msg/CompressedImage", typestore=store)
        for index, rgb in enumerate(frames):
            stamp = types["builtin_interfaces/msg/Time"](sec=1_700_000_000 + index, nanosec=5)
            header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="front_optical")
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            image = types["sensor_msgs/msg/Image"](header=header, height=24, width=32, encoding="bgr8",
                                                   is_bigendian=0, step=96, data=bgr.ravel())
            compressed = types["sensor_msgs/msg/CompressedImage"](
                header=header, format="bgr8; jpeg compressed bgr8",
                data=np.frombuffer(cv2.imencode(".jpg", bgr)[1].tobytes(), np.uint8))
            bag_time = (1_700_000_000 + index) * 1_000_000_000
            writer.write(raw, bag_time, store.serialize_cdr(image, "sensor_msgs/msg/Image"))
            writer.write(jpeg, bag_time, store.serialize_cdr(compressed, "sensor_msgs/msg/CompressedImage"))
    assert (path / "metadata.yaml").is_file()
    with BagReader(path) as bag:
        choice = bag.choose_topics()
        assert (choice.image, choice.labels, choice.camera_info) == ("/front/image_raw", None, None)
        images = [m for m in bag.messages(choice) if m.kind == "image"]
        assert [stamp_ns(m.msg) for m in images] == [1_700_000_000_000_000_005, 1_700_000_001_000_000_005]
        for message, rgb in zip(images, frames):
            np.testing.assert_array_equal(message_to_rgb(message), rgb)
        compressed = bag.choose_topics("/front/image_raw/compressed")
        first = next(bag.messages(compressed, kinds=("image",)))
        assert np.abs(message_to_rgb(first).astype(int) - frames[0]).mean() < 8  # JPEG is lossy


def test_the_camera_topic_is_found_among_others_and_its_compressed_twin(tmp_path):
    path = tmp_path / "robot.mcap"
    _foreign_bag(path, {"/front/image_rect": "raw", "/front/image_rect/compressed": "compressed",
                        "/front/depth/image": "raw", "/front/segmentation/class_mask": "raw",
                        "/front/camera_info": "info", "/rosout_text": "other"})
    with BagReader(path) as bag:
        choice = bag.choose_topics()
        assert (choice.image, choice.labels, choice.camera_info) == ("/front/image_rect", None, "/front/camera_info")
        compressed = bag.choose_topics("/front/image_rect/compressed")
        assert (compressed.image_type, compressed.camera_info) == ("sensor_msgs/msg/CompressedImage",
                                                                   "/front/camera_info")
        first = next(bag.messages(compressed, kinds=("image",)))
        assert message_to_rgb(first).shape == (24, 32, 3)


def test_two_cameras_need_a_topic_and_the_error_lists_what_is_there(tmp_path):
    path = tmp_path / "stereo.mcap"
    _foreign_bag(path, {"/left/image_raw": "raw", "/right/image_raw": "compressed"})
    with BagReader(path) as bag, pytest.raises(BagError) as error:
        bag.choose_topics()
    message = str(error.value)
    assert "several image topics" in message and "--topic" in message
    assert "/right/image_raw (sensor_msgs/msg/CompressedImage, 2 msgs)" in message


def test_replay_of_a_missing_topic_names_the_topics_found(sample_dir, tmp_path, capsys):
    path = tmp_path / "robot.mcap"
    _foreign_bag(path, {"/front/image_rect": "raw", "/front/camera_info": "info"})
    code = main(["replay", str(path), "--out", str(tmp_path / "report"), "--topic", "/camera/image_raw"])
    assert code == 2
    err = capsys.readouterr().err
    assert "image topic /camera/image_raw is not in" in err
    assert "/front/image_rect (sensor_msgs/msg/Image, 2 msgs)" in err
    assert "/front/camera_info (sensor_msgs/msg/CameraInfo, 2 msgs)" in err
    assert "Traceback" not in err
    code = main(["replay", str(path), "--out", str(tmp_path / "report"), "--topic", "/front/camera_info"])
    assert code == 2 and "has type sensor_msgs/msg/CameraInfo" in capsys.readouterr().err


def _truncated_mcap(sample_dir, tmp_path):
    path = tmp_path / "cut.mcap"
    assert main(["make-bag", "--data", str(sample_dir), "--out", str(path), "--limit", "2"]) == 0
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _truncated_db3_folder(sample_dir, tmp_path):
    path = tmp_path / "cut_db3"
    assert main(["make-bag", "--data", str(sample_dir), "--out", str(path), "--format", "sqlite3", "--limit", "2"]) == 0
    (db3,) = path.glob("*.db3")
    db3.write_bytes(db3.read_bytes()[: db3.stat().st_size // 3])
    return path


def _corrupt_chunk_mcap(sample_dir, tmp_path):
    path = tmp_path / "flipped.mcap"
    assert main(["make-bag", "--data", str(sample_dir), "--out", str(path), "--limit", "2"]) == 0
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle:middle + 2000] = bytes(b ^ 0x5A for b in data[middle:middle + 2000])
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("make_bad_bag,message,mode", [
    (_truncated_mcap, "can be rebuilt with `mcap recover IN.mcap -o OUT.mcap`", "--offline"),
    (_truncated_mcap, "cannot open bag", "--rate=1"),  # over DDS: found before the node starts
    (_truncated_db3_folder, "cannot open bag", "--offline"),
    (_corrupt_chunk_mcap, "is damaged or truncated", "--offline"),  # opens, fails while reading
])
def test_a_damaged_bag_is_a_clear_error_not_a_traceback(sample_dir, tmp_path, capsys, make_bad_bag, message, mode):
    path = make_bad_bag(sample_dir, tmp_path)
    code = main(["replay", str(path), "--out", str(tmp_path / "report"), mode])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "fcnseg replay: error: " in err and message in err
    assert "Traceback" not in err


def test_a_missing_bag_and_an_existing_output_are_errors(tmp_path, sample_dir, capsys):
    assert main(["replay", str(tmp_path / "nope.mcap"), "--out", str(tmp_path / "r"), "--offline"]) == 2
    assert "bag " + str(tmp_path / "nope.mcap") + " does not exist" in capsys.readouterr().err
    existing = tmp_path / "there.mcap"
    existing.write_bytes(b"")
    assert main(["make-bag", "--data", str(sample_dir), "--out", str(existing)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_restamped_camera_info_changes_the_stamp_only(tmp_path):
    path = tmp_path / "info.mcap"
    _foreign_bag(path, {"/cam/image_raw": "raw", "/cam/camera_info": "info"})
    with BagReader(path) as bag:
        choice = bag.choose_topics()
        info = next(bag.messages(choice, kinds=("camera_info",)))
        again = bag.typestore.deserialize_cdr(bag.restamped_cdr(info, 7_000_000_123), info.msgtype)
    assert (again.header.stamp.sec, again.header.stamp.nanosec) == (7, 123)
    assert again.header.frame_id == info.msg.header.frame_id
    np.testing.assert_array_equal(again.k, info.msg.k)


def _bag_with_labels_topics(path, names):
    """A camera and mono8 image topics of the given names."""
    rgb, ids = np.zeros((24, 32, 3), np.uint8), np.zeros((24, 32), np.uint8)
    with BagWriter(path) as bag:
        bag.write("/cam/image_raw", bag.image(rgb, "rgb8", 1, "cam"), 1)
        for name in names:
            bag.write(name, bag.image(ids, "mono8", 1, "cam"), 1)


@pytest.mark.parametrize("names,chosen,note", [
    (["/cam/ground_truth"], "/cam/ground_truth", None),
    (["/cam/labels", "/cam/labels_fine"], None,
     "no labels topic chosen (use --labels-topic): 2 topics are named like labels: /cam/labels, /cam/labels_fine"),
    (["/cam/class_ids"], None, "no labels topic chosen (use --labels-topic); mono8 image topics that could hold "
                               "labels: /cam/class_ids"),
    (["/cam/segmentation/class_mask"], None, None),  # the node's own output, recorded: not ground truth
])
def test_the_labels_topic_is_chosen_by_name_or_the_candidates_are_named(tmp_path, names, chosen, note):
    path = tmp_path / "labels.mcap"
    _bag_with_labels_topics(path, names)
    with BagReader(path) as bag:
        choice = bag.choose_topics("/cam/image_raw")
    assert (choice.labels, choice.labels_note) == (chosen, note)


def test_a_frame_encoding_the_node_cannot_decode_fails_before_the_node_starts(sample_dir, tmp_path, capsys):
    path = tmp_path / "float.mcap"
    with BagWriter(path) as bag:
        for index in range(2):
            msg = bag.image(np.zeros((24, 32), np.uint8), "mono8", index, "cam")
            msg.encoding, msg.step, msg.data = "32FC1", 32 * 4, np.zeros(24 * 32 * 4, np.uint8)
            bag.write("/cam/image_raw", msg, index)
    out = tmp_path / "report"
    started = time.monotonic()
    code = main(["replay", str(path), "--out", str(out), "--timeout", "60"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert time.monotonic() - started < 20  # not the --timeout
    assert "the first frame on /cam/image_raw cannot be decoded" in err and "'32FC1'" in err
    assert not (out / "node.log").exists()  # no node was started


@pytest.mark.parametrize("extra,message", [
    (["--outputs", "class_mask,heatmap"], "unknown output(s) heatmap"),
    (["--offline", "--outputs", "overlay"], "they need a DDS run"),
    (["--offline", "--record"], "they need a DDS run"),
    (["--outputs", "drivable_grid"], "drivable_grid needs CameraInfo"),   # the bag has none: before the node starts
    (["--node-param", "model_path:=other.pt"], "--node-param model_path is not for replay: use --model"),
    (["--offline", "--node-param", "inference_threads:=many"], "--node-param inference_threads:=many"),
    (["--offline", "--node-param", "network_image_width:=320"], "set both network_image_width and"),
])
def test_replay_options_that_cannot_work_are_refused(sample_dir, tmp_path, capsys, extra, message):
    path = tmp_path / "robot.mcap"
    _foreign_bag(path, {"/front/image_rect": "raw"})
    code = main(["replay", str(path), "--out", str(tmp_path / "report"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "report" / "node.log").exists()


def _pre_foxy_db3(sample_dir, path):
    """A sqlite3 bag as pre-Foxy rosbag2 and some third-party writers leave it: type names without
    /msg/ (sensor_msgs/Image), no message definitions stored."""
    import sqlite3

    assert main(["make-bag", "--data", str(sample_dir), "--out", str(path), "--format", "sqlite3", "--limit", "2"]) == 0
    (db3,) = path.glob("*.db3")
    with sqlite3.connect(db3) as db:
        db.execute("UPDATE topics SET type = replace(type, '/msg/', '/'), type_description_hash = ''")
        db.execute("DELETE FROM message_definitions")
    metadata = path / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace("sensor_msgs/msg/", "sensor_msgs/"))
    return path


def test_type_names_without_msg_are_read(sample_dir, tmp_path):
    path = _pre_foxy_db3(sample_dir, tmp_path / "dashing")
    pairs = split_pairs(sample_dir, "val")[:2]
    with BagReader(path) as bag:
        assert bag.recorded_topics["/camera/image_raw"] == ("sensor_msgs/Image", 2)
        for choice in (bag.choose_topics(), bag.choose_topics("/camera/image_raw", "/camera/labels")):
            assert (choice.image, choice.image_type, choice.labels, choice.camera_info) == (
                "/camera/image_raw", "sensor_msgs/msg/Image", "/camera/labels", "/camera/camera_info")
        messages = list(bag.messages(bag.choose_topics()))
        images = [m for m in messages if m.kind == "image"]
        for (image_path, label_path), image, label in zip(pairs, images, [m for m in messages if m.kind == "labels"]):
            np.testing.assert_array_equal(message_to_rgb(image), read_rgb(image_path))
            np.testing.assert_array_equal(message_to_label(label), read_label(label_path, 256))
        restamped = bag.restamped_cdr(images[0], 42)
    again = _typestore().deserialize_cdr(restamped, "sensor_msgs/msg/Image")
    assert again.header.stamp.nanosec == 42 and again.encoding == images[0].msg.encoding


def test_replay_offline_of_a_bag_with_type_names_without_msg(sample_dir, bundled_model, tmp_path):
    path = _pre_foxy_db3(sample_dir, tmp_path / "dashing")
    out = tmp_path / "report"
    assert main(["replay", str(path), "--out", str(out), "--offline", "--model", str(bundled_model)]) == 0
    import json
    report = json.loads((out / "report.json").read_text())
    assert (report["frames_received"], report["frames_labelled"], report["image_type"]) == (
        2, 2, "sensor_msgs/msg/Image")


def _bag_with_an_unknown_image_type(path):
    """Camera frames under a type this tool does not decode (a theora packet, as theora_image_transport
    records them), and a log topic."""
    from rosbags.typesys import get_types_from_msg

    with BagWriter(path) as bag:
        packet_type = get_types_from_msg("uint8[] data\nint64 granulepos", "theora_image_transport/msg/Packet")
        bag.typestore.register(packet_type)
        packet = bag.typestore.types["theora_image_transport/msg/Packet"](data=np.zeros(3, np.uint8), granulepos=0)
        bag.write("/camera/image_raw/theora", packet, 1)
        bag.write("/rosout_text", bag.typestore.types["std_msgs/msg/String"](data="hello"), 1)


def test_no_image_topic_is_told_apart_from_an_image_type_not_read(tmp_path):
    unknown = tmp_path / "theora.mcap"
    _bag_with_an_unknown_image_type(unknown)
    with BagReader(unknown) as bag, pytest.raises(BagError) as error:
        bag.choose_topics()
    message = str(error.value)
    assert "image topics under a type this tool does not read: /camera/image_raw/theora " \
           "(theora_image_transport/msg/Packet)" in message
    assert "no image topic at all" not in message
    none = tmp_path / "text.mcap"
    _foreign_bag(none, {"/rosout_text": "other", "/front/camera_info": "info"})
    with BagReader(none) as bag, pytest.raises(BagError) as error:
        bag.choose_topics()
    assert "has no image topic at all" in str(error.value) and "/rosout_text (std_msgs/msg/String" in str(error.value)
    labels_only = tmp_path / "labels_only.mcap"
    _foreign_bag(labels_only, {"/cam/labels": "raw"})
    with BagReader(labels_only) as bag, pytest.raises(BagError) as error:
        bag.choose_topics()
    assert "no camera image topic: its image topics (/cam/labels) are named like labels" in str(error.value)


def test_a_lone_mcap_of_a_bag_compressed_message_by_message_is_read(tmp_path):
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    from fcn_segmentation.bags import IMAGE

    store = _typestore()
    rgb = (np.arange(24 * 32 * 3) % 251).astype(np.uint8).reshape(24, 32, 3)
    folder = tmp_path / "compressed_bag"
    with BagWriter(tmp_path / "scratch.mcap") as helper:
        messages = [helper.image(rgb, "rgb8", stamp, "cam") for stamp in (10, 20)]
    writer = Writer(folder, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    with writer:
        connection = writer.add_connection("/cam/image_raw", IMAGE, typestore=store)
        for msg in messages:
            writer.write(connection, stamp_ns(msg), store.serialize_cdr(msg, IMAGE))
    assert "compression_mode: message" in (folder / "metadata.yaml").read_text()
    (lone,) = folder.glob("*.mcap")
    for path in (folder, lone):
        with BagReader(path) as bag:
            images = list(bag.messages(bag.choose_topics(), kinds=("image",)))
        assert [stamp_ns(m.msg) for m in images] == [10, 20]
        for message in images:
            np.testing.assert_array_equal(message_to_rgb(message), rgb)
            assert message.cdr[:1] == b"\x00"  # the CDR, ready to publish, not the compressed bytes


def test_the_picked_image_topic_is_printed_when_there_are_several(bundled_model, tmp_path, capsys):
    path = tmp_path / "twins.mcap"
    _foreign_bag(path, {"/image": "raw", "/image/compressed": "compressed"})
    assert main(["replay", str(path), "--out", str(tmp_path / "report"), "--offline",
                 "--model", str(bundled_model)]) == 0
    captured = capsys.readouterr()
    assert ("image topic /image (sensor_msgs/msg/Image) picked among /image, /image/compressed; choose another "
            "with --topic") in captured.out + captured.err
    single = tmp_path / "single.mcap"
    _foreign_bag(single, {"/image": "raw", "/image/labels": "raw"})
    assert main(["replay", str(single), "--out", str(tmp_path / "report2"), "--offline",
                 "--model", str(bundled_model)]) == 0
    captured = capsys.readouterr()
    assert "picked among" not in captured.out + captured.err
