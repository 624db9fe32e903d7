"""Replay reports: frames paired with ground truth by header stamp, IoU and latency summaries,
``report.json`` + ``report.md`` with plots, and the offline replay through the core (no DDS) whose
report has the same keys, so the two can be compared. No rclpy here."""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from .bags import BagError, BagReader, message_to_label, message_to_rgb, stamp_ns
from .frames import FrameError
from .metrics import ConfusionMatrix
from .visualize import color_mask, overlay, palette_lut

LATENCY_PERCENTILES = (50, 95, 99)
STRIP_FRAMES = 6
STRIP_HEIGHT = 180
# Every report has these keys, whether it comes from DDS or offline, so the two compare key by key.
CONTEXT_KEYS = ("mode", "bag", "image_topic", "image_type", "labels_topic", "camera_info_topic", "model", "backend",
                "rate", "node_params", "node_diagnostics", "node_exit_code", "node_log", "record")


class ReplayError(RuntimeError):
    """A replay that could not run (node did not start or answer); the message says where to look."""


@dataclass
class Prediction:
    index: int                      # position of the frame in the replay
    stamp_ns: int                   # header stamp: the key shared with the labels
    sent_s: float                   # when the frame was published (fed to the core), from the first frame
    latency_ms: Optional[float]     # publish -> class mask; None when the frame was lost
    classes: Optional[np.ndarray] = None
    rgb: Optional[np.ndarray] = None  # kept only for the frames shown in the overlay strip


class LabelMatcher:
    """Pairs predictions with labels of the same header stamp. Labels come in stamp order, so a
    prediction older than the newest label has no label coming: it is released at once, which keeps
    memory bounded on long bags. The labels of lost frames are dropped with ``forget``."""

    def __init__(self, has_labels: bool, on_pair: Callable[[Prediction, Optional[np.ndarray]], None]):
        self.has_labels = has_labels
        self.on_pair = on_pair
        self.labels: Dict[int, np.ndarray] = {}
        self.waiting: Dict[int, Prediction] = {}
        self.newest_label = -1

    def add_label(self, stamp: int, label: np.ndarray) -> None:
        self.newest_label = max(self.newest_label, stamp)
        if stamp in self.waiting:
            self.on_pair(self.waiting.pop(stamp), label)
        else:
            self.labels[stamp] = label
        for old in [s for s in self.waiting if s < self.newest_label]:
            self.on_pair(self.waiting.pop(old), None)

    def add_prediction(self, prediction: Prediction) -> None:
        stamp = prediction.stamp_ns
        if not self.has_labels or stamp in self.labels or stamp < self.newest_label:
            self.on_pair(prediction, self.labels.pop(stamp, None))
        else:
            self.waiting[stamp] = prediction

    def forget(self, stamp: int) -> None:
        self.labels.pop(stamp, None)

    def finish(self) -> None:
        for stamp in list(self.waiting):
            self.on_pair(self.waiting.pop(stamp), None)


class ReplayReport:
    """Accumulates per-frame results into a confusion matrix, a latency series and a few overlays."""

    def __init__(self, info, frame_count: int, strip_frames: int = STRIP_FRAMES):
        self.info = info
        self.lut = palette_lut(info.palette)
        self.confusion = ConfusionMatrix(info.num_classes)
        self.frames: List[dict] = []
        self.labelled = 0
        picks = np.linspace(0, max(frame_count - 1, 0), min(strip_frames, frame_count)).round().astype(int)
        self.strip_indices = set(picks.tolist())
        self.strip: Dict[int, np.ndarray] = {}

    def wants_image(self, index: int) -> bool:
        return index in self.strip_indices

    def add(self, prediction: Prediction, label: Optional[np.ndarray] = None) -> None:
        record = {"index": prediction.index, "stamp_ns": prediction.stamp_ns, "sent_s": round(prediction.sent_s, 4),
                  "received": prediction.classes is not None, "latency_ms": prediction.latency_ms,
                  "pixel_accuracy": None}
        classes = prediction.classes
        if classes is not None and label is not None:
            if label.shape != classes.shape:
                raise BagError(f"the label at stamp {prediction.stamp_ns} is {label.shape[1]}x{label.shape[0]} "
                               f"but its image is {classes.shape[1]}x{classes.shape[0]}")
            self.confusion.update(label, classes)
            self.labelled += 1
            valid = label < self.info.num_classes
            record["pixel_accuracy"] = float((classes[valid] == label[valid]).mean()) if valid.any() else None
        if classes is not None and prediction.rgb is not None:
            import cv2

            blend = overlay(prediction.rgb, color_mask(classes, self.lut))
            width = round(blend.shape[1] * STRIP_HEIGHT / blend.shape[0])
            self.strip[prediction.index] = cv2.resize(blend, (width, STRIP_HEIGHT), interpolation=cv2.INTER_AREA)
        self.frames.append(record)

    def summary(self, wall_time_s: float, **context) -> dict:
        """The report's numbers; ``context`` gives the CONTEXT_KEYS (missing ones are None)."""
        frames = sorted(self.frames, key=lambda f: f["index"])
        latencies = np.array([f["latency_ms"] for f in frames if f["received"]], np.float64)
        received = int(sum(f["received"] for f in frames))
        summary = {
            **{key: context.get(key) for key in CONTEXT_KEYS},
            "frames_sent": len(frames), "frames_received": received, "frames_dropped": len(frames) - received,
            "frames_labelled": self.labelled,
            "latency_ms": {**{f"p{p}": float(np.percentile(latencies, p)) if latencies.size else None
                              for p in LATENCY_PERCENTILES},
                           "max": float(latencies.max()) if latencies.size else None,
                           "mean": float(latencies.mean()) if latencies.size else None},
            "fps": received / wall_time_s if wall_time_s > 0 else None,
            "wall_time_s": round(wall_time_s, 3),
            "miou": None, "pixel_accuracy": None, "per_class_iou": {}, "confusion_matrix": None,
        }
        if self.labelled:
            scores = self.confusion.summary(self.info.class_names)
            summary.update(miou=scores["miou"], pixel_accuracy=scores["pixel_accuracy"],
                           per_class_iou=scores["per_class_iou"], confusion_matrix=scores["confusion_matrix"])
        summary["frames"] = frames
        return summary


