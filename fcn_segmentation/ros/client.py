"""Drive a running segmentation node over DDS: start it as a process, publish frames, collect its
outputs by stamp. Used by ``fcnseg demo``, the replay tool and the integration tests."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import MessageInfo
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..defaults import dds_profile_environment
from ..frames import decode_raw, encode_raw


logger = logging.getLogger(__name__)

CONSOLE_SCRIPT = "segmentation_node"


def _ament_executable() -> Optional[str]:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return None
    try:
        return os.path.join(get_package_prefix("fcn_segmentation"), "lib", "fcn_segmentation", CONSOLE_SCRIPT)
    except (PackageNotFoundError, ValueError, OSError):  # not in any AMENT_PREFIX_PATH, or none set
        return None


def node_launcher() -> List[str]:
    """The start of the node's command line: its console script from the ament index (a ROS
    workspace: the executable `ros2 run` starts), else beside this interpreter or on PATH, else
    ``python -m`` on the module the console script runs (a source checkout not installed)."""
    for exe in (_ament_executable(), os.path.join(os.path.dirname(sys.executable), CONSOLE_SCRIPT),
                shutil.which(CONSOLE_SCRIPT)):
        if exe and os.access(exe, os.X_OK):
            return [exe]
    return [sys.executable, "-m", "fcn_segmentation.ros.node_main"]


def node_command(params: Dict[str, object], remaps: Dict[str, str] = None, params_file: str = None) -> List[str]:
    """Command line of the node (see ``node_launcher``)."""
    cmd = node_launcher() + ["--ros-args"]
    if params_file:
        cmd += ["--params-file", params_file]
    for name, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        cmd += ["-p", f"{name}:={text}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def use_large_image_dds_profile() -> None:
    """Give this process's participant the same shared-memory room as the node's, so frames it
    publishes are not dropped for lack of it. Fast DDS reads the profile when its first participant
    is created: call before the first ``rclpy.init``."""
    os.environ.update(dds_profile_environment(os.environ))


def start_node(params: Dict[str, object], remaps: Dict[str, str] = None, params_file: str = None,
               env: Dict[str, str] = None, log_path: Optional[str] = None) -> subprocess.Popen:
    """The node as its own process, with the bundled Fast DDS profile for large images unless the
    environment chose one (see ``dds_profile_environment``). Its output goes to ``log_path``, or to
    a pipe. The returned process's ``launcher`` is how it was started: the console script's path,
    or "python -m <module>" when the console script is not installed."""
    command = node_command(params, remaps, params_file)
    console_script = os.path.basename(command[0]) == CONSOLE_SCRIPT
    launcher = command[0] if console_script else f"python -m {command[2]}"
    if console_script:
        logger.info("starting the node with %s", launcher)
    else:
        logger.warning("no %s console script beside %s or on PATH: starting the node with %s",
                       CONSOLE_SCRIPT, sys.executable, launcher)
    environ = {**os.environ, **(env or {})}
    environ.update(dds_profile_environment(environ))
    if log_path:
        # The child writes to its own copy of the descriptor; this process's copy closes here.
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, env=environ, stdout=log, stderr=subprocess.STDOUT, text=True)
    else:
        process = subprocess.Popen(command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process.launcher = launcher
    return process


def stop_node(process: subprocess.Popen, timeout: float = 15.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class Received:
    outputs: Dict[str, Image] = field(default_factory=dict)
    times: Dict[str, float] = field(default_factory=dict)       # time.monotonic() when the callback ran
    # When DDS took each message in (MessageInfo received_timestamp, system clock ns): unlike ``times``,
    # not delayed by whatever this process's executor thread was doing when it arrived.
    received_ns: Dict[str, int] = field(default_factory=dict)


def stamp_key(header) -> Tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


def image_msg(rgb: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Image:
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = encoding
    data = encode_raw(rgb, encoding)
    msg.step = len(data) // msg.height
    msg.data = data
    return msg


def camera_info_msg(width: int, height: int, fx: float, frame_id: str = "camera_optical_frame") -> CameraInfo:
    """A pinhole CameraInfo (fx = fy, principal point at the centre, zero plumb_bob distortion).
    Pixel centres are on integer coordinates, so the centre of a W-pixel row is (W - 1) / 2."""
    info = CameraInfo()
    info.width, info.height = width, height
    cx, cy = (width - 1) / 2, (height - 1) / 2
    info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.header.frame_id = frame_id
    return info


def image_to_array(msg: Image) -> np.ndarray:
    """class_mask / confidence (mono8) -> (H, W); color_mask / overlay (rgb8) -> (H, W, 3)."""
    rgb = decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    return rgb[:, :, 0].copy() if msg.encoding == "mono8" else np.array(rgb)


# Outputs outside segmentation/: name -> (topic relative to the camera namespace, message type).
DRIVABLE_OUTPUTS = {"drivable_mask": ("drivable_area/mask", Image),
                    "drivable_grid": ("drivable_area/grid", OccupancyGrid)}


class SegmentationClient(Node):
    """Publishes frames to the node and records what it sends back, keyed by header stamp.
    ``outputs`` names topics under ``output_namespace`` (class_mask, color_mask, ...) or
    drivable_mask / drivable_grid, which live beside it under drivable_area/.

    Latency (``latency_ms``) is publish -> DDS receipt, both on the system clock: the publish time
    is taken just before the publish call, the receipt from the middleware's receive timestamp."""

    def __init__(self, image_topic: str, output_namespace: str = "segmentation",
                 outputs: Sequence[str] = ("class_mask",), compressed: bool = False,
                 name: str = "fcn_segmentation_client"):
        super().__init__(name)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.image_pub = self.create_publisher(CompressedImage if compressed else Image, image_topic, qos)
        self.lock = threading.Lock()
        self.received: Dict[Tuple[int, int], Received] = {}
        self.sent_at: Dict[Tuple[int, int], float] = {}   # time.monotonic() of the publish
        self.sent_ns: Dict[Tuple[int, int], int] = {}     # time.time_ns() of the publish
        self.diagnostics: List[DiagnosticArray] = []
        camera_namespace = output_namespace.rsplit("/", 1)[0] if "/" in output_namespace else ""
        self.node_fqn = f"/{camera_namespace.strip('/')}/fcn_segmentation".replace("//", "/")
        self.output_topics = {}
        for name in outputs:
            relative, msg_type = DRIVABLE_OUTPUTS.get(name, (None, Image))
            topic = f"{camera_namespace}/{relative}" if relative else f"{output_namespace}/{name}"
            self.output_topics[name] = (topic, msg_type)
        self.output_subs = [
            self.create_subscription(msg_type, topic, partial(self._on_output, name), qos)
            for name, (topic, msg_type) in self.output_topics.items()]
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_output(self, name: str, msg: Image, info: MessageInfo) -> None:
        now = time.monotonic()
        with self.lock:
            entry = self.received.setdefault(stamp_key(msg.header), Received())
            entry.outputs[name] = msg
            entry.times[name] = now
            # 0 where the middleware does not fill it in: then the callback's time is the best there is.
            entry.received_ns[name] = info.get("received_timestamp") or time.time_ns()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics.append(msg)

    def connected(self) -> bool:
        return self.image_pub.get_subscription_count() > 0 and all(
            sub.get_publisher_count() > 0 for sub in self.output_subs)

    def publish(self, msg) -> None:
        self._mark_sent(stamp_key(msg.header))
        self.image_pub.publish(msg)

    def publish_serialized(self, data: bytes, key: Tuple[int, int]) -> None:
        """Publish a message serialized already (CDR from a bag, as ``ros2 bag play`` does)."""
        self._mark_sent(key)
        self.image_pub.publish(data)

    def _mark_sent(self, key: Tuple[int, int]) -> None:
        with self.lock:
            self.sent_at[key] = time.monotonic()
            self.sent_ns[key] = time.time_ns()

    def take(self, key) -> Tuple[Optional[Received], Optional[int]]:
        """Remove and return what came back for ``key`` and when it was sent (``time.time_ns()``), so
        long replays do not keep every mask in memory."""
        with self.lock:
            self.sent_at.pop(key, None)
            return self.received.pop(key, None), self.sent_ns.pop(key, None)

    def complete(self, key, outputs: Sequence[str]) -> bool:
        with self.lock:
            entry = self.received.get(key)
            return entry is not None and all(name in entry.outputs for name in outputs)

    def latency_ms(self, key, output: str = "class_mask") -> Optional[float]:
        """Publish of frame ``key`` -> DDS receipt of its ``output``, None until both happened."""
        with self.lock:
            entry = self.received.get(key)
            if entry is None or output not in entry.received_ns or key not in self.sent_ns:
                return None
            return received_minus_sent_ms(entry.received_ns[output], self.sent_ns[key])

    def last_diagnostic_values(self) -> Dict[str, str]:
        with self.lock:
            for array in reversed(self.diagnostics):
                for status in array.status:
                    if status.name == f"{self.node_fqn}: segmentation":  # not another camera's node
                        return {kv.key: kv.value for kv in status.values}
        return {}


def received_minus_sent_ms(received_ns: int, sent_ns: int) -> float:
    return (received_ns - sent_ns) / 1e6


def spin_until(executor, condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=step)
    return condition()


def publish_until_answered(executor, client: SegmentationClient, msg, outputs: Sequence[str] = ("class_mask",),
                           timeout: float = 60.0, resend_period: float = 1.0,
                           publish_companions: Optional[Callable[[], None]] = None) -> bool:
    """Publish ``msg`` until its outputs come back. A best-effort subscriber can miss the first
    messages of a publisher it has not finished matching, so a first frame is re-sent, as a
    camera stream would be. ``publish_companions`` is called before each send, for messages that
    go with the frame (its CameraInfo): they can be missed the same way."""
    deadline = time.monotonic() + timeout
    key = stamp_key(msg.header)
    while time.monotonic() < deadline:
        if publish_companions is not None:
            publish_companions()
        client.publish(msg)
        if spin_until(executor, lambda: client.complete(key, outputs), min(resend_period, deadline - time.monotonic())):
            return True
    return False
