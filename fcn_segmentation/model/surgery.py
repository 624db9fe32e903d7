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


class SubPixelUpsampler(nn.Module):
    """The same function as a ``bilinear_upsampler`` (transposed convolution, kernel 2s, stride s,
    padding s/2, no bias), computed as a 2x2 convolution to C x s x s channels, a pixel shuffle and a
    crop. Used only in graphs exported for OpenVINO: its CPU plugin has no INT8 kernel for the 16x16
    stride-8 transposed convolution and ran it in FP32 (a fifth of the INT8 network's time), while
    this form is an ordinary convolution it quantizes (README, Performance).

    Output row ``Y + s/2 = q*s + r`` takes input rows q and q-1 through kernel rows r and s+r, so
    tap ``a`` of the 2x2 kernel (input row q-1+a) holds kernel row ``(1-a)*s + r``."""

    def __init__(self, upsampler: nn.ConvTranspose2d):
        super().__init__()
        factor, padding = upsampler.stride[0], upsampler.padding[0]
        shape_ok = (upsampler.kernel_size == (2 * factor, 2 * factor) and upsampler.stride == (factor, factor)
                    and upsampler.padding == (factor // 2, factor // 2) and upsampler.groups == 1
                    and upsampler.bias is None and upsampler.output_padding == (0, 0)
                    and upsampler.dilation == (1, 1))
        if not shape_ok:
            raise ValueError(f"not a bilinear_upsampler-shaped transposed convolution: {upsampler}")
        weight = upsampler.weight.detach()  # (in, out, 2s, 2s)
        channels_in, channels_out = weight.shape[:2]
        taps = weight.reshape(channels_in, channels_out, 2, factor, 2, factor).flip(2, 4)  # [i, o, a, r, b, r']
        kernel = taps.permute(1, 3, 5, 0, 2, 4).reshape(channels_out * factor * factor, channels_in, 2, 2)
        self.register_buffer("kernel", kernel.contiguous())
        self.factor, self.padding = factor, padding

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        height, width = scores.shape[-2:]
        phases = nn.functional.conv2d(nn.functional.pad(scores, (1, 1, 1, 1)), self.kernel)
        upsampled = nn.functional.pixel_shuffle(phases, self.factor)
        return upsampled[..., self.padding:self.padding + height * self.factor,
                         self.padding:self.padding + width * self.factor]


def with_sub_pixel_upsampling(model: nn.Module, names=("upscore_final",)) -> nn.Module:
    """A copy of ``model`` whose named upsamplers are ``SubPixelUpsampler``s (same outputs)."""
    import copy

    converted = copy.deepcopy(model)
    for name in names:
        if isinstance(getattr(converted, name, None), nn.ConvTranspose2d):
            setattr(converted, name, SubPixelUpsampler(getattr(converted, name)))
    return converted


class FlipAveraged(nn.Module):
    """Test-time flip: the mean of the scores of the image and of its mirror image (mirrored back),
    run as one batch of two. The same weights, so the model file is unchanged; twice the network's
    work for +0.6 to +0.8 point mIoU on an unseen drive (README, The bundled models)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        scores = self.model(torch.cat([image, image.flip(-1)]))
        return (scores[:1] + scores[1:].flip(-1)) * 0.5
