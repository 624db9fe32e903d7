import json

import numpy as np
import pytest
import torch

from fcn_segmentation.cli import main
from fcn_segmentation.model.model_file import load_model_file


def test_train_stops_resumes_and_writes_a_model_file(sample_dir, tmp_path):
    common = ["train", "--data", str(sample_dir), "--train-splits", "val", "--val-split", "val", "--val-every", "1",
              "--epochs", "2", "--batch-size", "3", "--input-height", "64", "--input-width", "96",
              "--crop-height", "64", "--crop-width", "96", "--run-dir", str(tmp_path / "run"),
              "--out", str(tmp_path / "model.pt"), "--threads", "2"]
    assert main(common + ["--stop-after-epoch", "1"]) == 0
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert not (tmp_path / "model.pt").exists()
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 1
    assert main(common + ["--resume"]) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0 <= h["val_miou"] <= 1 for h in history)
    model, info = load_model_file(tmp_path / "model.pt")
    assert (info.input_height, info.input_width) == (64, 96)
    assert info.training["args"]["epochs"] == 2 and len(info.training["history"]) == 2
    assert info.class_names[0] == "Sky"

    # A finished run writes its model file again with another network input size (same weights).
    assert main(common + ["--resume", "--deploy-input-size", "128x96", "--out", str(tmp_path / "deployed.pt")]) == 0
    deployed, deployed_info = load_model_file(tmp_path / "deployed.pt")
    assert (deployed_info.input_height, deployed_info.input_width) == (96, 128)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), deployed.state_dict().values()))
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2, "no extra epoch was trained"


def test_resume_refuses_another_recipe_and_names_what_changed(sample_dir, tmp_path, capsys):
    common = ["train", "--data", str(sample_dir), "--train-splits", "val", "--val-split", "", "--epochs", "2",
              "--batch-size", "3", "--input-height", "64", "--input-width", "96", "--crop-height", "64",
              "--crop-width", "96", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "model.pt")]
    assert main(common + ["--threads", "2", "--stop-after-epoch", "1"]) == 0
    checkpoint = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    # another loss or schedule from mid-run on would train neither recipe
    assert main(common + ["--threads", "2", "--resume", "--lovasz-weight", "0.5", "--lr", "0.01"]) == 2
    error = capsys.readouterr().err
    assert "--lovasz-weight 0.5 (the checkpoint's: 0.0)" in error and "--lr 0.01 (the checkpoint's: 0.002)" in error
    assert "new --run-dir" in error
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == checkpoint, "the refused resume trained nothing"
    assert not (tmp_path / "model.pt").exists()

    # an option the checkpoint predates counts at its default: the run trained with it
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    del state["args"]["lovasz_weight"]
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    assert main(common + ["--threads", "2", "--resume", "--lovasz-weight", "0.5"]) == 2
    # how it runs (threads, logging, where it writes) is not the recipe
    assert main(["--verbose"] + common + ["--threads", "1", "--resume"]) == 0
    assert (tmp_path / "model.pt").is_file()


def test_fine_tuning_starts_from_a_model_files_weights_and_refuses_another_architecture(sample_dir, tmp_path):
    common = ["train", "--data", str(sample_dir), "--train-splits", "val", "--val-split", "", "--epochs", "1",
              "--batch-size", "3", "--input-height", "64", "--input-width", "96", "--crop-height", "64",
              "--crop-width", "96", "--threads", "2"]
    assert main(common + ["--run-dir", str(tmp_path / "a"), "--out", str(tmp_path / "a.pt")]) == 0
    # zero steps of learning rate: the fine-tuned file must hold exactly the weights it started from
    assert main(common + ["--run-dir", str(tmp_path / "b"), "--out", str(tmp_path / "b.pt"), "--lr", "0",
                          "--init-from", str(tmp_path / "a.pt")]) == 0
    start, _ = load_model_file(tmp_path / "a.pt")
    tuned, _ = load_model_file(tmp_path / "b.pt")
    for (name, a), b in zip(start.state_dict().items(), tuned.state_dict().values()):
        if "running_" not in name and "num_batches" not in name:  # batch-norm statistics still move in train mode
            assert torch.equal(a, b), name
    assert main(common + ["--run-dir", str(tmp_path / "c"), "--out", str(tmp_path / "c.pt"), "--variant", "fcn32s",
                          "--init-from", str(tmp_path / "a.pt")]) == 2


