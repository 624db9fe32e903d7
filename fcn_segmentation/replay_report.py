"""Replay reports: frames paired with ground truth by header stamp, IoU and latency summaries, and
the offline replay through the core (no DDS) whose report has the same keys, so the two can be
compared (the files they are written to: ``replay_files``). No rclpy here."""

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set, Tuple

import numpy as np
from tqdm import tqdm

from .bags import BagError, BagMessage, BagReader, TopicChoice, message_to_label, message_to_rgb, stamp_ns
from .frames import DEFAULT_MAX_PIXELS, FrameError
from .metrics import ConfusionMatrix
from .visualize import color_mask, overlay, palette_lut

LATENCY_PERCENTILES = (50, 95, 99)
STRIP_FRAMES = 6
STRIP_HEIGHT = 360  # the overlay strip's thumbnails: CamVid's full height (they were 180 px, too small to judge)
FRAME_PNGS_DIR = "overlays"  # one full-size PNG per strip frame, on request
# Every report has these keys, whether it comes from DDS or offline, so the two compare key by key.
CONTEXT_KEYS = ("mode", "bag", "image_topic", "image_type", "labels_topic", "labels_note", "labels_candidates",
                "camera_info_topic", "model", "backend", "input_size", "rate", "outputs", "node_params",
                "node_diagnostics", "node_exit_code", "node_log", "node_launcher", "record")

# What the node publishes per frame, in the order it publishes them (drivable_grid only once it has
# CameraInfo); a replay subscribes to some of them. Latency is always measured on class_mask.
NODE_OUTPUTS = ("class_mask", "color_mask", "overlay", "confidence", "drivable_mask", "drivable_grid")

# A frame's place among the labels: (header stamp in ns, how many earlier frames had that stamp).
# Frames of one stamp pair with the labels of that stamp in bag order.
Key = Tuple[int, int]


class ReplayError(RuntimeError):
    """A replay that could not run (node did not start or answer); the message says where to look."""


@dataclass
class Prediction:
    index: int                      # position of the frame in the replay
    stamp_ns: int                   # header stamp in the bag: the key shared with the labels
    sent_s: float                   # when the frame was published (fed to the core), from the first frame
    latency_ms: Optional[float]     # publish -> class mask; None when the frame was lost
    classes: Optional[np.ndarray] = None
    rgb: Optional[np.ndarray] = None  # kept only for the frames shown in the overlay strip
    occurrence: int = 0             # how many earlier frames of the bag had the same stamp
    published_stamp_ns: Optional[int] = None  # over DDS: the stamp it was published with (see FrameStamps)

    @property
    def key(self) -> Key:
        return self.stamp_ns, self.occurrence


class FrameStamps:
    """The frames' header stamps in bag order. Simulators and some drivers stamp every frame 0 or
    the same time, and stamps can go back; keyed by stamp, such frames would merge. Each frame gets
    its label key (stamp, occurrence) and a stamp to publish that is unique and increasing: its own,
    or 1 ns after the previous one (``restamped``). ``after``: publish stamps stay above it (the
    warm-up frame's)."""

    def __init__(self, after: Optional[int] = None):
        self.previous_published = after
        self.previous = None
        self.seen: Counter = Counter()
        self.repeated = self.backwards = self.restamped = 0

    def next(self, stamp: int) -> Tuple[Key, int]:
        """(label key, stamp to publish) of the next frame."""
        occurrence = self.seen[stamp]
        self.seen[stamp] += 1
        if occurrence:
            self.repeated += 1
        elif self.previous is not None and stamp < self.previous:
            self.backwards += 1
        self.previous = stamp
        published = stamp
        if self.previous_published is not None and stamp <= self.previous_published:
            published = self.previous_published + 1
            self.restamped += 1
        self.previous_published = published
        return (stamp, occurrence), published


