"""Backend interface and selection. A backend maps a (1, 3, H, W) float32 array to (1, C, H, W)
class scores; it knows nothing about images, classes or ROS."""

import logging
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..model.model_file import ModelInfo

BACKEND_NAMES = ("auto", "tensorrt", "onnxruntime", "torch")

logger = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """A backend could not be created (bad parameter, unreadable artefact)."""


class BackendUnavailable(BackendError):
    """The runtime or device a backend needs is not present on this machine."""


class Backend:
    name = "base"
    device = "cpu"

    def __init__(self, info: ModelInfo):
        self.info = info

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def segment(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Scores (1, C, h, w) and class ids (h, w) uint8 at the network's size. Backends that can
        take the argmax faster than numpy (in their graph, on their device) override this."""
        from ..postprocess import class_map

        scores = self.infer(batch)
        return scores, class_map(scores)

    def describe(self) -> str:
        return f"{self.name} ({self.device})"


def create_backend(name: str, model_path, device: str = "auto", onnx_path=None,
                   engine_cache_dir=None, precision: str = "fp32", force_engine_update: bool = False,
                   input_size: Optional[Tuple[int, int]] = None, cpu_threads: int = 0) -> Tuple[Backend, List[str]]:
    """Create the backend ``name`` ("auto" tries the fastest available first). ``input_size``
    (height, width), multiples of 32, runs the network at another size than the model file's.

    ``precision`` is for the GPU: TensorRT builds its engine in fp32, fp16 or int8, torch on CUDA
    runs fp16 when asked; the other backends run FP32 (``describe()`` says which). INT8 on a CPU is
    an INT8 ONNX model given as ``onnx_path``. ``cpu_threads`` caps ONNX Runtime's and torch's CPU
    threads (0 = their default, one per core).

    Returns the backend and the reasons the faster candidates were not used (for the log).
    """
    from ..model.fcn import network_size_error
    from ..model.model_file import load_model_file

    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if device not in ("auto", "cpu", "cuda"):
        raise BackendError(f"unknown device {device!r}; choose auto, cpu or cuda")
    model, info = load_model_file(model_path)
    if input_size is not None:
        error = network_size_error(*input_size)
        if error:
            raise BackendError(error)
        info.input_height, info.input_width = input_size
    candidates = _candidates(name, device)
    skipped: List[str] = []
    for backend_name, backend_device in candidates:
        try:
            if backend_name == "tensorrt":
                from .tensorrt_backend import TensorRTBackend
                backend = TensorRTBackend(model, info, _onnx_for(model_path, onnx_path, model, info),
                                          engine_cache_dir=engine_cache_dir, precision=precision,
                                          force_engine_update=force_engine_update)
            elif backend_name == "onnxruntime":
                from .onnxruntime_backend import OnnxRuntimeBackend
                backend = OnnxRuntimeBackend(_onnx_for(model_path, onnx_path, model, info), info,
                                             device=backend_device, threads=cpu_threads)
            else:
                from .torch_backend import TorchBackend
                backend = TorchBackend(model, info, device=backend_device,
                                       half=precision == "fp16" and backend_device == "cuda", threads=cpu_threads)
            return backend, skipped
        except BackendUnavailable as exc:
            if name != "auto" and len(candidates) == 1:
                raise
            skipped.append(f"{backend_name}/{backend_device}: {exc}")
    raise BackendUnavailable("no backend could start: " + "; ".join(skipped))


def _candidates(name: str, device: str) -> List[Tuple[str, str]]:
    order = [("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("torch", "cuda"),
             ("onnxruntime", "cpu"), ("torch", "cpu")]
    if name != "auto":
        order = [c for c in order if c[0] == name]
    if device != "auto":
        order = [c for c in order if c[1] == device]
    if not order:
        raise BackendError(f"backend {name!r} cannot run on device {device!r}")
    return order


def _onnx_for(model_path, onnx_path, model, info) -> Path:
    """The ONNX file for a model: the given one, the one beside the .pt, or a fresh export cached
    next to it (or in ~/.cache when that folder is read-only)."""
    if onnx_path:
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise BackendError(f"onnx file {onnx_path} does not exist")
        check_onnx_fits_model(onnx_path, info, model_path)
        return onnx_path
    from ..export import export_onnx, onnx_cache_path

    path = onnx_cache_path(model_path, info)
    if not path.is_file():
        logger.info("exporting %s to %s", model_path, path)
        export_onnx(model, info, path)
    return path


def check_onnx_fits_model(onnx_path: Path, info: ModelInfo, model_path) -> None:
    """A given ONNX file must take the network input size in use and score the model file's classes,
    or class ids would be read against the wrong names and palette."""
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and others for corrupt files
        raise BackendError(f"onnx file {onnx_path} is not readable: {exc}") from exc

    def shape(value):
        # symbolic or unknown dimensions are None: the runtime checks those
        return [dim.dim_value if dim.HasField("dim_value") else None for dim in value.type.tensor_type.shape.dim]

    fix = f"export it from this model file: fcnseg export --model {model_path} --onnx {onnx_path}"
    image, scores = shape(graph.input[0]), shape(graph.output[0])
    size = (info.input_height, info.input_width)
    if len(image) != 4 or any(got not in (None, want) for got, want in zip(image[1:], (3, *size))):
        raise BackendError(f"onnx file {onnx_path} takes input {image}, but the network input is "
                           f"[1, 3, {size[0]}, {size[1]}] (height, width); {fix}, with the same --input-size")
    if len(scores) != 4 or scores[1] not in (None, info.num_classes):
        raise BackendError(f"onnx file {onnx_path} scores {scores[1] if len(scores) == 4 else scores} classes, but "
                           f"model file {model_path} has {info.num_classes} ({', '.join(info.class_names)}); {fix}")
