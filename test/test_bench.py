"""The benchmark runs and reports every stage (speed targets live in its report, not in tests)."""

import cv2
import pytest

from fcn_segmentation.bench import STAGES, format_report, model_gflops, run_bench


def test_bench_reports_every_stage_for_cpu_backends(bundled_model, sample_dir):
    image = sorted((sample_dir / "val").glob("*.png"))[0]
    report = run_bench(bundled_model, image, frames=2, warmup=1)
    assert {"onnxruntime-cpu", "torch-cpu"} <= set(report["backends"])
    for result in report["backends"].values():
        for stage in STAGES:
            assert result[stage]["p95"] >= result[stage]["p50"] >= 0
        assert result["inference"]["p50"] > 0 and result["fps"] > 0
    assert report["matmul_peak_gflops"] > 0
    speedups = report["speedup_vs_onnxruntime_cpu_fp32"]
    assert speedups["onnxruntime-cpu"] == 1.0 and set(speedups) == set(report["backends"])
    assert speedups["torch-cpu"] == pytest.approx(report["backends"]["torch-cpu"]["fps"]
                                                  / report["backends"]["onnxruntime-cpu"]["fps"])
    assert {"openvino-fp32", "openvino-int8"} <= set(report["backends"]), "OpenVINO runs on every x86 CPU"
    assert report["backends"]["openvino-int8"]["backend"] == "openvino (cpu, int8)"
    assert set(report["cpu"]) == {"model", "avx2", "avx512", "vnni", "bf16", "amx"}
    text = format_report(report)
    assert "| onnxruntime-cpu |" in text and "not measured: tensorrt" in text
    assert f"CPU: {report['cpu_description']}" in text
    cpu = report["backends"]["onnxruntime-cpu"]
    assert cpu["percent_of_cpu_peak"] == pytest.approx(100 * cpu["achieved_gflops"] / report["matmul_peak_gflops"])


def test_operator_profile_names_where_onnx_runtime_spends_the_time(bundled_model, sample_dir):
    image = sorted((sample_dir / "val").glob("*.png"))[0]
    report = run_bench(bundled_model, image, frames=2, warmup=1, input_size=(192, 256), operators=True)
    assert "operator_profile" not in report["backends"]["torch-cpu"], "only ONNX Runtime has a profiler here"
    profile = report["backends"]["onnxruntime-cpu"]["operator_profile"]
    operators = profile["operators_ms"]
    # the FCN's own operators: backbone and score convolutions, learned upsampling, and the argmax we add
    assert {"Conv", "ConvTranspose", "ArgMax"} <= set(operators)
    assert sum(operators.values()) == pytest.approx(profile["total_ms"]) and profile["total_ms"] > 0
    assert list(operators.values()) == sorted(operators.values(), reverse=True)
    slowest = profile["slowest_nodes_ms"]
    assert 0 < len(slowest) <= 5 and slowest[0]["ms"] >= slowest[-1]["ms"]
    assert "onnxruntime-cpu operators" in format_report(report)


def test_bare_pipeline_times_each_stage_of_one_frame(bundled_model, sample_dir):
    from fcn_segmentation.backends import create_backend
    from fcn_segmentation.bench import BarePipeline
    from fcn_segmentation.data import read_rgb

    backend, _ = create_backend("onnxruntime", bundled_model, device="cpu", input_size=(192, 256))
    built = []
    pipeline = BarePipeline(backend, read_rgb(sorted((sample_dir / "val").glob("*.png"))[0]),
                            message_builder=lambda classes, colors: built.append((classes.shape, colors.shape)))
    stages = pipeline.run_once()
    assert list(stages) == list(STAGES) and all(ms >= 0 for ms in stages.values())
    assert stages["inference"] > 0
    assert built == [((360, 480), (360, 480, 3))], "messages are built at the frame's size"
    # the node's work up to its class mask: no colours drawn
    to_class_mask = BarePipeline(backend, read_rgb(sorted((sample_dir / "val").glob("*.png"))[0]),
                                 message_builder=lambda classes, colors: built.append((classes.shape, colors)),
                                 colors=False)
    to_class_mask.run_once()
    assert built[1] == ((360, 480), None)


def test_flop_count_of_the_bundled_model_matches_the_backbone_scale(bundled_model):
    from fcn_segmentation.model.model_file import load_model_file

    model, _ = load_model_file(bundled_model)
    # EfficientNet-Lite0 is ~0.4 GFLOPs (multiply-adds x 2 = 0.8 GFLOP) at 224x224; 352x480 is 3.4x the
    # pixels, plus the FCN head: a few GFLOP, not tens.
    assert 2.0 < model_gflops(model, 352, 480) < 5.0
    # Convolutions scale with pixels (sides kept multiples of 32, so no padding changes the count).
    assert model_gflops(model, 384, 512) == pytest.approx(4 * model_gflops(model, 192, 256), rel=0.02)


