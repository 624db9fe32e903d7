"""``fcnseg bench``: per-stage latency of every available backend at 480x360, in one run, plus
model GFLOPs against the machine's measured matrix-multiply peak. The node's end-to-end latency
over DDS is measured by ``ros/bench_dds.py`` and merged into the same report."""

import logging
import time
from typing import Dict, List, Optional

import numpy as np

from .data import read_rgb
from .frames import decode_raw, encode_raw
from .postprocess import resize_nearest
from .visualize import color_mask, palette_lut

logger = logging.getLogger(__name__)
STAGES = ("decode", "preprocess", "inference", "postprocess", "publish")


def percentiles(values_ms: List[float]) -> Dict[str, float]:
    """p50, p95, mean and max of timings in ms; NaN for each when there are none."""
    values = np.asarray(values_ms, np.float64)
    if not values.size:
        return dict.fromkeys(("p50", "p95", "mean", "max"), float("nan"))
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
            "mean": float(values.mean()), "max": float(values.max())}


def model_gflops(model, height: int, width: int) -> float:
    """FLOPs of one forward pass (multiply and add counted separately), in GFLOP."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.eval()(torch.zeros(1, 3, height, width))
    return counter.get_total_flops() / 1e9


def matmul_peak_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matrix-multiply rate on ``threads`` cores: the practical peak."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    elapsed = (time.perf_counter() - start) / repeats
    torch.set_num_threads(previous)
    return 2 * size ** 3 / elapsed / 1e9


class BarePipeline:
    """The node's per-frame work without ROS transport, with one backend: decode a bgr8 buffer,
    preprocess, infer + argmax at network size, nearest upsample + palette lookup, and (when ROS is
    importable) build the messages. ``colors=False`` stops at the class mask: the work the node does
    before it publishes the class mask, the like-for-like baseline of its publish -> class mask latency."""

    def __init__(self, backend, rgb: np.ndarray, message_builder=None, colors: bool = True):
        from .preprocess import Preprocessor

        info = backend.info
        self.backend, self.message_builder, self.colors = backend, message_builder, colors
        self.height, self.width = rgb.shape[:2]
        self.buffer = encode_raw(rgb, "bgr8")
        self.preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)
        self.lut = palette_lut(info.palette)

    def run_once(self) -> Dict[str, float]:
        """Milliseconds of each stage in ``STAGES`` for one frame."""
        t0 = time.perf_counter()
        image = decode_raw("bgr8", self.height, self.width, self.width * 3, self.buffer)
        t1 = time.perf_counter()
        batch = self.preprocess(image)
        t2 = time.perf_counter()
        _, network_classes = self.backend.segment(batch)
        t3 = time.perf_counter()
        classes = resize_nearest(network_classes, (self.height, self.width))
        colors = color_mask(classes, self.lut) if self.colors else None
        t4 = time.perf_counter()
        if self.message_builder is not None:
            self.message_builder(classes, colors)
        t5 = time.perf_counter()
        marks = (t0, t1, t2, t3, t4, t5)
        return {stage: (end - start) * 1e3 for stage, start, end in zip(STAGES, marks, marks[1:])}


def bench_pipeline(pipeline: BarePipeline, frames: int, warmup: int) -> Dict:
    """Per-stage and total latency of ``pipeline`` over ``frames`` after ``warmup``."""
    for _ in range(warmup):
        pipeline.run_once()
    runs = [pipeline.run_once() for _ in range(frames)]
    result = {stage: percentiles([run[stage] for run in runs]) for stage in STAGES}
    result["total"] = percentiles([sum(run.values()) for run in runs])
    result["fps"] = 1000.0 / result["total"]["mean"]
    return result


def ros_message_builder():
    """Builds the class-mask and colour-mask Images as the node does; None without sensor_msgs."""
    try:
        from std_msgs.msg import Header

        from .ros.conversions import array_to_image
    except ImportError:
        return None
    header = Header()
    return lambda classes, colors: (array_to_image(classes, "mono8", header),
                                    None if colors is None else array_to_image(colors, "rgb8", header))


def available_backends(model_path, int8_onnx: Optional[str] = None, input_size=None):
    """(label, backend) for every backend that starts here; reasons for the others (absent here, or
    failed to start: one backend's failure must not end the benchmark of the rest)."""
    from .backends import BackendError, create_backend

    found, skipped = [], []
    for label, name, device, precision, onnx in (
            ("tensorrt", "tensorrt", "cuda", "fp32", None),
            ("tensorrt-fp16", "tensorrt", "cuda", "fp16", None),
            ("onnxruntime-cuda", "onnxruntime", "cuda", "fp32", None),
            ("torch-cuda", "torch", "cuda", "fp32", None),
            ("torch-cuda-fp16", "torch", "cuda", "fp16", None),
            ("onnxruntime-cpu", "onnxruntime", "cpu", "fp32", None),
            ("onnxruntime-cpu-int8", "onnxruntime", "cpu", "fp32", int8_onnx),
            ("torch-cpu", "torch", "cpu", "fp32", None)):
        if label.endswith("int8") and not int8_onnx:
            skipped.append(f"{label}: no --int8-onnx given (make one with `fcnseg quantize`)")
            continue
        try:
            backend, _ = create_backend(name, model_path, device=device, onnx_path=onnx, input_size=input_size,
                                        precision=precision)
            found.append((label, backend))
        except BackendError as exc:
            skipped.append(f"{label}: {exc}")
    return found, skipped


def run_bench(model_path, image_path, frames: int = 50, warmup: int = 5, int8_onnx: Optional[str] = None,
              threads: Optional[int] = None, input_size=None, operators: bool = False) -> Dict:
    """``operators``: also profile ONNX Runtime per operator type and node (after the timed runs)."""
    import os

    import torch
    from tqdm import tqdm

    from .model.model_file import load_model_file

    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    rgb = read_rgb(image_path)
    model, info = load_model_file(model_path)
    if input_size:
        info.input_height, info.input_width = input_size
    report = {"model": str(model_path), "image_size": [rgb.shape[1], rgb.shape[0]],
              "network_input_size": [info.input_width, info.input_height], "frames": frames,
              "cpu_threads": threads, "cpu_count": os.cpu_count(),
              "gflops_per_frame": model_gflops(model, info.input_height, info.input_width),
              "matmul_peak_gflops": matmul_peak_gflops(threads), "backends": {}}
    found, skipped = available_backends(model_path, int8_onnx, input_size)
    report["skipped_backends"] = skipped
    builder = ros_message_builder()
    for label, backend in tqdm(found, desc="backends", unit="backend"):
        pipeline = BarePipeline(backend, rgb, builder)
        result = bench_pipeline(pipeline, frames, warmup)
        result["backend"] = backend.describe()
        result["device"] = backend.device
        result["achieved_gflops"] = report["gflops_per_frame"] / (result["inference"]["p50"] / 1e3)
        if backend.device == "cpu":  # the matmul peak is the CPU's: a GPU's share of it means nothing
            result["percent_of_cpu_peak"] = 100 * result["achieved_gflops"] / report["matmul_peak_gflops"]
        if operators and hasattr(backend, "operator_profile"):
            result["operator_profile"] = backend.operator_profile(pipeline.preprocess(rgb), frames)
        report["backends"][label] = result
    if "torch-cpu" in report["backends"] and "onnxruntime-cpu" in report["backends"]:
        report["onnxruntime_vs_torch_cpu_speedup"] = (report["backends"]["onnxruntime-cpu"]["fps"]
                                                      / report["backends"]["torch-cpu"]["fps"])
    if "onnxruntime-cpu-int8" in report["backends"] and "onnxruntime-cpu" in report["backends"]:
        report["int8_vs_fp32_speedup"] = (report["backends"]["onnxruntime-cpu-int8"]["fps"]
                                          / report["backends"]["onnxruntime-cpu"]["fps"])
    return report


def format_report(report: Dict) -> str:
    lines = [f"model {report['model']}: {report['gflops_per_frame']:.2f} GFLOP per frame at "
             f"{report['network_input_size'][0]}x{report['network_input_size'][1]}; images "
             f"{report['image_size'][0]}x{report['image_size'][1]}; {report['cpu_threads']} CPU threads; "
             f"measured matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s",
             "",
             "| backend | " + " | ".join(f"{s} p50/p95 ms" for s in STAGES)
             + " | total p50/p95 ms | fps | GFLOP/s (% of CPU peak) |",
             "|---" * (len(STAGES) + 4) + "|"]
    for label, r in report["backends"].items():
        cells = [f"{r[s]['p50']:.2f} / {r[s]['p95']:.2f}" for s in STAGES]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r['total']['p50']:.1f} / {r['total']['p95']:.1f} "
                     f"| {r['fps']:.1f} | {r['achieved_gflops']:.0f} "
                     + (f"({r['percent_of_cpu_peak']:.0f}%) |" if "percent_of_cpu_peak" in r else "(GPU) |"))
    for key, text in (("onnxruntime_vs_torch_cpu_speedup", "ONNX Runtime CPU vs torch CPU eager"),
                      ("int8_vs_fp32_speedup", "ONNX Runtime INT8 vs FP32")):
        if key in report:
            lines.append(f"\n{text}: {report[key]:.2f}x frames/s")
    dds = report.get("node_over_dds")
    if dds:
        lines.append(f"\nnode over DDS ({dds['backend']}): publish -> class_mask p50 {dds['latency']['p50']:.1f} ms, "
                     f"p95 {dds['latency']['p95']:.1f} ms over {dds['frames']} frames; bare pipeline p50 "
                     f"{dds['bare_pipeline_p50_ms']:.1f} ms (timed in {dds['rounds']} blocks between the "
                     "node's); ROS overhead "
                     f"{dds['overhead_percent']:+.1f}%")
        if len(dds.get("outputs", ())) > 1:
            every = dds["latency_all_outputs"]
            lines.append(f"  with {', '.join(dds['outputs'])} subscribed: publish -> last of them p50 "
                         f"{every['p50']:.1f} ms, p95 {every['p95']:.1f} ms")
    for label, r in report["backends"].items():
        profile = r.get("operator_profile")
        if profile:
            total = profile["total_ms"]
            lines.append(f"\n{label} operators, ms per frame (ONNX Runtime profiler, {total:.1f} ms in all): "
                         + ", ".join(f"{op} {ms:.2f} ({100 * ms / total:.0f}%)"
                                     for op, ms in list(profile["operators_ms"].items())[:6]))
            lines.append("  slowest nodes: " + ", ".join(f"{n['node']} ({n['operator']}) {n['ms']:.2f}"
                                                         for n in profile["slowest_nodes_ms"]))
    for reason in report.get("skipped_backends", []):
        lines.append(f"not measured: {reason}")
    return "\n".join(lines)
