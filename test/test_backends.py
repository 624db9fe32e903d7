import numpy as np
import pytest
import torch

from fcn_segmentation.backends import BackendError, BackendUnavailable, create_backend
from fcn_segmentation.backends.tensorrt_backend import (ENGINE_MAGIC, engine_cache_key, engine_cache_problem,
                                                        engine_file_name, read_engine, write_engine)
from fcn_segmentation.backends.torch_backend import TorchBackend


def test_auto_takes_a_gpu_backend_where_there_is_one_else_a_cpu_one_and_says_why(tiny_model_file):
    import onnxruntime

    backend, skipped = create_backend("auto", tiny_model_file, device="auto")
    gpu = torch.cuda.is_available() or "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert backend.device == ("cuda" if gpu else "cpu")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert any(reason.startswith("tensorrt/cuda: tensorrt is not importable") for reason in skipped)
    scores = backend.infer(np.zeros((1, 3, 64, 96), np.float32))
    assert scores.shape == (1, 11, 64, 96)


def test_onnxruntime_cpu_threads_sleep_instead_of_spinning_when_asked(tiny_model_file):
    from fcn_segmentation.backends.onnxruntime_backend import ALLOW_SPINNING

    spinning, _ = create_backend("onnxruntime", tiny_model_file, device="cpu")
    sleeping, _ = create_backend("onnxruntime", tiny_model_file, device="cpu", cpu_busy_wait=False)
    assert spinning.session.get_session_options().get_session_config_entry(ALLOW_SPINNING) == "1"
    assert sleeping.session.get_session_options().get_session_config_entry(ALLOW_SPINNING) == "0"
    batch = np.random.default_rng(0).normal(size=(1, 3, 64, 96)).astype(np.float32)
    np.testing.assert_array_equal(spinning.infer(batch), sleeping.infer(batch))


def test_onnxruntime_and_torch_agree(tiny_model_file):
    ort, _ = create_backend("onnxruntime", tiny_model_file, device="cpu")
    torch_backend, _ = create_backend("torch", tiny_model_file, device="cpu")
    batch = np.random.default_rng(0).normal(size=(1, 3, 64, 96)).astype(np.float32)
    np.testing.assert_allclose(ort.infer(batch), torch_backend.infer(batch), atol=1e-3)


def test_onnxruntime_takes_the_argmax_in_its_graph_as_numpy_would(bundled_model, sample_dir):
    from fcn_segmentation.data import read_rgb
    from fcn_segmentation.preprocess import Preprocessor

    ort, _ = create_backend("onnxruntime", bundled_model, device="cpu")
    info = ort.info
    preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)
    scores, classes = ort.segment(preprocess(read_rgb(sorted((sample_dir / "val").glob("*.png"))[0])))
    assert classes.shape == (info.input_height, info.input_width) and classes.dtype == np.uint8
    np.testing.assert_array_equal(classes, np.argmax(scores[0], axis=0))
    assert len(np.unique(classes)) >= 5, "a street scene has several classes"


