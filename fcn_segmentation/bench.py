"""``fcnseg bench``: per-stage latency of every available backend at 480x360, in one run, plus
model GFLOPs against the machine's measured matrix-multiply peak. The node's end-to-end latency
over DDS is measured by ``ros/bench_dds.py`` and merged into the same report."""

import logging
import time
from typing import Dict, List, Optional

import numpy as np

from .confidence import DEFAULT_STRIDE as NODE_SCORES_STRIDE
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
    preprocess, infer + argmax at network size (and the scores the node's confidence monitor samples,
    every ``NODE_SCORES_STRIDE``-th pixel's), nearest upsample + palette lookup, and (when ROS is
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
        _, network_classes = self.backend.segment(batch, NODE_SCORES_STRIDE)
        t3 = time.perf_counter()
        classes = resize_nearest(network_classes, (self.height, self.width))
        colors = color_mask(classes, self.lut) if self.colors else None
        t4 = time.perf_counter()
        if self.message_builder is not None:
            self.message_builder(classes, colors)
        t5 = time.perf_counter()
        marks = (t0, t1, t2, t3, t4, t5)
        return {stage: (end - start) * 1e3 for stage, start, end in zip(STAGES, marks, marks[1:])}


def time_in_turns(pipelines: List[BarePipeline], frames: int, rounds: int, warmup: int,
                  description: str) -> List[List[Dict[str, float]]]:
    """Each pipeline's ``frames`` runs (stage -> ms), after ``warmup`` untimed ones: the pipelines take
    turns in ``rounds`` rounds, so a VM whose speed drifts slows them all alike."""
    from tqdm import tqdm

    for pipeline in pipelines:
        for _ in range(warmup):
            pipeline.run_once()
    runs: List[List[Dict[str, float]]] = [[] for _ in pipelines]
    with tqdm(total=frames * len(pipelines), desc=description, unit="frame") as bar:
        for round_index in range(rounds):
            share = frames // rounds + (1 if round_index < frames % rounds else 0)
            for pipeline, timed in zip(pipelines, runs):
                timed.extend(pipeline.run_once() for _ in range(share))
                bar.update(share)
    return runs


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


# (label, backend, device, precision): every configuration ``fcnseg bench`` times, fastest kinds first
BENCH_CONFIGURATIONS = (
    ("tensorrt", "tensorrt", "cuda", "fp32"),
    ("tensorrt-fp16", "tensorrt", "cuda", "fp16"),
    ("onnxruntime-cuda", "onnxruntime", "cuda", "fp32"),
    ("torch-cuda", "torch", "cuda", "fp32"),
    ("torch-cuda-fp16", "torch", "cuda", "fp16"),
    ("openvino-fp32", "openvino", "cpu", "fp32"),
    ("openvino-bf16", "openvino", "cpu", "bf16"),
    ("openvino-int8", "openvino", "cpu", "int8"),
    ("onnxruntime-cpu", "onnxruntime", "cpu", "fp32"),
    ("onnxruntime-cpu-int8", "onnxruntime", "cpu", "int8"),
    ("torch-cpu", "torch", "cpu", "fp32"),
)
REFERENCE = "onnxruntime-cpu"  # the CPU pipeline before OpenVINO: the speed-ups are against it


def available_backends(model_path, int8_onnx: Optional[str] = None, input_size=None, threads: int = 0,
                       calibration_data=None, test_time_flip: bool = False):
    """(label, backend) for every configuration that starts here; reasons for the others (absent here,
    or failed to start: one backend's failure must not end the benchmark of the rest). CPU backends
    run as the node runs them by default: ``threads`` threads, no busy waiting. INT8 runs
    ``int8_onnx`` when given, else the package's own quantization (selection.py)."""
    from .backends import BackendError, create_backend

    found, skipped = [], []
    for label, name, device, precision in BENCH_CONFIGURATIONS:
        onnx = int8_onnx if precision == "int8" and device == "cpu" else None
        try:
            backend, _ = create_backend(name, model_path, device=device, onnx_path=onnx, input_size=input_size,
                                        precision=precision, cpu_threads=threads, cpu_busy_wait=False,
                                        calibration_data=calibration_data, scores_stride=NODE_SCORES_STRIDE,
                                        test_time_flip=test_time_flip)
            found.append((label, backend))
        except BackendError as exc:
            skipped.append(f"{label}: {exc}")
    return found, skipped


def run_bench(model_path, image_path, frames: int = 50, warmup: int = 5, int8_onnx: Optional[str] = None,
              threads: Optional[int] = None, input_size=None, operators: bool = False, rounds: int = 3,
              calibration_data=None, test_time_flip: bool = False) -> Dict:
    """``rounds``: the backends take turns, ``frames / rounds`` frames each per round, so a VM whose
    speed drifts slows them all alike. ``operators``: also profile ONNX Runtime per operator type and
    node (after the timed runs)."""
    import os

    import torch

    from .cpu_info import cpu_features, describe_cpu
    from .model.model_file import load_model_file

    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    rgb = read_rgb(image_path)
    model, info = load_model_file(model_path)
    if input_size:
        info.input_height, info.input_width = input_size
    rounds = max(1, min(rounds, frames))
    report = {"model": str(model_path), "image_size": [rgb.shape[1], rgb.shape[0]],
              "network_input_size": [info.input_width, info.input_height], "test_time_flip": test_time_flip,
              "frames": frames, "rounds": rounds,
              "cpu_threads": threads, "cpu_count": os.cpu_count(), "cpu": cpu_features(), "cpu_description":
              describe_cpu(), "gflops_per_frame":
              model_gflops(model, info.input_height, info.input_width) * (2 if test_time_flip else 1),
              "matmul_peak_gflops": matmul_peak_gflops(threads), "backends": {}}
    found, skipped = available_backends(model_path, int8_onnx, input_size, threads, calibration_data, test_time_flip)
    report["skipped_backends"] = skipped
    builder = ros_message_builder()
    pipelines = {label: BarePipeline(backend, rgb, builder) for label, backend in found}
    runs = dict(zip(pipelines, time_in_turns(list(pipelines.values()), frames, rounds, warmup, "timing backends")))
    for label, backend in found:
        result = {stage: percentiles([run[stage] for run in runs[label]]) for stage in STAGES}
        result["total"] = percentiles([sum(run.values()) for run in runs[label]])
        result["fps"] = 1000.0 / result["total"]["mean"]
        result["backend"] = backend.describe()
        result["device"] = backend.device
        result["achieved_gflops"] = report["gflops_per_frame"] / (result["inference"]["p50"] / 1e3)
        if backend.device == "cpu":  # the matmul peak is the CPU's: a GPU's share of it means nothing
            result["percent_of_cpu_peak"] = 100 * result["achieved_gflops"] / report["matmul_peak_gflops"]
        if operators and hasattr(backend, "operator_profile"):
            result["operator_profile"] = backend.operator_profile(pipelines[label].preprocess(rgb), frames)
        report["backends"][label] = result
    reference = report["backends"].get(REFERENCE)
    if reference:
        report["speedup_vs_onnxruntime_cpu_fp32"] = {label: r["fps"] / reference["fps"]
                                                     for label, r in report["backends"].items()}
    return report


def format_report(report: Dict) -> str:
    lines = [f"model {report['model']}: {report['gflops_per_frame']:.2f} GFLOP per frame at "
             f"{report['network_input_size'][0]}x{report['network_input_size'][1]}"
             f"{' with test-time flip' if report.get('test_time_flip') else ''}; images "
             f"{report['image_size'][0]}x{report['image_size'][1]}; {report['cpu_threads']} CPU threads; "
             f"measured matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s",
             f"CPU: {report['cpu_description']}; backends timed in turn over {report['rounds']} rounds",
             "",
             "| backend | " + " | ".join(f"{s} p50/p95 ms" for s in STAGES)
             + " | total p50/p95 ms | fps | vs onnxruntime-cpu | GFLOP/s (% of CPU peak) |",
             "|---" * (len(STAGES) + 5) + "|"]
    speedups = report.get("speedup_vs_onnxruntime_cpu_fp32", {})
    for label, r in report["backends"].items():
        cells = [f"{r[s]['p50']:.2f} / {r[s]['p95']:.2f}" for s in STAGES]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r['total']['p50']:.1f} / {r['total']['p95']:.1f} "
                     f"| {r['fps']:.1f} | {f'{speedups[label]:.2f}x' if label in speedups else 'n/a'} "
                     f"| {r['achieved_gflops']:.0f} "
                     + (f"({r['percent_of_cpu_peak']:.0f}%) |" if "percent_of_cpu_peak" in r else "(GPU) |"))
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
