"""``fcnseg demo``: the main job on the bundled default. Starts the node as its own process, streams
the sample frames to it over DDS, saves the masks and overlays it sends back, prints a summary."""

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from tqdm import tqdm

from ..data import read_label, read_rgb, split_pairs
from ..metrics import ConfusionMatrix
from ..model.model_file import load_model_file
from .client import (SegmentationClient, image_msg, image_to_array, publish_until_answered, spin_until, stamp_key,
                     start_node, stop_node)

OUTPUTS = ("class_mask", "color_mask", "overlay")


def run_demo(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = split_pairs(args.data, args.split, require_labels=False)
    _, info = load_model_file(args.model)  # fail here, with the loader's message, before starting DDS
    # Keep the demo's traffic on this machine unless the user configured discovery themselves.
    env = {} if "ROS_AUTOMATIC_DISCOVERY_RANGE" in os.environ else {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    os.environ.update(env)
    topic = "/demo_camera/image_raw"
    node_log = out / "node.log"
    process = start_node({"model_path": args.model, "backend": args.backend, "device": args.device},
                         remaps={"image": topic, "__ns": "/demo_camera"}, env=env, log_path=str(node_log))
    print(f"started segmentation_node (pid {process.pid}), log: {node_log}")
    rclpy.init()
    client = SegmentationClient(topic, output_namespace="/demo_camera/segmentation", outputs=OUTPUTS,
                                name="fcn_segmentation_demo")
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    try:
        if not spin_until(executor, lambda: client.connected() or process.poll() is not None, args.timeout):
            print(f"error: the node did not connect within {args.timeout:.0f} s; see {node_log}")
            return 1
        if process.poll() is not None:
            print(f"error: the node exited with code {process.returncode}:\n{node_log.read_text()[-2000:]}")
            return 1
        frames, keys = [], []
        period = 1.0 / args.rate
        start_ns = time.time_ns()
        # One frame first, re-sent until answered, so the best-effort subscription has matched us.
        warm_up = image_msg(read_rgb(pairs[0][0]), "bgr8", start_ns - 1_000_000_000, "camera_optical_frame")
        if not publish_until_answered(executor, client, warm_up, OUTPUTS, timeout=args.timeout):
            print(f"error: no answer to a warm-up frame within {args.timeout:.0f} s; see {node_log}")
            return 1
        for index, (image_path, label_path) in enumerate(tqdm(pairs, desc="publishing", unit="frame")):
            rgb = read_rgb(image_path)
            msg = image_msg(rgb, "bgr8", start_ns + index * int(period * 1e9), "camera_optical_frame")
            frames.append((image_path, label_path, rgb))
            keys.append(stamp_key(msg.header))
            client.publish(msg)
            spin_until(executor, lambda: False, period)
        spin_until(executor, lambda: all(client.complete(k, OUTPUTS) for k in keys), args.timeout)
        elapsed = time.monotonic() - min(client.sent_at.values())
        with client.lock:
            client.diagnostics.clear()  # the next report counts every frame above
        spin_until(executor, lambda: bool(client.last_diagnostic_values()), 3.0)
        summary = _write_outputs(client, frames, keys, info, out)
        summary["wall_time_s"] = round(elapsed, 2)
        summary["node_diagnostics"] = client.last_diagnostic_values()
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()
        exit_code = stop_node(process)
    summary["node_exit_code"] = exit_code
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary, out)
    return 0 if summary["frames_received"] == summary["frames_sent"] and exit_code == 0 else 1


def _write_outputs(client, frames, keys, info, out: Path) -> dict:
    confusion = ConfusionMatrix(info.num_classes)
    latencies, received, labelled = [], 0, 0
    for (image_path, label_path, rgb), key in zip(frames, keys):
        entry = client.received.get(key)
        if entry is None or "class_mask" not in entry.outputs:
            continue
        received += 1
        stem = Path(image_path).stem
        classes = image_to_array(entry.outputs["class_mask"])
        cv2.imwrite(str(out / f"{stem}_class_mask.png"), classes)
        for name in ("color_mask", "overlay"):
            if name in entry.outputs:
                cv2.imwrite(str(out / f"{stem}_{name}.png"),
                            cv2.cvtColor(image_to_array(entry.outputs[name]), cv2.COLOR_RGB2BGR))
        latency = client.latency_ms(key)
        if latency is not None:
            latencies.append(latency)
        if label_path is not None:
            confusion.update(read_label(label_path, info.num_classes), classes)
            labelled += 1
    summary = {"frames_sent": len(frames), "frames_received": received, "frames_labelled": labelled,
               "latency_ms_p50": float(np.percentile(latencies, 50)) if latencies else None,
               "latency_ms_max": float(np.max(latencies)) if latencies else None}
    if labelled:
        summary.update({k: v for k, v in confusion.summary(info.class_names).items() if k != "confusion_matrix"})
    return summary


def _print_summary(summary: dict, out: Path) -> None:
    print(f"\nframes: sent {summary['frames_sent']}, received {summary['frames_received']}")
    if summary.get("latency_ms_p50") is not None:
        print(f"publish -> class_mask latency over DDS: p50 {summary['latency_ms_p50']:.1f} ms, "
              f"max {summary['latency_ms_max']:.1f} ms")
    diag = summary.get("node_diagnostics") or {}
    if diag:
        print(f"node: backend {diag.get('backend')}, {diag.get('processed')} processed, "
              f"{diag.get('dropped')} dropped, {diag.get('rejected')} rejected, "
              f"in-node latency p50 {diag.get('latency_p50_ms')} ms")
    if "miou" in summary:
        print(f"mIoU on these {summary['frames_labelled']} frames: {summary['miou']:.3f} "
              f"(pixel accuracy {summary['pixel_accuracy']:.3f})")
    print(f"masks, colour masks and overlays: {out}/  summary: {out / 'summary.json'}")
