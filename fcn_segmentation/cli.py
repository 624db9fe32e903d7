"""``fcnseg``: train, evaluate, export, predict, demo, make-bag and replay from the command line."""

import argparse
import logging
import shlex
import sys
from pathlib import Path

from .defaults import default_model_path, default_sample_dir, model_argument

logger = logging.getLogger("fcnseg")


def cmd_train(args) -> int:
    from .train import TrainingError, train

    try:
        train(args)
    except TrainingError as exc:
        print(f"fcnseg train: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _segmenter(args):
    from .backends import create_backend
    from .pipeline import Segmenter

    backend, skipped = create_backend(args.backend, args.model, device=args.device,
                                      input_size=getattr(args, "input_size", None),
                                      onnx_path=getattr(args, "onnx", None), precision=args.precision,
                                      calibration_data=args.calibration_data, cpu_threads=args.threads,
                                      test_time_flip=args.test_time_flip)
    for reason in skipped:
        logger.info("backend not used: %s", reason)
    logger.info("backend: %s%s", backend.describe(), ", test-time flip" if args.test_time_flip else "")
    return Segmenter(backend)


def command_line() -> str:
    """This run's command, recorded in the JSON reports so a figure says how it was measured."""
    return shlex.join(["fcnseg", *sys.argv[1:]])


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_split, save_examples, write_report

    segmenter = _segmenter(args)
    summary = evaluate_split(segmenter, args.data, args.split, limit=args.limit, sequences=args.sequences)
    # what produced the numbers: with --onnx (e.g. an INT8 model) the graph, not the .pt's weights
    summary.update(model=str(args.model), onnx=str(args.onnx) if args.onnx else None,
                   backend_requested=args.backend, device_requested=args.device,
                   precision_requested=args.precision, test_time_flip=args.test_time_flip, command=command_line())
    if args.json:
        png = write_report(summary, args.json, segmenter.info.class_names)
        logger.info("wrote %s and %s", args.json, png)
    if args.examples:
        logger.info("wrote %s", save_examples(segmenter, args.data, args.split, args.examples,
                                              sequences=args.sequences))
    sizes = " / ".join(f"{count} at {size}" for size, count in summary["image_sizes"].items())
    print(f"{args.split}: {summary['num_images']} images, mIoU {summary['miou']:.4f} at the images' own size "
          f"({sizes}), "
          f"{summary['miou_at_network_size']:.4f} at the network's {segmenter.info.input_width}x"
          f"{segmenter.info.input_height}; pixel accuracy {summary['pixel_accuracy']:.4f}")
    for name, iou in summary["per_class_iou"].items():
        print(f"  {name:<12} {'n/a' if iou is None else f'{iou:.4f}'}")
    return 0


def cmd_export(args) -> int:
    from .data import read_rgb
    from .export import compare_with_torch, export_onnx
    from .model.model_file import load_model_file
    from .preprocess import Preprocessor

    model, info = load_model_file(args.model)
    if args.input_size:
        info.input_height, info.input_width = args.input_size
    path = export_onnx(model, info, args.onnx)
    images = list(args.check_images) or sorted((default_sample_dir() / "val").glob("*.png"))[:3]
    preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)
    report = compare_with_torch(model, path, [preprocess(read_rgb(p)).copy() for p in images])
    print(f"wrote {path}; on {len(images)} real images: max |torch - onnx| = {report['max_abs_diff']:.2e}, "
          f"argmax agreement {report['argmax_agreement'] * 100:.3f}%")
    if report["argmax_agreement"] < 0.999:
        print("error: the ONNX model disagrees with PyTorch", file=sys.stderr)
        return 1
    return 0


def cmd_predict(args) -> int:
    import cv2

    from .data import read_rgb

    segmenter = _segmenter(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for image_path in args.images:
        rgb = read_rgb(image_path)
        result = segmenter(rgb)
        stem = Path(image_path).stem
        cv2.imwrite(str(out / f"{stem}_classes.png"), result.classes)
        cv2.imwrite(str(out / f"{stem}_color.png"), cv2.cvtColor(segmenter.colorize(result.classes), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / f"{stem}_overlay.png"),
                    cv2.cvtColor(segmenter.overlay(rgb, result.classes, args.alpha), cv2.COLOR_RGB2BGR))
        print(f"{image_path}: {sum(result.timings_ms.values()):.1f} ms -> {out}/{stem}_*.png")
    return 0


def cmd_calibrate_confidence(args) -> int:
    import json

    from .confidence import calibrate

    report = calibrate(Path(args.data), _segmenter(args), args.split, args.sequences, args.low_probability)
    report = {"model": args.model, **report, "command": command_line()}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def cmd_demo(args) -> int:
    from .ros.demo import run_demo

    return run_demo(args)


def _add_backend_arguments(parser, precision: bool = True):
    """``precision``: also --precision, --calibration-data and --threads (commands that run the core
    here; the demo's node takes the node's defaults)."""
    from .backends import BACKEND_NAMES, PRECISIONS

    parser.add_argument("--model", type=model_argument, default=str(default_model_path()),

                        help="model file (.pt), or a bundled model: default, accurate")
    parser.add_argument("--backend", choices=BACKEND_NAMES, default="auto")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    if precision:
        parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                            help="auto (as the node: OpenVINO int8 on the CPU, fp32 elsewhere), fp32, fp16, bf16, "
                                 "int8")
        parser.add_argument("--calibration-data",
                            help="images to calibrate int8 on (default: the bundled model's own)")
        parser.add_argument("--threads", type=int, default=0,
                            help="CPU threads of the backend (default: one per core)")
        parser.add_argument("--test-time-flip", action="store_true",
                            help="average the scores of each image and its mirror image (the node's "
                                 "test_time_flip: twice the network's work, more accurate)")
    parser.add_argument("--input-size", type=parse_network_size, metavar="WxH",
                        help="run the network at this size (multiples of 32) instead of the model's")


