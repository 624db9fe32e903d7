"""Which backend runs, at which precision, on which ONNX file. Imports every backend (each only
when tried); the backends import only ``base``, so the imports run one way."""

import logging
from pathlib import Path
from typing import List, Optional, Tuple

from ..model.model_file import ModelInfo
from .base import Backend, BackendError, BackendUnavailable

BACKEND_NAMES = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")

# The order "auto" tries, fastest first, and the precisions each runs.
CANDIDATES = (
    ("tensorrt", "cuda", ("fp32", "fp16", "int8")),
    ("onnxruntime", "cuda", ("fp32",)),
    ("torch", "cuda", ("fp32", "fp16")),
    ("openvino", "cpu", ("fp32", "bf16", "int8")),
    ("onnxruntime", "cpu", ("fp32", "int8")),
    ("torch", "cpu", ("fp32",)),
)
# precision "auto": the fastest precision whose val mIoU stays within 0.5 point of FP32, as measured
# (README, Performance); fp32 for the rest. INT8 needs calibration images, else auto runs fp32.
AUTO_PRECISION = {("openvino", "cpu"): "int8"}
ONNX_BACKENDS = ("openvino", "onnxruntime")  # run an ONNX file; INT8 on the CPU

logger = logging.getLogger(__name__)


def create_backend(name: str, model_path, device: str = "auto", onnx_path=None,
                   engine_cache_dir=None, precision: str = "auto", force_engine_update: bool = False,
                   input_size: Optional[Tuple[int, int]] = None, cpu_threads: int = 0,
                   calibration_data=None, cpu_busy_wait: bool = True,
                   scores_stride: int = 1, test_time_flip: bool = False) -> Tuple[Backend, List[str]]:
    """Create the backend ``name`` ("auto" tries the fastest available first) for ``model_path``, a
    model file or a bundled model's name (``default``, ``accurate``). ``input_size``
    (height, width), multiples of 32, runs the network at another size than the model file's.

    ``precision``: fp32, fp16 (TensorRT, torch on CUDA), bf16 (OpenVINO on a CPU with BF16
    instructions), int8 (TensorRT; OpenVINO and ONNX Runtime on the CPU), or auto (``AUTO_PRECISION``).
    INT8 runs a QDQ ``onnx_path`` (``fcnseg quantize``) as it is; otherwise the model's export is
    quantized on ``calibration_data`` (a folder of images, or a CamVid-layout dataset's train/; the
    bundled model has its own calibration images), once, and cached. TensorRT calibrates its engine on
    ``calibration_data`` instead. ``cpu_busy_wait`` False leaves idle cores to the rest of the machine
    (ONNX Runtime's threads sleep instead of spinning; OpenVINO's are not pinned to cores).
    ``cpu_threads`` caps the CPU backends' threads (0 = their default, one per core).
    ``scores_stride``: the ``segment`` scores stride the caller will ask for (OpenVINO compiles that
    graph up front; any other on first use). ``test_time_flip``: every backend runs the image and its
    mirror image and averages their scores (``FlipAveraged``; twice the network's work, more accurate).

    ``onnx_path`` is run by tensorrt, onnxruntime or openvino; "auto" then does not fall back to
    torch, which would run the model file's own weights instead. A backend named explicitly raises
    its error; "auto" goes on to the next candidate when one is unavailable or fails to start.

    Returns the backend and the reasons the faster candidates were not used (for the log).
    """
    from ..defaults import resolve_model_path
    from ..model.fcn import network_size_error
    from ..model.model_file import load_model_file

    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if device not in ("auto", "cpu", "cuda"):
        raise BackendError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    model_path = resolve_model_path(model_path)
    model, info = load_model_file(model_path)
    if input_size is not None:
        error = network_size_error(*input_size)
        if error:
            raise BackendError(error)
        info.input_height, info.input_width = input_size
    user_onnx_quantized = False
    if onnx_path:
        if name == "torch":
            raise BackendError(f"onnx_path {onnx_path} is for the onnxruntime, openvino and tensorrt backends; torch "
                               "runs the model file's weights: choose another backend or auto, or leave onnx_path "
                               "empty")
        from ..export import onnx_is_quantized

        if test_time_flip:
            raise BackendError(f"test_time_flip runs the model file's own export, with the mirror image in the same "
                               f"graph; it cannot be added to onnx_path {onnx_path}: leave onnx_path empty, or "
                               "test_time_flip off")
        # The user's own file: a problem with it is theirs to fix whichever backend would run it.
        onnx_path = checked_user_onnx(onnx_path, info, model_path)
        user_onnx_quantized = onnx_is_quantized(onnx_path)
    calibration = calibration_source(model_path, calibration_data)
    candidates = _candidates(name, device)
    own_exports: dict = {}  # the model's cached ONNX export per form, or why it failed: made once for all candidates

    def model_onnx(sub_pixel: bool = False) -> Path:
        if sub_pixel not in own_exports:
            try:
                own_exports[sub_pixel] = _cached_onnx(model_path, model, info, sub_pixel, test_time_flip)
            except BackendError as exc:
                own_exports[sub_pixel] = exc
        if isinstance(own_exports[sub_pixel], BackendError):
            raise own_exports[sub_pixel]
        return own_exports[sub_pixel]

    skipped: List[str] = []
    any_failed = False  # as opposed to every candidate being absent from this machine
    for backend_name, backend_device, supported in candidates:
        if onnx_path and backend_name == "torch":
            skipped.append(f"torch/{backend_device}: runs the model file's weights, not onnx_path {onnx_path}")
            continue
        try:
            chosen = resolve_precision(backend_name, backend_device, supported, precision, user_onnx_quantized,
                                       calibration is not None, user_onnx=bool(onnx_path))
            if backend_name == "tensorrt":
                from ..data import calibration_batches
                from .tensorrt_backend import TensorRTBackend, require_tensorrt
                require_tensorrt()  # before exporting a graph that only TensorRT would run
                batches = calibration_batches(calibration_data, info) if calibration_data else None
                backend = TensorRTBackend(model, info, onnx_path or model_onnx(),
                                          engine_cache_dir=engine_cache_dir, precision=chosen,
                                          force_engine_update=force_engine_update, calibration_images=batches)
            elif backend_name in ONNX_BACKENDS:
                if backend_name == "onnxruntime":
                    from .onnxruntime_backend import require_onnxruntime
                    require_onnxruntime(backend_device)  # before exporting a graph it would run
                graph = onnx_path or model_onnx(sub_pixel=backend_name in SUB_PIXEL_BACKENDS)
                if chosen == "int8" and not user_onnx_quantized:
                    graph = _quantized_onnx(graph, calibration, model_path, backend_name)
                hint = _onnx_fix_hint(graph, model_path, given=bool(onnx_path))
                if backend_name == "openvino":
                    from .openvino_backend import OpenVinoBackend
                    backend = OpenVinoBackend(graph, info, precision=chosen, threads=cpu_threads,
                                              busy_wait=cpu_busy_wait, fix_hint=hint, scores_stride=scores_stride)
                else:
                    from .onnxruntime_backend import OnnxRuntimeBackend
                    backend = OnnxRuntimeBackend(graph, info, device=backend_device, threads=cpu_threads,
                                                 busy_wait=cpu_busy_wait, fix_hint=hint)
            else:
                from ..model.surgery import FlipAveraged
                from .torch_backend import TorchBackend
                backend = TorchBackend(FlipAveraged(model) if test_time_flip else model, info, device=backend_device,
                                       half=chosen == "fp16", threads=cpu_threads)
            if chosen != precision:
                logger.info("precision %s: %s/%s runs %s", precision, backend_name, backend_device, chosen)
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


