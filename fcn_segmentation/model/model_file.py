"""The ``.pt`` model file: weights plus everything needed to use them (classes, palette, input size,
normalisation, architecture, metrics). Loads with ``torch.load(weights_only=True)``."""

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..defaults import MODEL_FILENAME, missing_model_hint
from ..files import private_temp_path, regular_file_problem
from .backbones import build_backbone
from .fcn import FCN

FORMAT = "fcn_segmentation/model/1"


class ModelFileError(RuntimeError):
    """A model file is missing, unreadable or inconsistent."""


@dataclasses.dataclass
class ModelInfo:
    class_names: List[str]
    palette: List[Tuple[int, int, int]]
    input_height: int
    input_width: int
    image_mean: Tuple[float, float, float]
    image_std: Tuple[float, float, float]
    variant: str = "fcn8s"
    backbone: str = "efficientnet_lite0"
    learnable_upsampling: bool = True
    ignore_index: int = 255
    metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
    training: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelInfo":
        """Raise ModelFileError naming the field that is missing or malformed."""
        if not isinstance(data, dict):
            raise ModelFileError(f"the metadata is a JSON {type(data).__name__}, not an object")
        fields = dataclasses.fields(cls)
        required = [f.name for f in fields
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ModelFileError(f"the metadata lacks {', '.join(missing)}")
        names = data["class_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ModelFileError(f"class_names must be a non-empty list of names, not {names!r}")
        known = {f.name for f in fields}
        try:
            info = cls(**{k: v for k, v in data.items() if k in known})
            info.palette = [tuple(int(c) for c in rgb) for rgb in info.palette]
            info.image_mean = tuple(float(v) for v in info.image_mean)
            info.image_std = tuple(float(v) for v in info.image_std)
            info.input_height, info.input_width = int(info.input_height), int(info.input_width)
        except (TypeError, ValueError) as exc:  # e.g. a colour or a size that is not a number
            raise ModelFileError(f"the metadata has a malformed palette, size or normalisation ({exc})") from exc
        if len(info.palette) != len(info.class_names):
            raise ModelFileError(f"palette has {len(info.palette)} colours for {len(info.class_names)} classes")
        if any(len(rgb) != 3 for rgb in info.palette):
            raise ModelFileError(f"palette colours must be (r, g, b), not {info.palette}")
        if len(info.image_mean) != 3 or len(info.image_std) != 3:
            raise ModelFileError("image_mean and image_std need one value per colour channel (3)")
        if not all(math.isfinite(v) for v in info.image_mean + info.image_std):
            raise ModelFileError(f"image_mean {list(info.image_mean)} and image_std {list(info.image_std)} must be "
                                 "finite numbers")
        if not all(v > 0 for v in info.image_std):
            raise ModelFileError(f"image_std {list(info.image_std)} must be > 0 in every channel (the input is "
                                 "divided by it: 0 gives infinite scores and a mask of one class)")
        if info.input_height <= 0 or info.input_width <= 0:
            raise ModelFileError(f"input size {info.input_width}x{info.input_height} must be positive")
        return info


def build_model(info: ModelInfo, pretrained_backbone: bool = False) -> FCN:
    return FCN(build_backbone(info.backbone, pretrained=pretrained_backbone), info.num_classes,
               variant=info.variant, learnable_upsampling=info.learnable_upsampling)


def save_model_file(path, model: FCN, info: ModelInfo) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tmp = private_temp_path(path)
    torch.save({"format": FORMAT, "info": info.to_json(), "state_dict": state}, tmp)
    tmp.replace(path)


def _first_shape_mismatch(model: FCN, state) -> Optional[str]:
    if not isinstance(state, dict):
        return None  # load_state_dict says what is wrong
    for name, tensor in model.state_dict().items():
        stored = state.get(name)
        if hasattr(stored, "shape") and tuple(stored.shape) != tuple(tensor.shape):
            return f"{name} has shape {tuple(stored.shape)} in the file, the model needs {tuple(tensor.shape)}"
    return None


def load_model_file(path) -> Tuple[FCN, ModelInfo]:
    """Load a model file into an FCN in eval mode; raise ModelFileError with a fix-it message."""
    path = Path(path)
    problem = regular_file_problem(path)
    if problem:
        raise ModelFileError(f"model file {path} {problem}; {missing_model_hint(path)}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ModelFileError(f"model file {path} is not a readable fcn_segmentation model: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelFileError(f"model file {path} is not in format {FORMAT}")
    # Past the format check the file claims to be ours, so what is wrong with it is damage or a
    # file written by another version: say which, and that a file from `fcnseg train` is needed.
    remedy = ("use a model file written by `fcnseg train` with this version of fcn_segmentation "
              f"(the bundled default is models/{MODEL_FILENAME})")
    missing = [key for key in ("info", "state_dict") if key not in blob]
    if missing:
        raise ModelFileError(f"model file {path} lacks its {' and '.join(missing)} entry; {remedy}")
    try:
        info = ModelInfo.from_dict(json.loads(blob["info"]))
    except (TypeError, ValueError) as exc:  # not a string, or not JSON (JSONDecodeError is a ValueError)
        raise ModelFileError(f"model file {path} has unreadable metadata ({exc}); {remedy}") from exc
    except ModelFileError as exc:
        raise ModelFileError(f"model file {path}: {exc}; {remedy}") from exc
    try:
        model = build_model(info)
    except (TypeError, ValueError) as exc:  # an unknown variant or backbone
        raise ModelFileError(f"model file {path} describes a model this version cannot build "
                             f"(variant {info.variant!r}, backbone {info.backbone!r}): {exc}; {remedy}") from exc
    mismatch = _first_shape_mismatch(model, blob["state_dict"])
    if mismatch:  # e.g. class names edited, or weights of a model trained for another number of classes
        raise ModelFileError(f"weights in {path} do not fit the {info.variant}/{info.backbone} model with "
                             f"{info.num_classes} classes its metadata describes: {mismatch}; {remedy}")
    try:
        model.load_state_dict(blob["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:  # wrong keys, or not a state dict
        raise ModelFileError(f"weights in {path} do not fit a {info.variant}/{info.backbone} model: {exc}") from exc
    return model.eval(), info