def test_a_checkpoint_save_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    from fcn_segmentation import train

    path = tmp_path / "checkpoint.pt"
    train.save_checkpoint(path, {"epoch": 1, "weights": torch.ones(3)})

    def save_dies_midway(obj, file):
        with open(file, "wb") as half_written:
            half_written.write(b"PK\x03\x04 the first bytes of a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train.torch, "save", save_dies_midway)
    with pytest.raises(OSError, match="No space left"):
        train.save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(3)})
    monkeypatch.undo()
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"], "no temporary file left behind"


def _draws(rng, dataset_rng, device):
    return rng.random(), dataset_rng.random(), torch.rand(4), torch.rand(4, device=device)


def _check_resume_restores_every_random_state(tmp_path, device):
    import random

    from fcn_segmentation.train import restore_rng_states, rng_states, save_checkpoint

    device = torch.device(device)
    rng, dataset_rng = random.Random(1), random.Random(2)
    save_checkpoint(tmp_path / "checkpoint.pt", rng_states(rng, dataset_rng, device))
    expected = _draws(rng, dataset_rng, device)
    torch.rand(10, device=device)  # the generators move on, as in the epochs after the checkpoint
    resumed_rng, resumed_dataset_rng = random.Random(3), random.Random(4)
    # as train --resume loads it: everything onto the training device, generator states included
    state = torch.load(tmp_path / "checkpoint.pt", map_location=device, weights_only=False)
    restore_rng_states(state, resumed_rng, resumed_dataset_rng, device)
    again = _draws(resumed_rng, resumed_dataset_rng, device)
    assert again[:2] == expected[:2]
    assert torch.equal(again[2], expected[2]) and torch.equal(again[3], expected[3])


def test_resume_restores_every_random_state(tmp_path):
    _check_resume_restores_every_random_state(tmp_path, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_the_gpu_restores_the_cpu_and_cuda_random_states(tmp_path):
    _check_resume_restores_every_random_state(tmp_path, "cuda")


def test_bf16_is_used_only_where_the_cpu_has_it_and_on_elsewhere_is_an_error(tmp_path):
    from fcn_segmentation.train import TrainingError, cpu_has_bf16, use_bf16

    cpu = torch.device("cpu")
    plain, native = tmp_path / "avx2", tmp_path / "amx"
    plain.write_text("flags\t\t: fpu sse2 avx avx2 fma\n")
    native.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert not cpu_has_bf16(plain) and cpu_has_bf16(native) and not cpu_has_bf16(tmp_path / "absent")
    assert use_bf16("auto", cpu, native) and not use_bf16("auto", cpu, plain)
    assert use_bf16("on", cpu, native) and not use_bf16("off", cpu, native)
    with pytest.raises(TrainingError, match="neither avx512_bf16 nor amx_bf16"):
        use_bf16("on", cpu, plain)
    assert not use_bf16("auto", torch.device("cuda"), native), "GPU training stays FP32"


def test_bf16_on_without_cpu_support_stops_train_with_the_reason(sample_dir, tmp_path, capsys):
    from fcn_segmentation.train import cpu_has_bf16

    if cpu_has_bf16():
        pytest.skip("this CPU has native BF16")
    assert main(["train", "--data", str(sample_dir), "--train-splits", "val", "--val-split", "", "--epochs", "1",
                 "--bf16", "on", "--run-dir", str(tmp_path / "run"), "--input-height", "64", "--input-width", "96",
                 "--crop-height", "64", "--crop-width", "96"]) == 2
    assert "neither avx512_bf16 nor amx_bf16" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_hard_pixel_loss_averages_the_hardest_share_of_labelled_pixels():
    from fcn_segmentation.data import IGNORE_INDEX
    from fcn_segmentation.losses import HardPixelLoss

    torch.manual_seed(0)
    scores = torch.randn(2, 4, 8, 8)
    labels = torch.randint(0, 4, (2, 8, 8))
    labels[0, :2] = IGNORE_INDEX
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0])
    per_pixel = torch.nn.functional.cross_entropy(scores, labels, weight=weight, ignore_index=IGNORE_INDEX,
                                                  reduction="none")[labels != IGNORE_INDEX]
    assert per_pixel.numel() == 112
    quarter = HardPixelLoss(0.25, weight, min_kept=1)(scores, labels)
    torch.testing.assert_close(quarter, per_pixel.sort(descending=True).values[:28].mean())
    assert quarter > HardPixelLoss(1.0, weight, min_kept=1)(scores, labels)
    torch.testing.assert_close(HardPixelLoss(1.0, weight, min_kept=1)(scores, labels), per_pixel.mean())
    torch.testing.assert_close(HardPixelLoss(0.01, weight, min_kept=50)(scores, labels),
                               per_pixel.sort(descending=True).values[:50].mean())
    assert HardPixelLoss(0.5)(scores, torch.full_like(labels, IGNORE_INDEX)) == 0


