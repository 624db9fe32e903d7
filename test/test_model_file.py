import json
import re

import numpy as np
import pytest
import torch

from fcn_segmentation.export import compare_with_torch, export_onnx, read_onnx_info
from fcn_segmentation.model.model_file import ModelFileError, load_model_file


def test_round_trip_keeps_weights_and_metadata(tiny_model_file):
    model, info = load_model_file(tiny_model_file)
    assert info.class_names[3] == "Road" and info.num_classes == 11
    assert (info.input_height, info.input_width) == (64, 96)
    assert not model.training
    again, _ = load_model_file(tiny_model_file)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist; pass an existing .pt file"):
        load_model_file(tmp_path / "nope.pt")


@pytest.mark.parametrize("former, now, name", [
    ("fcn8s_effnetlite0_camvid.pt", "fcn4s_effnetlite0_camvid.pt", "default"),
    ("fcn8s_effnetlite2_camvid.pt", "fcn4s_effnetlite2_camvid.pt", "accurate")])
def test_a_former_bundled_file_name_says_what_it_became(tmp_path, former, now, name):
    """Configs written for earlier versions name the FCN-8s files, since replaced by FCN-4s ones."""
    with pytest.raises(ModelFileError, match=rf"{former} was the bundled {name} model of an earlier version; it is "
                                             rf"now models/{now}: set model_path \(--model\) to '{name}'"):
        load_model_file(tmp_path / "models" / former)


@pytest.mark.parametrize("path, what", [("/dev/zero", "a device"), ("/tmp", "a folder")])
def test_a_path_that_is_not_a_regular_file_is_named_as_such(path, what):
    with pytest.raises(ModelFileError, match=re.escape(f"model file {path} is not a regular file ({what})")):
        load_model_file(path)


def test_corrupt_file_is_reported(tmp_path, tiny_model_file):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(tiny_model_file.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="not a readable"):
        load_model_file(corrupt)


def model_file_with_an_extra_class(tiny_model_file, path):
    """Metadata for 12 classes over weights that score 11: a class list edited by hand."""
    blob = torch.load(tiny_model_file, weights_only=True)
    info = json.loads(blob["info"])
    info["class_names"].append("Animal")
    info["palette"].append([10, 200, 10])
    blob["info"] = json.dumps(info)
    torch.save(blob, path)
    return path


def test_weights_for_another_number_of_classes_are_reported(tiny_model_file, tmp_path):
    path = model_file_with_an_extra_class(tiny_model_file, tmp_path / "twelve.pt")
    with pytest.raises(ModelFileError, match=r"do not fit the fcn8s/efficientnet_lite0 model with 12 classes its "
                                             r"metadata describes: score_fr\.weight has shape \(11, "):
        load_model_file(path)


def test_onnx_export_matches_torch_and_carries_metadata(tiny_model_file, tmp_path):
    model, info = load_model_file(tiny_model_file)
    path = export_onnx(model, info, tmp_path / "tiny.onnx")
    rng = np.random.default_rng(0)
    report = compare_with_torch(model, path, [rng.normal(size=(1, 3, 64, 96)).astype(np.float32) for _ in range(2)])
    assert report["max_abs_diff"] < 1e-3
    assert report["argmax_agreement"] > 0.999
    assert read_onnx_info(path).class_names == info.class_names


def test_sub_pixel_export_scores_what_the_plain_export_scores_without_transposed_convolution_at_the_end(
        tiny_model_file, tmp_path):
    import onnx
    import onnxruntime as ort

    model, info = load_model_file(tiny_model_file)
    plain = export_onnx(model, info, tmp_path / "plain.onnx")
    sub_pixel = export_onnx(model, info, tmp_path / "sub_pixel.onnx", sub_pixel=True)
    operators = [node.op_type for node in onnx.load(str(sub_pixel)).graph.node]
    assert "DepthToSpace" in operators and operators.count("ConvTranspose") == 2, "only the final upsampler changes"
    assert read_onnx_info(sub_pixel).class_names == info.class_names
    image = np.random.default_rng(0).normal(size=(1, 3, 64, 96)).astype(np.float32)
    plain_scores, sub_pixel_scores = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                                      .run(None, {"image": image})[0] for path in (plain, sub_pixel))
    assert np.abs(plain_scores - sub_pixel_scores).max() < 1e-4


def test_onnx_uses_only_tensorrt_friendly_static_operators(tiny_model_file, tmp_path):
    import onnx

    model, info = load_model_file(tiny_model_file)
    graph = onnx.load(str(export_onnx(model, info, tmp_path / "tiny.onnx"))).graph
    # Operators the TensorRT ONNX parser supports (onnx-tensorrt operators.md).
    supported = {"Conv", "ConvTranspose", "Add", "Clip", "Pad", "Slice", "Constant", "ConstantOfShape", "Concat",
                 "Reshape", "Transpose", "Cast", "Identity", "Relu", "Mul", "Sigmoid", "Shape", "Gather", "Unsqueeze"}
    assert {node.op_type for node in graph.node} <= supported
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 96], "input shape must be static"
    out_dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == [1, 11, 64, 96]