def test_precision_fp16_is_for_the_gpu_and_cpu_backends_refuse_it(tiny_model_file):
    # a precision the CPU backends cannot run is refused with what they can, not run as something else
    with pytest.raises(BackendError, match="torch on cpu runs precision fp32, not fp16"):
        create_backend("torch", tiny_model_file, device="cpu", precision="fp16")
    backend, _ = create_backend("torch", tiny_model_file, device="cpu", precision="auto")
    assert backend.describe() == "torch (cpu)" and next(backend.model.parameters()).dtype == torch.float32
    # asked for directly, torch refuses FP16 off CUDA instead of running something slower
    with pytest.raises(BackendError, match="FP16 only on CUDA"):
        TorchBackend(backend.model, backend.info, device="cpu", half=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_cuda_fp16_agrees_with_fp32(tiny_model_file):
    fp32, _ = create_backend("torch", tiny_model_file, device="cuda")
    fp16, _ = create_backend("torch", tiny_model_file, device="cuda", precision="fp16")
    assert fp16.describe() == "torch (cuda, fp16)"
    batch = np.random.default_rng(0).normal(size=(1, 3, 64, 96)).astype(np.float32)
    scores, classes = fp16.segment(batch)
    assert scores.dtype == np.float32 and classes.dtype == np.uint8
    np.testing.assert_allclose(scores, fp32.infer(batch), atol=0.05)


def test_cpu_threads_cap_onnx_runtime_and_torch(tiny_model_file):
    ort, _ = create_backend("onnxruntime", tiny_model_file, device="cpu", cpu_threads=1)
    assert ort.session.get_session_options().intra_op_num_threads == 1
    previous = torch.get_num_threads()
    try:
        create_backend("torch", tiny_model_file, device="cpu", cpu_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)


def test_tensorrt_without_tensorrt_is_unavailable_with_a_reason(tiny_model_file):
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailable, match="tensorrt is not importable"):
        create_backend("tensorrt", tiny_model_file)


def test_bad_backend_device_and_input_size_are_errors(tiny_model_file):
    with pytest.raises(BackendError, match="unknown backend 'tflite'"):
        create_backend("tflite", tiny_model_file)
    with pytest.raises(BackendError, match="unknown device 'tpu'"):
        create_backend("auto", tiny_model_file, device="tpu")
    with pytest.raises(BackendError, match="multiples of 32"):
        create_backend("torch", tiny_model_file, input_size=(100, 96))


