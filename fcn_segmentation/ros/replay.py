"""Bag replay over DDS: start the segmentation node as its own process, play a bag's camera frames
to it in real time (or at a rate factor) from the bag's timestamps, as ``ros2 bag play`` would,
and collect the class masks it sends back, paired with the bag's labels by header stamp."""

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tqdm import tqdm

from ..bags import COMPRESSED_IMAGE, IMAGE, BagMessage, BagReader, BagWriter, TopicChoice, message_to_rgb, stamp_ns
from ..frames import DEFAULT_MAX_PIXELS, FrameError
from ..replay_report import NODE_OUTPUTS, FrameStamps, LabelMatcher, Prediction, ReplayError, ReplayReport, \
    check_first_frame, read_late_labels
from .client import Received, SegmentationClient, image_to_array, publish_until_answered, received_minus_sent_ms, \
    spin_until, start_node, stop_node, use_large_image_dds_profile


@dataclass
class ReplayOptions:
    bag: Path
    out: Path                                   # report folder; node.log goes here too
    model: str
    backend: str = "auto"
    device: str = "auto"
    image_topic: Optional[str] = None           # None: auto-detect
    labels_topic: Optional[str] = None          # None: auto-detect (an image topic named like labels)
    rate: float = 1.0                           # playback speed factor on the bag's timing
    limit: Optional[int] = None                 # only the first N frames
    timeout: float = 60.0                       # for the node to connect, and for the last mask
    prefix: str = ""                            # publish the bag's topics under this namespace
    node_params: Dict[str, str] = field(default_factory=dict)   # extra node parameters, e.g. qos_depth: "3"
    # Node outputs to subscribe to (class_mask is always one); None: every output the node publishes
    # for this bag (drivable_grid when it has CameraInfo).
    outputs: Optional[Sequence[str]] = ("class_mask",)
    record: Optional[Path] = None               # write the received outputs into this bag
    on_output: Optional[Callable[[int, Received], None]] = None  # called per received frame (demo: PNGs)


# Outputs of one frame come on separate topics; this long after its class mask, the rest is lost.
# Longer than Fast DDS's default heartbeat period (3 s), after which a reliable writer resends.
OUTPUT_GRACE_S = 3.5


def camera_namespace(image_topic: str) -> str:
    """/camera/image_raw and /camera/image_raw/compressed -> /camera; /image -> ''."""
    return image_topic.removesuffix("/compressed").rsplit("/", 1)[0]


def key_of(stamp: int) -> Tuple[int, int]:
    return divmod(int(stamp), 1_000_000_000)


def chosen_outputs(asked: Optional[Sequence[str]], has_camera_info: bool) -> Tuple[str, ...]:
    """class_mask first (latency is measured on it), then the others asked, checked."""
    if asked is None:
        asked = [name for name in NODE_OUTPUTS if has_camera_info or name != "drivable_grid"]
    unknown = [name for name in asked if name not in NODE_OUTPUTS]
    if unknown:
        raise ReplayError(f"unknown node output(s) {', '.join(unknown)}; the node publishes: {', '.join(NODE_OUTPUTS)}")
    if "drivable_grid" in asked and not has_camera_info:
        raise ReplayError("drivable_grid needs CameraInfo, and the bag has none beside its camera; drop it from "
                          "--outputs")
    return tuple(dict.fromkeys(["class_mask", *asked]))