def test_lovasz_softmax_equals_one_minus_iou_on_confident_predictions_and_ignores_void():
    from fcn_segmentation.data import IGNORE_INDEX
    from fcn_segmentation.losses import LovaszSoftmaxLoss

    torch.manual_seed(0)
    labels = torch.randint(0, 4, (2, 8, 8))
    labels[0, 0] = 2
    predicted = labels.clone()
    predicted[:, :3] = torch.randint(0, 5, (2, 3, 8))  # class 4 is predicted but never labelled
    scores = torch.nn.functional.one_hot(predicted, 5).permute(0, 3, 1, 2).float() * 100.0
    one_minus_iou = [1.0 - ((predicted == c) & (labels == c)).sum() / ((predicted == c) | (labels == c)).sum()
                     for c in labels.unique()]
    loss = LovaszSoftmaxLoss()(scores, labels)
    torch.testing.assert_close(loss, torch.stack(one_minus_iou).mean())
    assert 0.1 < loss < 1.0

    # void pixels count neither way, whatever is predicted there
    voided = labels.clone()
    voided[:, :3] = IGNORE_INDEX
    torch.testing.assert_close(LovaszSoftmaxLoss()(scores, voided), torch.tensor(0.0), atol=1e-6, rtol=0)
    assert LovaszSoftmaxLoss()(scores, torch.full_like(labels, IGNORE_INDEX)) == 0


def test_lovasz_softmax_leaves_out_only_the_smallest_errors():
    from fcn_segmentation.losses import LovaszSoftmaxLoss

    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 16, 16))
    # confident and mostly right, as a trained network: most errors are tiny
    logits = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 8.0 + torch.randn(2, 3, 16, 16) * 3
    exact_scores, fast_scores = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    exact = LovaszSoftmaxLoss(min_error=0.0)(exact_scores, labels)
    fast = LovaszSoftmaxLoss(min_error=1e-3)(fast_scores, labels)
    exact.backward()
    fast.backward()
    assert 0 <= exact - fast <= 1e-3 and exact - fast > 0
    assert exact_scores.grad.abs().max() > 100 * (exact_scores.grad - fast_scores.grad).abs().max()


def test_lovasz_softmax_gradient_lowers_the_loss_of_a_thin_class():
    from fcn_segmentation.losses import LovaszSoftmaxLoss

    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, :, 7] = 1  # a one-pixel-wide pole
    scores = torch.zeros(1, 2, 16, 16, requires_grad=True)
    loss = LovaszSoftmaxLoss()(scores, labels)
    loss.backward()
    # the pole's pixels are pushed towards the pole, the others away from it
    assert (scores.grad[0, 1, :, 7] < 0).all() and (scores.grad[0, 1, :, :7] >= 0).all()
    with torch.no_grad():
        stepped = scores - 10.0 * scores.grad
    assert LovaszSoftmaxLoss()(stepped, labels) < loss


def test_lovasz_softmax_over_chosen_classes_scores_only_those_present():
    from fcn_segmentation.losses import LovaszSoftmaxLoss

    torch.manual_seed(0)
    labels = torch.randint(0, 4, (2, 8, 8))
    predicted = labels.clone()
    predicted[:, :3] = torch.randint(0, 4, (2, 3, 8))
    scores = torch.nn.functional.one_hot(predicted, 4).permute(0, 3, 1, 2).float() * 100.0
    one_minus_iou = {c: 1.0 - ((predicted == c) & (labels == c)).sum() / ((predicted == c) | (labels == c)).sum()
                     for c in range(4)}
    torch.testing.assert_close(LovaszSoftmaxLoss(classes=(1, 3))(scores, labels),
                               (one_minus_iou[1] + one_minus_iou[3]) / 2)
    # a chosen class absent from the labels does not count, and a batch with none of them costs nothing
    torch.testing.assert_close(LovaszSoftmaxLoss(classes=(1, 7))(scores, labels), one_minus_iou[1])
    scores.requires_grad_()
    nothing = LovaszSoftmaxLoss(classes=(1,))(scores, torch.where(labels == 1, 0, labels))
    nothing.backward()
    assert nothing == 0 and (scores.grad == 0).all()


