"""The confidence monitor on real CamVid frames and on frames that are not road scenes (no ROS)."""

import numpy as np
import pytest

from fcn_segmentation.confidence import (CAMVID_LAYOUT, DAY_AND_DUSK_MIN_BRIGHTER_ABOVE,
                                         DAY_AND_DUSK_MIN_BRIGHTER_ABOVE_LESS_SIDEWAYS, DAYTIME_MIN_UPRIGHT_MARGIN,
                                         ConfidenceMonitor, ConfidenceSummary, Thresholds, doubts,
                                         frame_confidence, layout_classes, picture_statistics, sky_above_road,
                                         turned_over, unlike_training_frames, unsure)
from fcn_segmentation.data import read_rgb, split_pairs
from fcn_segmentation.postprocess import confidence_map


SKY, ROAD = CAMVID_LAYOUT


@pytest.fixture(scope="module")
def segmenter(bundled_model):
    from fcn_segmentation.backends import create_backend
    from fcn_segmentation.pipeline import Segmenter

    return Segmenter(create_backend("torch", bundled_model, device="cpu")[0])


def _period(segmenter, pictures):
    """The pictures' period summary, measured as the node measures them (one upright check)."""
    monitor = ConfidenceMonitor()
    for rgb in pictures:
        mean, *_ = monitor.add(segmenter(rgb).scores, rgb)
        if monitor.wants_upright_check():
            monitor.add_upright_check(mean, segmenter(turned_over(rgb)).scores)
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
    ("rotated_90", "the sky is not above the road")])
def test_frames_that_are_not_road_scenes_are_flagged(segmenter, sample_dir, name, reason):
    for image, _ in split_pairs(sample_dir, "val"):
        picture = dict(unlike_training_frames(read_rgb(image)))[name]
        message = unsure(_period(segmenter, [picture] * 2))
        assert message is not None and message.startswith("unsure over the last 2 frames: ") and reason in message, \
            (image.name, message)


def test_upside_down_daytime_frames_are_flagged_by_the_upright_check_when_it_is_on(segmenter, sample_dir):
    """Upside down, the network often calls the sky road and the road sky, and stays fairly sure:
    the layout missed 2 of the 6 sample frames. Turned back over, each is a street the network is
    surer of, and the upright check, at its daytime setting, says so for all six. Off by default
    (it misfires at dusk)."""
    daytime = Thresholds(min_upright_margin=DAYTIME_MIN_UPRIGHT_MARGIN)
    for image, _ in split_pairs(sample_dir, "val"):
        upright = read_rgb(image)
        summary = _period(segmenter, [turned_over(upright)])
        assert "upside_down" in doubts(summary, daytime), (image.name, summary)
        assert "mounted upside down" in unsure(summary, daytime)
        assert "upside_down" not in doubts(summary), "off by default"
        assert summary.upright_margin < -0.05
        assert _period(segmenter, [upright]).upright_margin > 0.05, image.name


def _day_and_dusk_frames(sample_dir):
    """The sample's six val frames (daylight) and the six bundled calibration frames of drive 0001TP (dusk)."""
    from pathlib import Path

    dusk = sorted((Path(__file__).resolve().parents[1] / "models" / "calibration").glob("0001TP_*.jpg"))
    day = [image for image, _ in split_pairs(sample_dir, "val")]
    assert len(dusk) == 6 and len(day) == 6
    return day + dusk


def _picture_summary(rgb):
    monitor = ConfidenceMonitor(stride=1)
    monitor.add(np.zeros((1, 11, 4, 4), np.float32), rgb)  # the picture checks need no network
    return monitor.take()


def test_upside_down_frames_by_day_and_at_dusk_are_flagged_by_the_picture_when_that_check_is_on(sample_dir):
    """The network-based checks do not see an upside-down camera at dusk (README, confidence monitor);
    the picture does: its sky is the brightest thing in it. A camera turned by 90 degrees is not told
    apart by this check."""
    checks = Thresholds(min_brighter_above=DAY_AND_DUSK_MIN_BRIGHTER_ABOVE)
    for image in _day_and_dusk_frames(sample_dir):
        upright = read_rgb(image)
        summary = _picture_summary(upright)
        assert summary.brighter_above > 0.5 and "dark_above" not in doubts(summary, checks), image.name
        summary = _picture_summary(turned_over(upright))
        assert summary.brighter_above < -0.5, image.name
        assert "dark_above" in doubts(summary, checks) and "darker above than below" in unsure(summary, checks)
        assert "dark_above" not in doubts(summary), "off by default"