def resolve_precision(backend: str, device: str, supported: Tuple[str, ...], requested: str,
                      onnx_quantized: bool, can_calibrate: bool, user_onnx: bool = False) -> str:
    """The precision ``backend`` on ``device`` runs for ``requested``, or BackendUnavailable when it
    cannot run it (auto then tries the next backend). A QDQ INT8 onnx_path runs as INT8 on the CPU;
    auto runs a float onnx_path as it is (quantizing the user's own graph takes asking for int8)."""
    if onnx_quantized and device == "cpu":
        if requested not in ("auto", "int8"):
            raise BackendError(f"onnx_path is a QDQ INT8 graph, which {backend} runs in int8 only, not "
                               f"{requested}: set precision int8 (or auto), or give a float ONNX")
        return "int8"
    if requested == "auto":
        chosen = "fp32" if user_onnx else AUTO_PRECISION.get((backend, device), "fp32")
        if chosen == "int8" and not can_calibrate:
            logger.info("precision auto: %s runs fp32, since int8 needs calibration images for this model "
                        "(calibration_data)", backend)
            return "fp32"
        return chosen
    if requested not in supported:
        raise BackendUnavailable(f"{backend} on {device} runs precision {', '.join(supported)}, not {requested}")
    if requested == "int8" and device == "cpu" and not can_calibrate:
        raise BackendError(INT8_NEEDS_CALIBRATION)
    return requested


