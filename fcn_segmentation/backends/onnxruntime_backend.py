import collections
import json
import os
import tempfile
from typing import Dict, Tuple

import numpy as np

from .base import Backend, BackendError, BackendUnavailable, sampled
from .graph_outputs import CLASS_IDS, with_class_ids


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_path, info, device: str = "cpu", threads: int = 0, fix_hint: str = "",
                 busy_wait: bool = True):
        """``fix_hint``: what to do when the file does not load (it depends on where the file came from).
        ``busy_wait``: ONNX Runtime's CPU threads spin between operators and runs (its default); off, they
        sleep, leaving the cores to the rest of the machine."""
        super().__init__(info)
        ort, provider = require_onnxruntime(device)
        try:
            self.session = ort.InferenceSession(with_class_ids(onnx_path), session_options(threads, busy_wait),
                                                providers=[provider])
        except Exception as exc:
            hint = f"; {fix_hint}" if fix_hint else ""
            raise BackendError(f"onnxruntime cannot load {onnx_path}: {exc}{hint}") from exc
        # A provider that fails to initialise (e.g. CUDA or cuDNN libraries missing or of the wrong
        # version) makes ONNX Runtime fall back to the CPU with only a printed warning.
        if self.session.get_providers()[0] != provider:
            raise BackendUnavailable(
                f"onnxruntime could not start its {provider} and would run on {self.session.get_providers()[0]} "
                "instead (its log above says why; usually CUDA or cuDNN libraries that are missing or do not "
                "match onnxruntime-gpu's CUDA version, see requirements-gpu.txt)")
        self.session.disable_fallback()  # an error at run time is an error, not a silent switch to the CPU
        self.device = device
        self.onnx_path = onnx_path
        self.input_name = self.session.get_inputs()[0].name
        self.scores_name = self.session.get_outputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.scores_name], {self.input_name: batch})[0]

    def segment(self, batch: np.ndarray, scores_stride: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        scores, classes = self.session.run([self.scores_name, CLASS_IDS], {self.input_name: batch})
        return sampled(scores, scores_stride), classes[0]

    def operator_profile(self, batch: np.ndarray, frames: int, top_nodes: int = 5) -> Dict:
        """Where the inference time goes, from ONNX Runtime's profiler: ms per frame for each operator
        type and for the slowest nodes. A second session with profiling on, so timed runs stay unprofiled."""
        import onnxruntime as ort

        used = self.session.get_session_options()
        options = session_options(used.intra_op_num_threads,
                                  used.get_session_config_entry(ALLOW_SPINNING) != "0")
        with tempfile.TemporaryDirectory() as folder:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(folder, "ort")
            session = ort.InferenceSession(with_class_ids(self.onnx_path), options,
                                           providers=self.session.get_providers())
            for _ in range(frames):
                session.run(None, {self.input_name: batch})
            with open(session.end_profiling()) as trace:
                events = json.load(trace)
        by_operator, by_node = collections.Counter(), collections.Counter()
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                operator, node, ms = event["args"]["op_name"], event["name"][: -len("_kernel_time")], event["dur"] / 1e3
                by_operator[operator] += ms / frames
                by_node[(operator, node)] += ms / frames
        return {"frames": frames, "total_ms": sum(by_operator.values()),
                "operators_ms": dict(by_operator.most_common()),
                "slowest_nodes_ms": [{"operator": op, "node": name, "ms": ms}
                                     for (op, name), ms in by_node.most_common(top_nodes)]}


def require_onnxruntime(device: str):
    """(onnxruntime, its execution provider for ``device``), else BackendUnavailable saying why:
    checked before anything is exported for it."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from exc
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise BackendUnavailable(f"onnxruntime has no {provider}")
    return ort, provider


ALLOW_SPINNING = "session.intra_op.allow_spinning"


def session_options(threads: int = 0, busy_wait: bool = True):
    """All graph optimisations; ``threads`` intra-op threads (0 = ONNX Runtime's default, one per core);
    ``busy_wait`` False stops the threads spinning when they run out of work."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry(ALLOW_SPINNING, "1" if busy_wait else "0")
    return options