def test_frames_turned_by_90_degrees_at_dusk_are_flagged_by_the_picture_when_that_check_is_on(sample_dir):
    """The sky at one side: flagged at dusk in both directions, and in daylight (the sample's frames,
    where every frame tells it); upright frames of both are not."""
    checks = Thresholds(min_brighter_above_less_sideways=DAY_AND_DUSK_MIN_BRIGHTER_ABOVE_LESS_SIDEWAYS)
    for image in _day_and_dusk_frames(sample_dir):
        upright = read_rgb(image)
        summary = _picture_summary(upright)
        assert summary.brighter_above_less_sideways > 0.3 and "bright_sideways" not in doubts(summary, checks)
        for quarter_turns in (1, -1):
            summary = _picture_summary(np.ascontiguousarray(np.rot90(upright, quarter_turns)))
            assert summary.brighter_above_less_sideways < -0.5, (image.name, quarter_turns)
            assert "bright_sideways" in doubts(summary, checks)
            assert "brighter at one side than above" in unsure(summary, checks)
            assert "bright_sideways" not in doubts(summary), "off by default"


def test_one_upright_check_per_period_and_its_mean():
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((1, 11, 16, 16)).astype(np.float32)
    rgb = np.zeros((16, 16, 3), np.uint8)
    monitor = ConfidenceMonitor(stride=1)
    mean, *_ = monitor.add(scores, rgb)
    assert monitor.wants_upright_check()
    sure = np.zeros_like(scores)
    sure[0, 3] = 50.0  # probability 1 everywhere
    assert monitor.add_upright_check(mean, sure) == pytest.approx(mean - 1.0)
    assert not monitor.wants_upright_check(), "one check per period"
    monitor.add_upright_check(0.9, scores[:, :, ::-1].copy())
    summary = monitor.take()
    assert summary.upright_margin == pytest.approx(((mean - 1.0) + (0.9 - mean)) / 2, abs=1e-6)
    assert monitor.wants_upright_check(), "a new period wants its check"
    monitor.add(scores, rgb)
    assert np.isnan(monitor.take().upright_margin), "no check ran: no margin"
    turned = summary._replace(upright_margin=-0.2)
    assert "upside_down" in doubts(turned, Thresholds(min_upright_margin=-0.05))
    assert "upside_down" not in doubts(turned, Thresholds(min_upright_margin=-1.0))
    assert "upside_down" not in doubts(turned._replace(upright_margin=float("nan")), Thresholds(min_upright_margin=0.0))


def test_the_layout_is_road_rows_minus_sky_rows_and_says_nothing_without_both():
    scores = np.zeros((1, 11, 10, 8), np.float32)
    scores[0, 1] = 1            # Building everywhere else
    scores[0, SKY, :3] = 5      # rows 0-2 sky
    scores[0, ROAD, 6:] = 5     # rows 6-9 road
    assert sky_above_road(scores, stride=1) == pytest.approx((7.5 - 1.0) / 9)
    assert sky_above_road(scores[:, :, ::-1].copy(), stride=1) == pytest.approx(-(7.5 - 1.0) / 9)
    assert np.isnan(sky_above_road(scores[:, :, 4:].copy(), stride=1)), "no sky: no layout"
    assert layout_classes(["Road", "Car", "Sky"]) == (2, 0) and layout_classes(["Road", "Car"]) is None
    monitor = ConfidenceMonitor(stride=1, layout=None)
    monitor.add(scores, np.zeros((10, 8, 3), np.uint8))
    assert np.isnan(monitor.take().sky_above_road), "a model without Sky and Road: no layout check"
    summary = ConfidenceSummary(2, 0.95, 0.01, 60.0, 9.0, 0.1)
    assert "the sky is not above the road" in unsure(summary)
    assert unsure(summary, Thresholds(min_sky_above_road=-1.0)) is None
    assert unsure(summary._replace(sky_above_road=float("nan"))) is None


def test_a_period_without_frames_says_nothing_and_take_resets():
    monitor = ConfidenceMonitor()
    assert monitor.take() is None and unsure(None) is None
    rgb = np.full((36, 48, 3), 100, np.uint8)
    monitor.add(np.zeros((1, 11, 8, 8), np.float32), rgb)  # equal scores: probability 1/11 everywhere
    summary = monitor.take()
    assert summary.frames == 1 and summary.mean == pytest.approx(1 / 11) and summary.low_share == 1.0
    assert monitor.take() is None