INT8_NEEDS_CALIBRATION = (
    "precision int8 needs calibration images for this model: set calibration_data (a folder of images from "
    "your cameras, or a CamVid-layout dataset whose train/ is used), or give a QDQ INT8 ONNX from "
    "`fcnseg quantize` as onnx_path")


# The backends that get the final upsampler as a convolution and a pixel shuffle: OpenVINO's CPU
# plugin runs that in INT8, its transposed convolution only in FP32. Their quantizer (quantize.py's
# QUANTIZER_FOR_BACKEND) quantizes the same form.
SUB_PIXEL_BACKENDS = frozenset({"openvino"})


def calibration_source(model_path, calibration_data) -> Optional[Path]:
    """Images to calibrate INT8 on: ``calibration_data``, else the bundled models' own calibration
    images (CamVid train frames) when ``model_path`` is a bundled model, else None."""
    from ..defaults import default_calibration_dir, is_bundled_model

    if calibration_data:
        return Path(calibration_data)
    bundled = default_calibration_dir()
    if bundled.is_dir() and is_bundled_model(model_path):
        return bundled
    return None


def _quantized_onnx(fp32_onnx: Path, calibration: Path, model_path, backend: str) -> Path:
    from ..data import DatasetError
    from ..quantize import QUANTIZER_FOR_BACKEND, cached_int8_onnx

    try:
        return cached_int8_onnx(fp32_onnx, calibration, QUANTIZER_FOR_BACKEND[backend])
    except DatasetError as exc:
        raise BackendError(f"cannot calibrate INT8 for {model_path}: {exc}; check calibration_data") from exc
    except OSError as exc:
        raise BackendError(f"cannot write the INT8 model of {model_path} ({exc}); check that {fp32_onnx.parent} "
                           "is writable, or give a QDQ onnx_path from `fcnseg quantize`") from exc


def _candidates(name: str, device: str) -> List[Tuple[str, str, Tuple[str, ...]]]:
    order = list(CANDIDATES)
    if name != "auto":
        order = [c for c in order if c[0] == name]
    if device != "auto":
        order = [c for c in order if c[1] == device]
    if not order:
        raise BackendError(f"backend {name!r} cannot run on device {device!r}")
    return order


def onnx_for(model_path, onnx_path, model, info, sub_pixel: bool = False) -> Path:
    """The ONNX file for a model: the given one (checked against the model file), or the model's own
    export (``sub_pixel``: OpenVINO's form) cached next to it (or in ~/.cache when that folder is
    read-only)."""
    if onnx_path:
        return checked_user_onnx(onnx_path, info, model_path)
    return _cached_onnx(model_path, model, info, sub_pixel)


def _cached_onnx(model_path, model, info, sub_pixel: bool = False, flip: bool = False) -> Path:
    from ..export import cached_onnx

    try:
        return cached_onnx(model_path, model, info, sub_pixel, flip)
    except OSError as exc:  # a read-only or full disk: auto can still run torch on the model file
        raise BackendError(f"cannot write the ONNX export of {model_path} ({exc}); check that the model's folder "
                           "or ~/.cache/fcn_segmentation (ONNX cache) are writable, or give an ONNX file "
                           "(onnx_path)") from exc


def _onnx_fix_hint(onnx_path, model_path, given: bool) -> str:
    if given:
        return (f"export it again from this model file (fcnseg export --model {model_path} --onnx {onnx_path}, or "
                "fcnseg quantize for INT8), or leave onnx_path empty to use the model file's own export")
    return f"{onnx_path} is a cached file made from {model_path}: delete it and it is made again at the next start"


def checked_user_onnx(onnx_path, info: ModelInfo, model_path) -> Path:
    """A user-given ONNX file that exists and fits the model file, or BackendError saying what to fix."""
    from ..files import regular_file_problem

    onnx_path = Path(onnx_path)
    problem = regular_file_problem(onnx_path)
    if problem:
        raise BackendError(f"onnx file {onnx_path} {problem}; check onnx_path (--onnx), or leave it empty to "
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
