"""ONNX export with the model's metadata, checked against PyTorch."""

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .files import private_temp_path
from .model.model_file import ModelInfo
from .model import surgery

logger = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "image", "scores"
OPSET = 17
# Part of the export cache key: an edit to how graphs are exported invalidates cached exports.
EXPORTER_SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
SURGERY_SOURCE_HASH = hashlib.sha256(Path(surgery.__file__).read_bytes()).hexdigest()  # sub-pixel and flip forms


def export_onnx(model: torch.nn.Module, info: ModelInfo, path, height: Optional[int] = None,
                width: Optional[int] = None, sub_pixel: bool = False, flip: bool = False) -> Path:
    """Export with a static (1, 3, H, W) input (TensorRT builds fastest engines for static shapes);
    the model's metadata goes into ``metadata_props`` under the key ``fcn_segmentation``. The file
    appears whole or not at all: nodes starting together (one per camera) may export the same model
    to the same cache path at once. ``sub_pixel``: the final upsampler as a convolution and a pixel
    shuffle (same scores; the form OpenVINO runs fastest, ``SubPixelUpsampler``). ``flip``: the
    scores averaged with those of the mirror image (``FlipAveraged``, test-time flip)."""
    import onnx

    started = time.perf_counter()
    height, width = height or info.input_height, width or info.input_width
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    if sub_pixel:
        model = surgery.with_sub_pixel_upsampling(model)
    if flip:
        model = surgery.FlipAveraged(model)
    dummy = torch.zeros(1, 3, height, width)
    tmp = private_temp_path(path, ".onnx")
    with warnings.catch_warnings():  # tracer notes about the (static) padding branch are expected
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    graph = fold_constants(tmp)
    meta = json.loads(info.to_json())
    meta.update(input_height=height, input_width=width)
    meta.pop("training", None)  # history is long and only the .pt needs it
    entry = graph.metadata_props.add()
    entry.key, entry.value = "fcn_segmentation", json.dumps(meta)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(tmp))
    os.replace(tmp, path)
    logger.info("exported %s in %.1f s", path, time.perf_counter() - started)
    return path


def fold_constants(path):
    """Constant-fold with ONNX Runtime's basic (standard-ONNX-only) optimisations: the exporter's
    pad-shape arithmetic collapses into asymmetric Conv pads, leaving a static graph of Conv, Clip,
    Add and ConvTranspose whose output shape is known (what TensorRT wants)."""
    import onnx
    import onnxruntime as ort

    folded = Path(str(path) + ".folded")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(folded))
    folded.unlink()
    used_domains = {node.domain for node in graph.graph.node}
    keep = [op for op in graph.opset_import if op.domain in used_domains | {""}]
    del graph.opset_import[:]
    graph.opset_import.extend(keep)
    return onnx.shape_inference.infer_shapes(graph)


def read_onnx_info(path) -> ModelInfo:
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    for entry in graph.metadata_props:
        if entry.key == "fcn_segmentation":
            return ModelInfo.from_dict(json.loads(entry.value))
    raise ValueError(f"{path} carries no fcn_segmentation metadata; export it with `fcnseg export`")


def onnx_is_quantized(path) -> bool:
    """True for a QDQ graph (``fcnseg quantize``): TensorRT builds it in INT8 from its own scales."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


def export_cache_key(model_path, info: ModelInfo, sub_pixel: bool = False, flip: bool = False) -> str:
    """What a cached export depends on: the model file's bytes, the input size, the opset, this
    module's source (how the graph is exported and folded), torch's version (its exporter) and the
    upsampler's form and test-time flip (surgery.py's source), so a change to any of them exports
    again instead of reusing an old graph."""
    fields = {"model": hashlib.sha256(Path(model_path).read_bytes()).hexdigest(),
              "input": [info.input_height, info.input_width], "opset": OPSET,
              "exporter": EXPORTER_SOURCE_HASH, "torch": torch.__version__}
    if sub_pixel:
        fields.update(sub_pixel=SURGERY_SOURCE_HASH)
    if flip:
        fields.update(flip=SURGERY_SOURCE_HASH)
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def onnx_cache_path(model_path, info: ModelInfo, sub_pixel: bool = False, flip: bool = False) -> Path:
    """``<model>.<H>x<W>.<key>[.subpixel][.flip].onnx`` next to the model file, or under ~/.cache if
    that is not writable."""
    model_path = Path(model_path)
    key = export_cache_key(model_path, info, sub_pixel, flip)
    form = ".subpixel" * sub_pixel + ".flip" * flip
    name = f"{model_path.stem}.{info.input_height}x{info.input_width}.{key}{form}.onnx"
    beside = model_path.parent / name
    if beside.is_file() or _writable(model_path.parent):
        return beside
    cache = Path.home() / ".cache" / "fcn_segmentation"
    cache.mkdir(parents=True, exist_ok=True)
    return cache / name


def cached_onnx(model_path, model: torch.nn.Module, info: ModelInfo, sub_pixel: bool = False,
                flip: bool = False) -> Path:
    """The model's ONNX export from the cache, exported first if missing. A cached file that is
    damaged (not a whole graph with our metadata) is this package's own: it is deleted and exported
    again rather than failing every start."""
    path = onnx_cache_path(model_path, info, sub_pixel, flip)
    if path.is_file():
        problem = cached_export_problem(path)
        if problem is None:
            return path
        logger.warning("cached ONNX export %s is unusable (%s); deleting it and exporting again", path, problem)
        path.unlink(missing_ok=True)
    logger.info("exporting %s to %s (once per model and input size; takes some seconds)", model_path, path)
    return export_onnx(model, info, path, sub_pixel=sub_pixel, flip=flip)


def cached_export_problem(path) -> Optional[str]:
    """Why a cached export cannot be used, or None. ``export_onnx`` writes the metadata entry after
    the graph (protobuf field order), so a file cut short anywhere lacks it."""
    import onnx

    try:
        graph = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others for damaged files
        return f"not a readable ONNX file: {exc}"
    if not any(entry.key == "fcn_segmentation" for entry in graph.metadata_props):
        return "no fcn_segmentation metadata: cut short, or not written by fcnseg"
    return None


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def compare_with_torch(model: torch.nn.Module, onnx_path, batches) -> dict:
    """Run the same inputs through PyTorch and ONNX Runtime; return the worst score difference and
    the share of pixels whose argmax class agrees."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    max_abs, agree, total = 0.0, 0, 0
    for batch in batches:
        with torch.inference_mode():
            expected = model(torch.from_numpy(batch)).numpy()
        actual = session.run(None, {INPUT_NAME: batch})[0]
        max_abs = max(max_abs, float(np.abs(expected - actual).max()))
        agree += int((expected.argmax(1) == actual.argmax(1)).sum())
        total += expected.shape[0] * expected.shape[2] * expected.shape[3]
    return {"max_abs_diff": max_abs, "argmax_agreement": agree / max(total, 1)}
