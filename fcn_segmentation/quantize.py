"""CPU INT8: ONNX Runtime static quantization (QDQ), calibrated on preprocessed training images."""

import logging
from pathlib import Path
from typing import Sequence

from .data import read_rgb
from .export import INPUT_NAME, read_onnx_info
from .preprocess import Preprocessor

logger = logging.getLogger(__name__)


def quantize_onnx(fp32_onnx, out_path, calibration_images: Sequence[Path], per_channel: bool = True) -> Path:
    """Write a QDQ INT8 model calibrated on ``calibration_images``; metadata is carried over."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from tqdm import tqdm

    info = read_onnx_info(fp32_onnx)
    preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)

    class Images(CalibrationDataReader):
        def __init__(self):
            self.paths = iter(tqdm(list(calibration_images), desc="calibrating", unit="img"))

        def get_next(self):
            path = next(self.paths, None)
            return None if path is None else {INPUT_NAME: preprocess(read_rgb(path)).copy()}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = out_path.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(out_path), Images(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                    calibrate_method=CalibrationMethod.MinMax)
    prepared.unlink()
    graph = onnx.load(str(out_path))
    source = onnx.load(str(fp32_onnx), load_external_data=False)
    del graph.metadata_props[:]
    graph.metadata_props.extend(source.metadata_props)
    onnx.save(graph, str(out_path))
    return out_path
