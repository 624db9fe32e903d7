"""Drive a running segmentation node over DDS: start it as a process, publish frames, collect its
outputs by stamp. Used by ``fcnseg demo``, the replay tool and the integration tests."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..defaults import dds_profile_environment
from ..frames import decode_raw, encode_raw


def node_command(params: Dict[str, object], remaps: Dict[str, str] = None, params_file: str = None) -> List[str]:
    """Command line of the node's console script (or ``python -m`` when it is not on PATH)."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "segmentation_node")
    exe = beside_python if os.access(beside_python, os.X_OK) else shutil.which("segmentation_node")
    cmd = [exe] if exe else [sys.executable, "-m", "fcn_segmentation.ros.node"]
    cmd += ["--ros-args"]
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
    environment chose one (see ``dds_profile_environment``)."""
    out = open(log_path, "w") if log_path else subprocess.PIPE
    environ = {**os.environ, **(env or {})}
    environ.update(dds_profile_environment(environ))
    return subprocess.Popen(node_command(params, remaps, params_file), env=environ,
                            stdout=out, stderr=subprocess.STDOUT, text=True)


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
    times: Dict[str, float] = field(default_factory=dict)


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
    """A pinhole CameraInfo (fx = fy, principal point at the centre, zero plumb_bob distortion)."""
    info = CameraInfo()
    info.width, info.height = width, height
    info.k = [fx, 0.0, width / 2, 0.0, fx, height / 2, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, width / 2, 0.0, 0.0, fx, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
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
    drivable_mask / drivable_grid, which live beside it under drivable_area/."""

    def __init__(self, image_topic: str, output_namespace: str = "segmentation",
                 outputs: Sequence[str] = ("class_mask",), compressed: bool = False,
                 name: str = "fcn_segmentation_client"):
        super().__init__(name)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.image_pub = self.create_publisher(CompressedImage if compressed else Image, image_topic, qos)
        self.lock = threading.Lock()
        self.received: Dict[Tuple[int, int], Received] = {}
        self.sent_at: Dict[Tuple[int, int], float] = {}
        self.diagnostics: List[DiagnosticArray] = []
        camera_namespace = output_namespace.rsplit("/", 1)[0] if "/" in output_namespace else ""
        self.node_fqn = f"/{camera_namespace.strip('/')}/fcn_segmentation".replace("//", "/")
        self.output_topics = {}
        for name in outputs:
            relative, msg_type = DRIVABLE_OUTPUTS.get(name, (None, Image))
            topic = f"{camera_namespace}/{relative}" if relative else f"{output_namespace}/{name}"
            self.output_topics[name] = (topic, msg_type)
        self.output_subs = [
            self.create_subscription(msg_type, topic, lambda msg, name=name: self._on_output(name, msg), qos)
            for name, (topic, msg_type) in self.output_topics.items()]
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_output(self, name: str, msg: Image) -> None:
        now = time.monotonic()
        with self.lock:
            entry = self.received.setdefault(stamp_key(msg.header), Received())
            entry.outputs[name] = msg
            entry.times[name] = now

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics.append(msg)

    def connected(self) -> bool:
        return self.image_pub.get_subscription_count() > 0 and all(
            sub.get_publisher_count() > 0 for sub in self.output_subs)

    def publish(self, msg) -> None:
        with self.lock:
            self.sent_at[stamp_key(msg.header)] = time.monotonic()
        self.image_pub.publish(msg)

    def publish_serialized(self, data: bytes, key: Tuple[int, int]) -> None:
        """Publish a message serialized already (CDR from a bag, as ``ros2 bag play`` does)."""
        with self.lock:
            self.sent_at[key] = time.monotonic()
        self.image_pub.publish(data)

    def take(self, key) -> Tuple[Optional[Received], Optional[float]]:
        """Remove and return what came back for ``key`` and when it was sent, so long replays do
        not keep every mask in memory."""
        with self.lock:
            return self.received.pop(key, None), self.sent_at.pop(key, None)

    def complete(self, key, outputs: Sequence[str]) -> bool:
        with self.lock:
            entry = self.received.get(key)
            return entry is not None and all(name in entry.outputs for name in outputs)

    def latency_ms(self, key, output: str = "class_mask") -> Optional[float]:
        with self.lock:
            entry = self.received.get(key)
            if entry is None or output not in entry.times or key not in self.sent_at:
                return None
            return (entry.times[output] - self.sent_at[key]) * 1e3

    def last_diagnostic_values(self) -> Dict[str, str]:
        with self.lock:
            for array in reversed(self.diagnostics):
                for status in array.status:
                    if status.name == f"{self.node_fqn}: segmentation":  # not another camera's node
                        return {kv.key: kv.value for kv in status.values}
        return {}


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
