"""End-to-end latency of the node over DDS: time from publishing an Image to receiving its class
mask, one frame in flight at a time (so the figure is latency, not queueing)."""

import os
import random
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from tqdm import tqdm

from ..bench import percentiles
from .client import SegmentationClient, image_msg, publish_until_answered, spin_until, stamp_key, start_node, \
    stop_node, use_large_image_dds_profile


@contextmanager
def private_dds_domain():
    """A random ROS_DOMAIN_ID with localhost-only discovery for the node and this process, so a
    measurement neither sees nor disturbs other ROS traffic; the environment is restored after."""
    env = {"ROS_DOMAIN_ID": str(random.randint(150, 230)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class NodeSession:
    process: subprocess.Popen
    client: SegmentationClient
    executor: SingleThreadedExecutor
    start_ns: int                     # stamp of the warm-up frame; later frames count from it
    exit_code: Optional[int] = None   # set when the session ends


def node_parameters(model_path, backend: str, input_size: Optional[Tuple[int, int]] = None, **extra) -> dict:
    """The node's parameters for a measurement; ``input_size`` (height, width) as in ``fcnseg bench``."""
    params = {"model_path": str(model_path), "backend": backend, "device": "cpu", **extra}
    if input_size is not None:
        params["network_image_height"], params["network_image_width"] = input_size
    return params


@contextmanager
def answering_node(camera: str, params: dict, rgb: np.ndarray, log_path: Optional[str], timeout: float,
                   outputs: Sequence[str] = ("class_mask",)):
    """The node as a process in /<camera> and a client subscribed to ``outputs`` whose warm-up frame
    it has answered (so the model is loaded and DDS matched before anything is timed); stopped on
    leaving."""
    topic = f"/{camera}/image_raw"
    process = start_node(params, remaps={"image": topic, "__ns": f"/{camera}"}, log_path=log_path)
    use_large_image_dds_profile()
    rclpy.init()
    client = SegmentationClient(topic, f"/{camera}/segmentation", outputs, name=f"fcnseg_{camera}")
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    session = NodeSession(process, client, executor, time.time_ns())
    try:
        if not spin_until(executor, lambda: client.connected() or process.poll() is not None, timeout) \
                or process.poll() is not None:
            raise RuntimeError(f"the node did not start (see {log_path})")
        warm_up = image_msg(rgb, "bgr8", session.start_ns, camera)
        if not publish_until_answered(executor, client, warm_up, outputs, timeout=timeout):
            raise RuntimeError("the node did not answer")
        yield session
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()
        session.exit_code = stop_node(process)


@private_dds_domain()
def bench_node_over_dds(model_path, rgb: np.ndarray, backend: str = "onnxruntime", device: str = "cpu",
                        frames: int = 50, timeout: float = 60.0, log_path: str = None,
                        input_size: Optional[Tuple[int, int]] = None,
                        outputs: Sequence[str] = ("class_mask",), bare_frame: Optional[Callable[[], float]] = None,
                        rounds: int = 5, precision: str = "auto", calibration_data: Optional[str] = None,
                        test_time_flip: bool = False):
    """Publish -> class_mask latency, and publish -> last of ``outputs`` where more are subscribed
    (the node computes overlay and confidence only for subscribers, so they cost latency too).

    ``bare_frame`` (one pass of the same work without ROS, returning its ms) is timed in ``rounds``
    blocks alternating with the node's, so both see the same machine: on a shared VM whose speed
    drifts by tens of percent over minutes, timing them minutes apart measures the drift."""
    latencies, all_latencies, bare = [], [], []
    blocks = np.array_split(np.arange(1, frames + 1), max(1, min(rounds, frames)))
    # an empty -p value does not parse: calibration_data only when given
    params = node_parameters(model_path, backend, input_size, device=device, precision=precision,
                             test_time_flip=test_time_flip,
                             **({"calibration_data": str(calibration_data)} if calibration_data else {}))
    with answering_node("bench_camera", params, rgb, log_path, timeout, outputs) as node, \
            tqdm(total=frames, desc="node over DDS", unit="frame") as progress:
        for block in blocks:
            for index in block:
                msg = image_msg(rgb, "bgr8", node.start_ns + int(index) * 1_000_000, "bench")
                key = stamp_key(msg.header)
                node.client.publish(msg)
                if spin_until(node.executor, lambda: node.client.complete(key, outputs), 10.0):
                    latencies.append(node.client.latency_ms(key))
                    all_latencies.append(max(node.client.latency_ms(key, name) for name in outputs))
                progress.update()
            if bare_frame is not None:
                bare.extend(bare_frame() for _ in block)
        spin_until(node.executor, lambda: False, 1.5)
        node_stats = node.client.last_diagnostic_values()
    if not latencies:
        raise RuntimeError(f"no frame was answered within 10 s (see {log_path or 'the node log'})")
    result = {"frames": len(latencies), "lost": frames - len(latencies), "outputs": list(outputs),
              "latency": percentiles(latencies), "latency_all_outputs": percentiles(all_latencies),
              "node_diagnostics": node_stats}
    if bare:
        result["bare_interleaved"] = percentiles(bare)
        result["rounds"] = len(blocks)
    return result


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@private_dds_domain()
def soak_node(model_path, rgb: np.ndarray, rate_hz: float, frames: int, backend: str = "auto",
              log_path: str = None, timeout: float = 60.0, input_size: Optional[Tuple[int, int]] = None,
              busy_wait: bool = False):
    """Publish ``frames`` images at ``rate_hz`` without waiting for answers (an overload when the
    rate beats inference), sampling the node's resident memory; returns counts, latency of the
    masks that came back, and the memory curve. ``busy_wait``: the node's inference_busy_wait."""
    params = node_parameters(model_path, backend, input_size, diagnostics_period=1.0, inference_busy_wait=busy_wait)
    memory = []  # (seconds since start, MB)
    with answering_node("soak_camera", params, rgb, log_path, timeout) as node:
        template = image_msg(rgb, "bgr8", node.start_ns, "soak")
        period = 1.0 / rate_hz
        started = time.monotonic()
        memory.append((0.0, resident_mb(node.process.pid)))
        for index in tqdm(range(1, frames + 1), desc=f"soak at {rate_hz:g} Hz", unit="frame"):
            template.header.stamp.sec, template.header.stamp.nanosec = divmod(node.start_ns + index * 1000,
                                                                              1_000_000_000)
            node.client.publish(template)
            target = started + index * period
            while True:
                node.executor.spin_once(timeout_sec=max(0.0, min(0.01, target - time.monotonic())))
                if time.monotonic() >= target:
                    break
            if index % max(1, int(rate_hz)) == 0:
                memory.append((time.monotonic() - started, resident_mb(node.process.pid)))
        publishing_s = time.monotonic() - started
        spin_until(node.executor, lambda: False, 2.5)  # the last frames' masks
        memory.append((time.monotonic() - started, resident_mb(node.process.pid)))
        node_stats = node.client.last_diagnostic_values()
    warm_up_key = divmod(node.start_ns, 1_000_000_000)
    keys = [k for k in node.client.sent_at if k != warm_up_key]
    latency_curve = [(node.client.sent_at[k] - started, v) for k in keys
                     if (v := node.client.latency_ms(k)) is not None]  # (seconds since start, ms)
    latencies = [v for _, v in latency_curve]
    # Memory after the first 10% of the run, so allocator warm-up is not counted as growth.
    settled = memory[min(len(memory) - 1, max(1, len(memory) // 10))][1]
    # Masks per second of publishing: at a rate the node keeps up with, this is the rate itself.
    return {"frames_sent": frames, "masks_received": len(latencies), "rate_hz": rate_hz,
            "duration_s": publishing_s, "processed_fps": len(latencies) / publishing_s,
            "answered_fraction": len(latencies) / frames,
            "latency_ms": percentiles(latencies),
            "rss_mb": {"start": memory[0][1], "settled": settled, "end": memory[-1][1],
                       "growth_percent_after_settling": 100 * (memory[-1][1] - settled) / settled},
            "memory_curve": memory, "latency_curve": latency_curve, "node_diagnostics": node_stats,
            "node_exit_code": node.exit_code}


def plot_soak(result, path) -> None:
    """Node memory and publish -> mask latency over the run, one above the other."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory_ax, latency_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    times, mb = zip(*result["memory_curve"])
    memory_ax.plot(times, mb, marker=".")
    memory_ax.set_ylabel("node resident memory (MB)")
    memory_ax.set_ylim(0, max(mb) * 1.2)
    memory_ax.set_title(f"{result['frames_sent']} frames at {result['rate_hz']:g} Hz: {result['masks_received']} "
                        f"masks, RSS {result['rss_mb']['settled']:.0f} -> {result['rss_mb']['end']:.0f} MB")
    if result["latency_curve"]:
        sent, latency = zip(*result["latency_curve"])
        latency_ax.plot(sent, latency, ".", markersize=2)
        latency_ax.set_ylim(0, max(latency) * 1.2)
    latency_ax.set_ylabel("publish -> mask (ms)")
    latency_ax.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