# ---------------------------------------------------------------------------------------------
# offline replay: the same frames through the core, no DDS

def replay_offline(bag_path, segmenter, image_topic: Optional[str] = None, labels_topic: Optional[str] = None,
                   limit: Optional[int] = None, **context) -> Tuple[dict, ReplayReport]:
    """Run every image of the bag through ``segmenter`` back to back (no pacing: this measures the
    core). Latency = decode + segment of one frame. Returns (summary, report)."""
    with BagReader(bag_path) as bag:
        choice = bag.choose_topics(image_topic, labels_topic)
        total = bag.frame_count(choice, limit)
        if total == 0:
            raise ReplayError(f"no frames on {choice.image} in {bag_path}")
        report = ReplayReport(segmenter.info, total)
        matcher = LabelMatcher(choice.labels is not None, report.add)
        progress = tqdm(total=total, desc="offline replay", unit="frame")
        index, last_bag_time, start = 0, None, time.perf_counter()
        for message in bag.messages(choice):
            if index >= total and message.bag_time_ns > last_bag_time:
                break  # past the last frame and the labels stored beside it
            if message.kind == "labels":
                matcher.add_label(stamp_ns(message.msg), message_to_label(message))
            elif message.kind == "image" and index < total:
                last_bag_time = message.bag_time_ns
                t0 = time.perf_counter()
                prediction = Prediction(index, stamp_ns(message.msg), t0 - start, None)
                try:
                    rgb = message_to_rgb(message)
                except FrameError as exc:  # the node would reject it too: a lost frame
                    tqdm.write(f"frame {index}: {exc}")
                    matcher.forget(prediction.stamp_ns)
                    report.add(prediction)
                else:
                    prediction.classes = segmenter(rgb).classes
                    prediction.latency_ms = (time.perf_counter() - t0) * 1e3
                    prediction.rgb = rgb if report.wants_image(index) else None
                    matcher.add_prediction(prediction)
                index += 1
                progress.update()
        matcher.finish()
        progress.close()
        summary = report.summary(time.perf_counter() - start, mode="offline", bag=str(bag_path),
                                 image_topic=choice.image, image_type=choice.image_type, labels_topic=choice.labels,
                                 camera_info_topic=choice.camera_info, backend=segmenter.backend.describe(),
                                 **context)
    return summary, report


# ---------------------------------------------------------------------------------------------
# writing

