"""rosbag2 files (MCAP or sqlite3) read and written with ``rosbags``: no ROS install, no rclpy.

A bag is a rosbag2 folder (``metadata.yaml`` + storage files) or a single ``.mcap`` / ``.db3``
file (recent ``ros2 bag play`` opens either). Messages keep their CDR bytes so a replay publishes
exactly what was recorded, as ``ros2 bag play`` does.
"""

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from .frames import DEFAULT_MAX_PIXELS, decode_compressed, decode_raw, encode_raw

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STORAGE_SUFFIXES = {"mcap": ".mcap", "sqlite3": ".db3"}

# What ``fcnseg make-bag`` writes: the usual camera driver layout.
IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
LABELS_TOPIC = "/camera/labels"
# Names that mark an image topic as ground truth or network output, never as the camera.
NOT_CAMERA_WORDS = ("label", "ground_truth", "groundtruth", "segmentation", "mask", "depth", "overlay",
                    "confidence")
# Names that mark an image topic as ground truth: the labels are chosen by name when one topic has one.
LABEL_WORDS = ("label", "ground_truth", "groundtruth")
# The node's own outputs, as a recording of them names them: never offered as ground truth.
OUTPUT_WORDS = ("segmentation", "confidence", "overlay", "drivable")
LABEL_ENCODINGS = ("mono8", "8uc1")
# rosbag2 with ``compression_mode: message`` stores each message as one zstd frame.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def normalize_msgtype(msgtype: str) -> str:
    """``sensor_msgs/Image`` (pre-Foxy bags, some third-party writers) -> ``sensor_msgs/msg/Image``."""
    parts = msgtype.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else msgtype


def _looks_like_an_image(topic: str, msgtype: str) -> bool:
    """A topic of a type this tool does not read that is probably camera frames (theora, ffmpeg, ...)."""
    return msgtype not in IMAGE_TYPES and msgtype != CAMERA_INFO and (
        "image" in msgtype.lower() or "image" in topic.lower())


class BagError(RuntimeError):
    """A bag that cannot be read or written as asked; the message says why."""


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@dataclass
class CameraModel:
    """Pinhole intrinsics for CameraInfo (plumb_bob, zero distortion). The defaults suit CamVid's
    480x360 frames (a 960x720 camera halved, horizontal field of view about 51 degrees);
    ``cx``/``cy`` of None mean the image centre."""
    fx: float = 500.0
    fy: float = 500.0
    cx: Optional[float] = None
    cy: Optional[float] = None
    frame_id: str = "camera_optical_frame"


# ---------------------------------------------------------------------------------------------
# writing

