"""Weight surgery for FCN heads (after shelhamer/fcn.berkeleyvision.org ``surgery.py``)."""

import numpy as np
import torch
from torch import nn


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights of a per-channel transposed convolution that performs bilinear upsampling.

    Shape ``(channels, channels, k, k)``: channel i maps only to channel i.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = np.ogrid[:kernel_size, :kernel_size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    weight = np.zeros((channels, channels, kernel_size, kernel_size), dtype=np.float32)
    weight[range(channels), range(channels)] = filt
    return torch.from_numpy(weight)


def bilinear_upsampler(channels: int, factor: int, learnable: bool = True) -> nn.ConvTranspose2d:
    """A transposed convolution that upsamples by ``factor`` exactly, initialised to bilinear interpolation.

    Kernel ``2 * factor`` with padding ``factor / 2`` makes the output exactly ``factor`` times the
    input and aligned with it, so no cropping is needed. ``learnable=False`` freezes it (fixed bilinear).
    """
    if factor < 2 or factor % 2:
        raise ValueError(f"upsampling factor must be even and >= 2, got {factor}")
    up = nn.ConvTranspose2d(channels, channels, kernel_size=2 * factor, stride=factor,
                            padding=factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    up.weight.requires_grad_(learnable)
    return up