def test_engine_cache_key_changes_with_everything_that_invalidates_an_engine(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph v1")
    base = engine_cache_key(onnx, "10.3", "H100", "fp16", (1, 3, 224, 320))
    assert engine_cache_key(onnx, "10.3", "H100", "fp16", (1, 3, 224, 320)) == base
    for changed in (engine_cache_key(onnx, "10.4", "H100", "fp16", (1, 3, 224, 320)),
                    engine_cache_key(onnx, "10.3", "L4", "fp16", (1, 3, 224, 320)),
                    engine_cache_key(onnx, "10.3", "H100", "int8", (1, 3, 224, 320)),
                    engine_cache_key(onnx, "10.3", "H100", "fp16", (1, 3, 352, 480))):
        assert changed != base
    onnx.write_bytes(b"graph v2")
    assert engine_cache_key(onnx, "10.3", "H100", "fp16", (1, 3, 224, 320)) != base


def test_engine_cache_reads_back_only_a_whole_matching_engine(tmp_path):
    path = tmp_path / "cache" / "m.fp16.engine"
    write_engine(path, "abc123", b"serialized engine")
    assert read_engine(path, "abc123") == b"serialized engine"
    assert read_engine(path, "other") is None, "stale key: rebuild"
    path.write_bytes(ENGINE_MAGIC + b"abc123\n")
    assert read_engine(path, "abc123") is None, "truncated: rebuild"
    path.write_bytes(b"\x00garbage")
    assert read_engine(path, "abc123") is None, "foreign file: rebuild"
    assert read_engine(tmp_path / "missing.engine", "abc123") is None


def test_the_log_says_why_an_engine_is_rebuilt(tmp_path):
    path = tmp_path / "m.fp16.engine"
    assert engine_cache_problem(path, "abc123") == f"no cached engine {path}"
    write_engine(path, "abc123", b"serialized engine")
    assert "was built for another ONNX, TensorRT version, GPU, precision or input shape (key abc123, now def456)" \
        in engine_cache_problem(path, "def456")
    path.write_bytes(ENGINE_MAGIC + b"abc123\n")
    assert engine_cache_problem(path, "abc123").endswith("is truncated (no engine after its header)")
    path.write_bytes(b"\x00garbage")
    assert engine_cache_problem(path, "abc123").endswith("is not an fcn_segmentation engine file")


def test_engine_files_of_two_gpus_or_sizes_do_not_overwrite_each_other():
    h100 = engine_file_name("/c/model.onnx", "fp16", "NVIDIA H100 80GB HBM3", (1, 3, 224, 320))
    assert h100 == "model.fp16.320x224.nvidia-h100-80gb-hbm3.engine"
    assert len({h100, engine_file_name("/c/model.onnx", "fp16", "NVIDIA L4", (1, 3, 224, 320)),
                engine_file_name("/c/model.onnx", "fp16", "NVIDIA H100 80GB HBM3", (1, 3, 352, 480)),
                engine_file_name("/c/model.onnx", "int8", "NVIDIA H100 80GB HBM3", (1, 3, 224, 320))}) == 4


def test_calibration_images_are_spread_over_the_split_and_read_lazily(tmp_path, tiny_model_file):
    import cv2

    from fcn_segmentation.data import calibration_batches, calibration_images
    from fcn_segmentation.model.model_file import load_model_file

    (tmp_path / "train").mkdir()
    for index in range(10):  # video order: seq A frames 0-4, seq B frames 0-4
        cv2.imwrite(str(tmp_path / "train" / f"seq{'AB'[index // 5]}_{index % 5:03d}.png"),
                    np.full((24, 32, 3), index * 20, np.uint8))
    picked = [p.name for p in calibration_images(tmp_path, 4)]
    assert picked == ["seqA_000.png", "seqA_002.png", "seqB_000.png", "seqB_002.png"]
    assert len(calibration_images(tmp_path / "train", 50)) == 10  # a plain folder of images works too
    _, info = load_model_file(tiny_model_file)
    make_batches = calibration_batches(tmp_path, info, 3)
    (tmp_path / "train" / "seqA_000.png").unlink()  # nothing was read yet: only a build reads them
    batches = list(make_batches())
    assert len(batches) == 3 and batches[0].shape == (1, 3, info.input_height, info.input_width)


def test_a_quantized_onnx_is_recognised_as_int8(tmp_path):
    import onnx
    from onnx import helper

    from fcn_segmentation.export import onnx_is_quantized

    def graph_with(op_types):
        nodes = [helper.make_node(op, ["x", "s", "z"] if "Linear" in op else ["x"], ["x"]) for op in op_types]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])])
        path = tmp_path / f"{'_'.join(op_types)}.onnx"
        onnx.save(helper.make_model(graph), str(path))
        return path
    assert onnx_is_quantized(graph_with(["QuantizeLinear", "DequantizeLinear", "Relu"]))
    assert not onnx_is_quantized(graph_with(["Relu", "Conv"]))


def test_a_given_onnx_file_must_fit_the_model_files_classes_and_input_size(tiny_model_file, tmp_path):
    from fcn_segmentation.export import export_onnx
    from fcn_segmentation.model.model_file import build_model, load_model_file, save_model_file

    model, info = load_model_file(tiny_model_file)
    onnx_path = export_onnx(model, info, tmp_path / "tiny.onnx")
    backend, _ = create_backend("onnxruntime", tiny_model_file, device="cpu", onnx_path=onnx_path)
    assert backend.infer(np.zeros((1, 3, 64, 96), np.float32)).shape == (1, 11, 64, 96)

    info.class_names, info.palette = info.class_names[:5], info.palette[:5]
    five_classes = tmp_path / "five.pt"
    save_model_file(five_classes, build_model(info), info)
    with pytest.raises(BackendError, match=r"scores 11 classes, but model file .*five.pt has 5 .*fcnseg export"):
        create_backend("onnxruntime", five_classes, device="cpu", onnx_path=onnx_path)
    with pytest.raises(BackendError, match=r"takes input \[1, 3, 64, 96\], but the network input is \[1, 3, 128, 96\]"):
        create_backend("onnxruntime", tiny_model_file, device="cpu", onnx_path=onnx_path, input_size=(128, 96))
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(BackendError, match="broken.onnx is not readable"):
        create_backend("onnxruntime", tiny_model_file, device="cpu", onnx_path=tmp_path / "broken.onnx")
    # a device would be read for ever, a folder is no graph: each named for what it is
    with pytest.raises(BackendError, match="onnx file /dev/zero is not a regular file \\(a device\\)"):
        create_backend("onnxruntime", tiny_model_file, device="cpu", onnx_path="/dev/zero")
    with pytest.raises(BackendError, match="is not a regular file \\(a folder\\)"):
        create_backend("openvino", tiny_model_file, onnx_path=tmp_path)
    with pytest.raises(BackendError, match="missing.onnx does not exist"):
        create_backend("openvino", tiny_model_file, onnx_path=tmp_path / "missing.onnx")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_onnxruntime_cuda_that_would_start_on_the_cpu_is_unavailable(tiny_model_file, monkeypatch):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has ONNX Runtime CUDA")
    # ONNX Runtime that lists CUDA but cannot start it (as with missing cuDNN) builds a CPU session and only warns
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match="could not start its CUDAExecutionProvider and would run on "
                                                 "CPUExecutionProvider"):
        create_backend("onnxruntime", tiny_model_file, device="cuda")
    # device auto moves on, and says why
    backend, skipped = create_backend("onnxruntime", tiny_model_file)
    assert backend.describe() == "onnxruntime (cpu)"
    assert any(reason.startswith("onnxruntime/cuda: onnxruntime could not start") for reason in skipped)
    # an error at run time raises instead of silently re-running on another provider
    assert backend.session._enable_fallback is False


def _onnxruntime_session_fails(self, *args, **kwargs):
    raise BackendError("onnxruntime cannot load the graph: out of memory")


def _openvino_fails(self, *args, **kwargs):
    raise BackendError("openvino cannot load the graph: out of memory")


def test_auto_goes_on_when_a_backend_fails_to_start_and_a_named_backend_raises(tiny_model_file, monkeypatch):
    from fcn_segmentation.backends.onnxruntime_backend import OnnxRuntimeBackend
    from fcn_segmentation.backends.openvino_backend import OpenVinoBackend

    monkeypatch.setattr(OnnxRuntimeBackend, "__init__", _onnxruntime_session_fails)
    monkeypatch.setattr(OpenVinoBackend, "__init__", _openvino_fails)
    backend, skipped = create_backend("auto", tiny_model_file, device="cpu")
    assert backend.describe() == "torch (cpu)"
    assert skipped == ["openvino/cpu: openvino cannot load the graph: out of memory",
                       "onnxruntime/cpu: onnxruntime cannot load the graph: out of memory"]
    with pytest.raises(BackendError, match="out of memory"):
        create_backend("onnxruntime", tiny_model_file, device="cpu")
    with pytest.raises(BackendError, match="out of memory") as error:  # device auto: its CPU try fails too
        create_backend("onnxruntime", tiny_model_file)
    assert not isinstance(error.value, BackendUnavailable), "a failure, not a missing runtime"


def test_a_given_onnx_file_is_never_swapped_for_the_model_files_weights(tiny_model_file, tmp_path, monkeypatch):
    from fcn_segmentation.backends.onnxruntime_backend import OnnxRuntimeBackend
    from fcn_segmentation.backends.openvino_backend import OpenVinoBackend
    from fcn_segmentation.export import export_onnx
    from fcn_segmentation.model.model_file import load_model_file

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    # auto would have fallen back to torch: the user's file is a problem for the user to fix
    with pytest.raises(BackendError, match=r"broken.onnx is not readable .*fcnseg export --model .*tiny.pt --onnx"):
        create_backend("auto", tiny_model_file, onnx_path=broken)
    with pytest.raises(BackendError, match="is for the onnxruntime, openvino and tensorrt backends; torch runs the"):
        create_backend("torch", tiny_model_file, onnx_path=broken)

    good = export_onnx(*load_model_file(tiny_model_file), tmp_path / "good.onnx")
    monkeypatch.setattr(OnnxRuntimeBackend, "__init__", _onnxruntime_session_fails)
    monkeypatch.setattr(OpenVinoBackend, "__init__", _openvino_fails)
    with pytest.raises(BackendError, match=r"no backend could start: .*torch/cpu: runs the model file's weights, "
                                           r"not onnx_path .*good.onnx"):
        create_backend("auto", tiny_model_file, onnx_path=good)


