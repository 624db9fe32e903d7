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
                   input_size: Optional[Tuple[int, int]] = None, cpu_threads: int = 0,
                   calibration_data=None, cpu_busy_wait: bool = True) -> Tuple[Backend, List[str]]:
    """Create the backend ``name`` ("auto" tries the fastest available first). ``input_size``
    (height, width), multiples of 32, runs the network at another size than the model file's.

    ``precision`` is for the GPU: TensorRT builds its engine in fp32, fp16 or int8, torch on CUDA
    runs fp16 when asked; the other backends run FP32 (``describe()`` says which). INT8 on a CPU is
    an INT8 ONNX model given as ``onnx_path``; TensorRT runs such a QDQ graph in INT8 as it is, and
    calibrates a float one on ``calibration_data`` (a folder of images, or a CamVid-layout dataset's
    train/), read only when an engine is really built. ``cpu_busy_wait`` False makes ONNX Runtime's CPU
    threads sleep instead of spinning when out of work (better beside other processes). ``cpu_threads``
    caps ONNX Runtime's and torch's CPU threads (0 = their default, one per core).

    ``onnx_path`` is run by tensorrt or onnxruntime; "auto" then does not fall back to torch, which
    would run the model file's own weights instead. A backend named explicitly raises its error;
    "auto" goes on to the next candidate when one is unavailable or fails to start.

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
    if onnx_path:
        if name == "torch":
            raise BackendError(f"onnx_path {onnx_path} is for the onnxruntime and tensorrt backends; torch runs the "
                               "model file's weights: choose backend onnxruntime, tensorrt or auto, or leave onnx_path "
                               "empty")
        # The user's own file: a problem with it is theirs to fix whichever backend would run it.
        onnx_path = checked_user_onnx(onnx_path, info, model_path)
    candidates = _candidates(name, device)
    own_export: list = []  # the model's cached ONNX export, or why it failed: made once for all candidates

    def model_onnx() -> Path:
        if not own_export:
            try:
                own_export.append(_cached_onnx(model_path, model, info))
            except BackendError as exc:
                own_export.append(exc)
        if isinstance(own_export[0], BackendError):
            raise own_export[0]
        return own_export[0]

    skipped: List[str] = []
    any_failed = False  # as opposed to every candidate being absent from this machine
    for backend_name, backend_device in candidates:
        if onnx_path and backend_name == "torch":
            skipped.append(f"torch/{backend_device}: runs the model file's weights, not onnx_path {onnx_path}")
            continue
        try:
            if backend_name == "tensorrt":
                from ..data import calibration_batches
                from .tensorrt_backend import TensorRTBackend
                calibration = calibration_batches(calibration_data, info) if calibration_data else None
                backend = TensorRTBackend(model, info, onnx_path or model_onnx(),
                                          engine_cache_dir=engine_cache_dir, precision=precision,
                                          force_engine_update=force_engine_update, calibration_images=calibration)
            elif backend_name == "onnxruntime":
                from .onnxruntime_backend import OnnxRuntimeBackend
                graph = onnx_path or model_onnx()
                backend = OnnxRuntimeBackend(graph, info, device=backend_device, threads=cpu_threads,
                                             busy_wait=cpu_busy_wait,
                                             fix_hint=_onnx_fix_hint(graph, model_path, given=bool(onnx_path)))
            else:
                from .torch_backend import TorchBackend
                backend = TorchBackend(model, info, device=backend_device,
                                       half=precision == "fp16" and backend_device == "cuda", threads=cpu_threads)
            return backend, skipped
        except BackendError as exc:
            # A named backend may still try its next device when one is absent (device auto), but
            # its failure to start is the answer; auto records why and tries the next candidate.
            unavailable = isinstance(exc, BackendUnavailable)
            if name != "auto" and (len(candidates) == 1 or not unavailable):
                raise
            any_failed = any_failed or not unavailable
            skipped.append(f"{backend_name}/{backend_device}: {exc}")
    error_type = BackendError if any_failed else BackendUnavailable
    raise error_type("no backend could start: " + "; ".join(skipped))


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
    """The ONNX file for a model: the given one (checked against the model file), or the model's own
    export cached next to it (or in ~/.cache when that folder is read-only)."""
    if onnx_path:
        return checked_user_onnx(onnx_path, info, model_path)
    return _cached_onnx(model_path, model, info)


def _cached_onnx(model_path, model, info) -> Path:
    from ..export import cached_onnx

    try:
        return cached_onnx(model_path, model, info)
    except OSError as exc:  # a read-only or full disk: auto can still run torch on the model file
        raise BackendError(f"cannot write the ONNX export of {model_path} ({exc}); check that the model's folder "
                           "or ~/.cache/fcn_segmentation (ONNX cache) are writable, or give an ONNX file "
                           "(onnx_path)") from exc


def _onnx_fix_hint(onnx_path, model_path, given: bool) -> str:
    if given:
        return (f"export it again from this model file (fcnseg export --model {model_path} --onnx {onnx_path}, or "
                "fcnseg quantize for INT8), or leave onnx_path empty to use the model file's own export")
    return f"{onnx_path} is the cached export of {model_path}: delete it and it is exported again at the next start"


def checked_user_onnx(onnx_path, info: ModelInfo, model_path) -> Path:
    """A user-given ONNX file that exists and fits the model file, or BackendError saying what to fix."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise BackendError(f"onnx file {onnx_path} does not exist; check onnx_path (--onnx), or leave it empty to "
                           "export the model file")
    check_onnx_fits_model(onnx_path, info, model_path)
    return onnx_path


def check_onnx_fits_model(onnx_path: Path, info: ModelInfo, model_path) -> None:
    """A given ONNX file must take the network input size in use and score the model file's classes,
    or class ids would be read against the wrong names and palette."""
    import onnx

    fix = f"export it from this model file: fcnseg export --model {model_path} --onnx {onnx_path}"
    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and others for corrupt files
        raise BackendError(f"onnx file {onnx_path} is not readable ({exc}); {fix}") from exc

    def shape(value):
        # symbolic or unknown dimensions are None: the runtime checks those
        return [dim.dim_value if dim.HasField("dim_value") else None for dim in value.type.tensor_type.shape.dim]

    image, scores = shape(graph.input[0]), shape(graph.output[0])
    size = (info.input_height, info.input_width)
    if len(image) != 4 or any(got not in (None, want) for got, want in zip(image[1:], (3, *size))):
        raise BackendError(f"onnx file {onnx_path} takes input {image}, but the network input is "
                           f"[1, 3, {size[0]}, {size[1]}] (height, width); {fix}, with the same --input-size")
    if len(scores) != 4 or scores[1] not in (None, info.num_classes):
        raise BackendError(f"onnx file {onnx_path} scores {scores[1] if len(scores) == 4 else scores} classes, but "
                           f"model file {model_path} has {info.num_classes} ({', '.join(info.class_names)}); {fix}")
