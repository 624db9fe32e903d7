"""Unseen-sequence validation: which frames train and which are scored when whole drives are held out."""

import json
import shutil
from pathlib import Path

import pytest

from fcn_segmentation.cli import main
from fcn_segmentation.data import DatasetError
from fcn_segmentation.splits import count_by_sequence, frames, holdout_frames, parse_names, sequence_of

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "camvid"


def make_dataset(root: Path, sample_dir: Path, layout: dict) -> Path:
    """A CamVid-layout folder whose frames are copies of the sample's, named as ``layout`` says."""
    sources = sorted((sample_dir / "val").glob("*.png"))
    for split, names in layout.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index, name in enumerate(names):
            source = sources[index % len(sources)]
            shutil.copy(source, root / split / f"{name}.png")
            shutil.copy(sample_dir / "valannot" / source.name, root / f"{split}annot" / f"{name}.png")
    return root


def names(pairs):
    return [image.stem for image, _ in pairs]


def test_sequence_names_and_lists():
    assert sequence_of("train/0016E5_07959.png") == "0016E5"
    assert sequence_of(Path("0006R0_f02370.png")) == "0006R0"
    assert parse_names("train+val") == parse_names("train, val") == parse_names(["train", "val", "train"]) \
        == ["train", "val"]
    assert parse_names(None) == parse_names("") == []


def test_holdout_trains_without_the_sequence_and_scores_all_its_frames(sample_dir, tmp_path):
    root = make_dataset(tmp_path / "d", sample_dir, {
        "train": ["AAA_001", "AAA_002", "BBB_001", "BBB_002", "BBB_003", "CCC_001"],
        "val": ["AAA_003", "BBB_004"]})
    train, scored = holdout_frames(root, "train", "BBB", "val")
    assert names(train) == ["AAA_001", "AAA_002", "CCC_001"]
    assert names(scored) == ["BBB_001", "BBB_002", "BBB_003", "BBB_004"], "its train frames and its val frames"
    train, scored = holdout_frames(root, "train,val", "AAA,CCC", "val")
    assert names(train) == ["BBB_001", "BBB_002", "BBB_003", "BBB_004"]
    assert names(scored) == ["AAA_001", "AAA_002", "CCC_001", "AAA_003"] and len(scored) == len(set(scored))
    # a validation split that is not there (a train-only folder) is skipped, not an error
    assert names(holdout_frames(root, "train", "CCC", "nosuch")[1]) == ["CCC_001"]
    assert names(frames(root, "train,val", sequences="AAA")) == ["AAA_001", "AAA_002", "AAA_003"]
    with pytest.raises(DatasetError, match="DDD have no frames"):
        holdout_frames(root, "train", "DDD", "val")
    with pytest.raises(DatasetError, match="leaves no training frames"):
        holdout_frames(root, "train", "AAA,BBB,CCC", "val")


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"needs the CamVid train/val copy at {CAMVID}")
def test_camvid_sequences_and_the_0006R0_holdout():
    assert count_by_sequence(frames(CAMVID, "train")) == {"0001TP": 62, "0006R0": 101, "0016E5": 204}
    assert count_by_sequence(frames(CAMVID, "val")) == {"0016E5": 101}
    train, scored = holdout_frames(CAMVID, "train", "0006R0", "val")
    assert count_by_sequence(train) == {"0001TP": 62, "0016E5": 204}
    assert count_by_sequence(scored) == {"0006R0": 101}
    assert not {image.name for image, _ in train} & {image.name for image, _ in scored}
    train, scored = holdout_frames(CAMVID, "train", "0016E5", "val")
    assert count_by_sequence(train) == {"0001TP": 62, "0006R0": 101}
    assert count_by_sequence(scored) == {"0016E5": 305}
    assert count_by_sequence(frames(CAMVID, "train,val")) == {"0001TP": 62, "0006R0": 101, "0016E5": 305}


def test_train_and_evaluate_on_a_held_out_sequence(sample_dir, tmp_path):
    root = make_dataset(tmp_path / "d", sample_dir, {
        "train": ["AAA_001", "AAA_002", "AAA_003", "BBB_001", "BBB_002"], "val": ["AAA_004", "BBB_003"]})
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--holdout-sequences", "BBB", "--epochs", "1", "--batch-size", "3",
                 "--input-height", "64", "--input-width", "96", "--crop-height", "64", "--crop-width", "96",
                 "--run-dir", str(run), "--out", str(tmp_path / "m.pt"), "--threads", "2"]) == 0
    from fcn_segmentation.model.model_file import load_model_file

    _, info = load_model_file(tmp_path / "m.pt")
    assert info.training["train_images_by_sequence"] == {"AAA": 3}
    assert info.training["holdout_sequences"] == ["BBB"]
    assert 0 <= json.loads((run / "history.json").read_text())[-1]["val_miou"] <= 1
    out = tmp_path / "unseen.json"
    assert main(["evaluate", "--data", str(root), "--split", "train,val", "--sequences", "BBB",
                 "--model", str(tmp_path / "m.pt"), "--backend", "torch", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["num_images"] == 3 and summary["images_by_sequence"] == {"BBB": 3}
    assert summary["sequences"] == ["BBB"]
    assert main(["evaluate", "--data", str(root), "--split", "val", "--sequences", "CCC",
                 "--model", str(tmp_path / "m.pt"), "--backend", "torch"]) == 2
