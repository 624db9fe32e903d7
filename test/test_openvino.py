"""OpenVINO on the CPU: the same class maps as ONNX Runtime, precisions checked against what the CPU
has, INT8 made by the package from calibration images, and the node running it over real DDS."""

import random

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino is not installed (pip install -r requirements.txt)")

from fcn_segmentation.backends import BackendError, create_backend  # noqa: E402
from fcn_segmentation.cpu_info import cpu_features, describe_cpu  # noqa: E402
from fcn_segmentation.data import read_rgb, split_pairs  # noqa: E402
from fcn_segmentation.preprocess import Preprocessor  # noqa: E402


def _class_maps(backend, sample_dir):
    info = backend.info
    preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)
    return np.stack([backend.segment(preprocess(read_rgb(image)))[1] for image, _ in split_pairs(sample_dir, "val")])


@pytest.fixture(scope="module")
def onnxruntime_fp32_maps(bundled_model, sample_dir):
    backend, _ = create_backend("onnxruntime", bundled_model, device="cpu", precision="fp32")
    return _class_maps(backend, sample_dir)


def test_openvino_fp32_class_maps_equal_onnxruntime_fp32_on_camvid_frames(
        bundled_model, sample_dir, onnxruntime_fp32_maps):
    backend, _ = create_backend("openvino", bundled_model, precision="fp32")
    assert backend.describe() == "openvino (cpu, fp32)"
    assert backend.onnx_path.name.endswith(".subpixel.onnx"), "OpenVINO runs the sub-pixel export"
    maps = _class_maps(backend, sample_dir)
    assert maps.shape == onnxruntime_fp32_maps.shape == (6, 288, 384)
    agreement = (maps == onnxruntime_fp32_maps).mean()
    assert agreement >= 0.999, f"only {agreement:.5f} of pixels agree"
    scores, classes = backend.segment(np.zeros((1, 3, 288, 384), np.float32))
    assert scores.shape == (1, 11, 288, 384) and scores.dtype == np.float32 and classes.dtype == np.uint8
    np.testing.assert_array_equal(classes, scores[0].argmax(0))


def test_openvino_int8_from_the_bundled_calibration_images_agrees_with_fp32(
        bundled_model, sample_dir, onnxruntime_fp32_maps):
    backend, _ = create_backend("openvino", bundled_model, precision="int8")
    assert backend.describe() == "openvino (cpu, int8)"
    assert ".subpixel.int8." in backend.onnx_path.name, "the package's own QDQ graph, cached beside the export"
    agreement = (_class_maps(backend, sample_dir) == onnxruntime_fp32_maps).mean()
    assert agreement >= 0.98, f"only {agreement:.4f} of pixels agree with FP32"
    again, _ = create_backend("openvino", bundled_model, precision="int8")
    assert again.onnx_path == backend.onnx_path, "made once, then read from the cache"
    # ONNX Runtime runs its own quantizer's graph (it runs NNCF's at half its FP32 speed): another file
    ort, _ = create_backend("onnxruntime", bundled_model, device="cpu", precision="int8")
    assert ".int8." in ort.onnx_path.name and ".subpixel." not in ort.onnx_path.name
    agreement = (_class_maps(ort, sample_dir) == onnxruntime_fp32_maps).mean()
    assert agreement >= 0.95, f"only {agreement:.4f} of pixels agree with FP32"


def _quantized_inputs(graph) -> dict:
    """Conv name -> whether its weight comes through a DequantizeLinear (is INT8)."""
    producers = {output: node for node in graph.node for output in node.output}
    return {node.name: getattr(producers.get(node.input[1]), "op_type", None) == "DequantizeLinear"
            for node in graph.node if node.op_type == "Conv"}


def test_int8_keeps_the_image_convolution_and_the_first_depthwise_one_in_fp32(bundled_model):
    # quantized, the first depthwise convolution cost 2.0-2.6 points of mIoU on the dusk drive 0001TP
    import onnx

    backend, _ = create_backend("openvino", bundled_model, precision="int8")
    graph = onnx.load(str(backend.onnx_path)).graph
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    depthwise = [node.name for node in convolutions
                 if any(attribute.name == "group" and attribute.i > 1 for attribute in node.attribute)]
    int8 = _quantized_inputs(graph)
    assert not int8[convolutions[0].name] and not int8[depthwise[0]]
    assert all(int8[name] for name in depthwise[1:]), "every later depthwise convolution is INT8"
    assert sum(int8.values()) == len(convolutions) - 2


