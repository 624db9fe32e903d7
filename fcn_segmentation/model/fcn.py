"""Fully Convolutional Networks (Long, Shelhamer, Darrell): FCN-32s, FCN-16s, FCN-8s and FCN-4s heads.

The backbone's classifier is replaced by a 1x1 convolution that scores every class at every
position (``score_fr``). Coarse scores are upsampled by transposed convolutions initialised to
bilinear interpolation and summed with 1x1 scores of finer layers (``score_pool4`` at stride 16,
``score_pool3`` at stride 8, and for FCN-4s ``score_pool2`` at stride 4: the paper's skip pattern
one step finer, for thin classes such as poles) before the final upsampling to the input size.
"""

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .surgery import bilinear_upsampler

VARIANTS = ("fcn32s", "fcn16s", "fcn8s", "fcn4s")
OUTPUT_STRIDE = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8, "fcn4s": 4}
INPUT_MULTIPLE = 32  # the backbone's coarsest stride: exported graphs take sides that are multiples of it


def network_size_error(height: int, width: int):
    """Why (height, width) cannot be an exported graph's input size, or None if it can."""
    if height <= 0 or width <= 0 or height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
        return f"network input size {width}x{height}: both sides must be positive multiples of {INPUT_MULTIPLE}"
    return None


class FCN(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, variant: str = "fcn8s",
                 learnable_upsampling: bool = True, dropout: float = 0.1):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown FCN variant {variant!r}; choose one of {VARIANTS}")
        self.variant = variant
        self.num_classes = num_classes
        self.backbone = backbone
        channels: Dict[str, int] = backbone.feature_channels
        self.dropout = nn.Dropout2d(dropout)
        self.score_fr = nn.Conv2d(channels["stride32"], num_classes, kernel_size=1)
        self.output_stride = stride = OUTPUT_STRIDE[variant]
        if stride <= 16:
            self.upscore2 = bilinear_upsampler(num_classes, 2, learnable_upsampling)
            self.score_pool4 = _zero_init(nn.Conv2d(channels["stride16"], num_classes, kernel_size=1))
        if stride <= 8:
            self.upscore_pool4 = bilinear_upsampler(num_classes, 2, learnable_upsampling)
            self.score_pool3 = _zero_init(nn.Conv2d(channels["stride8"], num_classes, kernel_size=1))
        if stride <= 4:
            self.upscore_pool3 = bilinear_upsampler(num_classes, 2, learnable_upsampling)
            self.score_pool2 = _zero_init(nn.Conv2d(channels["stride4"], num_classes, kernel_size=1))
        self.upscore_final = bilinear_upsampler(num_classes, stride, learnable_upsampling)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` (N, 3, H, W) normalised -> class scores (N, C, H, W)."""
        height, width = image.shape[-2:]
        padded = bool(height % 32 or width % 32)
        if padded:  # exported graphs have sides that are multiples of 32 and skip this
            image = F.pad(image, (0, (-width) % 32, 0, (-height) % 32))
        features = self.backbone(image)
        scores = self.score_fr(self.dropout(features["stride32"]))
        stride = self.output_stride
        if stride <= 16:
            scores = self.upscore2(scores) + self.score_pool4(features["stride16"])  # fuse_pool4
        if stride <= 8:
            scores = self.upscore_pool4(scores) + self.score_pool3(features["stride8"])  # fuse_pool3
        if stride <= 4:
            scores = self.upscore_pool3(scores) + self.score_pool2(features["stride4"])  # fuse_pool2
        scores = self.upscore_final(scores)
        return scores[..., :height, :width] if padded else scores


def _zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    # As in the paper: a new skip starts at zero so the coarser net's output is unchanged at first.
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv
