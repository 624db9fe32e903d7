"""FCN model, backbones and the model file format."""

from .fcn import FCN, VARIANTS
from .backbones import BACKBONES, build_backbone
from .model_file import ModelInfo, build_model, load_model_file, save_model_file

__all__ = ["FCN", "VARIANTS", "BACKBONES", "build_backbone", "ModelInfo", "build_model",
           "load_model_file", "save_model_file"]