class LabelMatcher:
    """Pairs predictions with labels of the same header stamp (frames sharing a stamp: the n-th frame
    with the n-th label of that stamp, in bag order). Frames are announced with ``add_frame`` as they
    are read; predictions come later (DDS) or at once (offline), labels in bag order, before or after
    their frame. While stamps increase, a prediction older than the newest label has no label coming,
    and a label older than the newest frame without a frame of its own matches none: both are settled
    at once, which keeps memory bounded on long bags. Lost frames are dropped with ``forget``.

    Counts: ``labels_read``, ``labels_unmatched`` (stamp matches no frame up to the last one read),
    ``labels_unreadable`` (not a mono8 image: skipped, its frame unlabelled)."""

    def __init__(self, has_labels: bool, on_pair: Callable[[Prediction, Optional[np.ndarray]], None]):
        self.has_labels = has_labels
        self.on_pair = on_pair
        self.labels: Dict[Key, np.ndarray] = {}
        self.waiting: Dict[Key, Prediction] = {}
        self.open_frames: Set[Key] = set()       # read, neither answered nor lost yet
        self.lost_frames: Set[Key] = set()       # lost before their label came
        self.label_occurrences: Counter = Counter()
        self.newest_frame: Optional[Key] = None
        self.newest_label: Optional[Key] = None
        self.frames_in_order = self.labels_in_order = True
        self.last_frame_stamp: Optional[int] = None
        self.labels_read = self.labels_unmatched = self.labels_unreadable = 0
        self.first_unreadable: Optional[str] = None

    def add_frame(self, key: Key) -> None:
        if self.newest_frame is not None and key < self.newest_frame:
            self.frames_in_order = False
        self.newest_frame = key if self.newest_frame is None else max(self.newest_frame, key)
        self.last_frame_stamp = key[0] if self.last_frame_stamp is None else max(self.last_frame_stamp, key[0])
        self.open_frames.add(key)
        if self.frames_in_order:
            for old in [k for k in self.labels if k < key and k not in self.open_frames]:
                del self.labels[old]
                self.labels_unmatched += 1

    def read_label(self, message: BagMessage) -> None:
        """A label message from the bag; one that is not a mono8 image is counted and skipped."""
        try:
            label = message_to_label(message)
        except (BagError, FrameError) as exc:
            label = None
            self.labels_unreadable += 1
            if self.first_unreadable is None:
                self.first_unreadable = str(exc)
                tqdm.write(f"labels: skipping an unreadable label (and any more like it): {exc}")
        self.add_label(stamp_ns(message.msg), label)

    def add_label(self, stamp: int, label: Optional[np.ndarray]) -> None:
        """``label`` None: the label of this stamp exists but cannot be used."""
        key = (stamp, self.label_occurrences[stamp])
        self.label_occurrences[stamp] += 1
        self.labels_read += 1
        if self.newest_label is not None and key < self.newest_label:
            self.labels_in_order = False
        self.newest_label = key if self.newest_label is None else max(self.newest_label, key)
        if key in self.waiting:
            self.on_pair(self.waiting.pop(key), label)
        elif key in self.lost_frames:
            self.lost_frames.discard(key)  # its frame is counted as dropped
        elif key in self.open_frames or not self.frames_in_order or self.newest_frame is None \
                or key > self.newest_frame:
            if label is not None:
                self.labels[key] = label
        else:
            self.labels_unmatched += 1  # frames come in stamp order and none had this one
        if self.labels_in_order:
            for old in [k for k in self.waiting if k < self.newest_label]:
                self.on_pair(self.waiting.pop(old), None)

    def add_prediction(self, prediction: Prediction) -> None:
        key = prediction.key
        self.open_frames.discard(key)
        if key in self.labels:
            self.on_pair(prediction, self.labels.pop(key))
        elif not self.has_labels or (self.labels_in_order and self.newest_label is not None
                                     and key < self.newest_label):
            self.on_pair(prediction, None)
        else:
            self.waiting[key] = prediction

    def forget(self, prediction: Prediction) -> None:
        """A lost frame: its label, read or still to come, is not scored."""
        key = prediction.key
        self.open_frames.discard(key)
        if self.labels.pop(key, None) is None and self.has_labels:
            self.lost_frames.add(key)

    def finish(self, all_frames_read: bool = True) -> None:
        """Settle what is left. When the replay stopped before the bag's last frame (--limit), labels
        stamped after the last frame read belong to frames not replayed: not counted as unmatched."""
        for key in list(self.waiting):
            self.on_pair(self.waiting.pop(key), None)
        last = self.last_frame_stamp
        self.labels_unmatched += sum(1 for stamp, _ in self.labels
                                     if all_frames_read or (last is not None and stamp <= last))
        self.labels.clear()