def test_node_latency_over_dds(bundled_model, sample_dir):
    pytest.importorskip("rclpy", reason="rclpy is not installed")
    from fcn_segmentation.data import read_rgb
    from fcn_segmentation.ros.bench_dds import bench_node_over_dds

    bare_calls = []

    def bare_frame():  # stands in for BarePipeline.run_once: the point here is when it runs
        bare_calls.append(len(bare_calls))
        return 10.0 + len(bare_calls)

    result = bench_node_over_dds(bundled_model, read_rgb(sorted((sample_dir / "val").glob("*.png"))[0]), frames=3,
                                 input_size=(192, 256), outputs=("class_mask", "overlay"), bare_frame=bare_frame,
                                 rounds=2)
    assert result["frames"] == 3 and result["lost"] == 0
    # one bare pass per node frame, in blocks between the node's
    assert len(bare_calls) == 3 and result["bare_interleaved"]["p50"] == pytest.approx(12.0)
    assert result["rounds"] == 2
    assert 0 < result["latency"]["p50"] <= result["latency"]["max"]
    # each frame's last output comes no earlier than its class mask
    assert result["latency_all_outputs"]["p50"] >= result["latency"]["p50"]
    assert int(result["node_diagnostics"]["processed"]) >= 4
    assert result["node_diagnostics"]["input_size"] == "256x192", "the node runs at the benchmarked size"


def test_soak_overload_counts_every_frame_and_reports_memory(bundled_model, sample_dir, tmp_path):
    pytest.importorskip("rclpy", reason="rclpy is not installed")
    from fcn_segmentation.data import read_rgb
    from fcn_segmentation.ros.bench_dds import plot_soak, soak_node

    rgb = read_rgb(sorted((sample_dir / "val").glob("*.png"))[0])
    # ONNX Runtime: the quickest start (no INT8 graph to make); the counting is the node's, whatever runs
    result = soak_node(bundled_model, rgb, rate_hz=60.0, frames=120, backend="onnxruntime")
    diag = {k: int(result["node_diagnostics"][k]) for k in ("received", "processed", "dropped", "rejected", "missed")}
    assert result["node_exit_code"] == 0
    # every frame sent is accounted for: taken by the node, or missed on the way (best-effort, keep-last 1)
    assert diag["received"] + diag["missed"] >= 120 and diag["processed"] + diag["dropped"] == diag["received"]
    assert 0 < result["masks_received"] <= diag["processed"]
    assert result["answered_fraction"] == pytest.approx(result["masks_received"] / 120)
    if float(result["node_diagnostics"]["latency_p50_ms"]) > 1.2 * 1000 / 60:  # a CPU: 60 Hz overloads it
        assert diag["dropped"] > 0, "frames come faster than inference: the newest-frame policy drops"
        assert result["answered_fraction"] < 1
    else:  # a GPU keeps up
        assert result["answered_fraction"] > 0.9
    assert result["rss_mb"]["end"] > 100 and len(result["memory_curve"]) >= 3
    assert len(result["latency_curve"]) == result["masks_received"]
    assert all(0 <= sent <= result["duration_s"] and latency > 0 for sent, latency in result["latency_curve"])
    plot_soak(result, tmp_path / "soak.png")
    assert cv2.imread(str(tmp_path / "soak.png")) is not None


def test_a_backend_that_fails_to_start_is_listed_as_not_measured_and_the_rest_still_run(tiny_model_file,
                                                                                        monkeypatch):
    from fcn_segmentation.backends import BackendError
    from fcn_segmentation.backends.onnxruntime_backend import OnnxRuntimeBackend
    from fcn_segmentation.bench import available_backends

    def session_fails(self, *args, **kwargs):
        raise BackendError("onnxruntime cannot load the graph: out of memory")

    monkeypatch.setattr(OnnxRuntimeBackend, "__init__", session_fails)
    found, skipped = available_backends(tiny_model_file)
    assert "torch-cpu" in [label for label, _ in found]
    assert "onnxruntime-cpu: onnxruntime cannot load the graph: out of memory" in skipped


def test_compare_models_speed_times_each_configuration_and_reports_ratios_to_the_first(tiny_model_file, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "compare_models_speed.py"
    out = tmp_path / "compare.json"
    configurations = [str(tiny_model_file), str(tiny_model_file), f"{tiny_model_file}@128x96+flip"]
    result = subprocess.run([sys.executable, str(script), *configurations, "--backend", "onnxruntime", "--precision",
                             "fp32", "--frames", "4", "--rounds", "2", "--warmup", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    first, second, larger = report["models"]  # the same file twice: an A/A run
    assert first["fps"] > 0 and second["fps"] > 0 and first["network_input_size"] == [96, 64]
    assert (larger["network_input_size"], larger["test_time_flip"], first["test_time_flip"]) == ([128, 96], True, False)
    assert first["fps_ratio_to_first"] == 1.0
    assert second["fps_ratio_to_first"] == pytest.approx(second["fps"] / first["fps"])
    assert report["cpu_description"] in result.stdout
    failed = subprocess.run([sys.executable, str(script), str(tiny_model_file)], capture_output=True, text=True)
    assert failed.returncode == 2 and "at least two model files" in failed.stderr