def max_image_pixels(node_params: Dict[str, str]) -> int:
    """The node's max_image_pixels as the replay passes it (a wrong value is the node's startup error)."""
    try:
        return int(node_params.get("max_image_pixels", DEFAULT_MAX_PIXELS))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def replay_over_dds(options: ReplayOptions, info) -> Tuple[dict, ReplayReport]:
    """Returns the report summary (``mode`` "dds") and the report with its overlays."""
    if options.rate <= 0:
        raise ReplayError(f"--rate must be > 0, got {options.rate}")
    if options.record and Path(options.record).exists():
        raise ReplayError(f"{options.record} exists already; remove it or choose another --record")
    with BagReader(options.bag) as bag:
        choice = bag.choose_topics(options.image_topic, options.labels_topic)
        if choice.image_note:
            tqdm.write(f"{options.bag}: {choice.image_note}")
        if bag.frame_count(choice, options.limit) == 0:
            raise ReplayError(f"no frames on {choice.image} in {options.bag}")
        outputs = chosen_outputs(options.outputs, choice.camera_info is not None)
        # Before the node starts: an encoding it cannot decode would otherwise show only as a timeout.
        check_first_frame(bag, choice, max_image_pixels(options.node_params))
        Path(options.out).mkdir(parents=True, exist_ok=True)
        return DdsReplay(options, info, bag, choice, outputs).run()