def parse_size(text: str):
    """'480x352' -> (352, 480) as (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 480x352, got {text!r}") from None
    return height, width


def parse_network_size(text: str):
    """'320x224' -> (224, 320), both sides positive multiples of 32 (the exported graph's)."""
    from .model.fcn import network_size_error

    height, width = parse_size(text)
    error = network_size_error(height, width)
    if error:
        raise argparse.ArgumentTypeError(error)
    return height, width


def build_parser() -> argparse.ArgumentParser:
    from .confidence import DEFAULT_LOW_PROBABILITY
    from .train import add_arguments as add_train_arguments

    parser = argparse.ArgumentParser(prog="fcnseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an FCN on a CamVid-layout dataset")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="IoU, pixel accuracy and confusion matrix on a split")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--split", default="val", help="split(s) to score: val, train, test or several (train,val)")
    evaluate.add_argument("--sequences", metavar="SEQ[,SEQ]",
                          help="score only these drives' frames (file names SEQUENCE_frame.png), e.g. the "
                               "--holdout-sequences of a train run: --split train,val --sequences 0006R0")
    evaluate.add_argument("--json", help="write the summary here (and a PNG beside it)")
    evaluate.add_argument("--limit", type=int, help="only the first N images")
    evaluate.add_argument("--examples", help="also write a PNG of predictions on a few frames here")
    evaluate.add_argument("--onnx", metavar="PATH",
                          help="evaluate this ONNX model (e.g. the INT8 one from `fcnseg quantize`) instead of the "
                               "model file's weights; needs --backend onnxruntime, tensorrt or auto, and it must fit "
                               "the --model file's classes and input size")
    _add_backend_arguments(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    export = sub.add_parser("export", help="export to ONNX and check it against PyTorch")
    export.add_argument("--model", type=model_argument, default=str(default_model_path()))
    export.add_argument("--onnx", required=True)
    export.add_argument("--check-images", nargs="*", default=[], help="images to compare on (default: sample)")
    export.add_argument("--input-size", type=parse_network_size, metavar="WxH",
                        help="network input size of the graph (multiples of 32; default: the model file's)")
    export.set_defaults(func=cmd_export)

    predict = sub.add_parser("predict", help="class masks, colour masks and overlays as PNG")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--out", required=True)
    predict.add_argument("--alpha", type=float, default=0.5)
    _add_backend_arguments(predict)
    predict.set_defaults(func=cmd_predict)

    calibrate = sub.add_parser("calibrate-confidence", help="the confidence monitor's statistics on road frames "
                               "and on pictures that are not road scenes (calibrates the node's confidence_* "
                               "parameters)")
    calibrate.add_argument("--data", required=True, help="CamVid-layout folder")
    calibrate.add_argument("--split", default="val", help="split(s) whose frames are scored, e.g. train,val")
    calibrate.add_argument("--sequences", metavar="SEQ[,SEQ]",
                           help="only these drives: one the model was not trained on (fcnseg train "
                                "--holdout-sequences) says what new streets give, e.g. --split train,val "
                                "--sequences 0006R0")
    calibrate.add_argument("--low-probability", type=float, default=DEFAULT_LOW_PROBABILITY,
                           help="a pixel is unsure below this max softmax probability")
    calibrate.add_argument("--out", help="also write the JSON report here")
    _add_backend_arguments(calibrate)
    calibrate.set_defaults(func=cmd_calibrate_confidence)

    demo = sub.add_parser("demo", help="start the node, replay the bundled sample bag over DDS, save what comes back")
    demo.add_argument("--bag", help="bag to replay (default: sample/camvid_val_sample.mcap)")
    demo.add_argument("--data", help="replay this CamVid-layout folder instead (made into a bag first)")
    demo.add_argument("--split", default="val")
    demo.add_argument("--out", default="demo_output")
    demo.add_argument("--rate", type=float, default=1.0, help="playback speed factor on the bag's timing")
    demo.add_argument("--timeout", type=float, default=120.0)
    _add_backend_arguments(demo, precision=False)
    demo.set_defaults(func=cmd_demo)

    from .bags_cli import add_bag_commands
    from .perf_cli import add_perf_commands
    add_bag_commands(sub)
    add_perf_commands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from .backends import BackendError
    from .data import DatasetError
    from .model.model_file import ModelFileError

    try:
        return args.func(args)
    except (ModelFileError, BackendError, DatasetError, FileNotFoundError) as exc:
        print(f"fcnseg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
