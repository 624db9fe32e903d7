"""End-to-end latency of the node over DDS: time from publishing an Image to receiving its class
mask, one frame in flight at a time (so the figure is latency, not queueing)."""

import os
import random
import time
from contextlib import contextmanager

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from tqdm import tqdm

from .client import SegmentationClient, image_msg, publish_until_answered, spin_until, stamp_key, start_node, \
    stop_node


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


@private_dds_domain()
def bench_node_over_dds(model_path, rgb: np.ndarray, backend: str = "onnxruntime", frames: int = 50,
                        timeout: float = 60.0, log_path: str = None):
    topic = "/bench_camera/image_raw"
    process = start_node({"model_path": str(model_path), "backend": backend, "device": "cpu",
                          "publish_drivable_grid": False},
                         remaps={"image": topic, "__ns": "/bench_camera"}, log_path=log_path)
    rclpy.init()
    client = SegmentationClient(topic, "/bench_camera/segmentation", ("class_mask",), name="fcnseg_bench")
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    latencies = []
    try:
        if not spin_until(executor, lambda: client.connected() or process.poll() is not None, timeout) \
                or process.poll() is not None:
            raise RuntimeError(f"the node did not start (see {log_path})")
        start = time.time_ns()
        if not publish_until_answered(executor, client, image_msg(rgb, "bgr8", start, "bench"), timeout=timeout):
            raise RuntimeError("the node did not answer")
        for index in tqdm(range(1, frames + 1), desc="node over DDS", unit="frame"):
            msg = image_msg(rgb, "bgr8", start + index * 1_000_000, "bench")
            key = stamp_key(msg.header)
            client.publish(msg)
            if spin_until(executor, lambda: client.complete(key, ("class_mask",)), 10.0):
                latencies.append(client.latency_ms(key))
        spin_until(executor, lambda: False, 1.5)
        node_stats = client.last_diagnostic_values()
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()
        stop_node(process)
    values = np.asarray(latencies)
    return {"frames": len(latencies), "lost": frames - len(latencies),
            "latency": {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
                        "max": float(values.max())},
            "node_diagnostics": node_stats}


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@private_dds_domain()
def soak_node(model_path, rgb: np.ndarray, rate_hz: float, frames: int, backend: str = "onnxruntime",
              log_path: str = None, timeout: float = 60.0):
    """Publish ``frames`` images at ``rate_hz`` without waiting for answers (an overload when the
    rate beats inference), sampling the node's resident memory; returns counts, latency of the
    masks that came back, and the memory curve."""
    topic = "/soak_camera/image_raw"
    process = start_node({"model_path": str(model_path), "backend": backend, "device": "cpu",
                          "diagnostics_period": 1.0}, remaps={"image": topic, "__ns": "/soak_camera"},
                         log_path=log_path)
    rclpy.init()
    client = SegmentationClient(topic, "/soak_camera/segmentation", ("class_mask",), name="fcnseg_soak")
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    memory = []  # (seconds since start, MB)
    try:
        if not spin_until(executor, lambda: client.connected() or process.poll() is not None, timeout) \
                or process.poll() is not None:
            raise RuntimeError(f"the node did not start (see {log_path})")
        start_ns = time.time_ns()
        if not publish_until_answered(executor, client, image_msg(rgb, "bgr8", start_ns, "soak"), timeout=timeout):
            raise RuntimeError("the node did not answer")
        template = image_msg(rgb, "bgr8", start_ns, "soak")
        period = 1.0 / rate_hz
        started = time.monotonic()
        memory.append((0.0, resident_mb(process.pid)))
        for index in tqdm(range(1, frames + 1), desc=f"soak at {rate_hz:g} Hz", unit="frame"):
            template.header.stamp.sec, template.header.stamp.nanosec = divmod(start_ns + index * 1000, 1_000_000_000)
            client.publish(template)
            target = started + index * period
            while True:
                executor.spin_once(timeout_sec=max(0.0, min(0.01, target - time.monotonic())))
                if time.monotonic() >= target:
                    break
            if index % max(1, int(rate_hz)) == 0:
                memory.append((time.monotonic() - started, resident_mb(process.pid)))
        spin_until(executor, lambda: False, 2.5)
        memory.append((time.monotonic() - started, resident_mb(process.pid)))
        node_stats = client.last_diagnostic_values()
        elapsed = time.monotonic() - started
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()
        exit_code = stop_node(process)
    warm_up_key = divmod(start_ns, 1_000_000_000)
    keys = [k for k in client.sent_at if k != warm_up_key]
    latencies = [v for v in (client.latency_ms(k) for k in keys) if v is not None]
    values = np.asarray(latencies) if latencies else np.asarray([np.nan])
    # Memory after the first 10% of the run, so allocator warm-up is not counted as growth.
    settled = memory[min(len(memory) - 1, max(1, len(memory) // 10))][1]
    return {"frames_sent": frames, "masks_received": len(latencies), "rate_hz": rate_hz,
            "duration_s": elapsed, "processed_fps": len(latencies) / elapsed,
            "latency_ms": {"p50": float(np.nanpercentile(values, 50)), "p95": float(np.nanpercentile(values, 95)),
                           "max": float(np.nanmax(values))},
            "rss_mb": {"start": memory[0][1], "settled": settled, "end": memory[-1][1],
                       "growth_percent_after_settling": 100 * (memory[-1][1] - settled) / settled},
            "memory_curve": memory, "node_diagnostics": node_stats, "node_exit_code": exit_code}


def plot_soak(result, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, mb = zip(*result["memory_curve"])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(times, mb, marker=".")
    ax.set_xlabel("seconds")
    ax.set_ylabel("node resident memory (MB)")
    ax.set_ylim(0, max(mb) * 1.2)
    ax.set_title(f"{result['frames_sent']} frames at {result['rate_hz']:g} Hz: {result['masks_received']} masks, "
                 f"RSS {result['rss_mb']['settled']:.0f} -> {result['rss_mb']['end']:.0f} MB")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