def test_a_given_onnx_file_that_onnxruntime_cannot_load_says_what_to_do(tiny_model_file, tmp_path):
    import onnx

    from fcn_segmentation.export import export_onnx
    from fcn_segmentation.model.model_file import load_model_file

    graph = onnx.load(str(export_onnx(*load_model_file(tiny_model_file), tmp_path / "tiny.onnx")))
    graph.graph.node[0].op_type = "NoSuchOperator"  # readable, right shapes, not runnable
    onnx.save(graph, str(tmp_path / "odd.onnx"))
    with pytest.raises(BackendError, match=r"onnxruntime cannot load .*odd.onnx.*; export it again from this model "
                                           r"file \(fcnseg export --model .*tiny.pt --onnx .*odd.onnx"):
        create_backend("onnxruntime", tiny_model_file, device="cpu", onnx_path=tmp_path / "odd.onnx")


def test_a_damaged_cached_export_is_deleted_and_exported_again(tiny_model_file, tmp_path, caplog, monkeypatch):
    import logging
    import shutil

    import onnx

    from fcn_segmentation.export import cached_export_problem, onnx_cache_path
    from fcn_segmentation.model.model_file import load_model_file

    # Where `launch` is installed its logging stops our loggers propagating to the root, caplog's place.
    monkeypatch.setattr(logging.getLogger("fcn_segmentation.export"), "propagate", True)
    model_path = tmp_path / "model.pt"
    shutil.copy(tiny_model_file, model_path)
    create_backend("onnxruntime", model_path, device="cpu")
    cached = onnx_cache_path(model_path, load_model_file(model_path)[1])
    whole = onnx.load(str(cached))
    cut_before_metadata = onnx.load(str(cached))
    del cut_before_metadata.metadata_props[:]  # what a file cut short between graph and metadata reads as
    for damage in (b"\x00garbage", cached.read_bytes()[:100_000], cut_before_metadata.SerializeToString()):
        cached.write_bytes(damage)
        caplog.clear()
        backend, _ = create_backend("onnxruntime", model_path, device="cpu")
        assert backend.infer(np.zeros((1, 3, 64, 96), np.float32)).shape == (1, 11, 64, 96)
        assert f"cached ONNX export {cached} is unusable" in caplog.text
        assert cached_export_problem(cached) is None
        assert len(onnx.load(str(cached)).graph.node) == len(whole.graph.node), "exported whole again"


def test_tensorrt_build_progress_shows_as_nested_tqdm_bars(capsys):
    import types

    from fcn_segmentation.backends.tensorrt_backend import make_progress_monitor

    class MonitorInterface:  # stands in for trt.IProgressMonitor, which TensorRT's builder calls
        def __init__(self):
            pass

    monitor = make_progress_monitor(types.SimpleNamespace(IProgressMonitor=MonitorInterface))
    monitor.phase_start("Building engine", None, 3)
    monitor.phase_start("Tactic selection", "Building engine", 2)
    assert monitor.step_complete("Tactic selection", 0) is True, "True lets the build go on"
    bar, depth = monitor.bars["Tactic selection"]
    assert (bar.n, bar.total, depth) == (1, 2, 1)
    monitor.step_complete("Tactic selection", 1)
    monitor.phase_finish("Tactic selection")
    monitor.step_complete("Building engine", 2)
    assert monitor.bars["Building engine"][0].n == 3
    monitor.phase_finish("Building engine")
    assert monitor.bars == {}
    assert "TensorRT: Building engine" in capsys.readouterr().err
    assert make_progress_monitor(types.SimpleNamespace()) is None, "TensorRT without IProgressMonitor"


