#!/usr/bin/env python3
"""Whole-pipeline speed of two or more model configurations side by side, in one process, on one
engine: they take turns in rounds (a VM's speed drifts; turns slow them alike), and each is reported as
frames/s and as a ratio to the first. For "does the new head keep the speed?" or "is a larger input
as fast as test-time flip?" questions that ``fcnseg bench`` (one model, every engine) does not answer.

A configuration is MODEL[@WxH][+flip]: a model file (or default / accurate), optionally its network
input size and test-time flip, e.g. ``accurate@640x480 accurate@480x352+flip``; --input-size and
--test-time-flip apply to those that do not say.

Usage: scripts/compare_models_speed.py CONFIG CONFIG [...] [--input-size WxH] [--test-time-flip]
       [--backend openvino] [--precision int8] [--frames 300] [--rounds 5] [--threads 2] [--json OUT.json]
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

from fcn_segmentation.backends import create_backend
from fcn_segmentation.bench import NODE_SCORES_STRIDE, BarePipeline, percentiles, ros_message_builder, time_in_turns
from fcn_segmentation.cli import parse_size
from fcn_segmentation.cpu_info import cpu_features, describe_cpu
from fcn_segmentation.data import read_rgb
from fcn_segmentation.defaults import default_calibration_dir, default_sample_image


CONFIGURATION = re.compile(r"^(?P<model>.+?)(?:@(?P<size>\d+x\d+))?(?P<flip>\+flip)?$")


def parse_configuration(text: str, input_size, test_time_flip: bool):
    """MODEL[@WxH][+flip] -> (model, (height, width) or the default, flip)."""
    match = CONFIGURATION.match(text)
    size = parse_size(match["size"]) if match["size"] else input_size
    return match["model"], size, bool(match["flip"]) or test_time_flip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="CONFIG",
                        help="MODEL[@WxH][+flip]: a model file (or default / accurate), its input size, test-time flip")
    parser.add_argument("--input-size", type=parse_size, help="network input size WxH (default: each file's)")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--test-time-flip", action="store_true")
    parser.add_argument("--calibration-data", default=str(default_calibration_dir()),
                        help="INT8 calibration images (default: the bundled models' 32 CamVid train frames)")
    parser.add_argument("--image", help="480x360 test image (default: the first bundled sample frame)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("give at least two model files to compare")
    rgb = read_rgb(args.image or default_sample_image())
    builder = ros_message_builder()
    pipelines, flips = [], []  # lists: the same file twice is an A/A run, which shows the noise
    for configuration in args.models:
        model, input_size, flip = parse_configuration(configuration, args.input_size, args.test_time_flip)
        flips.append(flip)
        backend, _ = create_backend(args.backend, model, device="cpu", precision=args.precision,
                                    input_size=input_size, cpu_threads=args.threads, cpu_busy_wait=False,
                                    scores_stride=NODE_SCORES_STRIDE, test_time_flip=flip,
                                    calibration_data=args.calibration_data)
        pipelines.append(BarePipeline(backend, rgb, builder))
    rounds = max(1, min(args.rounds, args.frames))
    runs = time_in_turns(pipelines, args.frames, rounds, args.warmup, "timing models")
    report = {"cpu": cpu_features(), "cpu_description": describe_cpu(), "backend": args.backend,
              "precision": args.precision, "test_time_flip": args.test_time_flip, "frames": args.frames,
              "rounds": rounds, "threads": args.threads, "command": " ".join(sys.argv), "models": []}
    for model, flip, pipeline, timed in zip(args.models, flips, pipelines, runs):
        stats = percentiles([sum(run.values()) for run in timed])
        info = pipeline.backend.info
        report["models"].append(dict(stats, model=model, fps=1000.0 / stats["mean"],
                                     backend=pipeline.backend.describe(), test_time_flip=flip,
                                     network_input_size=[info.input_width, info.input_height]))
    for result in report["models"]:
        result["fps_ratio_to_first"] = result["fps"] / report["models"][0]["fps"]
    print(f"{describe_cpu()}; {args.backend} {args.precision}, {args.threads} threads, {report['frames']} frames "
          f"in {rounds} rounds each, whole pipeline")
    for result in report["models"]:
        print(f"  {result['model']}: p50 {result['p50']:.2f} ms, {result['fps']:.1f} frames/s "
              f"(x{result['fps_ratio_to_first']:.2f} of the first), {result['backend']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