class BagWriter:
    """Writes sensor_msgs to a new bag: a folder, or a single file when ``path`` ends in .mcap/.db3."""

    def __init__(self, path, storage: Optional[str] = None):
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        self.path = Path(path)
        by_suffix = {suffix: name for name, suffix in STORAGE_SUFFIXES.items()}.get(self.path.suffix)
        storage = storage or by_suffix or "mcap"
        if storage not in STORAGE_SUFFIXES:
            raise BagError(f"storage '{storage}' is not one of: {', '.join(STORAGE_SUFFIXES)}")
        if by_suffix and by_suffix != storage:
            raise BagError(f"{self.path} has the suffix of a {by_suffix} file but the format asked is {storage}")
        if self.path.exists():
            raise BagError(f"{self.path} exists already; remove it or choose another output")
        self.single_file = by_suffix is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # rosbags writes folders; a single-file bag is written in a scratch folder beside it, then moved.
        self._scratch = Path(tempfile.mkdtemp(dir=self.path.parent)) if self.single_file else None
        folder = self._scratch / "bag" if self.single_file else self.path
        self.typestore = _typestore()
        self.writer = Writer(folder, version=9, storage_plugin=getattr(StoragePlugin, storage.upper()))
        if storage == "mcap":  # zstd chunks: the readers of rosbag2_storage_mcap and rosbags decode them
            self.writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self.connections = {}
        self.storage = storage

    def __enter__(self) -> "BagWriter":
        self.writer.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.writer.close()
            if self.single_file and exc_type is None:
                (storage_file,) = (self._scratch / "bag").glob(f"*{STORAGE_SUFFIXES[self.storage]}")
                storage_file.replace(self.path)
        finally:
            if self._scratch:
                shutil.rmtree(self._scratch, ignore_errors=True)

    def write_cdr(self, topic: str, msgtype: str, bag_time_ns: int, data: bytes) -> None:
        """Append one serialized (CDR) message, e.g. one received from DDS."""
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
        self.writer.write(self.connections[topic], int(bag_time_ns), data)

    def write(self, topic: str, msg, bag_time_ns: int) -> None:
        msgtype = msg.__msgtype__
        self.write_cdr(topic, msgtype, bag_time_ns, self.typestore.serialize_cdr(msg, msgtype))

    def _header(self, stamp: int, frame_id: str):
        types = self.typestore.types
        sec, nanosec = divmod(int(stamp), 1_000_000_000)
        return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                            frame_id=frame_id)

    def image(self, array: np.ndarray, encoding: str, stamp: int, frame_id: str):
        """(H, W, 3) RGB in any raw encoding, or (H, W) uint8 as mono8, -> sensor_msgs/Image."""
        data = array.tobytes() if encoding == "mono8" else encode_raw(array, encoding)
        height, width = array.shape[:2]
        return self.typestore.types[IMAGE](
            header=self._header(stamp, frame_id), height=height, width=width, encoding=encoding, is_bigendian=0,
            step=len(data) // height, data=np.frombuffer(data, np.uint8))

    def compressed_image(self, rgb: np.ndarray, fmt: str, stamp: int, frame_id: str):
        """RGB -> sensor_msgs/CompressedImage, ``fmt`` jpeg or png (image_transport's format string)."""
        import cv2

        ok, data = cv2.imencode(f".{fmt}", np.ascontiguousarray(rgb[:, :, ::-1]))
        if not ok:
            raise BagError(f"cannot encode a frame as {fmt}")
        return self.typestore.types[COMPRESSED_IMAGE](
            header=self._header(stamp, frame_id), format=f"rgb8; {fmt} compressed bgr8", data=data.ravel())

    def camera_info(self, camera: CameraModel, width: int, height: int, stamp: int):
        # The centre of a W-pixel row, pixel centres being on integer coordinates, is (W - 1) / 2.
        cx = (width - 1) / 2.0 if camera.cx is None else camera.cx
        cy = (height - 1) / 2.0 if camera.cy is None else camera.cy
        types = self.typestore.types
        return types[CAMERA_INFO](
            header=self._header(stamp, camera.frame_id), height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.array([camera.fx, 0, cx, 0, camera.fy, cy, 0, 0, 1], float),
            r=np.eye(3).ravel(), p=np.array([camera.fx, 0, cx, 0, 0, camera.fy, cy, 0, 0, 0, 1, 0], float),
            binning_x=0, binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                          do_rectify=False))


def write_dataset_bag(data_root, split: str, out, storage: Optional[str] = None, rate_hz: float = 2.0,
                      limit: Optional[int] = None, encoding: str = "rgb8", camera: CameraModel = CameraModel(),
                      start_ns: Optional[int] = None) -> int:
    """A CamVid-layout split -> bag with images, CameraInfo and (where present) mono8 labels, one frame
    every 1/rate_hz seconds in both header stamps and bag time. Returns the number of frames."""
    from .data import read_label, read_rgb, split_pairs

    if rate_hz <= 0:
        raise BagError(f"rate must be > 0 Hz, got {rate_hz}")
    if encoding not in ("rgb8", "bgr8"):
        raise BagError(f"encoding must be rgb8 or bgr8, got {encoding}")
    pairs = split_pairs(data_root, split, require_labels=False)[:limit]
    start_ns = time.time_ns() // 1_000_000_000 * 1_000_000_000 if start_ns is None else start_ns
    with BagWriter(out, storage) as bag:
        for index, (image_path, label_path) in enumerate(tqdm(pairs, desc=f"make-bag {split}", unit="frame")):
            rgb = read_rgb(image_path)
            stamp = start_ns + round(index * 1e9 / rate_hz)
            height, width = rgb.shape[:2]
            bag.write(IMAGE_TOPIC, bag.image(rgb, encoding, stamp, camera.frame_id), stamp)
            bag.write(CAMERA_INFO_TOPIC, bag.camera_info(camera, width, height, stamp), stamp)
            if label_path is not None:
                label = read_label(label_path, 256)  # 256: keep every stored id, CamVid's void (11) included
                bag.write(LABELS_TOPIC, bag.image(label, "mono8", stamp, camera.frame_id), stamp)
    return len(pairs)