@pytest.mark.parametrize("variant", ["fcn8s", "fcn4s"])
@pytest.mark.parametrize("sub_pixel", [False, True], ids=["plain", "sub_pixel"])
def test_graphs_with_sampled_scores_give_the_strided_scores_and_the_same_class_ids(
        tiny_model_file, tiny_fcn4s_model_file, tmp_path, sub_pixel, variant):
    import onnx
    import onnxruntime as ort
    import torch

    from fcn_segmentation.backends.graph_outputs import with_class_ids
    from fcn_segmentation.export import export_onnx
    from fcn_segmentation.model.model_file import load_model_file

    model, info = load_model_file(tiny_fcn4s_model_file if variant == "fcn4s" else tiny_model_file)
    assert info.variant == variant
    path = export_onnx(model, info, tmp_path / "tiny.onnx", sub_pixel=sub_pixel)
    batch = np.random.default_rng(0).standard_normal((1, 3, info.input_height, info.input_width)).astype(np.float32)

    def run(graph):
        return ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {"image": batch})

    full_scores, full_classes = run(with_class_ids(path))
    with torch.no_grad():
        np.testing.assert_allclose(full_scores, model(torch.from_numpy(batch)).numpy(), rtol=1e-4, atol=1e-4)
    assert full_scores.shape == (1, 11, 64, 96) and full_classes.shape == (1, 64, 96)
    for stride in (2, 4, 8):
        graph = with_class_ids(path, stride)
        from_phases = any(node.op_type == "Gather" for node in onnx.load_from_string(graph).graph.node)
        # the phases hold every stride dividing the final upsampling's factor (8, or 4 for FCN-4s)
        assert from_phases == (sub_pixel and model.output_stride % stride == 0)
        scores, classes = run(graph)
        np.testing.assert_allclose(scores, full_scores[:, :, ::stride, ::stride], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(classes, full_classes)


def test_test_time_flip_averages_with_the_mirror_image_on_every_cpu_backend(tiny_model_file, sample_dir, tmp_path):
    import shutil

    from fcn_segmentation.data import read_rgb
    from fcn_segmentation.preprocess import Preprocessor

    model = tmp_path / "tiny.pt"  # its exports are cached beside it
    shutil.copy(tiny_model_file, model)
    plain, _ = create_backend("torch", model, device="cpu")
    info = plain.info
    image = read_rgb(sorted((sample_dir / "val").glob("*.png"))[0])
    batch = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)(image).copy()
    mirrored = np.ascontiguousarray(batch[..., ::-1])
    expected = (plain.infer(batch) + plain.infer(mirrored)[..., ::-1]) / 2
    for name in ("torch", "onnxruntime", "openvino"):
        try:
            backend, _ = create_backend(name, model, device="cpu", precision="fp32", test_time_flip=True)
        except BackendUnavailable:
            continue
        scores, classes = backend.segment(batch)
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(backend.segment(mirrored)[0], scores[..., ::-1], rtol=1e-4, atol=1e-4,
                                   err_msg=f"{name}: the mirror image's scores are the mirrored scores")
        if name != "torch":
            assert ".flip." in backend.onnx_path.name, "its own cached export, beside the plain one"
    # INT8 quantizes the flip graph too (its first convolution, on both images, stays FP32)
    int8, _ = create_backend("onnxruntime", model, device="cpu", precision="int8", calibration_data=sample_dir / "val",
                             test_time_flip=True)
    assert ".flip.int8." in int8.onnx_path.name
    assert (int8.segment(batch)[1] == classes).mean() > 0.9
    with pytest.raises(BackendError, match="test_time_flip runs the model file's own export"):
        create_backend("onnxruntime", model, device="cpu", onnx_path=plain_onnx(model, tmp_path), test_time_flip=True)


def plain_onnx(model_path, folder):
    from fcn_segmentation.export import export_onnx
    from fcn_segmentation.model.model_file import load_model_file

    return export_onnx(*load_model_file(model_path), folder / "given.onnx")