def write_report(out_dir, summary: dict, report: ReplayReport, offline: Optional[dict] = None) -> Path:
    """report.json, report.md and the plots in ``out_dir``; ``offline``: the offline summary of the
    same frames, shown side by side (its difference to the DDS run is the ROS overhead)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [summary] + ([offline] if offline else [])
    plots = {"latency": _plot_latency(runs, out / "latency.png")}
    if summary["per_class_iou"]:
        plots["per_class_iou"] = _plot_iou(summary, out / "per_class_iou.png")
    if report.strip:
        plots["overlays"] = _write_strip(report.strip, out / "overlays.png")
    for run in runs:
        run["plots"] = plots
    document = {**summary, "offline": offline} if offline else summary
    (out / "report.json").write_text(json.dumps(document, indent=2))
    (out / "report.md").write_text(_markdown(runs, plots))
    return out / "report.md"


def _fmt(value, digits=1, suffix="") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _markdown(runs: List[dict], plots: Dict[str, str]) -> str:
    main = runs[0]
    names = {"dds": "over DDS (node process)", "offline": "offline (core, no DDS)"}
    lines = [f"# Replay report: `{main['bag']}`", "",
             f"- image topic: `{main['image_topic']}` ({main['image_type']})",
             f"- labels: {'`' + main['labels_topic'] + '`' if main['labels_topic'] else 'none in the bag'}",
             f"- camera info: {'`' + main['camera_info_topic'] + '`' if main['camera_info_topic'] else 'none'}",
             f"- model: `{main.get('model')}`, backend: {main.get('backend')}",
             f"- playback rate: {main.get('rate')}x the bag's timing" if main["mode"] == "dds" else
             "- frames fed back to back (no pacing)", "",
             "| | " + " | ".join(names[r["mode"]] for r in runs) + " |",
             "|---|" + "---|" * len(runs)]
    rows = [("frames sent", lambda r: str(r["frames_sent"])),
            ("frames received", lambda r: str(r["frames_received"])),
            ("frames dropped", lambda r: str(r["frames_dropped"])),
            ("frames with labels", lambda r: str(r["frames_labelled"]))]
    rows += [(f"latency {k}", lambda r, k=k: _fmt(r["latency_ms"][k], 1, " ms")) for k in ("p50", "p95", "p99", "max")]
    rows += [("fps", lambda r: _fmt(r["fps"], 2)), ("mIoU", lambda r: _fmt(r["miou"], 3)),
             ("pixel accuracy", lambda r: _fmt(r["pixel_accuracy"], 3))]
    lines += [f"| {name} | " + " | ".join(get(r) for r in runs) + " |" for name, get in rows]
    if len(runs) == 2 and all(r["latency_ms"]["p50"] is not None for r in runs):
        overhead = runs[0]["latency_ms"]["p50"] - runs[1]["latency_ms"]["p50"]
        lines += ["", f"DDS p50 - core p50: {overhead:+.1f} ms per frame, the ROS overhead (serialization, transport "
                      "both ways, the node's queue and its other outputs); a difference smaller than the spread "
                      "of the latencies is noise."]
    lines += ["", "Latency: publish of a frame -> receipt of its class mask (offline: decode + segment). fps: frames "
                  "answered per second, at the bag's pace over DDS, back to back offline.",
              "", f"![latency over time]({plots['latency']})"]
    if main["per_class_iou"]:
        lines += ["", "## Per-class IoU", "", "| class | IoU |", "|---|---|"]
        lines += [f"| {name} | {_fmt(iou, 3)} |" for name, iou in main["per_class_iou"].items()]
        lines += ["", f"![per-class IoU]({plots['per_class_iou']})"]
    if "overlays" in plots:
        lines += ["", "## Overlays", "", f"![overlays]({plots['overlays']})"]
    diag = main.get("node_diagnostics") or {}
    if diag:
        lines += ["", "## Node diagnostics (last /diagnostics message)", ""]
        lines += [f"- {key}: {value}" for key, value in diag.items()]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_latency(runs: List[dict], path: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    for run in runs:
        got = [f for f in run["frames"] if f["received"]]
        ax.plot([f["sent_s"] for f in got], [f["latency_ms"] for f in got], ".-", label=run["mode"])
    lost = [f["sent_s"] for f in runs[0]["frames"] if not f["received"]]
    if lost:
        ax.plot(lost, [0] * len(lost), "rx", markersize=8, label=f"dropped ({len(lost)})")
    ax.set_xlabel("time since first frame (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("publish -> class mask latency")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _plot_iou(summary: dict, path: Path) -> str:
    plt = _pyplot()
    names = list(summary["per_class_iou"])
    values = [summary["per_class_iou"][n] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(range(len(names)), [v or 0.0 for v in values], color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU")
    ax.set_title(f"per-class IoU, mIoU {summary['miou']:.3f} on {summary['frames_labelled']} frames")
    for y, v in enumerate(values):
        ax.text((v or 0.0) + 0.01, y, "absent" if v is None else f"{v:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _write_strip(strip: Dict[int, np.ndarray], path: Path) -> str:
    import cv2

    row = np.concatenate([strip[i] for i in sorted(strip)], axis=1)
    cv2.imwrite(str(path), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
    return path.name


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    lat = summary["latency_ms"]
    what = "publish -> class mask over DDS" if summary["mode"] == "dds" else "decode + segment in the core"
    lines = [f"frames: sent {summary['frames_sent']}, received {summary['frames_received']}, "
             f"dropped {summary['frames_dropped']} ({summary['mode']})",
             f"latency {what}: p50 {_fmt(lat['p50'])} ms, p95 {_fmt(lat['p95'])} ms, "
             f"p99 {_fmt(lat['p99'])} ms, max {_fmt(lat['max'])} ms; {_fmt(summary['fps'], 2)} fps"]
    if summary["miou"] is not None:
        lines.append(f"mIoU on {summary['frames_labelled']} labelled frames: {summary['miou']:.3f} "
                     f"(pixel accuracy {summary['pixel_accuracy']:.3f})")
    else:
        lines.append("no labels: IoU not computed")
    return "\n".join(lines)
