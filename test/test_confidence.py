"""The confidence monitor on real CamVid frames and on frames that are not road scenes (no ROS)."""

import numpy as np
import pytest

from fcn_segmentation.confidence import (ConfidenceMonitor, ConfidenceSummary, frame_confidence, picture_statistics,
                                         unlike_training_frames, unsure)
from fcn_segmentation.data import read_rgb, split_pairs
from fcn_segmentation.postprocess import confidence_map


@pytest.fixture(scope="module")
def segmenter(bundled_model):
    from fcn_segmentation.backends import create_backend
    from fcn_segmentation.pipeline import Segmenter

    return Segmenter(create_backend("torch", bundled_model, device="cpu")[0])


def _period(segmenter, pictures):
    monitor = ConfidenceMonitor()
    for rgb in pictures:
        monitor.add(segmenter(rgb).scores, rgb)
    return monitor.take()


def test_frame_confidence_is_the_mean_max_softmax_probability():
    scores = np.random.default_rng(0).standard_normal((1, 11, 40, 48)).astype(np.float32) * 3
    mean, low = frame_confidence(scores, 0.5, stride=1)
    probability = confidence_map(scores) / 255.0
    assert mean == pytest.approx(probability.mean(), abs=2e-3)
    assert low == pytest.approx((probability < 0.5).mean(), abs=0.01)
    assert frame_confidence(scores, 0.5, stride=4)[0] == pytest.approx(mean, abs=0.02)  # subsampled


def test_real_road_frames_are_not_flagged(segmenter, sample_dir):
    frames = [read_rgb(image) for image, _ in split_pairs(sample_dir, "val")]
    summary = _period(segmenter, frames)
    assert summary.frames == len(frames)
    assert summary.mean > 0.9 and summary.low_share < 0.05
    assert unsure(summary) is None
    for rgb in frames:  # each frame on its own, too
        assert unsure(_period(segmenter, [rgb])) is None


@pytest.mark.parametrize("name, reason", [
    ("uniform_noise", "the picture is mostly noise"), ("grey", "the picture is almost uniform"),
    ("black", "the picture is almost uniform"), ("white", "the picture is almost uniform"),
    ("rotated_90", "mean max probability"), ("rotated_180", "mean max probability"),
    ("colour_blocks", "mean max probability")])
def test_frames_that_are_not_road_scenes_are_flagged(segmenter, sample_dir, name, reason):
    rgb = read_rgb(split_pairs(sample_dir, "val")[0][0])
    picture = dict(unlike_training_frames(rgb))[name]
    message = unsure(_period(segmenter, [picture] * 2))
    assert message is not None and message.startswith("unsure over the last 2 frames: ") and reason in message


def test_a_period_without_frames_says_nothing_and_take_resets():
    monitor = ConfidenceMonitor()
    assert monitor.take() is None and unsure(None) is None
    rgb = np.full((36, 48, 3), 100, np.uint8)
    monitor.add(np.zeros((1, 11, 8, 8), np.float32), rgb)  # equal scores: probability 1/11 everywhere
    summary = monitor.take()
    assert summary.frames == 1 and summary.mean == pytest.approx(1 / 11) and summary.low_share == 1.0
    assert monitor.take() is None


def test_picture_statistics():
    assert picture_statistics(np.full((64, 64, 3), 7, np.uint8)) == (0.0, 0.0)
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, 1::2] = 200
    contrast, noise = picture_statistics(stripes, stride=1)
    assert contrast == pytest.approx(100.0) and noise == pytest.approx(200.0)
    assert unsure(ConfidenceSummary(3, 0.95, 0.01, 60.0, 9.0)) is None


def test_the_monitor_reads_the_same_pixels_from_scores_sampled_at_a_divisor_of_its_stride():
    scores = np.random.default_rng(1).standard_normal((1, 11, 64, 96)).astype(np.float32) * 3
    rgb = np.zeros((64, 96, 3), np.uint8)
    monitor = ConfidenceMonitor(stride=4)
    full = monitor.add(scores, rgb)
    assert monitor.add(scores[:, :, ::4, ::4], rgb, scores_stride=4) == full
    assert monitor.add(scores[:, :, ::2, ::2], rgb, scores_stride=2) == full
    with pytest.raises(ValueError, match="every 3 pixels cannot give every 4-th"):
        monitor.add(scores[:, :, ::3, ::3], rgb, scores_stride=3)