def read_late_labels(bag: BagReader, choice: TopicChoice, matcher: LabelMatcher, last_bag_time: Optional[int],
                     all_frames_read: bool) -> None:
    """Labels stored after the last frame's bag time (a labelling tool's output merged into the bag
    later): read on to the end of the topic, or with frames left unread (--limit), to the first label
    stamped after the last frame read."""
    if choice.labels is None or last_bag_time is None or matcher.last_frame_stamp is None:
        return
    for message in bag.messages(choice, kinds=("labels",), start_ns=last_bag_time + 1):
        if not all_frames_read and stamp_ns(message.msg) > matcher.last_frame_stamp:
            return
        matcher.read_label(message)


def check_first_frame(bag: BagReader, choice: TopicChoice, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Decode the first frame as the node would, so an encoding it cannot read fails here, with the
    decoder's reason, rather than as frames that never come back."""
    first = next(bag.messages(choice, kinds=("image",)), None)
    if first is None:
        raise ReplayError(f"no frames on {choice.image} in {bag.path}")
    try:
        message_to_rgb(first, max_pixels)
    except FrameError as exc:
        raise ReplayError(f"the first frame on {choice.image} cannot be decoded, so the node would reject "
                          f"every frame like it: {exc}") from exc


class ReplayReport:
    """Accumulates per-frame results into a confusion matrix, a latency series and a few overlays."""

    def __init__(self, info, frame_count: int, strip_frames: int = STRIP_FRAMES, worst_frames: int = 0):
        self.info = info
        self.lut = palette_lut(info.palette)
        self.confusion = ConfusionMatrix(info.num_classes)
        self.frames: List[dict] = []
        self.labelled = 0
        self.labels_resized = 0
        picks = np.linspace(0, max(frame_count - 1, 0), min(strip_frames, frame_count)).round().astype(int)
        self.strip_indices = set(picks.tolist())
        self.strip: Dict[int, np.ndarray] = {}  # index -> full-size overlay
        # The labelled frames of lowest pixel accuracy: (pixel accuracy, index, full-size overlay), best last.
        self.worst_frames = worst_frames
        self.worst: List[Tuple[float, int, np.ndarray]] = []

    def wants_image(self, index: int) -> bool:
        return index in self.strip_indices or self.worst_frames > 0

    def add(self, prediction: Prediction, label: Optional[np.ndarray] = None) -> None:
        record = {"index": prediction.index, "stamp_ns": prediction.stamp_ns,
                  "published_stamp_ns": prediction.published_stamp_ns, "sent_s": round(prediction.sent_s, 4),
                  "received": prediction.classes is not None, "latency_ms": prediction.latency_ms,
                  "pixel_accuracy": None}
        classes = prediction.classes
        if classes is not None and label is not None:
            if label.shape != classes.shape:
                import cv2

                # Class ids: nearest neighbour, never a blend of two ids.
                label = cv2.resize(label, (classes.shape[1], classes.shape[0]), interpolation=cv2.INTER_NEAREST)
                self.labels_resized += 1
            self.confusion.update(label, classes)
            self.labelled += 1
            valid = label < self.info.num_classes
            record["pixel_accuracy"] = float((classes[valid] == label[valid]).mean()) if valid.any() else None
        if classes is not None and prediction.rgb is not None:
            accuracy = record["pixel_accuracy"]
            worst = self.worst_frames and accuracy is not None and (
                len(self.worst) < self.worst_frames or accuracy < self.worst[-1][0])
            if prediction.index in self.strip_indices or worst:
                blend = overlay(prediction.rgb, color_mask(classes, self.lut))
                if prediction.index in self.strip_indices:
                    self.strip[prediction.index] = blend
                if worst:
                    self.worst = sorted(self.worst + [(accuracy, prediction.index, blend)],
                                        key=lambda item: item[:2])[:self.worst_frames]
        self.frames.append(record)

    def summary(self, wall_time_s: float, labels: LabelMatcher, stamps: FrameStamps, **context) -> dict:
        """The report's numbers; ``context`` gives the CONTEXT_KEYS (missing ones are None)."""
        frames = sorted(self.frames, key=lambda f: f["index"])
        latencies = np.array([f["latency_ms"] for f in frames if f["received"]], np.float64)
        received = int(sum(f["received"] for f in frames))
        summary = {
            **{key: context.get(key) for key in CONTEXT_KEYS},
            "frames_sent": len(frames), "frames_received": received, "frames_dropped": len(frames) - received,
            "frames_labelled": self.labelled,
            "frames_repeating_a_stamp": stamps.repeated, "frames_stamped_backwards": stamps.backwards,
            "frames_restamped": stamps.restamped if context.get("mode") == "dds" else 0,
            "labels_read": labels.labels_read, "labels_unmatched": labels.labels_unmatched,
            "labels_unreadable": labels.labels_unreadable, "labels_resized": self.labels_resized,
            "latency_ms": latency_summary(latencies),
            "fps": received / wall_time_s if wall_time_s > 0 else None,
            "wall_time_s": round(wall_time_s, 3),
            "miou": None, "pixel_accuracy": None, "per_class_iou": {}, "confusion_matrix": None,
        }
        if self.labelled:
            scores = self.confusion.summary(self.info.class_names)
            summary.update(miou=scores["miou"], pixel_accuracy=scores["pixel_accuracy"],
                           per_class_iou=scores["per_class_iou"], confusion_matrix=scores["confusion_matrix"])
        summary["warnings"] = _warnings(summary, labels.first_unreadable)
        summary["frames"] = frames
        return summary


def latency_summary(samples: np.ndarray) -> Dict[str, Optional[float]]:
    """Percentiles, max and mean of latency samples (ms); None where there are none."""
    return {**{f"p{p}": float(np.percentile(samples, p)) if samples.size else None for p in LATENCY_PERCENTILES},
            "max": float(samples.max()) if samples.size else None,
            "mean": float(samples.mean()) if samples.size else None}


def _warnings(summary: dict, first_unreadable: Optional[str]) -> List[str]:
    """What the numbers above do not say on their own: stamps and labels that needed handling."""
    warnings = []
    repeated, backwards = summary["frames_repeating_a_stamp"], summary["frames_stamped_backwards"]
    if repeated or backwards:
        text = (f"frames with a header stamp not after the previous frame's: {repeated + backwards} of "
                f"{summary['frames_sent']} ({repeated} repeating an earlier stamp, {backwards} going back in time)")
        if summary["mode"] == "dds":
            text += (f"; over DDS, {_count(summary['frames_restamped'], 'frame')} published under a new, unique "
                     "stamp (1 ns after the one published before) so that their outputs stay apart")
        warnings.append(text + "; labels matched on the bag's stamps, frames sharing a stamp with the labels of "
                               "that stamp in bag order")
    topic = summary["labels_topic"]
    if summary["labels_unreadable"]:
        warnings.append(f"{topic}: {_count(summary['labels_unreadable'], 'label')} that could not be read, skipped "
                        f"({first_unreadable})")
    if summary["labels_unmatched"]:
        warnings.append(f"{topic}: {_count(summary['labels_unmatched'], 'label')} matching no frame's header stamp")
    usable = summary["labels_read"] - summary["labels_unreadable"]
    if usable and not summary["frames_labelled"] and summary["frames_received"]:
        warnings.append(f"{topic}: {_count(usable, 'label')}, none matching a received frame's header stamp: "
                        "IoU not computed")
    if summary["labels_resized"]:
        warnings.append(f"{_count(summary['labels_resized'], 'label')} of another size than the frame, resized to "
                        "it (nearest neighbour)")
    return warnings


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# offline replay: the same frames through the core, no DDS

def replay_offline(bag_path, segmenter, image_topic: Optional[str] = None, labels_topic: Optional[str] = None,
                   limit: Optional[int] = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                   **context) -> Tuple[dict, ReplayReport]:
    """Run every image of the bag through ``segmenter`` back to back (no pacing: this measures the
    core). Latency = decode + segment of one frame. Returns (summary, report)."""
    with BagReader(bag_path) as bag:
        choice, total = open_frames(bag, image_topic, labels_topic, limit, max_pixels)
        report = ReplayReport(segmenter.info, total)
        with tqdm(total=total, desc="offline replay", unit="frame") as progress:
            run = segment_frames(bag, choice, total, segmenter, report, max_pixels, lambda _: progress.update())
        summary = offline_summary(bag_path, choice, segmenter, report, run, **context)
    return summary, report


def open_frames(bag: BagReader, image_topic: Optional[str], labels_topic: Optional[str], limit: Optional[int],
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[TopicChoice, int]:
    """(the topics to replay, the number of frames), after checking that the first frame decodes.
    Says which image topic was picked when the bag has several."""
    choice = bag.choose_topics(image_topic, labels_topic)
    if choice.image_note:
        tqdm.write(f"{bag.path}: {choice.image_note}")
    total = bag.frame_count(choice, limit)
    if total == 0:
        raise ReplayError(f"no frames on {choice.image} in {bag.path}")
    check_first_frame(bag, choice, max_pixels)
    return choice, total


@dataclass
class OfflineRun:
    matcher: LabelMatcher
    stamps: FrameStamps
    wall_time_s: float


def segment_frames(bag: BagReader, choice: TopicChoice, total: int, segmenter, report: ReplayReport,
                   max_pixels: int = DEFAULT_MAX_PIXELS,
                   on_frame: Optional[Callable[[int], None]] = None) -> OfflineRun:
    """The first ``total`` frames through ``segmenter``, back to back, paired with their labels by
    stamp into ``report``; ``on_frame(frames done)`` after each frame."""
    matcher = LabelMatcher(choice.labels is not None, report.add)
    stamps = FrameStamps()
    index, last_bag_time, start = 0, None, time.perf_counter()
    for message in bag.messages(choice):
        if index >= total and message.bag_time_ns > last_bag_time:
            break  # past the last frame and the labels stored beside it
        if message.kind == "labels":
            matcher.read_label(message)
        elif message.kind == "image" and index < total:
            last_bag_time = message.bag_time_ns
            key, _ = stamps.next(stamp_ns(message.msg))
            matcher.add_frame(key)
            t0 = time.perf_counter()
            prediction = Prediction(index, key[0], t0 - start, None, occurrence=key[1])
            try:
                rgb = message_to_rgb(message, max_pixels)
            except FrameError as exc:  # the node would reject it too: a lost frame
                tqdm.write(f"frame {index}: {exc}")
                matcher.forget(prediction)
                report.add(prediction)
            else:
                prediction.classes = segmenter(rgb).classes
                prediction.latency_ms = (time.perf_counter() - t0) * 1e3
                prediction.rgb = rgb if report.wants_image(index) else None
                matcher.add_prediction(prediction)
            index += 1
            if on_frame:
                on_frame(index)
    wall = time.perf_counter() - start
    all_frames_read = index == bag.frame_count(choice)
    read_late_labels(bag, choice, matcher, last_bag_time, all_frames_read)
    matcher.finish(all_frames_read)
    return OfflineRun(matcher, stamps, wall)


def offline_summary(bag_path, choice: TopicChoice, segmenter, report: ReplayReport, run: OfflineRun,
                    **context) -> dict:
    info = segmenter.info
    return report.summary(run.wall_time_s, run.matcher, run.stamps, mode="offline", bag=str(bag_path),
                          image_topic=choice.image, image_type=choice.image_type, labels_topic=choice.labels,
                          labels_note=choice.labels_note, labels_candidates=choice.labels_candidates,
                          camera_info_topic=choice.camera_info, backend=segmenter.backend.describe(),
                          input_size=f"{info.input_width}x{info.input_height}", **context)


def core_segmenter(backend_name: str, model, device: str, core_params: Dict[str, object]):
    """The core (``pipeline.Segmenter``) as the node builds it, with the node parameters that change
    what it computes."""
    from .backends import create_backend
    from .pipeline import Segmenter

    width, height = core_params.get("network_image_width"), core_params.get("network_image_height")
    backend, _ = create_backend(backend_name, model, device=device,
                                input_size=(height, width) if width else None,
                                onnx_path=core_params.get("onnx_path") or None,
                                engine_cache_dir=core_params.get("engine_cache_dir") or None,
                                precision=core_params.get("precision", "auto"),  # the node's default
                                force_engine_update=core_params.get("force_engine_update", False),
                                cpu_threads=core_params.get("inference_threads", 0),
                                calibration_data=core_params.get("calibration_data") or None,
                                cpu_busy_wait=core_params.get("inference_busy_wait", False),
                                test_time_flip=core_params.get("test_time_flip", False))
    return Segmenter(backend, full_resolution_logits=core_params.get("full_resolution_logits", False))
