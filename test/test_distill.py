"""Distillation: teacher predictions, soft targets cut like the labels, the loss, and `fcnseg train --teacher`."""

import logging

import numpy as np
import pytest
import torch

from conftest import BUNDLED_MODEL, SAMPLE_DIR
from fcn_segmentation.cli import main
from fcn_segmentation.data import IGNORE_INDEX, AugmentedSegmentationSet, read_rgb, split_pairs
from fcn_segmentation.losses import DistillationLoss
from fcn_segmentation.model.model_file import load_model_file
from fcn_segmentation.teacher import Teacher, teacher_targets


def test_distillation_loss_is_zero_on_the_teachers_own_probabilities_and_skips_unlabelled_pixels():
    torch.manual_seed(0)
    scores = torch.randn(2, 5, 6, 7)
    labels = torch.randint(0, 5, (2, 6, 7))
    own = scores.softmax(1).permute(0, 2, 3, 1)
    loss = DistillationLoss()
    assert loss(scores, labels, own).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 5, 6, 7).softmax(1).permute(0, 2, 3, 1)
    divergence = loss(scores, labels, other)
    assert divergence.item() > 0.05
    # the mean of KL(teacher || network) over the pixels, computed the long way
    expected = (other * (other.log() - scores.log_softmax(1).permute(0, 2, 3, 1))).sum(-1).mean()
    torch.testing.assert_close(divergence, expected)
    # what the teacher says about void (and padding) pixels does not count
    labels[:, :2] = IGNORE_INDEX
    changed = other.clone()
    changed[:, :2] = torch.tensor([1.0, 0, 0, 0, 0])
    torch.testing.assert_close(loss(scores, labels, changed), loss(scores, labels, other))
    assert loss(scores, torch.full_like(labels, IGNORE_INDEX), other).item() == 0.0