def test_picture_statistics():
    assert picture_statistics(np.full((64, 64, 3), 7, np.uint8)) == (0.0, 0.0, 0.0, 0.0)
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, 1::2] = 200
    contrast, noise, brighter_above, less_sideways = picture_statistics(stripes, stride=1)
    assert contrast == pytest.approx(100.0) and noise == pytest.approx(200.0) and brighter_above == 0.0
    assert less_sideways == pytest.approx(-(200 / 21) / 100), "right third: 11 bright columns of 21, left: 10"
    bright_top = np.full((60, 9, 3), 50, np.uint8)
    bright_top[:20] = 200  # mean 100: (200 - 50) / 100
    assert picture_statistics(bright_top, stride=1)[2:] == pytest.approx((1.5, 1.5)), "no side brighter"
    assert picture_statistics(turned_over(bright_top), stride=1)[2:] == pytest.approx((-1.5, -1.5))
    bright_left = np.ascontiguousarray(np.rot90(np.full((63, 60, 3), 50, np.uint8)))
    bright_left[:, :21] = 200  # mean 100: left minus right (200 - 50) / 100, nothing brighter above
    assert picture_statistics(bright_left, stride=1)[2:] == pytest.approx((0.0, -1.5))
    assert picture_statistics(bright_left[:, ::-1], stride=1)[2:] == pytest.approx((0.0, -1.5)), "either side"
    assert picture_statistics(np.zeros((2, 2, 3), np.uint8), stride=1)[2:] == (0.0, 0.0), "too small for thirds"
    assert unsure(ConfidenceSummary(3, 0.95, 0.01, 60.0, 9.0, 0.6)) is None


def test_the_monitor_reads_the_same_pixels_from_scores_sampled_at_a_divisor_of_its_stride():
    scores = np.random.default_rng(1).standard_normal((1, 11, 64, 96)).astype(np.float32) * 3
    rgb = np.zeros((64, 96, 3), np.uint8)
    monitor = ConfidenceMonitor(stride=4)
    full = monitor.add(scores, rgb)
    assert monitor.add(scores[:, :, ::4, ::4], rgb, scores_stride=4) == full
    assert monitor.add(scores[:, :, ::2, ::2], rgb, scores_stride=2) == full
    with pytest.raises(ValueError, match="every 3 pixels cannot give every 4-th"):
        monitor.add(scores[:, :, ::3, ::3], rgb, scores_stride=3)


def test_calibration_scores_the_named_drive_only_and_says_which(sample_dir, tmp_path, tiny_model_file, capsys):
    import json
    import shutil

    from fcn_segmentation.cli import main

    root = tmp_path / "camvid"
    for split in ("val", "valannot"):
        (root / split).mkdir(parents=True)
    sources = sorted((sample_dir / "val").glob("*.png"))
    for index, name in enumerate(["AAA_001", "AAA_002", "BBB_001"]):
        for split in ("val", "valannot"):
            shutil.copy(sample_dir / split / sources[index].name, root / split / f"{name}.png")
    out = tmp_path / "report.json"
    assert main(["calibrate-confidence", "--data", str(root), "--sequences", "AAA", "--model", str(tiny_model_file),
                 "--backend", "torch", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["splits"] == ["val"] and report["sequences"] == ["AAA"] and report["road_frames"] == 2
    assert report["road"]["mean_max_probability"]["frames"] == 2
    assert 0 < report["road"]["mean_max_probability"]["min"] <= report["road"]["mean_max_probability"]["max"] <= 1
    assert 0 <= report["road_frames_flagged"]["frames"] <= 2
    assert set(report["not_road_scenes"]) == {"uniform_noise", "grey", "black", "white", "rotated_90",
                                              "rotated_180", "colour_blocks"}
    assert report["not_road_scene_frames_flagged"]["grey"] == 3, "a uniform picture is always flagged"
    assert report["thresholds"]["confidence_min_sky_above_road"] == Thresholds().min_sky_above_road
    capsys.readouterr()
    assert main(["calibrate-confidence", "--data", str(root), "--sequences", "CCC", "--model", str(tiny_model_file),
                 "--backend", "torch"]) == 2
    assert "CCC have no frames" in capsys.readouterr().err
