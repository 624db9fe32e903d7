"""``fcnseg`` subcommands for deployment and speed: quantize, build-engine, bench, soak."""

import argparse
import json
from pathlib import Path

from .defaults import default_model_path, default_sample_image, model_argument


# Node outputs a benchmark can subscribe to: those published for every frame without camera_info.
BENCH_OUTPUTS = ("class_mask", "color_mask", "overlay", "confidence", "drivable_mask")


def output_list(text: str):
    """'class_mask,overlay' -> ('class_mask', 'overlay'); class_mask is always measured."""
    names = tuple(dict.fromkeys(["class_mask"] + [n.strip() for n in text.split(",") if n.strip()]))
    unknown = [n for n in names if n not in BENCH_OUTPUTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown outputs {unknown}; choose from {','.join(BENCH_OUTPUTS)}")
    return names


def cmd_quantize(args) -> int:
    from .backends.selection import SUB_PIXEL_BACKENDS, onnx_for
    from .data import calibration_images
    from .model.model_file import load_model_file
    from .quantize import BACKEND_FOR_QUANTIZER, quantize_onnx

    model, info = load_model_file(args.model)
    if args.input_size:  # an INT8 graph runs at one input size: the node's network_image_width/height
        info.input_height, info.input_width = args.input_size
    sub_pixel = BACKEND_FOR_QUANTIZER[args.quantizer] in SUB_PIXEL_BACKENDS  # the form its runtime runs
    fp32 = onnx_for(args.model, None, model, info, sub_pixel=sub_pixel)
    images = calibration_images(args.calibration_data, args.num_images, args.calibration_split)
    out = quantize_onnx(fp32, args.out, images, args.quantizer)
    print(f"wrote {out} (QDQ INT8 at {info.input_width}x{info.input_height}, calibrated on {len(images)} "
          f"images from {args.calibration_data}); score it with `fcnseg evaluate --onnx {out}`, run it with the node's "
          "onnx_path parameter")
    return 0


def cmd_build_engine(args) -> int:
    from .backends.selection import onnx_for
    from .backends.tensorrt_backend import TensorRTBackend
    from .data import DatasetError, calibration_batches
    from .export import onnx_is_quantized
    from .model.model_file import load_model_file

    model, info = load_model_file(args.model)
    if args.input_size:  # the node's network_image_width/height: the engine is built for one input shape
        info.input_height, info.input_width = args.input_size
    onnx_path = onnx_for(args.model, args.onnx, model, info)
    # A QDQ ONNX (fcnseg quantize) carries its own scales: TensorRT needs no calibration for it.
    if args.precision == "int8" and not args.calibration_data and not onnx_is_quantized(onnx_path):
        raise DatasetError("--precision int8 needs --calibration-data DIR (a CamVid-layout folder, whose train/ "
                           "images calibrate the activation ranges, or a folder of images), or --onnx M.int8.onnx "
                           "from `fcnseg quantize`")
    calibration = None
    if args.calibration_data:
        calibration = calibration_batches(args.calibration_data, info, args.num_images)
    backend = TensorRTBackend(model, info, onnx_path, engine_cache_dir=args.engine_cache_dir,
                              precision=args.precision, force_engine_update=args.force,
                              calibration_images=calibration)
    print(f"engine ready: {backend.engine_path}")
    return 0


def cmd_bench(args) -> int:
    from .backends import create_backend
    from .bench import NODE_SCORES_STRIDE, BarePipeline, format_report, ros_message_builder, run_bench
    from .data import read_rgb

    image = args.image or default_sample_image()
    rgb = read_rgb(image)
    if not args.no_dds:  # first, so a backend the machine lacks is an error before minutes of timing
        # Configured as the node's default (inference_busy_wait false), so the two compare like for like.
        bare, _ = create_backend(args.dds_backend, args.model, device=args.dds_device, input_size=args.input_size,
                                 precision=args.dds_precision, cpu_busy_wait=False,
                                 calibration_data=args.calibration_data, scores_stride=NODE_SCORES_STRIDE,
                                 test_time_flip=args.test_time_flip)
        # The node publishes the class mask before it draws anything: the baseline stops there too.
        pipeline = BarePipeline(bare, rgb, ros_message_builder(), colors=False)
    report = run_bench(args.model, image, frames=args.frames, warmup=args.warmup, int8_onnx=args.int8_onnx,
                       threads=args.threads, input_size=args.input_size, operators=args.operators,
                       rounds=args.rounds, calibration_data=args.calibration_data, test_time_flip=args.test_time_flip)
    if not args.no_dds:
        from .ros.bench_dds import bench_node_over_dds

        dds = bench_node_over_dds(args.model, rgb, backend=args.dds_backend, device=args.dds_device,
                                  precision=args.dds_precision, calibration_data=args.calibration_data,
                                  test_time_flip=args.test_time_flip,
                                  frames=args.frames, input_size=args.input_size, outputs=args.dds_outputs,
                                  rounds=args.dds_rounds,
                                  bare_frame=lambda: sum(pipeline.run_once().values()))
        baseline = dds["bare_interleaved"]["p50"]
        dds.update(backend=bare.describe(), bare_pipeline_p50_ms=baseline,
                   overhead_percent=100 * (dds["latency"]["p50"] - baseline) / baseline)
        report["node_over_dds"] = dds
    print(format_report(report))
    if args.json:
        from .cli import command_line
        Path(args.json).write_text(json.dumps({"command": command_line(), **report}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def cmd_soak(args) -> int:
    from .data import read_rgb
    from .ros.bench_dds import plot_soak, soak_node

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rgb = read_rgb(args.image or default_sample_image())
    result = soak_node(args.model, rgb, rate_hz=args.rate, frames=args.frames, backend=args.backend,
                       log_path=str(out / "node.log"), input_size=args.input_size, busy_wait=args.busy_wait)
    from .cli import command_line
    (out / "soak.json").write_text(json.dumps({"command": command_line(), **result}, indent=2))
    plot_soak(result, out / "soak.png")
    diag = result["node_diagnostics"]
    rss = result["rss_mb"]
    print(f"{result['frames_sent']} frames at {args.rate:g} Hz in {result['duration_s']:.0f} s: node processed "
          f"{diag.get('processed')} ({result['processed_fps']:.1f}/s), dropped {diag.get('dropped')} (newest-frame "
          f"policy), rejected {diag.get('rejected')}; masks came back for {100 * result['answered_fraction']:.1f}% "
          "of the frames sent")
    print(f"latency publish -> mask: p50 {result['latency_ms']['p50']:.0f} ms, p95 {result['latency_ms']['p95']:.0f} "
          f"ms, max {result['latency_ms']['max']:.0f} ms")
    print(f"node resident memory: start {rss['start']:.0f} MB, after warm-up {rss['settled']:.0f} MB, end "
          f"{rss['end']:.0f} MB ({rss['growth_percent_after_settling']:+.1f}% after warm-up)")
    print(f"wrote {out / 'soak.json'} and {out / 'soak.png'}")
    return 0 if result["node_exit_code"] == 0 else 1


def add_perf_commands(sub) -> None:
    from .backends import BACKEND_NAMES, PRECISIONS
    from .cli import parse_network_size
    from .defaults import CALIBRATION_IMAGES, default_calibration_dir

    quantize = sub.add_parser("quantize", help="static INT8 (QDQ ONNX) model for OpenVINO, ONNX Runtime, TensorRT")
    quantize.add_argument("--model", type=model_argument, default=str(default_model_path()))
    quantize.add_argument("--calibration-data", default=str(default_calibration_dir()),
                          help="CamVid-layout folder or folder of images (default: the bundled model's "
                               "calibration images)")
    quantize.add_argument("--calibration-split", default="train")
    quantize.add_argument("--num-images", type=int, default=CALIBRATION_IMAGES)
    quantize.add_argument("--quantizer", choices=("nncf", "onnxruntime"), default="nncf",
                          help="nncf (default: fastest on OpenVINO and for TensorRT) or onnxruntime (fastest on "
                               "ONNX Runtime, which runs NNCF's graph slowly)")
    quantize.add_argument("--out", required=True, help="INT8 .onnx to write")
    quantize.add_argument("--input-size", type=parse_network_size, metavar="WxH",
                          help="network input size of the INT8 graph (default: the model file's); evaluate or run "
                               "it with the same --input-size / network_image_width and _height")
    quantize.set_defaults(func=cmd_quantize)

    engine = sub.add_parser("build-engine", help="build (or reuse) the cached TensorRT engine ahead of time")
    engine.add_argument("--model", type=model_argument, default=str(default_model_path()))
    engine.add_argument("--onnx", help="ONNX file (default: exported from --model and cached)")
    engine.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    engine.add_argument("--engine-cache-dir")
    engine.add_argument("--input-size", type=parse_network_size, metavar="WxH",
                        help="network input size (default: the model file's); the node's "
                             "network_image_width/height")
    engine.add_argument("--calibration-data", help="CamVid-layout folder (int8)")
    engine.add_argument("--num-images", type=int, default=64)
    engine.add_argument("--force", action="store_true", help="rebuild even if the cache matches")
    engine.set_defaults(func=cmd_build_engine)

    bench = sub.add_parser("bench", help="per-stage latency of every available backend and of the node over DDS")
    bench.add_argument("--model", type=model_argument, default=str(default_model_path()))
    bench.add_argument("--image", help="480x360 test image (default: a bundled sample frame)")
    bench.add_argument("--frames", type=int, default=50)
    bench.add_argument("--warmup", type=int, default=5)
    bench.add_argument("--threads", type=int, help="CPU threads of every CPU backend (default: one per core)")
    bench.add_argument("--rounds", type=int, default=3,
                       help="the backends take turns in this many rounds of --frames / N frames (default 3)")
    bench.add_argument("--int8-onnx", help="the INT8 model to time (from `fcnseg quantize`; default: the "
                                           "package quantizes the model itself, as the node does)")
    bench.add_argument("--calibration-data", help="images to quantize INT8 on (default: the bundled model's own)")
    bench.add_argument("--operators", action="store_true",
                       help="also profile ONNX Runtime per operator type and slowest nodes")
    bench.add_argument("--no-dds", action="store_true", help="skip the node-over-DDS measurement")
    bench.add_argument("--dds-backend", choices=BACKEND_NAMES, default="auto",
                       help="the node's backend for the DDS measurement (default auto, as the node)")
    bench.add_argument("--dds-precision", choices=PRECISIONS, default="auto",
                       help="the node's precision for the DDS measurement (default auto, as the node)")
    bench.add_argument("--dds-device", choices=("auto", "cpu", "cuda"), default="cpu",
                       help="the node's device for the DDS measurement (default cpu)")
    bench.add_argument("--dds-outputs", type=output_list, default=("class_mask",), metavar="NAME,...",
                       help=f"node outputs to subscribe to over DDS, of {','.join(BENCH_OUTPUTS)} (default "
                            "class_mask); latency is reported to the class mask and to the last output")
    bench.add_argument("--dds-rounds", type=int, default=5, metavar="N",
                       help="blocks in which the node's frames and the bare pipeline's alternate (default 5; "
                            "--frames alternates frame by frame)")
    bench.add_argument("--input-size", type=parse_network_size, metavar="WxH", help="network input size to time")
    bench.add_argument("--test-time-flip", action="store_true",
                       help="time every configuration with test-time flip (the node's test_time_flip)")
    bench.add_argument("--json", help="write the full report here")
    bench.set_defaults(func=cmd_bench)

    soak = sub.add_parser("soak", help="overload / long-run test of the node: drops, latency, memory")
    soak.add_argument("--model", type=model_argument, default=str(default_model_path()))
    soak.add_argument("--backend", choices=BACKEND_NAMES, default="auto",
                      help="the node's backend (default: auto, the node's own default)")
    soak.add_argument("--image")
    soak.add_argument("--rate", type=float, default=60.0, help="frames per second to publish")
    soak.add_argument("--frames", type=int, default=3600)
    soak.add_argument("--input-size", type=parse_network_size, metavar="WxH", help="network input size of the node")
    soak.add_argument("--busy-wait", action="store_true",
                      help="start the node with inference_busy_wait true (ONNX Runtime's threads spin)")
    soak.add_argument("--out", default="soak_output")
    soak.set_defaults(func=cmd_soak)