class DdsReplay:
    def __init__(self, options: ReplayOptions, info, bag: BagReader, choice: TopicChoice, outputs: Sequence[str]):
        self.options, self.bag, self.choice, self.outputs = options, bag, choice, tuple(outputs)
        self.total = bag.frame_count(choice, options.limit)
        self.report = ReplayReport(info, self.total)
        self.matcher = LabelMatcher(choice.labels is not None, self.report.add)
        self.stamps: Optional[FrameStamps] = None  # made with the warm-up frame's stamp
        self.sent: Dict[Tuple[int, int], Prediction] = {}  # by published stamp; mask not yet back
        prefix = options.prefix.rstrip("/")
        self.image_topic = prefix + choice.image
        self.info_topic = prefix + choice.camera_info if choice.camera_info else None
        self.namespace = prefix + camera_namespace(choice.image)
        self.compressed = choice.image_type == COMPRESSED_IMAGE
        self.max_pixels = max_image_pixels(options.node_params)
        self.log_path = Path(options.out) / "node.log"
        self.recorder: Optional[BagWriter] = None
        self.start = self.last_receipt = self.slowest_ms = None

    def run(self) -> Tuple[dict, ReplayReport]:
        options = self.options
        # Keep the replay's traffic on this machine unless the user configured discovery themselves.
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        remaps = {"image/compressed" if self.compressed else "image": self.image_topic, "__ns": self.namespace or "/"}
        if self.info_topic:
            remaps["camera_info"] = self.info_topic
        process = start_node({"model_path": options.model, "backend": options.backend, "device": options.device,
                              "input_transport": "compressed" if self.compressed else "raw",
                              "diagnostics_period": 0.5, **options.node_params},
                             remaps=remaps, log_path=str(self.log_path))
        use_large_image_dds_profile()
        rclpy.init()
        client = SegmentationClient(self.image_topic, f"{self.namespace}/segmentation", self.outputs,
                                    compressed=self.compressed, name=f"fcnseg_replay_{os.getpid()}")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        info_pub = client.create_publisher(CameraInfo, self.info_topic, qos) if self.info_topic else None
        executor = SingleThreadedExecutor()
        executor.add_node(client)
        diagnostics = {}
        try:
            with (BagWriter(options.record) if options.record else nullcontext()) as self.recorder:
                self._connect(executor, client, process)
                self._play(executor, client, info_pub, process)
            with client.lock:
                client.diagnostics.clear()  # the next message counts every frame above
            spin_until(executor, lambda: bool(client.last_diagnostic_values()) or process.poll() is not None, 3.0)
            diagnostics = client.last_diagnostic_values()
        finally:
            executor.shutdown()
            client.destroy_node()
            rclpy.try_shutdown()
            exit_code = stop_node(process)
        wall = (self.last_receipt or time.monotonic()) - self.start
        choice = self.choice
        summary = self.report.summary(
            wall, self.matcher, self.stamps or FrameStamps(), mode="dds", bag=str(options.bag),
            image_topic=choice.image, image_type=choice.image_type, labels_topic=choice.labels,
            labels_note=choice.labels_note, labels_candidates=choice.labels_candidates,
            camera_info_topic=choice.camera_info, model=str(options.model),
            backend=diagnostics.get("backend", options.backend), input_size=diagnostics.get("input_size"),
            rate=options.rate, outputs=list(self.outputs), node_diagnostics=diagnostics, node_exit_code=exit_code,
            node_log=str(self.log_path), node_launcher=process.launcher, node_params=dict(options.node_params),
            record=str(options.record) if options.record else None)
        return summary, self.report

    def _connect(self, executor, client: SegmentationClient, process) -> None:
        timeout = self.options.timeout
        if not spin_until(executor, lambda: client.connected() or process.poll() is not None, timeout):
            raise ReplayError(f"the node did not connect within {timeout:.0f} s; see {self.log_path}")
        if process.poll() is not None:
            raise ReplayError(f"the node exited with code {process.returncode}:\n"
                              f"{self.log_path.read_text()[-2000:]}")

    def _warm_up(self, executor, client: SegmentationClient, first: BagMessage, info_pub, camera_info) -> None:
        """Send the first frame, stamped just before the bag starts, until it is answered: a
        best-effort subscription can miss the first messages of a publisher it is still matching,
        and the node's one-off work (e.g. its ground projection from CameraInfo) happens here."""
        warm_stamp = max(stamp_ns(first.msg) - 1_000_000, 0)
        self.stamps = FrameStamps(after=warm_stamp)  # no frame may be published with the warm-up's stamp
        msg = deserialize_message(self.bag.restamped_cdr(first, warm_stamp),
                                  CompressedImage if self.compressed else Image)
        if not publish_until_answered(executor, client, msg, self.outputs, timeout=self.options.timeout,
                                      publish_companions=lambda: self._publish_camera_info(
                                          info_pub, camera_info, warm_stamp)):
            entry, _ = client.take(key_of(warm_stamp))
            missing = [name for name in self.outputs if entry is None or name not in entry.outputs]
            raise ReplayError(f"no answer to a warm-up frame within {self.options.timeout:.0f} s (missing: "
                              f"{', '.join(missing)}); see {self.log_path}")
        client.take(key_of(warm_stamp))

    def _play(self, executor, client: SegmentationClient, info_pub, process) -> None:
        camera_info = next(self.bag.messages(self.choice, kinds=("camera_info",)), None)
        index, last_bag_time, bag_start = 0, None, None
        progress = tqdm(total=self.total, desc="replay", unit="frame")
        for message in self.bag.messages(self.choice):
            if index >= self.total and message.bag_time_ns > last_bag_time:
                break  # past the last frame and the labels stored beside it; later labels: read_late_labels
            if message.kind == "labels":
                self.matcher.read_label(message)
            elif message.kind == "camera_info":
                camera_info = message
            elif index < self.total:
                if self.start is None:
                    self._warm_up(executor, client, message, info_pub, camera_info)
                    self.start, bag_start = time.monotonic(), message.bag_time_ns
                due = self.start + (message.bag_time_ns - bag_start) / 1e9 / self.options.rate
                while (left := due - time.monotonic()) > 0:
                    executor.spin_once(timeout_sec=min(left, 0.05))
                    self._collect(client)
                if process.poll() is not None:
                    tqdm.write(f"the node exited with code {process.returncode}; see {self.log_path}")
                    break
                self._publish(client, info_pub, camera_info, message, index)
                last_bag_time, index = message.bag_time_ns, index + 1
                progress.update()
        progress.close()
        all_frames_read = index == self.bag.frame_count(self.choice)
        if index == self.total:
            read_late_labels(self.bag, self.choice, self.matcher, last_bag_time, all_frames_read)
        if self.sent:
            # The node keeps the newest frame, so the last one sent is processed unless it is rejected
            # or lost: its mask is late after a few times the slowest answer so far.
            last = key_of(max(self.sent.values(), key=lambda p: p.index).published_stamp_ns)
            patience = self.options.timeout if self.slowest_ms is None else min(
                self.options.timeout, OUTPUT_GRACE_S + 3 * self.slowest_ms / 1e3)
            deadline = time.monotonic() + patience
            while self._waiting(client, last) and process.poll() is None and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
                self._collect(client)
        self._collect(client, final=True)
        for lost in self.sent.values():
            self._lost(lost)
        self.matcher.finish(all_frames_read)

    def _publish(self, client: SegmentationClient, info_pub, camera_info: Optional[BagMessage],
                 message: BagMessage, index: int) -> None:
        """Publish one frame as recorded, or restamped when its stamp is not after the previous frame's
        (see FrameStamps): the node's outputs are told apart by stamp."""
        key, published = self.stamps.next(stamp_ns(message.msg))
        self.matcher.add_frame(key)
        self._publish_camera_info(info_pub, camera_info, published)
        self.sent[key_of(published)] = Prediction(index, key[0], time.monotonic() - self.start, None,
                                                  rgb=self._strip_image(index, message), occurrence=key[1],
                                                  published_stamp_ns=published)
        cdr = message.cdr if published == key[0] else self.bag.restamped_cdr(message, published)
        client.publish_serialized(cdr, key_of(published))

    def _waiting(self, client: SegmentationClient, last) -> bool:
        """The last frame is unanswered, or a frame has some outputs and waits for the rest."""
        with client.lock:
            return last in self.sent or any(key in self.sent for key in client.received)

    def _publish_camera_info(self, info_pub, camera_info: Optional[BagMessage], stamp: int) -> None:
        """A camera driver stamps its CameraInfo like the image: consumers pair them by stamp."""
        if info_pub is not None and camera_info is not None:
            same = stamp_ns(camera_info.msg) == stamp
            info_pub.publish(camera_info.cdr if same else self.bag.restamped_cdr(camera_info, stamp))

    def _strip_image(self, index: int, message: BagMessage):
        if not self.report.wants_image(index):
            return None
        try:
            return message_to_rgb(message, self.max_pixels)
        except FrameError:
            return None  # the node rejects it too; the report counts it as lost

    def _collect(self, client: SegmentationClient, final: bool = False) -> None:
        """Move answered frames from the client into the report (and the record bag). A frame is
        answered once all outputs are in, or its class mask came OUTPUT_GRACE_S ago (the rest is
        lost); a frame not answered within --timeout is lost."""
        now = time.monotonic()
        with client.lock:
            ready = [key for key, entry in client.received.items()
                     if final or key not in self.sent or set(self.outputs) <= entry.outputs.keys()
                     or entry.times.get("class_mask", now) < now - OUTPUT_GRACE_S]
        for key in ready:
            entry, sent_ns = client.take(key)
            if key not in self.sent or "class_mask" not in entry.outputs:
                continue  # an answer to the warm-up frame, someone else's frame, or a mask lost on the way
            prediction = self.sent.pop(key)
            self.last_receipt = max(self.last_receipt or 0.0, entry.times["class_mask"])
            # DDS receive time, not when this thread got to the callback (it also reads the bag).
            prediction.latency_ms = received_minus_sent_ms(entry.received_ns["class_mask"], sent_ns)
            self.slowest_ms = max(self.slowest_ms or 0.0, prediction.latency_ms)
            prediction.classes = image_to_array(entry.outputs["class_mask"])
            if self.options.on_output:
                self.options.on_output(prediction.index, entry)
            if self.recorder is not None:
                for name, msg in entry.outputs.items():
                    topic, msg_type = client.output_topics[name]
                    type_name = "nav_msgs/msg/OccupancyGrid" if msg_type is not Image else IMAGE
                    self.recorder.write_cdr(topic, type_name, entry.received_ns[name], serialize_message(msg))
            self.matcher.add_prediction(prediction)
        if not final:
            for key in [k for k, p in self.sent.items() if now - self.start - p.sent_s > self.options.timeout]:
                self._lost(self.sent.pop(key))

    def _lost(self, prediction: Prediction) -> None:
        self.matcher.forget(prediction)
        self.report.add(prediction)
