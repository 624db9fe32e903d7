"""CPU INT8: post-training static quantization (QDQ ONNX, with NNCF), calibrated on preprocessed
training images. The QDQ file runs on OpenVINO, ONNX Runtime and TensorRT alike."""

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import List, Sequence

from .data import calibration_images, read_rgb
from .defaults import CALIBRATION_IMAGES
from .files import private_temp_path
from .export import INPUT_NAME, read_onnx_info
from .preprocess import Preprocessor

logger = logging.getLogger(__name__)

# Part of the cache key: a change to how graphs are quantized makes them again.
QUANTIZER_SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


# The quantizer whose graph each runtime runs fastest (README, Performance: ONNX Runtime fuses its
# own quantizer's QDQ pairs into QLinearConv, but ran NNCF's graph at half its FP32 speed).
QUANTIZERS = ("nncf", "onnxruntime")
QUANTIZER_FOR_BACKEND = {"openvino": "nncf", "onnxruntime": "onnxruntime"}
BACKEND_FOR_QUANTIZER = {quantizer: backend for backend, quantizer in QUANTIZER_FOR_BACKEND.items()}


def quantize_onnx(fp32_onnx, out_path, calibration_images: Sequence[Path], quantizer: str = "nncf") -> Path:
    """Write a QDQ INT8 model calibrated on ``calibration_images`` (per-channel weights); metadata is
    carried over. The convolutions of ``float_convolutions`` stay FP32. ``quantizer``: ``nncf``
    (post-training quantization with bias correction: OpenVINO's) or ``onnxruntime`` (ONNX Runtime's
    static MinMax quantization)."""
    import onnx

    if quantizer not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    info = read_onnx_info(fp32_onnx)
    preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)
    model = onnx.load(str(fp32_onnx))
    kept_float = float_convolutions(model)
    images = list(calibration_images)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if quantizer == "nncf":
        import nncf

        dataset = nncf.Dataset(images, lambda path: {INPUT_NAME: preprocess(read_rgb(path)).copy()})
        quantized = nncf.quantize(model, dataset, subset_size=len(images),
                                  ignored_scope=nncf.IgnoredScope(names=kept_float))
    else:
        quantized = _onnxruntime_quantize(fp32_onnx, out_path, images, preprocess, kept_float)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    onnx.save(quantized, str(out_path))
    return out_path


def float_convolutions(model) -> List[str]:
    """The convolutions INT8 graphs keep in FP32: the first one, on the image itself (quantizing it
    cost the most accuracy, README, Performance), and the first depthwise one, which filters the
    stem's full-resolution features channel by channel. Quantized, that one cost 2.0-2.6 points of
    mIoU on the dusk drive 0001TP (0.1 on daylight drives; likely, not measured: dark frames use
    few of the levels a mostly daylight calibration spreads its inputs over). Kept FP32, it costs no
    measurable speed (model card, INT8 at dusk). First in the graph's (topological) order: on the
    image, or on the image and its mirror image."""
    convolutions = [node for node in model.graph.node if node.op_type == "Conv"]
    kept = [convolutions[0].name] if convolutions else []
    for node in convolutions[1:]:
        group = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
        if group > 1:
            kept.append(node.name)
            break
    return kept


def _onnxruntime_quantize(fp32_onnx, out_path: Path, images: Sequence[Path], preprocess, kept_float: List[str]):
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from tqdm import tqdm

    class Images(CalibrationDataReader):
        def __init__(self):
            self.paths = iter(tqdm(images, desc="calibrating", unit="img"))

        def get_next(self):
            path = next(self.paths, None)
            return None if path is None else {INPUT_NAME: preprocess(read_rgb(path)).copy()}

    prepared = out_path.with_suffix(".prep.onnx")
    try:
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out_path), Images(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=kept_float)
    finally:
        prepared.unlink(missing_ok=True)
    return onnx.load(str(out_path))


def int8_cache_key(fp32_onnx, images: Sequence[Path], quantizer: str) -> str:
    """What a cached INT8 graph depends on: the float graph's bytes, the calibration images' bytes,
    the quantizer, its version and this module's source. NNCF's version from its package metadata:
    importing it takes seconds, and every start of the node computes this key."""
    from importlib.metadata import version

    import onnxruntime  # its distribution is onnxruntime or onnxruntime-gpu: the module knows its version

    digest = hashlib.sha256()
    for image in images:
        digest.update(Path(image).read_bytes())
    text = json.dumps({"onnx": hashlib.sha256(Path(fp32_onnx).read_bytes()).hexdigest(),
                       "images": digest.hexdigest(), "quantizer": QUANTIZER_SOURCE_HASH,
                       "quantizer_name": quantizer,
                       "version": version("nncf") if quantizer == "nncf" else onnxruntime.__version__},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_int8_onnx(fp32_onnx, calibration_data, quantizer: str = "nncf", count: int = CALIBRATION_IMAGES) -> Path:
    """The QDQ INT8 version of ``fp32_onnx`` made by ``quantizer``, calibrated on ``count`` images
    spread over ``calibration_data``, made once and cached beside it (``<stem>.int8.<key>.onnx``).
    The file appears whole or not at all, so nodes starting together can make it at the same time."""
    fp32_onnx = Path(fp32_onnx)
    images = calibration_images(calibration_data, count)
    key = int8_cache_key(fp32_onnx, images, quantizer)
    path = fp32_onnx.with_name(f"{fp32_onnx.stem}.int8.{key}.onnx")
    if path.is_file():
        return path
    logger.info("quantizing %s to INT8 with %s on %d images from %s (once per model, input size, quantizer and "
                "calibration set; takes some seconds)", fp32_onnx.name, quantizer, len(images), calibration_data)
    started = time.perf_counter()
    tmp = private_temp_path(path, ".onnx")
    try:
        quantize_onnx(fp32_onnx, tmp, images, quantizer)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s in %.1f s", path, time.perf_counter() - started)
    return path
