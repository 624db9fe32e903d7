import logging
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .base import Backend, BackendError, BackendUnavailable
from .graph_outputs import CLASS_IDS, with_class_ids

logger = logging.getLogger(__name__)

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the QDQ graph's own layers


class OpenVinoBackend(Backend):
    """OpenVINO on the CPU: reads the package's ONNX (float or QDQ INT8) as it is. ``precision``
    fp32, bf16 (needs BF16 instructions: AVX-512 BF16 or AMX) or int8 (``onnx_path`` must then be a
    QDQ graph; selection makes one). The class-id argmax runs in the graph, as with ONNX Runtime."""

    name = "openvino"

    def __init__(self, onnx_path, info, precision: str = "fp32", threads: int = 0, busy_wait: bool = True,
                 fix_hint: str = "", cache_dir: Optional[Path] = None, scores_stride: int = 1):
        super().__init__(info)
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable(f"openvino is not installed ({exc}); pip install openvino") from exc
        from ..export import onnx_is_quantized

        if precision not in PRECISION_HINTS:
            raise BackendError(f"openvino runs precision fp32, bf16 or int8, not {precision!r}")
        core = ov.Core()
        if "CPU" not in core.available_devices:
            raise BackendUnavailable("openvino finds no CPU device")
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision == "bf16" and "BF16" not in capabilities:
            from ..cpu_info import describe_cpu

            raise BackendError(f"precision bf16 needs a CPU with BF16 instructions (AVX-512 BF16 or AMX); this one "
                               f"is {describe_cpu()} and OpenVINO offers {', '.join(capabilities)} on it: use "
                               "precision int8 or fp32 (or auto)")
        quantized = onnx_is_quantized(onnx_path)
        if (precision == "int8") != quantized:
            raise BackendError(f"{onnx_path} is {'a QDQ INT8' if quantized else 'a float'} graph, which openvino "
                               f"does not run as {precision}")
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],  # else a BF16 CPU silently runs bf16
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "ENABLE_CPU_PINNING": bool(busy_wait),  # unpinned threads leave cores to the camera driver and DDS
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(cache_dir)})
        except (OSError, RuntimeError):  # a read-only home: compile every start (about a second)
            pass
        self._core, self._config, self._fix_hint = core, config, fix_hint
        self._requests = {}
        self.precision = precision
        self.onnx_path = Path(onnx_path)
        self._request(scores_stride)  # the graph the caller will run, compiled now: errors are startup errors

    def _request(self, scores_stride: int):
        """The infer request of the graph whose scores output has ``scores_stride``, compiled on
        first use (one graph per stride: one that skips the full-resolution scores is faster)."""
        request = self._requests.get(scores_stride)
        if request is None:
            try:
                model = self._core.read_model(with_class_ids(self.onnx_path, scores_stride), b"")
                request = self._core.compile_model(model, "CPU", self._config).create_infer_request()
            except Exception as exc:  # openvino raises RuntimeError and its own types for unreadable graphs
                hint = f"; {self._fix_hint}" if self._fix_hint else ""
                raise BackendError(f"openvino cannot load {self.onnx_path}: {exc}{hint}") from exc
            if self._requests:
                logger.info("openvino: compiled the graph with scores stride %d on first use", scores_stride)
            self._requests[scores_stride] = request
        return request

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._request(1).infer({0: batch})[0].copy()

    def segment(self, batch: np.ndarray, scores_stride: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        results = self._request(scores_stride).infer({0: batch})
        # copies: the request's output buffers are reused by the next frame
        return results[0].copy(), results[CLASS_IDS][0].copy()

    def describe(self) -> str:
        return f"{self.name} ({self.device}, {self.precision})"


def default_cache_dir() -> Path:
    """OpenVINO's compiled-model cache: keyed by OpenVINO itself (graph, settings, version, CPU)."""
    return Path.home() / ".cache" / "fcn_segmentation" / "openvino"