def test_train_adds_the_lovasz_loss_when_asked_and_refuses_a_negative_weight(sample_dir, tmp_path, capsys):
    from fcn_segmentation.losses import HardPixelLoss, LovaszSoftmaxLoss, WeightedLossSum
    from fcn_segmentation.train import TrainingError, build_criterion

    class Args:
        hard_pixel_fraction, lovasz_weight, lovasz_classes = 0.25, 0.5, ""

    names = ("Sky", "Pole", "Car")
    criterion = build_criterion(Args, torch.ones(3), names)
    assert isinstance(criterion, WeightedLossSum) and criterion.weights == [1.0, 0.5]
    assert isinstance(criterion.losses[0], HardPixelLoss) and isinstance(criterion.losses[1], LovaszSoftmaxLoss)
    scores, labels = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4))
    torch.testing.assert_close(criterion(scores, labels), criterion.losses[0](scores, labels)
                               + 0.5 * LovaszSoftmaxLoss()(scores, labels))
    Args.lovasz_classes = "Pole,Car"
    assert build_criterion(Args, torch.ones(3), names).losses[1].classes == {1, 2}
    Args.lovasz_classes = "Pole,Person"
    with pytest.raises(TrainingError, match=r"unknown class\(es\) \['Person'\]"):
        build_criterion(Args, torch.ones(3), names)
    Args.lovasz_weight, Args.lovasz_classes = 0.0, "Pole"
    with pytest.raises(TrainingError, match="--lovasz-classes .* add --lovasz-weight"):
        build_criterion(Args, torch.ones(3), names)
    Args.lovasz_classes = ""
    assert isinstance(build_criterion(Args, torch.ones(3), names), HardPixelLoss)
    Args.lovasz_weight = -1.0
    with pytest.raises(TrainingError, match="--lovasz-weight must be 0 or more"):
        build_criterion(Args, torch.ones(3), names)
    Args.lovasz_weight, Args.hard_pixel_fraction = 0.0, 0.0
    with pytest.raises(TrainingError, match="--hard-pixel-fraction must be in"):
        build_criterion(Args, torch.ones(3), names)

    assert main(["train", "--data", str(sample_dir), "--train-splits", "val", "--val-split", "", "--epochs", "1",
                 "--lovasz-weight", "-1", "--run-dir", str(tmp_path / "run"), "--input-height", "64",
                 "--input-width", "96", "--crop-height", "64", "--crop-width", "96"]) == 2
    assert "--lovasz-weight must be 0 or more" in capsys.readouterr().err
    assert main(["train", "--data", str(sample_dir), "--train-splits", "val", "--val-split", "", "--epochs", "1",
                 "--batch-size", "3", "--lovasz-weight", "1", "--hard-pixel-fraction", "0.25", "--run-dir",
                 str(tmp_path / "run"), "--out", str(tmp_path / "model.pt"), "--input-height", "64",
                 "--input-width", "96", "--crop-height", "64", "--crop-width", "96", "--threads", "2"]) == 0
    _, info = load_model_file(tmp_path / "model.pt")
    assert info.training["args"]["lovasz_weight"] == 1.0


def _rare_dataset(sample_dir, prob, seed=0, **options):
    from fcn_segmentation.data import AugmentedSegmentationSet, split_pairs

    return AugmentedSegmentationSet(split_pairs(sample_dir, "val"), 11, crop_hw=(64, 64), base_hw=(352, 480),
                                    mean=(127,) * 3, std=(128,) * 3, seed=seed, rare_classes=(9, 10),
                                    rare_crop_prob=prob, **options)


