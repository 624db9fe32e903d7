"""The replay report's files: ``report.json``, ``report.md``, the latency and per-class IoU plots,
the overlay strip and full-size frame PNGs, and the few lines printed to the terminal. The fleet
report draws its plots and strips with the same functions."""

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .replay_report import FRAME_PNGS_DIR, STRIP_HEIGHT, ReplayReport


def write_report(out_dir, summary: dict, report: ReplayReport, offline: Optional[dict] = None,
                 frame_pngs: bool = False) -> Path:
    """report.json, report.md and the plots in ``out_dir``; ``offline``: the offline summary of the
    same frames, shown side by side (its difference to the DDS run is the ROS overhead).
    ``frame_pngs``: also each strip frame as a full-size PNG in overlays/."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [summary] + ([offline] if offline else [])
    plots = {"latency": _plot_latency(runs, out / "latency.png")}
    if summary["per_class_iou"]:
        plots["per_class_iou"] = plot_iou(summary, out / "per_class_iou.png")
    if report.strip:
        plots["overlays"] = write_strip(report.strip, out / "overlays.png")
        if frame_pngs:
            plots["overlay_frames"] = write_frame_pngs(report.strip, out / FRAME_PNGS_DIR)
    for run in runs:
        run["plots"] = plots
    document = {**summary, "offline": offline} if offline else summary
    (out / "report.json").write_text(json.dumps(document, indent=2))
    (out / "report.md").write_text(_markdown(runs, plots))
    return out / "report.md"


def format_value(value, digits=1, suffix="") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _markdown(runs: List[dict], plots: Dict[str, str]) -> str:
    main = runs[0]
    names = {"dds": "over DDS (node process)", "offline": "offline (core, no DDS)"}
    lines = [f"# Replay report: `{main['bag']}`", "",
             f"- image topic: `{main['image_topic']}` ({main['image_type']})",
             f"- labels: {_labels_line(main)}",
             f"- camera info: {'`' + main['camera_info_topic'] + '`' if main['camera_info_topic'] else 'none'}",
             f"- model: `{main.get('model')}`, backend: {main.get('backend')}, network input: "
             f"{main.get('input_size') or 'n/a'}",
             f"- playback rate: {main.get('rate')}x the bag's timing" if main["mode"] == "dds" else
             "- frames fed back to back (no pacing)"]
    if main["mode"] == "dds":
        lines += [f"- node outputs subscribed: {', '.join(main.get('outputs') or ['class_mask'])}; node started "
                  f"with `{main.get('node_launcher')}`"]
    if len(runs) == 2:
        offline_params = runs[1].get("node_params") or {}
        left_out = sorted(set(main.get("node_params") or {}) - set(offline_params))
        lines += [f"- offline run: node parameters applied to the core: "
                  f"{', '.join(f'{k}={v}' for k, v in offline_params.items()) or 'none given'}"
                  + (f"; not applicable to the core (DDS and other outputs only): {', '.join(left_out)}"
                     if left_out else "")]
    warnings = [w for run in runs for w in run.get("warnings", [])]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in dict.fromkeys(warnings)]
    lines += ["", "| | " + " | ".join(names[r["mode"]] for r in runs) + " |",
              "|---|" + "---|" * len(runs)]
    rows = [("frames sent", lambda r: str(r["frames_sent"])),
            ("frames received", lambda r: str(r["frames_received"])),
            ("frames dropped", lambda r: str(r["frames_dropped"])),
            ("frames with labels", lambda r: str(r["frames_labelled"])),
            ("labels matching no frame", lambda r: str(r["labels_unmatched"]))]
    rows += [(f"latency {k}", lambda r, k=k: format_value(r["latency_ms"][k], 1, " ms"))
             for k in ("p50", "p95", "p99", "max")]
    rows += [("fps", lambda r: format_value(r["fps"], 2)), ("mIoU", lambda r: format_value(r["miou"], 3)),
             ("pixel accuracy", lambda r: format_value(r["pixel_accuracy"], 3))]
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
        lines += [f"| {name} | {format_value(iou, 3)} |" for name, iou in main["per_class_iou"].items()]
        lines += ["", f"![per-class IoU]({plots['per_class_iou']})"]
    if "overlays" in plots:
        lines += ["", "## Overlays", "", f"![overlays]({plots['overlays']})"]
    diag = main.get("node_diagnostics") or {}
    if diag:
        lines += ["", "## Node diagnostics (last /diagnostics message)", ""]
        lines += [f"- {key}: {value}" for key, value in diag.items()]
    return "\n".join(lines) + "\n"


def _labels_line(summary: dict) -> str:
    if summary["labels_topic"]:
        return f"`{summary['labels_topic']}`"
    return summary.get("labels_note") or "none in the bag"


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


def plot_iou(summary: dict, path: Path) -> str:
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


def write_strip(images: Dict[object, np.ndarray], path: Path, height: int = STRIP_HEIGHT, per_row: int = 3) -> str:
    """The images, in key order, as thumbnails ``height`` px high, ``per_row`` to a row, in one PNG."""
    import cv2

    thumbs = [cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height),
                         interpolation=cv2.INTER_AREA) for _, image in sorted(images.items(), key=lambda kv: kv[0])]
    width = max(t.shape[1] for t in thumbs)
    thumbs = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0))) for t in thumbs]
    thumbs += [np.zeros_like(thumbs[0])] * (-len(thumbs) % per_row if len(thumbs) > per_row else 0)
    rows = [np.concatenate(thumbs[i:i + per_row], axis=1) for i in range(0, len(thumbs), per_row)]
    _write_png(np.concatenate(rows, axis=0), path)
    return path.name


def write_frame_pngs(images: Dict[int, np.ndarray], folder: Path, names: Optional[Dict[int, str]] = None) -> str:
    """Each image as a full-size PNG in ``folder`` (``frame_<index>.png`` unless ``names`` says)."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, image in images.items():
        _write_png(image, folder / (names[key] if names else f"frame_{key:05d}.png"))
    return folder.name


def _write_png(rgb: np.ndarray, path: Path) -> None:
    """Written under a private name, then renamed: a reader never sees half a file."""
    import os

    import cv2

    from .files import private_temp_path

    temp = private_temp_path(path, ".png")
    if not cv2.imwrite(str(temp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    os.replace(temp, path)


def format_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    lat = summary["latency_ms"]
    what = "publish -> class mask over DDS" if summary["mode"] == "dds" else "decode + segment in the core"
    lines = [f"frames: sent {summary['frames_sent']}, received {summary['frames_received']}, "
             f"dropped {summary['frames_dropped']} ({summary['mode']})",
             f"latency {what}: p50 {format_value(lat['p50'])} ms, p95 {format_value(lat['p95'])} ms, "
             f"p99 {format_value(lat['p99'])} ms, max {format_value(lat['max'])} ms; "
             f"{format_value(summary['fps'], 2)} fps"]
    if summary["miou"] is not None:
        lines.append(f"mIoU on {summary['frames_labelled']} labelled frames: {summary['miou']:.3f} "
                     f"(pixel accuracy {summary['pixel_accuracy']:.3f})")
    elif summary["labels_topic"]:
        lines.append(f"no frame matched a label on {summary['labels_topic']}: IoU not computed")
    else:
        lines.append(f"no labels ({summary.get('labels_note') or 'none in the bag'}): IoU not computed")
    lines += [f"warning: {w}" for w in summary.get("warnings", [])]
    return "\n".join(lines)