def test_processes_exporting_to_the_same_path_at_once_all_succeed(tiny_model_file, tmp_path):
    """Nodes started together (one per camera) export the same model to the same cache path."""
    import subprocess
    import sys

    code = ("import sys\nfrom fcn_segmentation.export import export_onnx\n"
            "from fcn_segmentation.model.model_file import load_model_file\n"
            "model, info = load_model_file(sys.argv[1])\nexport_onnx(model, info, sys.argv[2])\n")
    target = tmp_path / "shared.onnx"
    processes = [subprocess.Popen([sys.executable, "-c", code, str(tiny_model_file), str(target)],
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    assert [path.name for path in tmp_path.iterdir()] == ["shared.onnx"], "no temporary files left"
    assert read_onnx_info(target).class_names == load_model_file(tiny_model_file)[1].class_names


def test_private_temp_paths_are_beside_the_target_and_never_repeat(tmp_path):
    from fcn_segmentation.files import private_temp_path

    names = {private_temp_path(tmp_path / "engine.plan") for _ in range(100)}
    assert len(names) == 100
    assert all(name.parent == tmp_path and name.name.startswith(".engine.plan.") for name in names)
    assert private_temp_path(tmp_path / "m.onnx", ".onnx").suffix == ".onnx"  # tools that go by the suffix


def _damaged_copy(tiny_model_file, path, change):
    """The tiny model file with ``change`` applied to its blob (and, through json, to its metadata)."""
    blob = torch.load(tiny_model_file, map_location="cpu", weights_only=True)
    original = blob["info"]
    meta = json.loads(original)
    change(blob, meta)
    if blob.get("info") is original:  # the change was to the metadata, not to the entry itself
        blob["info"] = json.dumps(meta)
    torch.save(blob, path)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda blob, meta: blob.pop("info"), "lacks its info entry"),
    (lambda blob, meta: blob.pop("state_dict"), "lacks its state_dict entry"),
    (lambda blob, meta: blob.update(info="{not json"), "unreadable metadata"),
    (lambda blob, meta: meta.pop("class_names"), "the metadata lacks class_names"),
    (lambda blob, meta: meta.update(class_names=None), "class_names must be a non-empty list of names, not None"),
    (lambda blob, meta: meta.update(palette=meta["palette"][:3]), "palette has 3 colours for 11 classes"),
    (lambda blob, meta: meta.update(palette=["red"] * 11), "malformed palette"),
    (lambda blob, meta: meta.update(backbone="resnet_9000"), "cannot build .*backbone 'resnet_9000'.*unknown backbone"),
    (lambda blob, meta: meta.update(variant="fcn2s"), "cannot build .*variant 'fcn2s'.*unknown FCN variant"),
    (lambda blob, meta: meta.update(image_std=[0.0, 58.0, 57.0]), r"image_std \[0.0, 58.0, 57.0\] must be > 0"),
    (lambda blob, meta: meta.update(image_std=[-1.0, 58.0, 57.0]), "must be > 0 in every channel"),
    (lambda blob, meta: meta.update(image_std=[float("nan"), 58.0, 57.0]), "must be finite numbers"),
    (lambda blob, meta: meta.update(image_mean=[float("inf"), 1.0, 1.0]), "must be finite numbers"),
    (lambda blob, meta: meta.update(input_height=0), "input size 96x0 must be positive"),
])
def test_bad_metadata_is_a_model_file_error_that_says_what_to_do(tiny_model_file, tmp_path, change, message):
    path = _damaged_copy(tiny_model_file, tmp_path / "damaged.pt", change)
    with pytest.raises(ModelFileError, match=message) as error:
        load_model_file(path)
    assert str(path) in str(error.value) and "fcnseg train" in str(error.value)


def test_the_export_cache_key_changes_with_the_exporter_and_not_otherwise(tiny_model_file, monkeypatch):
    from fcn_segmentation import export

    info = load_model_file(tiny_model_file)[1]
    cached = export.onnx_cache_path(tiny_model_file, info)
    assert cached.parent == tiny_model_file.parent and cached.name.startswith("tiny.64x96.")
    assert export.onnx_cache_path(tiny_model_file, info) == cached
    for attribute, value in (("OPSET", export.OPSET + 1), ("EXPORTER_SOURCE_HASH", "an edited export.py")):
        with monkeypatch.context() as patch:
            patch.setattr(export, attribute, value)
            assert export.onnx_cache_path(tiny_model_file, info) != cached, attribute
    with monkeypatch.context() as patch:
        patch.setattr(export.torch, "__version__", "9.9.9")
        assert export.onnx_cache_path(tiny_model_file, info) != cached, "torch's exporter changed"
    sub_pixel = export.onnx_cache_path(tiny_model_file, info, sub_pixel=True)
    assert sub_pixel.name.endswith(".subpixel.onnx") and sub_pixel.parent == cached.parent
    with monkeypatch.context() as patch:
        patch.setattr(export, "SURGERY_SOURCE_HASH", "an edited surgery.py")
        assert export.onnx_cache_path(tiny_model_file, info, sub_pixel=True) != sub_pixel
        assert export.onnx_cache_path(tiny_model_file, info) == cached, "the plain export does not depend on it"
