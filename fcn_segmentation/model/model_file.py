"""The ``.pt`` model file: weights plus everything needed to use them (classes, palette, input size,
normalisation, architecture, metrics). Loads with ``torch.load(weights_only=True)``."""

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..files import private_temp_path
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
        known = {f.name for f in dataclasses.fields(cls)}
        info = cls(**{k: v for k, v in data.items() if k in known})
        info.palette = [tuple(int(c) for c in rgb) for rgb in info.palette]
        info.image_mean = tuple(float(v) for v in info.image_mean)
        info.image_std = tuple(float(v) for v in info.image_std)
        if len(info.palette) != len(info.class_names):
            raise ModelFileError(f"palette has {len(info.palette)} colours for {len(info.class_names)} classes")
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


def load_model_file(path, expected_classes: Optional[int] = None) -> Tuple[FCN, ModelInfo]:
    """Load a model file into an FCN in eval mode; raise ModelFileError with a fix-it message."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist; pass an existing .pt file "
                             "(the bundled default is models/fcn8s_effnetlite0_camvid.pt)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ModelFileError(f"model file {path} is not a readable fcn_segmentation model: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelFileError(f"model file {path} is not in format {FORMAT}")
    info = ModelInfo.from_dict(json.loads(blob["info"]))
    if expected_classes is not None and info.num_classes != expected_classes:
        raise ModelFileError(f"model file {path} has {info.num_classes} classes, expected {expected_classes}")
    model = build_model(info)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"weights in {path} do not fit a {info.variant}/{info.backbone} model: {exc}") from exc
    return model.eval(), info
