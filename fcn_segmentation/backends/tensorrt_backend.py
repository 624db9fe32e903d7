"""TensorRT backend (TensorRT 10 Python API): builds an engine from the exported ONNX, caches it
on disk keyed by everything that makes an engine invalid, and runs it on a CUDA stream with
pre-allocated device buffers (torch tensors serve as the CUDA allocator and stream)."""

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Callable, Iterable, Optional, Tuple

import numpy as np

from ..files import private_temp_path
from .base import Backend, BackendError, BackendUnavailable, sampled

logger = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_MAGIC = b"FCNSEG-TRT1\n"


def require_tensorrt():
    """(tensorrt, torch) where TensorRT can run, else BackendUnavailable saying why: checked before
    anything is exported for it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt is not importable ({exc})") from exc
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailable("the TensorRT backend uses torch for CUDA buffers") from exc
    if not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA device")
    return trt, torch


def engine_cache_key(onnx_path, trt_version: str, gpu_name: str, precision: str, input_shape) -> str:
    onnx_hash = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()
    text = json.dumps({"onnx": onnx_hash, "tensorrt": trt_version, "gpu": gpu_name, "precision": precision,
                       "input_shape": list(input_shape)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_engine(path: Path, key: str, engine_bytes: bytes) -> None:
    """Engine file = magic, key line, then the serialised engine; written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_temp_path(path)  # nodes starting together may build the same engine
    tmp.write_bytes(ENGINE_MAGIC + key.encode() + b"\n" + engine_bytes)
    tmp.replace(path)


def read_engine(path: Path, key: str) -> Optional[bytes]:
    """The engine bytes if the file exists and carries ``key``; None when stale, foreign or truncated."""
    if not path.is_file():
        return None
    blob = path.read_bytes()
    header = ENGINE_MAGIC + key.encode() + b"\n"
    if not blob.startswith(header) or len(blob) == len(header):
        return None
    return blob[len(header):]


def engine_cache_problem(path: Path, key: str) -> str:
    """Why ``read_engine`` found no usable engine: for the log line that announces a rebuild."""
    if not path.is_file():
        return f"no cached engine {path}"
    with open(path, "rb") as stream:
        head = stream.read(len(ENGINE_MAGIC) + 64)
    if not head.startswith(ENGINE_MAGIC):
        return f"{path} is not an fcn_segmentation engine file"
    cached_key = head[len(ENGINE_MAGIC):].split(b"\n", 1)[0].decode(errors="replace")
    if cached_key != key:
        return (f"{path} was built for another ONNX, TensorRT version, GPU, precision or input shape "
                f"(key {cached_key}, now {key})")
    return f"{path} is truncated (no engine after its header)"


