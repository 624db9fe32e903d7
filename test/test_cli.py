import json

import cv2
import numpy as np
import pytest

from fcn_segmentation.cli import main


def test_evaluate_writes_json_and_plot_on_a_camvid_layout_folder(sample_dir, bundled_model, tmp_path, capsys):
    out = tmp_path / "val.json"
    assert main(["evaluate", "--data", str(sample_dir), "--split", "val", "--model", str(bundled_model),
                 "--json", str(out), "--examples", str(tmp_path / "examples.png")]) == 0
    report = json.loads(out.read_text())
    assert report["num_images"] == 6
    assert set(report["per_class_iou"]) == {"Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
                                            "Fence", "Car", "Pedestrian", "Bicyclist"}
    assert 0.5 < report["miou"] <= 1.0 and 0.8 < report["pixel_accuracy"] <= 1.0
    assert report["per_class_iou"]["Road"] > 0.85
    assert 0.5 < report["miou_at_network_size"] <= 1.0
    assert np.asarray(report["confusion_matrix"]).shape == (11, 11)
    assert (tmp_path / "val.png").stat().st_size > 10_000
    assert cv2.imread(str(tmp_path / "examples.png")).shape[1] > 800
    assert "mIoU" in capsys.readouterr().out


def test_evaluate_handles_other_and_mixed_image_sizes(sample_dir, bundled_model, tmp_path, capsys):
    root = tmp_path / "small"
    for folder in ("val", "valannot"):
        (root / folder).mkdir(parents=True)
    for path, size in zip(sorted((sample_dir / "val").glob("*.png"))[:3], ((250, 170), (250, 170), (640, 352))):
        cv2.imwrite(str(root / "val" / path.name), cv2.resize(cv2.imread(str(path)), size))
        label = cv2.imread(str(sample_dir / "valannot" / path.name), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(root / "valannot" / path.name), cv2.resize(label, size, interpolation=cv2.INTER_NEAREST))
    out = tmp_path / "small.json"
    assert main(["evaluate", "--data", str(root), "--model", str(bundled_model), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["image_size"] == [250, 170] and report["miou"] > 0.3
    assert report["image_sizes"] == {"250x170": 2, "640x352": 1}
    assert "(2 at 250x170 / 1 at 640x352)" in capsys.readouterr().out


def test_predict_writes_masks_colours_and_overlays(sample_dir, bundled_model, tmp_path):
    image = sorted((sample_dir / "val").glob("*.png"))[0]
    assert main(["predict", str(image), "--out", str(tmp_path), "--model", str(bundled_model)]) == 0
    classes = cv2.imread(str(tmp_path / f"{image.stem}_classes.png"), cv2.IMREAD_UNCHANGED)
    assert classes.shape == (360, 480) and classes.max() <= 10
    assert cv2.imread(str(tmp_path / f"{image.stem}_color.png")).shape == (360, 480, 3)
    assert cv2.imread(str(tmp_path / f"{image.stem}_overlay.png")).shape == (360, 480, 3)


def test_export_checks_parity_on_real_images(bundled_model, tmp_path, capsys):
    assert main(["export", "--model", str(bundled_model), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert "argmax agreement" in capsys.readouterr().out


def test_missing_model_is_a_clear_error(sample_dir, tmp_path, capsys):
    code = main(["evaluate", "--data", str(sample_dir), "--model", str(tmp_path / "missing.pt")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_split_names_what_is_there(sample_dir, bundled_model, capsys):
    assert main(["evaluate", "--data", str(sample_dir), "--split", "test", "--model", str(bundled_model)]) == 2
    assert "has: val, valannot" in capsys.readouterr().err


def test_build_engine_usage_errors_say_what_to_pass(bundled_model, capsys):
    assert main(["build-engine", "--model", str(bundled_model), "--precision", "int8"]) == 2
    assert "--precision int8 needs --calibration-data DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["build-engine", "--model", str(bundled_model), "--input-size", "500x352"])
    assert exit_info.value.code == 2
    assert "500x352: both sides must be positive multiples of 32" in capsys.readouterr().err


def test_bench_refuses_a_dds_backend_the_machine_lacks_before_timing_anything(bundled_model, capsys):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has ONNX Runtime CUDA")
    assert main(["bench", "--model", str(bundled_model), "--dds-device", "cuda"]) == 2
    captured = capsys.readouterr()
    assert "onnxruntime has no CUDAExecutionProvider" in captured.err
    assert "| onnxruntime-cpu |" not in captured.out, "no backend was timed"


def test_export_at_another_input_size_gives_a_graph_of_that_size(bundled_model, tmp_path):
    import onnx

    from fcn_segmentation.cli import main

    assert main(["export", "--model", str(bundled_model), "--onnx", str(tmp_path / "m.onnx"),
                 "--input-size", "256x192"]) == 0
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 192, 256]


def test_bench_output_list_always_measures_the_class_mask_and_refuses_unknown_names():
    import argparse

    from fcn_segmentation.perf_cli import output_list

    assert output_list("overlay,confidence") == ("class_mask", "overlay", "confidence")
    assert output_list("class_mask") == ("class_mask",)
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown outputs \['overlays'\]"):
        output_list("overlays")


def test_quantize_writes_an_int8_model_that_the_onnxruntime_backend_runs(bundled_model, sample_dir, tmp_path):
    import shutil

    import onnx

    from fcn_segmentation.backends import create_backend
    from fcn_segmentation.data import read_rgb
    from fcn_segmentation.preprocess import Preprocessor

    model = tmp_path / bundled_model.name  # the FP32 export is cached beside it
    shutil.copy(bundled_model, model)
    int8 = tmp_path / "int8.onnx"
    assert main(["quantize", "--model", str(model), "--calibration-data", str(sample_dir),
                 "--calibration-split", "val", "--num-images", "3", "--out", str(int8)]) == 0
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "DepthToSpace" in ops, "NNCF quantizes the sub-pixel form, which OpenVINO runs in INT8 to the end"
    fp32, _ = create_backend("onnxruntime", model, device="cpu")
    quantized, _ = create_backend("onnxruntime", model, device="cpu", onnx_path=int8)
    info = fp32.info
    batch = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)(
        read_rgb(sorted((sample_dir / "val").glob("*.png"))[0]))
    agreement = (fp32.segment(batch)[1] == quantized.segment(batch)[1]).mean()
    assert agreement > 0.9, f"INT8 and FP32 class ids agree on {agreement:.1%} of pixels"


def test_export_refuses_an_input_size_the_node_and_backends_cannot_run(bundled_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error, before any export
        main(["export", "--model", str(bundled_model), "--onnx", str(tmp_path / "m.onnx"), "--input-size", "250x190"])
    assert exit_info.value.code == 2
    assert "250x190: both sides must be positive multiples of 32" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_evaluate_runs_a_given_onnx_model_and_records_it(sample_dir, bundled_model, tiny_model_file, tmp_path,
                                                         capsys):
    from fcn_segmentation.export import export_onnx
    from fcn_segmentation.model.model_file import load_model_file

    # The untrained tiny network in the trained model's shape: if evaluate ran the .pt, mIoU would be high.
    size = load_model_file(bundled_model)[1]
    untrained = export_onnx(*load_model_file(tiny_model_file), tmp_path / "untrained.onnx", height=size.input_height,
                            width=size.input_width)
    out = tmp_path / "onnx.json"
    assert main(["evaluate", "--data", str(sample_dir), "--model", str(bundled_model), "--onnx", str(untrained),
                 "--limit", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["onnx"] == str(untrained) and report["model"] == str(bundled_model)
    # precision auto runs a given float graph as it is (FP32), on the fastest CPU engine
    assert report["backend"] == "openvino (cpu, fp32)" and report["backend_requested"] == "auto"
    assert report["miou"] < 0.2, "the ONNX graph's (untrained) predictions, not the model file's"

    assert main(["evaluate", "--data", str(sample_dir), "--model", str(bundled_model), "--limit", "1",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["onnx"] is None
    capsys.readouterr()
    assert main(["evaluate", "--data", str(sample_dir), "--model", str(bundled_model), "--onnx", str(untrained),
                 "--backend", "torch"]) == 2
    assert "is for the onnxruntime, openvino and tensorrt backends" in capsys.readouterr().err


def test_quantize_at_another_input_size_writes_an_int8_graph_of_that_size(tiny_model_file, sample_dir, tmp_path):
    import shutil

    import onnx

    model = tmp_path / "tiny.pt"  # the FP32 export is cached beside it
    shutil.copy(tiny_model_file, model)
    int8 = tmp_path / "tiny.int8.64x64.onnx"
    assert main(["quantize", "--model", str(model), "--calibration-data", str(sample_dir), "--calibration-split",
                 "val", "--num-images", "2", "--input-size", "64x64", "--out", str(int8)]) == 0
    graph = onnx.load(str(int8)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    assert main(["evaluate", "--data", str(sample_dir), "--model", str(model), "--onnx", str(int8), "--input-size",
                 "64x64", "--limit", "1", "--json", str(tmp_path / "int8.json")]) == 0
    assert json.loads((tmp_path / "int8.json").read_text())["network_input_size"] == [64, 64]


def test_each_quantizer_quantizes_the_graph_form_its_runtime_runs(tiny_model_file, sample_dir, tmp_path):
    import shutil

    import onnx

    model = tmp_path / "tiny.pt"
    shutil.copy(tiny_model_file, model)
    for quantizer, sub_pixel in (("nncf", True), ("onnxruntime", False)):  # OpenVINO's form, ONNX Runtime's
        int8 = tmp_path / f"tiny.{quantizer}.onnx"
        assert main(["quantize", "--model", str(model), "--calibration-data", str(sample_dir), "--calibration-split",
                     "val", "--num-images", "1", "--quantizer", quantizer, "--out", str(int8)]) == 0
        ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
        assert ("DepthToSpace" in ops) == sub_pixel, (quantizer, ops)
