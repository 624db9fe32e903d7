import json

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