def test_rare_class_crops_hold_a_rare_pixel_and_are_off_by_default(sample_dir):
    always, never = _rare_dataset(sample_dir, 1.0), _rare_dataset(sample_dir, 0.0)
    with_rare = [i for i, present in enumerate(always.rare_present) if present]
    assert with_rare, "the sample has pedestrians or cyclists"
    # small 64x64 crops of a 480x352 frame: by chance they rarely hold a pedestrian or cyclist pixel
    hits_rare = sum(bool(np.isin(always[i][1], (9, 10)).any()) for i in with_rare for _ in range(10))
    hits_plain = sum(bool(np.isin(never[i][1], (9, 10)).any()) for i in with_rare for _ in range(10))
    assert hits_rare == 10 * len(with_rare) > 2 * hits_plain
    # off, the dataset draws exactly the plain recipe's random numbers
    from fcn_segmentation.data import AugmentedSegmentationSet, split_pairs

    plain = AugmentedSegmentationSet(split_pairs(sample_dir, "val"), 11, crop_hw=(64, 64), base_hw=(352, 480),
                                     mean=(127,) * 3, std=(128,) * 3, seed=0)
    off = _rare_dataset(sample_dir, 0.0, rare_paste_prob=0.0)
    for i in range(len(plain)):
        a, b = plain[i], off[i]
        assert (a[1] == b[1]).all() and (a[0] == b[0]).all()


def test_rare_class_pasting_adds_another_crops_rare_pixels_and_keeps_the_rest(sample_dir):
    from fcn_segmentation.data import DatasetError

    always = _rare_dataset(sample_dir, 0.0, rare_paste_prob=1.0)
    assert always.paste_donors, "the sample has pedestrians or cyclists"
    for i in range(len(always)):
        plain = _rare_dataset(sample_dir, 0.0)  # the same seed: the same first crop of image i
        _, pasted_labels = _rare_dataset(sample_dir, 0.0, rare_paste_prob=1.0)[i]
        _, plain_labels = plain[i]
        rare = np.isin(pasted_labels, (9, 10))
        assert rare.sum() > np.isin(plain_labels, (9, 10)).sum(), "each crop gets a donor's rare pixels"
        assert (pasted_labels[~rare] == plain_labels[~rare]).all(), "only rare-class pixels are pasted"
    with pytest.raises(DatasetError, match="rare paste probability must be in"):
        _rare_dataset(sample_dir, 0.0, rare_paste_prob=1.5)


def test_train_with_rare_crops_and_hard_pixel_mining_records_them(sample_dir, tmp_path):
    out = tmp_path / "m.pt"
    assert main(["train", "--data", str(sample_dir), "--train-splits", "val", "--val-split", "", "--epochs", "1",
                 "--batch-size", "3", "--input-height", "64", "--input-width", "96", "--crop-height", "64",
                 "--crop-width", "96", "--rare-crop-prob", "0.5", "--hard-pixel-fraction", "0.25", "--bf16", "auto",
                 "--rare-paste-prob", "0.5", "--run-dir", str(tmp_path / "run"), "--out", str(out),
                 "--threads", "2"]) == 0
    _, info = load_model_file(out)
    recorded = info.training["args"]
    assert (recorded["rare_crop_prob"], recorded["hard_pixel_fraction"], recorded["bf16"]) == (0.5, 0.25, "auto")
    assert recorded["rare_paste_prob"] == 0.5
    from fcn_segmentation.train import cpu_has_bf16

    assert info.training["bf16_autocast"] == cpu_has_bf16(), "what --bf16 auto chose on this CPU is recorded"
    from fcn_segmentation.cpu_info import describe_cpu

    assert info.training["cpu"] == describe_cpu(), "the CPU it trained on, with its instruction sets"
    assert main(["train", "--data", str(sample_dir), "--train-splits", "val", "--epochs", "1",
                 "--rare-classes", "Pole,Lamppost", "--rare-crop-prob", "0.5", "--run-dir", str(tmp_path / "bad")]) == 2