def engine_file_name(onnx_path, precision: str, gpu_name: str, input_shape) -> str:
    """One file per ONNX, precision, input size and GPU model: nodes on two kinds of GPU that share
    a cache folder keep an engine each instead of rebuilding over each other's."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    height, width = input_shape[-2:]
    return f"{Path(onnx_path).stem}.{precision}.{width}x{height}.{gpu}.engine"


class TensorRTBackend(Backend):
    name = "tensorrt"
    device = "cuda"

    def __init__(self, model, info, onnx_path, engine_cache_dir=None, precision: str = "fp32",
                 force_engine_update: bool = False,
                 calibration_images: Optional[Callable[[], Iterable[np.ndarray]]] = None):
        """``calibration_images``: a function giving preprocessed batches (``data.calibration_batches``),
        called only when an INT8 engine is built from a float ONNX; a QDQ ONNX needs none."""
        super().__init__(info)
        trt, torch = require_tensorrt()
        if precision not in PRECISIONS:
            raise BackendError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        self.trt, self.torch = trt, torch
        self.trt_logger = trt.Logger(trt.Logger.WARNING)
        input_shape = (1, 3, info.input_height, info.input_width)
        gpu_name = torch.cuda.get_device_name(0)
        key = engine_cache_key(onnx_path, trt.__version__, gpu_name, precision, input_shape)
        cache_dir = Path(engine_cache_dir or Path.home() / ".cache" / "fcn_segmentation")
        self.engine_path = cache_dir / engine_file_name(onnx_path, precision, gpu_name, input_shape)
        engine_bytes = None if force_engine_update else read_engine(self.engine_path, key)
        runtime = trt.Runtime(self.trt_logger)
        self.engine = runtime.deserialize_cuda_engine(engine_bytes) if engine_bytes else None
        if self.engine is None:
            if force_engine_update:
                why = "force_engine_update is set"
            elif engine_bytes:
                why = f"{self.engine_path} does not deserialise (corrupt)"
            else:
                why = engine_cache_problem(self.engine_path, key)
            logger.warning("building TensorRT %s engine for %s on %s (takes a while once): %s", precision,
                           onnx_path, gpu_name, why)
            engine_bytes = build_engine(trt, onnx_path, precision, self.trt_logger, calibration_images,
                                        input_shape)
            write_engine(self.engine_path, key, engine_bytes)
            self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.buffers = {}
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            shape = tuple(self.engine.get_tensor_shape(name))
            self.buffers[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
        self.input_name, self.output_name = "image", "scores"
        self.host_output = torch.empty(self.buffers[self.output_name].shape, dtype=torch.float32).pin_memory()
        self.host_classes = torch.empty(self.host_output.shape[2:], dtype=torch.uint8).pin_memory()

    def _enqueue(self, batch: np.ndarray) -> None:
        """Queue the input copy and the engine on the stream (the caller is inside ``cuda.stream``)."""
        self.buffers[self.input_name].copy_(self.torch.from_numpy(batch), non_blocking=True)
        self.context.execute_async_v3(self.stream.cuda_stream)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Scores in a pinned host buffer reused by the next call (the pipeline handles one frame at a time)."""
        torch = self.torch
        with torch.cuda.stream(self.stream):
            self._enqueue(batch)
            self.host_output.copy_(self.buffers[self.output_name], non_blocking=True)
        self.stream.synchronize()
        return self.host_output.numpy()

    def segment(self, batch: np.ndarray, scores_stride: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """The argmax runs on the GPU, on the same stream: numpy's over 11 x 224 x 320 scores takes
        ~5 ms on a CPU, longer than the engine."""
        torch = self.torch
        with torch.cuda.stream(self.stream):
            self._enqueue(batch)
            scores = self.buffers[self.output_name]
            self.host_classes.copy_(scores[0].argmax(0).to(torch.uint8), non_blocking=True)
            self.host_output.copy_(scores, non_blocking=True)
        self.stream.synchronize()
        return sampled(self.host_output.numpy(), scores_stride), self.host_classes.numpy()

    def describe(self) -> str:
        return f"tensorrt (cuda, {self.engine_path.name})"


INT8_NEEDS_CALIBRATION = (
    "precision int8 from a float ONNX needs calibration images: set the node parameter calibration_data "
    "(or pass fcnseg build-engine --calibration-data DIR), or give a QDQ INT8 ONNX from `fcnseg quantize` as "
    "onnx_path, which carries its own scales")


def build_engine(trt, onnx_path, precision: str, trt_logger, calibration_images, input_shape) -> bytes:
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    # TensorRT keeps only a pointer: the monitor must outlive the build, so it stays in this frame.
    progress = make_progress_monitor(trt)
    if progress is not None:
        config.progress_monitor = progress
    from ..export import onnx_is_quantized

    quantized = onnx_is_quantized(onnx_path)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if quantized or precision == "int8":  # a QDQ graph is INT8 whatever precision says
        config.set_flag(trt.BuilderFlag.INT8)
    if precision == "int8" and not quantized:  # implicit quantization: ranges from an entropy calibrator
        if calibration_images is None:
            raise BackendError(INT8_NEEDS_CALIBRATION)
        config.int8_calibrator = make_entropy_calibrator(trt, calibration_images(), input_shape)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if progress is not None:
            progress.close()
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} (its log above says why)")
    return bytes(serialized)


def make_progress_monitor(trt):
    """A ``trt.IProgressMonitor`` that shows the engine build's phases as tqdm bars (a build takes
    minutes), or None when this TensorRT has no progress monitor (before 8.6) or tqdm is missing."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    import threading

    class TqdmProgressMonitor(trt.IProgressMonitor):
        """One bar per active phase, nested under its parent. TensorRT may call from several threads."""

        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.lock = threading.Lock()
            self.bars = {}  # phase name -> (tqdm bar, nesting depth)

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self.lock:
                depth = self.bars[parent_phase][1] + 1 if parent_phase in self.bars else 0
                bar = tqdm(total=num_steps, desc=f"TensorRT: {phase_name}", position=depth, leave=depth == 0,
                           unit="step")
                self.bars[phase_name] = (bar, depth)

        def step_complete(self, phase_name, step):
            with self.lock:
                if phase_name in self.bars:
                    bar = self.bars[phase_name][0]
                    bar.update(max(0, step + 1 - bar.n))  # ``step`` counts from 0; threads may report out of order
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with self.lock:
                bar, _ = self.bars.pop(phase_name, (None, 0))
                if bar is not None:
                    bar.close()

        def close(self):
            """Close the bars of phases that never finished (a failed build)."""
            with self.lock:
                for bar, _ in self.bars.values():
                    bar.close()
                self.bars.clear()

    return TqdmProgressMonitor()


def make_entropy_calibrator(trt, batches, input_shape):
    """IInt8EntropyCalibrator2 fed by preprocessed (1, 3, H, W) training images."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches = iter(batches)
            self.device_input = torch.empty(input_shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            try:
                batch = next(self.batches)
            except StopIteration:
                return None
            self.device_input.copy_(torch.from_numpy(batch))
            return [self.device_input.data_ptr()]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            return None

    return EntropyCalibrator()