def test_bf16_runs_where_the_cpu_has_it_and_is_a_startup_error_that_says_why_elsewhere(
        bundled_model, sample_dir, onnxruntime_fp32_maps):
    if not (cpu_features()["bf16"] or cpu_features()["amx"]):
        with pytest.raises(BackendError, match="precision bf16 needs a CPU with BF16 instructions") as error:
            create_backend("openvino", bundled_model, precision="bf16")
        assert describe_cpu() in str(error.value) and "use precision int8 or fp32" in str(error.value)
        return
    backend, _ = create_backend("openvino", bundled_model, precision="bf16")
    assert backend.describe() == "openvino (cpu, bf16)"
    agreement = (_class_maps(backend, sample_dir) == onnxruntime_fp32_maps).mean()
    assert agreement >= 0.98, f"only {agreement:.4f} of pixels agree with FP32"


def test_int8_with_nothing_to_calibrate_from_is_a_startup_error_and_auto_then_runs_fp32(tiny_model_file):
    # a model of the user's own: the bundled calibration images are the bundled model's, not theirs
    for name in ("openvino", "onnxruntime"):
        with pytest.raises(BackendError, match="precision int8 needs calibration images for this model"):
            create_backend(name, tiny_model_file, device="cpu", precision="int8")
    backend, _ = create_backend("openvino", tiny_model_file, precision="auto")
    assert backend.describe() == "openvino (cpu, fp32)"


def test_int8_calibrates_on_the_given_images_and_the_cache_follows_them(tiny_model_file, sample_dir, tmp_path):
    images = sorted((sample_dir / "val").glob("*.png"))
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, chosen in ((first, images[:3]), (second, images[3:])):
        folder.mkdir()
        for image in chosen:
            (folder / image.name).write_bytes(image.read_bytes())
    one, _ = create_backend("openvino", tiny_model_file, precision="int8", calibration_data=first)
    other, _ = create_backend("onnxruntime", tiny_model_file, device="cpu", precision="int8",
                              calibration_data=second)
    assert one.describe() == "openvino (cpu, int8)"
    assert one.onnx_path != other.onnx_path, "another calibration set is another INT8 graph"
    assert other.onnx_path.is_file() and not list(tiny_model_file.parent.glob(".*.tmp*")), "no temporary files left"


def test_a_qdq_onnx_runs_as_int8_and_refuses_another_precision(tiny_model_file, tmp_path):
    from fcn_segmentation.model.model_file import load_model_file
    from fcn_segmentation.quantize import quantize_onnx

    model, info = load_model_file(tiny_model_file)
    fp32, _ = create_backend("onnxruntime", tiny_model_file, device="cpu", precision="fp32")
    sample = tmp_path / "calibration.png"
    import cv2
    cv2.imwrite(str(sample), np.full((96, 64, 3), 90, np.uint8))
    qdq = quantize_onnx(fp32.onnx_path, tmp_path / "tiny.int8.onnx", [sample])
    backend, _ = create_backend("openvino", tiny_model_file, onnx_path=qdq)
    assert backend.describe() == "openvino (cpu, int8)"
    with pytest.raises(BackendError, match="QDQ INT8 graph, which openvino runs in int8 only, not fp32"):
        create_backend("openvino", tiny_model_file, onnx_path=qdq, precision="fp32")


def test_auto_tries_openvino_before_onnxruntime_on_the_cpu_and_says_why_it_was_not_used(
        tiny_model_file, monkeypatch):
    from fcn_segmentation.backends.openvino_backend import OpenVinoBackend

    backend, skipped = create_backend("auto", tiny_model_file, device="cpu")
    assert backend.name == "openvino" and skipped == []

    def fails(self, *args, **kwargs):
        raise BackendError("openvino cannot load the graph: out of memory")

    monkeypatch.setattr(OpenVinoBackend, "__init__", fails)
    backend, skipped = create_backend("auto", tiny_model_file, device="cpu")
    assert backend.name == "onnxruntime"
    assert skipped == ["openvino/cpu: openvino cannot load the graph: out of memory"]


def test_precision_a_backend_cannot_run_is_refused_with_what_it_can(tiny_model_file):
    with pytest.raises(BackendError, match="torch on cpu runs precision fp32, not bf16"):
        create_backend("torch", tiny_model_file, device="cpu", precision="bf16")
    with pytest.raises(BackendError, match="unknown precision 'fp8'"):
        create_backend("auto", tiny_model_file, precision="fp8")


def test_cpu_description_names_the_instruction_sets():
    features = cpu_features()
    assert set(features) == {"model", "avx2", "avx512", "vnni", "bf16", "amx"}
    text = describe_cpu()
    assert text.startswith(str(features["model"]))
    assert ("AVX2" in text) and (("no " in text) or all(features[k] for k in ("avx512", "vnni", "bf16", "amx")))