# ---------------------------------------------------------------------------------------------
# reading

@dataclass
class TopicChoice:
    image: str
    image_type: str
    labels: Optional[str] = None
    camera_info: Optional[str] = None
    # Why no labels topic was chosen when the bag has image topics that could be labels (None otherwise),
    # and those topics.
    labels_note: Optional[str] = None
    labels_candidates: List[str] = dataclasses.field(default_factory=list)
    # Which image topic was picked and among which, when the bag has several (None otherwise).
    image_note: Optional[str] = None


@dataclass
class BagMessage:
    kind: str           # "image", "labels" or "camera_info"
    topic: str
    msgtype: str
    bag_time_ns: int
    msg: object         # the deserialized message (rosbags dataclass)
    cdr: bytes          # the message as stored, ready to publish unchanged


class BagReader:
    """Opens any rosbag2 bag; lists its topics, picks the camera/label/CameraInfo topics and yields
    their messages in bag-time order. Every read failure becomes a BagError."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        if self.path.suffix == ".bag":
            raise BagError(f"{self.path} is a ROS 1 bag; convert it first: rosbags-convert --src {self.path}")
        self._reader = None
        self._default_store = None

    def __enter__(self) -> "BagReader":
        from rosbags.highlevel import AnyReader

        try:
            self._reader = AnyReader([self.path], default_typestore=_typestore())
            self._reader.open()
        except Exception as exc:  # rosbags raises several types (ReaderError, FileNotFoundError, sqlite, ...)
            self._reader = None
            if self.path.suffix == ".mcap":  # a recorder killed before it wrote the footer and summary
                hint = "an MCAP cut off before its end can be rebuilt with `mcap recover IN.mcap -o OUT.mcap`"
            else:
                hint = "a rosbag2 folder whose metadata.yaml is missing or stale can be rebuilt with `ros2 bag reindex`"
            raise BagError(f"cannot open bag {self.path}: {exc} (is it a complete rosbag2 folder, .mcap or "
                           f".db3? {hint})") from exc
        return self

    def __exit__(self, *exc) -> None:
        self._reader.close()

    @property
    def typestore(self):
        return self._reader.typestore

    def _store_for(self, msgtype: str):
        """The bag's own type store, or the default one for a type the bag names without ``/msg/``
        and gives no definition of."""
        if msgtype in self._reader.typestore.fielddefs:
            return self._reader.typestore
        if self._default_store is None:
            self._default_store = _typestore()
        return self._default_store

    @property
    def recorded_topics(self) -> Dict[str, Tuple[str, int]]:
        """topic -> (message type as the bag spells it, message count)"""
        return {name: (info.msgtype, info.msgcount) for name, info in sorted(self._reader.topics.items())}

    @property
    def topics(self) -> Dict[str, Tuple[str, int]]:
        """topic -> (message type, normalized: pkg/msg/Name, message count)"""
        return {name: (normalize_msgtype(msgtype), count) for name, (msgtype, count) in self.recorded_topics.items()}

    def describe_topics(self) -> str:
        return ", ".join(f"{name} ({msgtype}, {count} msgs)"
                         for name, (msgtype, count) in self.recorded_topics.items()) or "no topics"

    def choose_topics(self, image_topic: Optional[str] = None, labels_topic: Optional[str] = None) -> TopicChoice:
        """The camera topic (given, or the only camera-like image topic), the labels (given, or the one
        image topic named like labels) and the CameraInfo beside the camera, if any. When no labels
        topic is chosen but some topic could be one, ``labels_note`` says so and names them."""
        topics = self.topics
        for asked, what, types in ((image_topic, "image", IMAGE_TYPES), (labels_topic, "labels", (IMAGE,))):
            if asked is not None and asked not in topics:
                raise BagError(f"{what} topic {asked} is not in {self.path}; found: {self.describe_topics()}")
            if asked is not None and topics[asked][0] not in types:
                raise BagError(f"{what} topic {asked} has type {topics[asked][0]}, not {' or '.join(types)}")
        if image_topic is None:
            cameras = [name for name, (msgtype, _) in topics.items()
                       if msgtype in IMAGE_TYPES and not any(w in name.lower() for w in NOT_CAMERA_WORDS)]
            candidates = cameras
            # image_transport records X and X/compressed side by side: they are one camera.
            cameras = [name for name in cameras if not (name.endswith("/compressed") and name[:-11] in cameras)]
            if len(cameras) != 1:
                raise BagError(self._no_single_camera(cameras))
            image_topic = cameras[0]
            image_note = (f"image topic {image_topic} ({topics[image_topic][0]}) picked among "
                          f"{', '.join(candidates)}; choose another with --topic") if len(candidates) > 1 else None
        else:
            image_note = None
        note, candidates = None, []
        if labels_topic is None:
            labels_topic, note, candidates = self._guess_labels(image_topic)
        namespace = image_topic.removesuffix("/compressed").rsplit("/", 1)[0]
        infos = [name for name, (msgtype, _) in topics.items() if msgtype == CAMERA_INFO]
        beside = f"{namespace}/camera_info"
        camera_info = beside if beside in infos else (infos[0] if len(infos) == 1 else None)
        return TopicChoice(image_topic, topics[image_topic][0], labels_topic, camera_info, note, candidates,
                           image_note)

    def _no_single_camera(self, cameras: List[str]) -> str:
        """Why no camera topic was picked: several, none at all, only labels/outputs, or image topics
        under a type this tool does not read."""
        found = f"Found: {self.describe_topics()}"
        if cameras:
            return f"{self.path} has several image topics ({', '.join(cameras)}); choose one with --topic. {found}"
        images = [name for name, (msgtype, _) in self.topics.items() if msgtype in IMAGE_TYPES]
        if images:
            return (f"{self.path} has no camera image topic: its image topics ({', '.join(images)}) are named like "
                    f"labels or the node's outputs; choose one with --topic. {found}")
        unknown = [f"{name} ({msgtype})" for name, (msgtype, _) in self.recorded_topics.items()
                   if _looks_like_an_image(name, normalize_msgtype(msgtype))]
        if unknown:
            return (f"{self.path} has image topics under a type this tool does not read: {', '.join(unknown)}; it "
                    f"reads {IMAGE} and {COMPRESSED_IMAGE} (also spelled without /msg/): convert them first, "
                    f"e.g. republish with image_transport into a new bag. {found}")
        return f"{self.path} has no image topic at all (no {IMAGE} or {COMPRESSED_IMAGE}). {found}"

    def _guess_labels(self, image_topic: str) -> Tuple[Optional[str], Optional[str], List[str]]:
        """(the labels topic, or None with a note and the candidate topics)."""
        images = [name for name, (msgtype, _) in self.topics.items() if msgtype == IMAGE and name != image_topic]
        named = [name for name in images if any(word in name.lower() for word in LABEL_WORDS)]
        if len(named) == 1:
            return named[0], None, []
        if named:
            return None, (f"no labels topic chosen (use --labels-topic): {len(named)} topics are named like "
                          f"labels: {', '.join(named)}"), named
        # Not named like labels: offer the mono8 images (class ids) that are not the node's own outputs.
        mono8 = [name for name in images if not any(word in name.lower() for word in OUTPUT_WORDS)
                 and self._encoding_of(name) in LABEL_ENCODINGS]
        if not mono8:
            return None, None, []
        return None, (f"no labels topic chosen (use --labels-topic); mono8 image topics that could hold "
                      f"labels: {', '.join(mono8)}"), mono8

    def _encoding_of(self, topic: str) -> Optional[str]:
        """The encoding of the first Image on ``topic`` (lower case), None when it has none."""
        connections = [c for c in self._reader.connections if c.topic == topic]
        try:
            item = next(self._reader.messages(connections=connections), None)
            if item is None:
                return None
            connection, _, data = item
            return self._deserialize(_decompressed(data), normalize_msgtype(connection.msgtype)).encoding.lower()
        except Exception as exc:  # as in messages(): damaged chunks raise several types
            raise BagError(f"bag {self.path} is damaged or truncated: {exc}") from exc

    def frame_count(self, choice: TopicChoice, limit: Optional[int] = None) -> int:
        count = self.topics[choice.image][1]
        return count if limit is None else min(count, limit)

    def messages(self, choice: TopicChoice, kinds=("image", "labels", "camera_info"),
                 start_ns: Optional[int] = None) -> Iterator[BagMessage]:
        """The chosen topics' messages in bag-time order (storage order for equal times), from bag
        time ``start_ns`` on when given."""
        kind_of = {topic: kind for kind, topic in (("image", choice.image), ("labels", choice.labels),
                                                   ("camera_info", choice.camera_info)) if topic and kind in kinds}
        connections = [c for c in self._reader.connections if c.topic in kind_of]
        if not connections:
            return
        stream = self._reader.messages(connections=connections, start=start_ns)
        while True:
            try:
                item = next(stream, None)
                if item is None:
                    return
                connection, bag_time, data = item
                data = _decompressed(data)
                msgtype = normalize_msgtype(connection.msgtype)
                msg = self._deserialize(data, msgtype)
            except Exception as exc:  # damaged chunks surface as ReaderError, zstd, struct or serde errors
                hint = ""
                if self.path.suffix == ".mcap" and "CDR encapsulation" in str(exc):
                    hint = (" (if this file comes from a rosbag2 folder recorded with a compression_mode, open the "
                            "folder, with its metadata.yaml, instead of the .mcap alone)")
                raise BagError(f"bag {self.path} is damaged or truncated: {exc}{hint}") from exc
            yield BagMessage(kind_of[connection.topic], connection.topic, msgtype, bag_time, msg, data)

    def _deserialize(self, data: bytes, msgtype: str):
        return self._store_for(msgtype).deserialize_cdr(data, msgtype)

    def restamped_cdr(self, message: BagMessage, stamp: int) -> bytes:
        """The message re-serialized with its header stamp set to ``stamp`` (ns)."""
        msg = message.msg
        sec, nanosec = divmod(int(stamp), 1_000_000_000)
        header = dataclasses.replace(msg.header, stamp=dataclasses.replace(msg.header.stamp, sec=sec,
                                                                           nanosec=nanosec))
        store = self._store_for(message.msgtype)
        return bytes(store.serialize_cdr(dataclasses.replace(msg, header=header), message.msgtype))


def _decompressed(data) -> bytes:
    """A message as CDR: one compressed message by message (a lone .mcap of a rosbag2 folder whose
    metadata.yaml says ``compression_mode: message``; CDR itself starts with a zero byte) is unpacked."""
    data = bytes(data)
    if data[:4] != ZSTD_MAGIC:
        return data
    try:
        from compression import zstd
    except ImportError:  # Python < 3.14: the backport rosbags depends on
        from backports import zstd
    return zstd.decompress(data)


def message_to_rgb(message: BagMessage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image or CompressedImage -> (H, W, 3) RGB with the node's decoder (``frames``); raises
    FrameError when it cannot be decoded, as the node would reject it."""
    msg = message.msg
    if message.msgtype == COMPRESSED_IMAGE:
        return decode_compressed(msg.format, msg.data, max_pixels)
    return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian, max_pixels)


def message_to_label(message: BagMessage) -> np.ndarray:
    """mono8 label image -> (H, W) uint8 class ids."""
    msg = message.msg
    if msg.encoding.lower() not in LABEL_ENCODINGS:
        raise BagError(f"labels on {message.topic} are {msg.encoding}; expected mono8 class ids")
    return np.array(decode_raw("mono8", msg.height, msg.width, msg.step, msg.data)[:, :, 0])
