"""SegmentationNode: subscribes to camera images, publishes class masks, colour masks, overlays,
confidence and diagnostics. All image work happens in the core (``Segmenter``); this file only
handles parameters, QoS, threading and messages."""

import sys
import threading
import time
from typing import Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from ..backends import BACKEND_NAMES, BackendError, create_backend
from ..defaults import default_model_path
from ..frames import DEFAULT_MAX_PIXELS, FrameError
from ..model.model_file import ModelFileError
from ..pipeline import Segmenter
from ..stats import PipelineStats
from .conversions import array_to_image, compressed_to_rgb, image_to_rgb

NODE_NAME = "fcn_segmentation"
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
TRANSPORTS = ("raw", "compressed")
DEVICES = ("auto", "cpu", "cuda")

# name -> (default, description, read_only, choices or None)
PARAMETERS = {
    "model_path": ("", "model file (.pt); empty = the bundled CamVid FCN-8s", True, None),
    "onnx_path": ("", "ONNX file for onnxruntime/tensorrt; empty = exported from model_path and cached", True, None),
    "backend": ("auto", "inference backend; auto picks the fastest available", True, BACKEND_NAMES),
    "device": ("auto", "cpu, cuda, or auto", True, DEVICES),
    "engine_cache_dir": ("", "TensorRT engine cache folder; empty = ~/.cache/fcn_segmentation", True, None),
    "precision": ("fp32", "TensorRT precision", True, ("fp32", "fp16", "int8")),
    "force_engine_update": (False, "rebuild the TensorRT engine even if a cached one matches", True, None),
    "input_transport": ("raw", "raw subscribes image (sensor_msgs/Image); compressed subscribes "
                        "image/compressed (sensor_msgs/CompressedImage)", True, TRANSPORTS),
    "qos_reliability": ("best_effort", "reliability of the image subscription", True, tuple(RELIABILITY)),
    "qos_depth": (1, "history depth of the image subscription", True, None),
    "publish_class_mask": (True, "publish segmentation/class_mask (mono8 class ids)", False, None),
    "publish_color_mask": (True, "publish segmentation/color_mask (rgb8 palette)", False, None),
    "publish_overlay": (True, "publish segmentation/overlay while it has subscribers", False, None),
    "publish_confidence": (True, "publish segmentation/confidence while it has subscribers", False, None),
    "overlay_alpha": (0.5, "weight of the colour mask in the overlay, 0..1", False, None),
    "full_resolution_logits": (False, "resize scores to the image before argmax (slower, smoother edges)",
                               True, None),
    "max_image_pixels": (DEFAULT_MAX_PIXELS, "frames with more pixels are rejected", True, None),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages", True, None),
    "log_throttle_period": (5.0, "seconds between repeated warnings about bad frames", True, None),
}
RUNTIME_BOOLEANS = ("publish_class_mask", "publish_color_mask", "publish_overlay", "publish_confidence")


class StartupError(RuntimeError):
    """A parameter or artefact that makes the node unable to start; the message says what to fix."""


class SegmentationNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._slot_lock = threading.Condition()
        self._pending = None  # (message, receive time) of the newest unprocessed frame
        self._stopping = False
        self._worker: Optional[threading.Thread] = None
        for name, (default, description, read_only, choices) in PARAMETERS.items():
            text = description + (f" (one of: {', '.join(choices)})" if choices else "")
            try:
                self.declare_parameter(name, default, ParameterDescriptor(description=text, read_only=read_only))
            except ParameterException as exc:  # e.g. a YAML value of the wrong type
                raise StartupError(f"parameter '{name}': {exc}") from exc
        self.config = {name: self.get_parameter(name).value for name in PARAMETERS}
        self._check_startup_parameters()

        model_path = self.config["model_path"] or str(default_model_path())
        try:
            backend, skipped = create_backend(
                self.config["backend"], model_path, device=self.config["device"],
                onnx_path=self.config["onnx_path"] or None,
                engine_cache_dir=self.config["engine_cache_dir"] or None, precision=self.config["precision"],
                force_engine_update=self.config["force_engine_update"])
        except (ModelFileError, BackendError) as exc:
            raise StartupError(str(exc)) from exc
        for reason in skipped:
            self.get_logger().info(f"backend not used: {reason}")
        self.segmenter = Segmenter(backend, full_resolution_logits=self.config["full_resolution_logits"])
        self.model_path = model_path
        info = self.segmenter.info
        self.get_logger().info(
            f"model {model_path}: {info.variant} {info.backbone}, {info.num_classes} classes, "
            f"network input {info.input_width}x{info.input_height}; backend {backend.describe()}")

        self.stats = PipelineStats()
        self._last_warning = {}

        self.add_on_set_parameters_callback(self._on_set_parameters)
        out_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.class_mask_pub = self.create_publisher(Image, "segmentation/class_mask", out_qos)
        self.color_mask_pub = self.create_publisher(Image, "segmentation/color_mask", out_qos)
        self.overlay_pub = self.create_publisher(Image, "segmentation/overlay", out_qos)
        self.confidence_pub = self.create_publisher(Image, "segmentation/confidence", out_qos)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        in_qos = QoSProfile(depth=self.config["qos_depth"], history=HistoryPolicy.KEEP_LAST,
                            reliability=RELIABILITY[self.config["qos_reliability"]],
                            durability=qos_profile_sensor_data.durability)
        if self.config["input_transport"] == "compressed":
            self.image_sub = self.create_subscription(CompressedImage, "image/compressed", self.image_callback, in_qos)
        else:
            self.image_sub = self.create_subscription(Image, "image", self.image_callback, in_qos)
        self.get_logger().info(f"listening on {self.image_sub.topic_name} ({self.config['qos_reliability']})")

        self.diagnostics_timer = self.create_timer(self.config["diagnostics_period"], self.diagnostics_callback)
        self._worker = threading.Thread(target=self._work_loop, name="segmentation_worker", daemon=True)
        self._worker.start()

    # -- parameters ---------------------------------------------------------------------------
    def _check_startup_parameters(self) -> None:
        for name, (default, _, _, choices) in PARAMETERS.items():
            value = self.config[name]
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = self.config[name] = float(value)
            if type(value) is not type(default):
                raise StartupError(f"parameter '{name}' must be a {type(default).__name__}, got {value!r}")
            if choices and value not in choices:
                raise StartupError(f"parameter '{name}' is '{value}'; choose one of: {', '.join(choices)}")
        if self.config["qos_depth"] < 1:
            raise StartupError(f"parameter 'qos_depth' must be >= 1, got {self.config['qos_depth']}")
        if not 0.0 <= self.config["overlay_alpha"] <= 1.0:
            raise StartupError(f"parameter 'overlay_alpha' must be in [0, 1], got {self.config['overlay_alpha']}")
        for name in ("diagnostics_period", "log_throttle_period"):
            if self.config[name] <= 0:
                raise StartupError(f"parameter '{name}' must be > 0, got {self.config[name]}")
        if self.config["max_image_pixels"] < 1:
            raise StartupError("parameter 'max_image_pixels' must be >= 1")

    def _on_set_parameters(self, params) -> SetParametersResult:
        updates = {}
        for param in params:
            if param.name in RUNTIME_BOOLEANS:
                if not isinstance(param.value, bool):
                    return SetParametersResult(successful=False, reason=f"{param.name} must be a bool")
            elif param.name == "overlay_alpha":
                if not isinstance(param.value, (int, float)) or isinstance(param.value, bool) \
                        or not 0.0 <= float(param.value) <= 1.0:
                    return SetParametersResult(successful=False, reason="overlay_alpha must be a number in [0, 1]")
            updates[param.name] = param.value
        self.config.update(updates)
        return SetParametersResult(successful=True)

    # -- frames -------------------------------------------------------------------------------
    def image_callback(self, msg) -> None:
        """Keep only the newest frame: a slow model never builds a queue, and drops are counted."""
        received = time.monotonic()
        self.stats.count("received")
        with self._slot_lock:
            if self._pending is not None:
                self.stats.count("dropped")
            self._pending = (msg, received)
            self._slot_lock.notify()

    def _work_loop(self) -> None:
        while True:
            with self._slot_lock:
                while self._pending is None and not self._stopping:
                    self._slot_lock.wait()
                if self._stopping:
                    return
                msg, received = self._pending
                self._pending = None
            try:
                self.process(msg, received)
            except FrameError as exc:
                self.stats.count("rejected")
                self._warn_throttled("rejected", f"rejected frame from {self.image_sub.topic_name}: {exc}")
            except Exception as exc:  # keep the node alive; the count and log say what happened
                self.stats.count("failed")
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                self._warn_throttled("failed", f"segmentation failed: {self.stats.last_error}")

    def process(self, msg, received: float) -> None:
        t0 = time.perf_counter()
        max_pixels = self.config["max_image_pixels"]
        rgb = compressed_to_rgb(msg, max_pixels) if isinstance(msg, CompressedImage) else image_to_rgb(msg, max_pixels)
        t1 = time.perf_counter()
        want_overlay = self.config["publish_overlay"] and self.overlay_pub.get_subscription_count() > 0
        want_confidence = self.config["publish_confidence"] and self.confidence_pub.get_subscription_count() > 0
        result = self.segmenter(rgb, with_confidence=want_confidence)
        t2 = time.perf_counter()
        header = msg.header
        if self.config["publish_class_mask"]:
            self.class_mask_pub.publish(array_to_image(result.classes, "mono8", header))
        if self.config["publish_color_mask"] or want_overlay:
            colors = self.segmenter.colorize(result.classes)
            if self.config["publish_color_mask"]:
                self.color_mask_pub.publish(array_to_image(colors, "rgb8", header))
            if want_overlay:
                from ..visualize import overlay
                self.overlay_pub.publish(array_to_image(overlay(rgb, colors, self.config["overlay_alpha"]),
                                                        "rgb8", header))
        if want_confidence:
            self.confidence_pub.publish(array_to_image(result.confidence, "mono8", header))
        t3 = time.perf_counter()
        stages = dict(result.timings_ms, decode=(t1 - t0) * 1e3, publish=(t3 - t2) * 1e3)
        self.stats.record((time.monotonic() - received) * 1e3, stages)

    def _warn_throttled(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(key, -1e9) >= self.config["log_throttle_period"]:
            self._last_warning[key] = now
            count = getattr(self.stats, key)
            self.get_logger().warning(f"{text} ({key} so far: {count})")

    # -- diagnostics --------------------------------------------------------------------------
    def diagnostics_callback(self) -> None:
        snap = self.stats.snapshot()
        info = self.segmenter.info
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: segmentation"
        status.hardware_id = self.segmenter.backend.describe()
        if snap["failed"]:
            status.level, status.message = DiagnosticStatus.WARN, f"{snap['failed']} frames failed: {self.stats.last_error}"
        elif snap["rejected"]:
            status.level, status.message = DiagnosticStatus.WARN, f"{snap['rejected']} frames rejected"
        elif snap["received"] == 0:
            status.level, status.message = DiagnosticStatus.OK, f"waiting for images on {self.image_sub.topic_name}"
        else:
            status.level, status.message = DiagnosticStatus.OK, f"{snap['fps']:.1f} fps"
        values = {"backend": self.segmenter.backend.describe(), "model": self.model_path,
                  "model_variant": f"{info.variant}/{info.backbone}",
                  "input_size": f"{info.input_width}x{info.input_height}", **snap}
        status.values = [KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self.diagnostics_pub.publish(array)

    def destroy_node(self):
        with self._slot_lock:
            self._stopping = True
            self._slot_lock.notify_all()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> int:
    rclpy.init(args=args)
    node: Optional[SegmentationNode] = None
    try:
        node = SegmentationNode()
        rclpy.spin(node)
    except StartupError as exc:
        print(f"[{NODE_NAME}] startup error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