def test_node_runs_openvino_over_dds(dds_env, bundled_model, sample_dir, tmp_path):
    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -r requirements.txt)")
    from rclpy.executors import SingleThreadedExecutor

    from fcn_segmentation.data import read_label
    from fcn_segmentation.ros.client import (SegmentationClient, image_msg, image_to_array, publish_until_answered,
                                             spin_until, stamp_key, start_node, stop_node)

    log = tmp_path / "node.log"
    process = start_node({"model_path": str(bundled_model), "backend": "openvino", "precision": "fp32",
                          "inference_threads": 1, "diagnostics_period": 0.5},
                         remaps={"image": "/ov_camera/image_raw", "__ns": "/ov_camera"}, log_path=str(log))
    rclpy.init()
    client = SegmentationClient("/ov_camera/image_raw", "/ov_camera/segmentation", ("class_mask",),
                                name=f"test_client_{random.randint(0, 1 << 30)}")
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    try:
        assert spin_until(executor, lambda: client.connected() or process.poll() is not None, 60), "no DDS match"
        assert process.poll() is None, log.read_text()[-3000:]
        image, label = split_pairs(sample_dir, "val")[0]
        msg = image_msg(read_rgb(image), "bgr8", 1_700_000_000_000_000_123, "ov")
        assert publish_until_answered(executor, client, msg), log.read_text()[-3000:]
        classes = image_to_array(client.received[stamp_key(msg.header)].outputs["class_mask"])
        truth = read_label(label, 11)
        assert (classes[truth == 3] == 3).mean() > 0.8, "road should be found"
        spin_until(executor, lambda: "backend" in client.last_diagnostic_values(), 10)
        assert client.last_diagnostic_values()["backend"] == "openvino (cpu, fp32)"
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()
        code = stop_node(process)
    assert code == 0, log.read_text()[-3000:]


def test_sampled_scores_are_every_strided_pixels_scores_and_leave_the_class_ids_alone(bundled_model, sample_dir):
    """The node asks for the scores of every 4th pixel (its confidence monitor's): OpenVINO then takes
    the class ids and those scores from the sub-pixel phases and skips the full-resolution scores."""
    for precision in ("fp32", "int8"):
        backend, _ = create_backend("openvino", bundled_model, precision=precision, scores_stride=4)
        info = backend.info
        preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)
        for image, _ in split_pairs(sample_dir, "val")[:3]:
            batch = preprocess(read_rgb(image))
            full_scores, full_classes = backend.segment(batch)
            for stride in (4, 8):
                scores, classes = backend.segment(batch, stride)
                assert scores.shape == (1, 11, 288 // stride, 384 // stride)
                np.testing.assert_allclose(scores, full_scores[:, :, ::stride, ::stride], rtol=1e-4, atol=1e-4)
                agreement = (classes == full_classes).mean()
                assert agreement >= 0.9999, f"{precision}, stride {stride}: {agreement:.5f} of class ids agree"


def test_auto_exports_no_graph_for_a_tensorrt_that_cannot_run(tiny_model_file, tmp_path):
    import shutil

    from fcn_segmentation.backends.tensorrt_backend import require_tensorrt

    try:
        require_tensorrt()
        pytest.skip("TensorRT runs here")
    except BackendError:
        pass
    model = tmp_path / "tiny.pt"
    shutil.copy(tiny_model_file, model)
    backend, skipped = create_backend("auto", model, precision="fp32")
    assert backend.name == "openvino" and any(reason.startswith("tensorrt") for reason in skipped)
    exports = sorted(path.name for path in tmp_path.glob("*.onnx"))
    assert exports and all(".subpixel." in name for name in exports), exports  # OpenVINO's form only


def test_an_fcn4s_model_runs_on_openvino_fp32_and_int8_with_sampled_scores(tiny_fcn4s_model_file, sample_dir):
    """FCN-4s's final upsampling is 4x: the sub-pixel graph has 16 phases, which hold the stride-4
    scores; stride 8 is sampled from the full scores. Class ids as torch's."""
    import torch

    from fcn_segmentation.model.model_file import load_model_file

    model, info = load_model_file(tiny_fcn4s_model_file)
    preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)
    batches = [preprocess(read_rgb(image)) for image, _ in split_pairs(sample_dir, "val")[:3]]
    fp32, _ = create_backend("openvino", tiny_fcn4s_model_file, precision="fp32", scores_stride=4)
    int8, _ = create_backend("openvino", tiny_fcn4s_model_file, precision="int8",
                             calibration_data=sample_dir / "val")
    assert int8.describe() == "openvino (cpu, int8)" and ".subpixel.int8." in int8.onnx_path.name
    for batch in batches:
        with torch.no_grad():
            torch_scores = model(torch.from_numpy(batch)).numpy()
        for stride in (1, 4, 8):
            scores, classes = fp32.segment(batch, stride)
            np.testing.assert_allclose(scores, torch_scores[:, :, ::stride, ::stride], rtol=1e-3, atol=1e-3)
            assert (classes == torch_scores.argmax(1)).mean() >= 0.999
        scores, classes = int8.segment(batch, 4)
        assert scores.shape == (1, 11, 16, 24) and classes.shape[-2:] == (64, 96)