def test_teacher_averages_its_models_and_the_mirror_image_at_the_size_asked():
    rgb = read_rgb(split_pairs(SAMPLE_DIR, "val")[0][0])
    teacher = Teacher([BUNDLED_MODEL], input_hw=(96, 128), flip=True)
    probabilities = teacher.probabilities(rgb, downsample=2)
    assert probabilities.shape == (rgb.shape[0] // 2, rgb.shape[1] // 2, 11) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-4)
    plain = Teacher([BUNDLED_MODEL], input_hw=(96, 128), flip=False)
    mirrored = plain.probabilities(rgb[:, ::-1].copy(), downsample=2)[:, ::-1]
    np.testing.assert_allclose(probabilities, (plain.probabilities(rgb, 2) + mirrored) / 2, atol=1e-5)
    twice = Teacher([BUNDLED_MODEL, BUNDLED_MODEL], input_hw=(96, 128), flip=True)
    np.testing.assert_allclose(twice.probabilities(rgb, 2), probabilities, atol=1e-6)
    assert "2 model(s) at 128x96 with flip" in twice.describe()
    # the classes it predicts are those of the model at full size
    _, info = load_model_file(BUNDLED_MODEL)
    assert teacher.class_names == info.class_names


def _dataset(sample_dir, soft_targets, **options):
    return AugmentedSegmentationSet(split_pairs(sample_dir, "val"), 11, crop_hw=(128, 160), base_hw=(128, 160),
                                    mean=(127,) * 3, std=(128,) * 3, seed=3, soft_targets=soft_targets,
                                    rare_classes=(9, 10), **options)


def _one_hot_labels(dataset, downsample=2):
    """Soft targets that are the labels themselves (uniform on void), at half size (as the teacher's are stored)."""
    targets = []
    for label in dataset.labels:
        one_hot = np.full(label.shape + (11,), 1 / 11, np.float32)
        labelled = label != IGNORE_INDEX
        one_hot[labelled] = 0.0
        one_hot[labelled, label[labelled]] = 1.0
        height, width = label.shape[0] // downsample, label.shape[1] // downsample
        targets.append(one_hot.reshape(height, downsample, width, downsample, 11).mean((1, 3)))
    return targets


@pytest.mark.parametrize("options", [{}, {"rare_paste_prob": 1.0}], ids=["plain", "pasted"])
def test_soft_targets_are_scaled_cropped_flipped_and_pasted_like_the_labels(sample_dir, options):
    plain = _dataset(sample_dir, None, **options)
    dataset = _dataset(sample_dir, _one_hot_labels(plain), **options)
    agreement, padded = [], 0
    for _ in range(4):
        for index in range(len(dataset)):
            image, labels, soft = dataset[index]
            plain_image, plain_labels = plain[index]
            # the same random draws as without soft targets: the same crops
            assert (labels == plain_labels).all() and (image == plain_image).all()
            assert soft.shape == labels.shape + (11,)
            labelled = labels != IGNORE_INDEX
            agreement.append((soft.argmax(-1)[labelled] == labels[labelled]).mean())
            # padding (the 160x128 base scaled below 1 is smaller than the crop) has no target
            outside = soft.sum(-1) < 0.5
            padded += outside.sum()
            assert (labels[outside] == IGNORE_INDEX).all()
    assert padded > 0, "some crops were padded"
    # only class borders differ (bilinear on half-size one-hot maps); a flip or shift missed would not agree
    assert np.mean(agreement) > 0.9 and min(agreement) > 0.75


def test_soft_targets_must_match_the_images_and_classes(sample_dir):
    from fcn_segmentation.data import DatasetError

    with pytest.raises(DatasetError, match="one \\(h, w, 11\\) array per image"):
        _dataset(sample_dir, [np.zeros((4, 4, 11), np.float32)])
    with pytest.raises(DatasetError, match="one \\(h, w, 11\\) array per image"):
        _dataset(sample_dir, [np.zeros((4, 4, 3), np.float32)] * 6)


def test_teacher_targets_shows_progress_and_gives_one_map_per_image(sample_dir, capsys):
    images = [read_rgb(image) for image, _ in split_pairs(sample_dir, "val")[:2]]
    targets = teacher_targets(Teacher([BUNDLED_MODEL], input_hw=(96, 128)), images, downsample=4)
    assert [t.shape for t in targets] == [(90, 120, 11)] * 2
    assert "teacher predictions" in capsys.readouterr().err


def _train(sample_dir, tmp_path, *options):
    return main(["train", "--data", str(sample_dir), "--train-splits", "val", "--val-split", "", "--epochs", "1",
                 "--batch-size", "3", "--input-height", "64", "--input-width", "96", "--crop-height", "64",
                 "--crop-width", "96", "--variant", "fcn4s", "--run-dir", str(tmp_path / "run"),
                 "--out", str(tmp_path / "model.pt"), "--threads", "2", *options])


def test_train_distils_from_a_teacher_and_records_it(sample_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fcn_segmentation.train")
    assert _train(sample_dir, tmp_path, "--teacher", str(BUNDLED_MODEL), "--teacher-input-size", "128x96",
                  "--distill-weight", "2", "--lovasz-weight", "0.5", "--hard-pixel-fraction", "0.25") == 0
    _, info = load_model_file(tmp_path / "model.pt")
    recorded = info.training["args"]
    assert recorded["teacher"] == str(BUNDLED_MODEL) and recorded["distill_weight"] == 2.0
    assert recorded["teacher_input_size"] == [96, 128] and recorded["teacher_flip"] == "on"
    assert "distilling from 1 model(s) at 128x96 with flip" in caplog.text


def test_train_refuses_a_teacher_it_cannot_use_and_says_why(sample_dir, tmp_path, capsys):
    assert _train(sample_dir, tmp_path, "--teacher", str(BUNDLED_MODEL), "--distill-weight", "0") == 2
    assert "--distill-weight must be above 0 with --teacher" in capsys.readouterr().err
    assert _train(sample_dir, tmp_path, "--teacher", str(tmp_path / "missing.pt")) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert not (tmp_path / "model.pt").exists()
