"""SegmentationNode: subscribes to camera images, publishes class masks, colour masks, overlays,
confidence, drivable-area mask and occupancy grid, and diagnostics. Image work happens in the core
(``Segmenter``, ``drivable``); this file handles parameters, QoS, threading and messages."""

import array
import difflib
import logging
import signal
import traceback
import sys
import threading
import time
from typing import Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..backends import BackendError, create_backend
from ..defaults import resolve_model_path
from ..drivable import CameraMount, GridSpec, GroundGridProjector, MaskCleaning, camera_info_error, camera_info_key, \
    class_ids, drivable_mask, field_of_view_error, scaled_intrinsics
from ..confidence import DEFAULT_STRIDE as CONFIDENCE_STRIDE, ConfidenceMonitor, Thresholds, layout_classes, \
    turned_over, unsure
from ..frames import FrameError, decode_compressed_frame
from ..model.model_file import ModelFileError
from ..pipeline import Segmenter
from ..postprocess import resize_picture
from ..stats import PipelineStats, SequenceGaps
from ..visualize import overlay
from .conversions import array_to_image, image_to_rgb
from .parameter_services import guard_parameter_services
from .parameters import MAX_GRID_CELLS, PARAMETERS, capped_threads, example_value, grid_error, value_error

NODE_NAME = "fcn_segmentation"
MISSED_WARN_SHARE = 0.2  # diagnostics WARN when more of the frames published in a period never arrived
# Parameters rclpy declares itself, and the prefix of its QoS overrides: not ours to check.
RCLPY_PARAMETERS = ("use_sim_time", "start_type_description_service")
RCLPY_PARAMETER_PREFIXES = ("qos_overrides.",)
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
DURABILITY = {"volatile": DurabilityPolicy.VOLATILE, "transient_local": DurabilityPolicy.TRANSIENT_LOCAL}


class _RosLogHandler(logging.Handler):
    """Python ``logging`` records of the core (``fcn_segmentation.*``: the ONNX export, backend
    selection, ...) to the node's rclpy logger, so they reach the console and ~/.ros/log."""

    def __init__(self, ros_logger):
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(text)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(text)
        else:
            self.ros_logger.info(text)


def _log_core_to(ros_logger) -> None:
    core = logging.getLogger("fcn_segmentation")
    for handler in [h for h in core.handlers if isinstance(h, _RosLogHandler)]:
        core.removeHandler(handler)  # a node made before this one in the same process
    core.addHandler(_RosLogHandler(ros_logger))  # with a handler here, Python's last-resort one stays silent
    if core.getEffectiveLevel() > logging.INFO:
        core.setLevel(logging.INFO)


def _stop_logging_core_to(ros_logger) -> None:
    core = logging.getLogger("fcn_segmentation")
    for handler in [h for h in core.handlers if isinstance(h, _RosLogHandler) and h.ros_logger is ros_logger]:
        core.removeHandler(handler)


class StartupError(RuntimeError):
    """A parameter or artefact that makes the node unable to start; the message says what to fix."""


class SegmentationNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        guard_parameter_services(self)  # a malformed SetParameters request is refused, never a crash
        self._slot_lock = threading.Condition()
        self._pending = None  # (message, receive time) of the newest unprocessed frame
        self._waiting_since: Optional[float] = None  # when the slot last went from empty to full
        self._in_work_since: Optional[float] = None  # when the worker took the frame it is on
        self._stopping = False
        self._worker: Optional[threading.Thread] = None
        self.config = {}
        self._check_parameter_names()
        for name, (default, description, runtime, _) in PARAMETERS.items():
            # Decimal parameters also take whole numbers ("camera_height: 2"), which rclpy would refuse
            # as INTEGER for a DOUBLE: _check_parameter checks the type instead.
            descriptor = ParameterDescriptor(description=description, read_only=not runtime,
                                             dynamic_typing=isinstance(default, float))
            try:
                self.declare_parameter(name, default, descriptor)
                value = self.get_parameter(name).value
            except ParameterUninitializedException as exc:  # `-p name:=[]`: a list of no known type
                raise StartupError(f"parameter '{name}' has no value (an empty list?); give e.g. "
                                   f"{name}:={example_value(default)}") from exc
            except ParameterException as exc:  # e.g. a YAML value of the wrong type
                raise StartupError(f"parameter '{name}': {exc}") from exc
            error = self._check_parameter(name, value)
            if error:
                raise StartupError(error)
            self.config[name] = float(value) if isinstance(default, float) else value

        threads, warning = capped_threads(self.config["inference_threads"])
        if warning:
            self.get_logger().warning(warning)
            self.config["inference_threads"] = threads
        model_path = str(resolve_model_path(self.config["model_path"] or "default"))
        width, height = self.config["network_image_width"], self.config["network_image_height"]
        if bool(width) != bool(height):
            raise StartupError("set both network_image_width and network_image_height, or neither "
                               f"(got {width}x{height})")
        _log_core_to(self.get_logger())  # the ONNX export's "exporting ..." / "exported ... in 12.3 s"
        # The confidence monitor reads the scores of every CONFIDENCE_STRIDE-th pixel: the backend gives
        # only those (OpenVINO then skips the full-resolution scores), full_resolution_logits needs all.
        scores_stride = 1 if self.config["full_resolution_logits"] else CONFIDENCE_STRIDE
        try:
            backend, skipped = create_backend(
                self.config["backend"], model_path, device=self.config["device"],
                onnx_path=self.config["onnx_path"] or None,
                engine_cache_dir=self.config["engine_cache_dir"] or None, precision=self.config["precision"],
                force_engine_update=self.config["force_engine_update"], cpu_threads=self.config["inference_threads"],
                input_size=(height, width) if width else None,
                calibration_data=self.config["calibration_data"] or None,
                cpu_busy_wait=self.config["inference_busy_wait"], scores_stride=scores_stride,
                test_time_flip=self.config["test_time_flip"])
        except (ModelFileError, BackendError) as exc:
            raise StartupError(str(exc)) from exc
        except OSError as exc:  # e.g. the ONNX or engine cache folder is not writable, or the disk is full
            raise StartupError(f"{exc}; check that the model's folder or ~/.cache/fcn_segmentation (ONNX "
                               "cache) and engine_cache_dir are writable") from exc
        for reason in skipped:
            self.get_logger().info(f"backend not used: {reason}")
        self.segmenter = Segmenter(backend, full_resolution_logits=self.config["full_resolution_logits"],
                                   scores_stride=scores_stride)
        self.model_path = model_path
        info = self.segmenter.info
        error = self._check_parameter("drivable_classes", self.config["drivable_classes"])
        if error:
            raise StartupError(error)
        self.get_logger().info(
            f"model {model_path}: {info.variant} {info.backbone}, {info.num_classes} classes, "
            f"network input {info.input_width}x{info.input_height}; backend {backend.describe()}"
            f"{', test-time flip' if self.config['test_time_flip'] else ''}")

        self.stats = PipelineStats()
        self.confidence = ConfidenceMonitor(layout=layout_classes(info.class_names))
        self._sequence_gaps = SequenceGaps()
        self._last_warning = {}
        self._camera_info: Optional[CameraInfo] = None
        self._projector: Optional[GroundGridProjector] = None
        self._projector_key = None
        self._projector_info: Optional[CameraInfo] = None  # the message the key was made from
        self._projector_error = ""  # why the current camera_info gives no projector
        self.mount = CameraMount(height=self.config["camera_height"], pitch=self.config["camera_pitch"],
                                 roll=self.config["camera_roll"], yaw=self.config["camera_yaw"],
                                 x=self.config["camera_x"], y=self.config["camera_y"])
        self.grid_spec = GridSpec(self.config["grid_resolution"], self.config["grid_range_ahead"],
                                  self.config["grid_width"])
        rows, columns = self.grid_spec.cells
        error = grid_error(self.grid_spec.resolution, self.grid_spec.range_ahead, self.grid_spec.width, columns,
                           rows, MAX_GRID_CELLS)
        if error:
            raise StartupError(error)
        self._grid_state = "waiting for the first image"
        self._previous_snapshot = None  # diagnostics' counters last time: the level reflects what happened since

        self.add_on_set_parameters_callback(self._on_set_parameters)
        out_qos = QoSProfile(depth=self.config["output_qos_depth"], reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST)
        self.class_mask_pub = self.create_publisher(Image, "segmentation/class_mask", out_qos)
        self.color_mask_pub = self.create_publisher(Image, "segmentation/color_mask", out_qos)
        self.overlay_pub = self.create_publisher(Image, "segmentation/overlay", out_qos)
        self.confidence_pub = self.create_publisher(Image, "segmentation/confidence", out_qos)
        self.drivable_mask_pub = self.create_publisher(Image, "drivable_area/mask", out_qos)
        self.drivable_grid_pub = self.create_publisher(OccupancyGrid, "drivable_area/grid", out_qos)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        in_qos = QoSProfile(depth=self.config["qos_depth"], history=HistoryPolicy.KEEP_LAST,
                            reliability=RELIABILITY[self.config["qos_reliability"]],
                            durability=DurabilityPolicy.VOLATILE)
        if self.config["input_transport"] == "compressed":
            self.image_sub = self.create_subscription(CompressedImage, "image/compressed", self.image_callback, in_qos)
        else:
            self.image_sub = self.create_subscription(Image, "image", self.image_callback, in_qos)
        self.camera_info_sub = self.create_subscription(CameraInfo, "camera_info", self.camera_info_callback,
                                                        QoSProfile(depth=1, reliability=in_qos.reliability,
                                                                   history=HistoryPolicy.KEEP_LAST,
                                                                   durability=DURABILITY[
                                                                       self.config["camera_info_durability"]]))
        self.get_logger().info(f"listening on {self.image_sub.topic_name} and {self.camera_info_sub.topic_name} "
                               f"({self.config['qos_reliability']})")

        # On the steady clock: with use_sim_time and no /clock (yet), ROS time stands still, and a timer
        # on it would never fire; diagnostics must go on saying what the node sees.
        self.diagnostics_timer = self.create_timer(self.config["diagnostics_period"], self.diagnostics_callback,
                                                   clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = threading.Thread(target=self._work_loop, name="segmentation_worker", daemon=True)
        self._worker.start()

    # -- parameters ---------------------------------------------------------------------------
    def _check_parameter_names(self) -> None:
        """A misspelt parameter would otherwise be ignored without a word: fail on near misses of our
        names and log the rest (a stack-wide params file may carry other nodes' keys)."""
        # rclpy keeps the --ros-args / params-file values it was given in this (private) dict.
        given = getattr(self, "_parameter_overrides", {})
        for name in sorted(given):
            if name in PARAMETERS or name in RCLPY_PARAMETERS or name.startswith(RCLPY_PARAMETER_PREFIXES):
                continue
            close = difflib.get_close_matches(name, PARAMETERS, n=1, cutoff=0.8)
            if close:
                raise StartupError(f"unknown parameter '{name}': did you mean '{close[0]}'?")
            self.get_logger().warning(f"ignoring parameter '{name}': {NODE_NAME} has no such parameter")

    def _check_parameter(self, name: str, value) -> Optional[str]:
        default, _, _, validator = PARAMETERS[name]
        numeric = isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)
        if type(value) is not type(default) and not numeric:
            return f"parameter '{name}' must be a {type(default).__name__}, got {value!r}"
        if name == "drivable_classes":
            if not all(isinstance(v, str) for v in value):
                return "parameter 'drivable_classes' must be a list of class names"
            if hasattr(self, "segmenter"):
                try:
                    class_ids(value, self.segmenter.info.class_names)
                except ValueError as exc:
                    return f"parameter 'drivable_classes': {exc}"
        bounds_error = value_error(name, value)  # non-finite and absurd values (parameters.py)
        if bounds_error:
            return bounds_error
        error = validator(value) if validator else None
        return f"parameter '{name}' is {value!r}: {error}" if error else None

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name not in PARAMETERS:
                continue
            error = self._check_parameter(param.name, param.value)
            if error:
                return SetParametersResult(successful=False, reason=error)
        # One new dict, swapped in whole: the worker reads a frame's settings from one snapshot, so it
        # never sees half of a change (new drivable classes with the old mask mode).
        config = dict(self.config)
        for param in params:
            if param.name in PARAMETERS:
                default = PARAMETERS[param.name][0]
                config[param.name] = float(param.value) if isinstance(default, float) else param.value
        self.config = config
        return SetParametersResult(successful=True)

    # -- inputs -------------------------------------------------------------------------------
    def image_callback(self, msg, info: MessageInfo) -> None:
        """Keep only the newest frame: a slow model never builds a queue, and drops are counted, as
        are frames published but never delivered to us (``missed``)."""
        received = time.monotonic()
        self.stats.count("received")
        gid = info.get("publisher_gid") or {}
        missed = self._sequence_gaps.missed(bytes(gid.get("data", b"")), info.get("publication_sequence_number"))
        if missed:
            self.stats.count("missed", missed)
        with self._slot_lock:
            if self._pending is not None:
                self.stats.count("dropped")
            else:
                self._waiting_since = received
            self._pending = (msg, received)
            self._slot_lock.notify()

    def camera_info_callback(self, msg: CameraInfo) -> None:
        self._camera_info = msg  # the worker rebuilds the projection only when it changes

    def _work_loop(self) -> None:
        while True:
            with self._slot_lock:
                while self._pending is None and not self._stopping:
                    self._slot_lock.wait()
                if self._stopping:
                    return
                msg, received = self._pending
                self._pending = None
                self._in_work_since = time.monotonic()
            try:
                self.process(msg, received)
            except FrameError as exc:
                self.stats.count("rejected")
                # Throttled per kind of problem: a second, different problem is named at once.
                self._warn_throttled("rejected", f"rejected frame from {self.image_sub.topic_name}: {exc}",
                                     throttle_key=f"rejected:{exc.kind}")
            except Exception as exc:  # keep the node alive; the count and log say what happened
                self.stats.count("failed")
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                self._warn_throttled("failed", f"segmentation failed: {self.stats.last_error}")
            finally:
                self._in_work_since = None

    # -- the pipeline -------------------------------------------------------------------------
    def process(self, msg, received: float) -> None:
        config = self.config
        t0 = time.perf_counter()
        max_pixels = config["max_image_pixels"]
        if isinstance(msg, CompressedImage):
            # A large JPEG is decoded at 1/2-1/8 scale, as small as still covers the network input:
            # work and memory follow the network, the outputs keep the frame's size.
            info = self.segmenter.info
            frame = decode_compressed_frame(msg.format, msg.data, max_pixels, (info.input_height, info.input_width))
            rgb, frame_hw = frame.rgb, (frame.height, frame.width)
        else:
            rgb = image_to_rgb(msg, max_pixels)
            frame_hw = rgb.shape[:2]
        t1 = time.perf_counter()
        # the confidence picture needs every pixel's scores; NaN / inf scores raise: the frame counts as failed
        want_confidence = config["publish_confidence"] and self.confidence_pub.get_subscription_count() > 0
        result = self.segmenter(rgb, frame_hw, all_scores=want_confidence)
        t2 = time.perf_counter()
        header = msg.header
        # Every output is built only while someone subscribes: an unused one costs nothing. The class
        # mask and the drivable area (what planners use) go out first, then the pictures.
        if config["publish_class_mask"] and self.class_mask_pub.get_subscription_count():
            self.class_mask_pub.publish(array_to_image(result.classes, "mono8", header))
        t3 = time.perf_counter()
        class_mask_latency_ms = (time.monotonic() - received) * 1e3
        want_mask = config["publish_drivable_mask"] and self.drivable_mask_pub.get_subscription_count() > 0
        want_grid = config["publish_drivable_grid"] and self.drivable_grid_pub.get_subscription_count() > 0
        if config["publish_drivable_grid"] and not want_grid:
            self._grid_state = "not published: no subscriber"
        if want_mask or want_grid:
            self._publish_drivable(config, result.classes, header, want_mask, want_grid)
        t4 = time.perf_counter()
        want_colors = config["publish_color_mask"] and self.color_mask_pub.get_subscription_count() > 0
        want_overlay = config["publish_overlay"] and self.overlay_pub.get_subscription_count() > 0
        if want_colors or want_overlay:
            colors = self.segmenter.colorize(result.classes)
            if want_colors:
                self.color_mask_pub.publish(array_to_image(colors, "rgb8", header))
            if want_overlay:
                picture = resize_picture(rgb, colors.shape[:2])  # the decoded picture may be smaller
                self.overlay_pub.publish(array_to_image(overlay(picture, colors, config["overlay_alpha"]), "rgb8",
                                                        header))
        if want_confidence:
            self.confidence_pub.publish(array_to_image(result.confidence(), "mono8", header))
        t5 = time.perf_counter()
        # after every output: the monitor feeds diagnostics only (0.2 ms)
        mean, *_ = self.confidence.add(result.scores, rgb, config["confidence_low_probability"], result.scores_stride)
        stages = dict(result.timings_ms, decode=(t1 - t0) * 1e3, publish=(t3 - t2 + t5 - t4) * 1e3,
                      drivable=(t4 - t3) * 1e3, all_outputs_latency=(time.monotonic() - received) * 1e3)
        self.stats.record(class_mask_latency_ms, stages)
        if config["confidence_min_upright_margin"] > -1 and self.confidence.wants_upright_check():
            # once per diagnostics period, after the frame's outputs: the same frame turned upside down
            turned = self.segmenter(turned_over(rgb))
            self.confidence.add_upright_check(mean, turned.scores, turned.scores_stride)

    def _publish_drivable(self, config: dict, classes: np.ndarray, header, want_mask: bool, want_grid: bool) -> None:
        cleaning = None if config["drivable_mask_mode"] == "raw" else MaskCleaning(
            close_kernel_px=config["drivable_close_kernel_px"], min_region_px=config["drivable_min_region_px"],
            connect_to_ego=config["drivable_connect_to_ego"], ego_zone_width=config["ego_zone_width"],
            ego_zone_height=config["ego_zone_height"])
        ids = class_ids(config["drivable_classes"], self.segmenter.info.class_names)
        mask = drivable_mask(classes, ids, cleaning)
        if want_mask:
            self.drivable_mask_pub.publish(array_to_image(mask, "mono8", header))
        if not want_grid:
            return
        try:
            projector = self._projector_for(mask.shape)
            if projector is not None:
                self.drivable_grid_pub.publish(self._grid_message(config, projector.grid_values(mask), header))
                self._grid_state = f"published ({len(projector.seen_cells)} cells in view)"
        except Exception as exc:  # a grid problem must not cost the frame its other outputs
            self.stats.count("grid_failed")
            self._grid_state = f"not published: {type(exc).__name__}: {exc}"
            if self._projector is None:  # the projection itself failed: later frames reuse this reason
                self._projector_error = self._grid_state
            self._warn_throttled("grid_failed", f"drivable grid failed: {exc}")

    def _projector_for(self, image_hw) -> Optional[GroundGridProjector]:
        """The cell -> pixel table for the current camera_info and image size, rebuilt only on change;
        None (and the reason in diagnostics and the log) while there is no usable camera_info."""
        info = self._camera_info
        if info is None:  # diagnostics say so (they check _camera_info themselves)
            return None
        topic = self.camera_info_sub.topic_name
        image_hw = tuple(image_hw)
        # The same message as last frame: nothing to compare. A new one (drivers resend it with every
        # image): compared by a key that is equal also for NaN in K and cheap for a huge D.
        same = info is self._projector_info and image_hw == self._projector_key[-1]
        key = self._projector_key if same else \
            (*camera_info_key(info.k, info.d, info.distortion_model, info.width, info.height), image_hw)
        self._projector_info = info
        if key == self._projector_key:
            if self._projector is None:  # the state may have said "no subscriber" since
                self._grid_state = self._projector_error
            return self._projector
        self._projector, self._projector_key = None, key  # a bad camera_info is judged once, not per frame
        error = camera_info_error(info.k, info.d, info.distortion_model, info.width, info.height)
        K = None
        if not error:
            K = scaled_intrinsics(np.asarray(info.k, np.float64).reshape(3, 3), (info.height, info.width), image_hw)
            scaled_error = field_of_view_error(K, image_hw[1], image_hw[0])
            if scaled_error:
                error = f"declared size {info.width}x{info.height}, scaled to the {image_hw[1]}x{image_hw[0]} " \
                        f"images: {scaled_error}"
        if error:
            self._projector_error = self._grid_state = f"not published: camera_info on {topic}: {error}"
            self.get_logger().warning(f"camera_info on {topic}: {error}; the drivable grid is not published "
                                      "until a usable one arrives")
            return None
        distortion = np.asarray(info.d, np.float64) if len(info.d) else None
        self._projector = GroundGridProjector(K, image_hw, self.mount, self.grid_spec, distortion)
        self.get_logger().info(f"ground projection built for {image_hw[1]}x{image_hw[0]} images "
                               f"(fx {K[0, 0]:.1f}), {len(self._projector.seen_cells)} cells in view")
        return self._projector

    def _grid_message(self, config: dict, values: np.ndarray, header) -> OccupancyGrid:
        grid = OccupancyGrid()
        grid.header.stamp = header.stamp
        grid.header.frame_id = config["grid_frame_id"]
        grid.info.map_load_time = header.stamp
        grid.info.resolution = float(self.grid_spec.resolution)
        grid.info.height, grid.info.width = values.shape
        grid.info.origin.position.x, grid.info.origin.position.y = self.grid_spec.origin_xy
        grid.info.origin.orientation.w = 1.0
        grid.data = array.array("b", values.tobytes())
        return grid

    def _warn_throttled(self, key: str, text: str, throttle_key: Optional[str] = None) -> None:
        """Log ``text`` with the running count of ``key``, at most once per log_throttle_period per throttle_key."""
        now = time.monotonic()
        throttle_key = throttle_key or key
        if now - self._last_warning.get(throttle_key, -1e9) >= self.config["log_throttle_period"]:
            self._last_warning[throttle_key] = now
            count = getattr(self.stats, key, None)
            self.get_logger().warning(text + (f" ({key} so far: {count})" if count is not None else ""))

    # -- diagnostics --------------------------------------------------------------------------
    def diagnostics_callback(self) -> None:
        snap = self.stats.snapshot()
        info = self.segmenter.info
        status = DiagnosticStatus()
        status.name = f"{self.get_fully_qualified_name()}: segmentation"  # unique per camera
        status.hardware_id = self.segmenter.backend.describe()
        confidence = self.confidence.take()  # the frames segmented since the last message
        status.level, status.message = self._health(snap, confidence)
        if not self.config["publish_drivable_grid"]:
            grid_state = "disabled"
        elif self._camera_info is None:
            grid_state = f"not published: no camera_info received on {self.camera_info_sub.topic_name}"
        else:
            grid_state = self._grid_state
        values = {"backend": self.segmenter.backend.describe(), "model": self.model_path,
                  "model_variant": f"{info.variant}/{info.backbone}",
                  "input_size": f"{info.input_width}x{info.input_height}", "drivable_grid": grid_state, **snap,
                  "confidence_frames": confidence.frames if confidence else 0,
                  "confidence_mean": confidence.mean if confidence else float("nan"),
                  "low_confidence_share": confidence.low_share if confidence else float("nan"),
                  "picture_contrast": confidence.contrast if confidence else float("nan"),
                  "picture_noise": confidence.noise if confidence else float("nan"),
                  "sky_above_road": confidence.sky_above_road if confidence else float("nan"),
                  "upright_margin": confidence.upright_margin if confidence else float("nan"),
                  "picture_brighter_above": confidence.brighter_above if confidence else float("nan"),
                  "picture_brighter_above_less_sideways":
                      confidence.brighter_above_less_sideways if confidence else float("nan")}
        status.values = [KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        array_msg = DiagnosticArray()
        array_msg.header.stamp = self.get_clock().now().to_msg()
        array_msg.status = [status]
        self.diagnostics_pub.publish(array_msg)

    def _health(self, snap, confidence=None):
        """Level and message from what happened since the last diagnostics message (one bad frame an
        hour ago is not a warning now), and ERROR while the pipeline is stuck. ``confidence``: the
        ConfidenceSummary of the frames since then (WARN when the network is unsure)."""
        previous, self._previous_snapshot = self._previous_snapshot, snap
        since = {k: snap[k] - (previous[k] if previous else 0)
                 for k in ("failed", "rejected", "grid_failed", "missed", "received")}
        now = time.monotonic()
        stuck_for = max(now - self._in_work_since if self._in_work_since is not None else 0.0,
                        now - self._waiting_since if self._pending is not None and self._waiting_since else 0.0)
        if self._worker is not None and not self._worker.is_alive():
            return DiagnosticStatus.ERROR, "the segmentation worker has stopped; restart the node"
        if stuck_for > self.config["stall_timeout"]:
            return DiagnosticStatus.ERROR, f"stalled: a frame has waited or been in work for {stuck_for:.1f} s"
        if since["failed"]:
            return DiagnosticStatus.WARN, f"{since['failed']} frames failed: {self.stats.last_error}"
        if since["rejected"]:
            return DiagnosticStatus.WARN, f"{since['rejected']} frames rejected (see the log for why)"
        if since["grid_failed"]:
            return DiagnosticStatus.WARN, f"drivable grid failed {since['grid_failed']} times: {self._grid_state}"
        published = since["missed"] + since["received"]
        if published and since["missed"] > MISSED_WARN_SHARE * published:
            return DiagnosticStatus.WARN, (f"{since['missed']} of {published} frames published since the last "
                                           "message never reached the node (missed: lost by DDS or replaced in "
                                           "its queue)")
        config = self.config
        doubt = unsure(confidence, Thresholds(*(config[f"confidence_{key}"] for key in Thresholds._fields)))
        if doubt:
            return DiagnosticStatus.WARN, doubt
        if snap["received"] == 0:
            return DiagnosticStatus.OK, f"waiting for images on {self.image_sub.topic_name}"
        return DiagnosticStatus.OK, f"{snap['fps']:.1f} fps"

    def destroy_node(self):
        _stop_logging_core_to(self.get_logger())
        with self._slot_lock:
            self._stopping = True
            self._slot_lock.notify_all()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> int:
    node: Optional[SegmentationNode] = None
    code = 0
    try:
        _init_rclpy(args)
        node = _start_node()
        if node is not None:  # None: asked to stop while starting
            rclpy.spin(node)
    except StartupError as exc:
        # The exit code first, then no more stop signals: a Ctrl-C while the error is reported
        # (launch sends one as the process ends) turned it into a clean exit 0.
        code = 2
        _ignore_stop_signals()
        print(f"[{NODE_NAME}] startup error: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C under `ros2 launch` reaches the node twice (from the terminal and from launch):
        # a repeat must not interrupt the clean-up, nor kill the process once rclpy has restored
        # the default handlers.
        _ignore_stop_signals()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        _ignore_stop_signals()
    return code


def _init_rclpy(args) -> None:
    """rclpy.init, whose errors (a params file that is missing, not YAML, mixes types in a list or
    lacks ros__parameters; `-p name` without a value; a log folder it cannot create) are startup
    errors: their text names the file or argument."""
    try:
        rclpy.init(args=args)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        text = str(exc).split(", at /")[0]  # rcl appends the C source lines of the error
        hint = ("check ROS_LOG_DIR / ROS_HOME (the log folder must be writable)" if "log" in text.lower()
                and "params" not in text.lower() and "parameter" not in text.lower() else
                "check the --params-file and -p arguments (a params file needs '<node name>: ros__parameters:' "
                "and lists of one type)")
        raise StartupError(f"ROS could not start: {text}; {hint}") from None


def _start_node() -> Optional[SegmentationNode]:
    """The node, or None when SIGINT/SIGTERM arrived while it was starting (a model export or an
    engine build can take minutes): rclpy has then shut the context down under us, and whatever
    that broke is not an error."""
    try:
        node = SegmentationNode()
    except (StartupError, KeyboardInterrupt):
        if not rclpy.ok():
            return None
        raise
    except Exception as exc:
        if not rclpy.ok():
            return None
        traceback.print_exc()
        raise StartupError(f"unexpected {type(exc).__name__} while starting: {exc}") from exc
    if not rclpy.ok():
        node.destroy_node()
        return None
    return node


def _ignore_stop_signals() -> None:
    """From here on SIGINT and SIGTERM are ignored (also while the interpreter exits, which would
    otherwise restore the default handlers: exit -2 or -15). A stop signal whose Python handler
    runs in this very moment raises KeyboardInterrupt here: it is the stop being carried out."""
    for _ in range(5):
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            continue


if __name__ == "__main__":
    sys.exit(main())