def test_colour_cast_scales_each_channel_and_draws_nothing_when_off():
    import random

    from fcn_segmentation.data import AugmentedSegmentationSet, DatasetError, photometric_jitter

    rgb = np.full((8, 8, 3), 100, np.uint8)
    plain_rng, off_rng = random.Random(3), random.Random(3)
    assert np.array_equal(photometric_jitter(rgb, plain_rng), photometric_jitter(rgb, off_rng, colour_cast=0.0))
    assert plain_rng.random() == off_rng.random(), "colour_cast 0 must leave the plain recipe's random draws alone"
    # no brightness, contrast or saturation change: only the cast moves the channels apart
    ratios = [photometric_jitter(rgb, random.Random(seed), strength=0.0, colour_cast=0.2)[0, 0] / 100
              for seed in range(20)]
    assert all(0.8 - 0.01 <= r <= 1.2 + 0.01 for pixel in ratios for r in pixel)
    assert any(abs(pixel[0] - pixel[2]) > 0.05 for pixel in ratios), "the channels get different gains"
    for options in (dict(colour_cast=1.0), dict(photometric_strength=-0.1)):
        with pytest.raises(DatasetError, match="must be in"):
            AugmentedSegmentationSet([], 11, (8, 8), (8, 8), (0, 0, 0), (1, 1, 1), **options)


def test_weight_average_follows_the_weights_with_a_ramped_decay_and_copies_counters():
    from fcn_segmentation.weight_averaging import WeightAverage

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    start = {name: value.clone() for name, value in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.randn(4, 2))  # moves the batch-norm statistics and its batch counter
    average.update(model)  # first update: decay min(0.9, 1/10) = 0.1
    averaged, trained = average.model.state_dict(), model.state_dict()
    torch.testing.assert_close(averaged["0.weight"], 0.1 * start["0.weight"] + 0.9 * trained["0.weight"])
    torch.testing.assert_close(averaged["1.running_mean"],
                               0.1 * start["1.running_mean"] + 0.9 * trained["1.running_mean"])
    assert averaged["1.num_batches_tracked"] == trained["1.num_batches_tracked"] == 1
    assert WeightAverage(model, 0.9).current_decay() == 0.1
    average.updates = 1000
    assert average.current_decay() == 0.9, "the ramp ends at the asked decay"
    assert not any(p.requires_grad for p in average.model.parameters()), "the average is not trained"
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
            WeightAverage(model, bad)


def test_train_with_ema_writes_the_average_and_the_trained_weights_and_resumes_it(sample_dir, tmp_path, capsys):
    common = ["train", "--data", str(sample_dir), "--train-splits", "val", "--val-split", "val", "--val-every", "1",
              "--epochs", "2", "--batch-size", "3", "--input-height", "64", "--input-width", "96",
              "--crop-height", "64", "--crop-width", "96", "--threads", "2"]
    run = ["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "model.pt")]
    assert main(common + run + ["--ema-decay", "0.5", "--stop-after-epoch", "1"]) == 0
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    steps_per_epoch = checkpoint["weight_average"]["updates"]
    assert steps_per_epoch > 0 and checkpoint["weight_average"]["decay"] == 0.5
    assert main(common + run + ["--ema-decay", "0.5", "--resume"]) == 0
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert checkpoint["weight_average"]["updates"] == 2 * steps_per_epoch, "the resumed run went on averaging"
    averaged, averaged_info = load_model_file(tmp_path / "model.pt")
    trained, trained_info = load_model_file(tmp_path / "model_raw.pt")
    torch.testing.assert_close(averaged.state_dict(), checkpoint["weight_average"]["model"])
    torch.testing.assert_close(trained.state_dict(), checkpoint["model"])
    assert not torch.equal(averaged.score_fr.weight, trained.score_fr.weight)
    assert averaged_info.training["weights"] == "exponential moving average, decay 0.5"
    assert trained_info.training["weights"] == "trained (not averaged)"
    assert all(0 <= h["val_miou_ema"] <= 1 for h in averaged_info.training["history"])

    # without averaging the run writes one file, as before
    plain = ["--run-dir", str(tmp_path / "plain"), "--out", str(tmp_path / "plain.pt")]
    assert main(common + plain + ["--stop-after-epoch", "1"]) == 0
    # resuming that checkpoint with --ema-decay would start the average mid-run: refused with the fix
    assert main(common + plain + ["--ema-decay", "0.5", "--resume"]) == 2
    assert "--ema-decay 0.5 (the checkpoint's: 0.0)" in capsys.readouterr().err
    assert main(common + plain + ["--ema-decay", "1.5"]) == 2
    assert "--ema-decay must be 0 (off) or in (0, 1)" in capsys.readouterr().err
    assert main(common + plain + ["--resume"]) == 0
    assert (tmp_path / "plain.pt").is_file() and not (tmp_path / "plain_raw.pt").exists()
