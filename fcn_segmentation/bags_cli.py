"""``fcnseg make-bag`` and ``fcnseg replay``: rosbag2 files of a CamVid-layout split, and the
evaluation of the node (over DDS) or the core (offline) on any bag with camera images."""

import sys
from pathlib import Path
from typing import Dict

from .bags import CAMERA_INFO_TOPIC, IMAGE_TOPIC, LABELS_TOPIC, STORAGE_SUFFIXES, BagError, CameraModel
from .defaults import default_model_path, model_argument

RECORD_NAME = "outputs.mcap"


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError("expected true or false")
    return text.lower() == "true"


# Node parameters that change what the core computes, and their types: the offline run of --offline /
# --compare applies them too, so both runs segment with the same model and settings.
CORE_PARAMETERS = {"onnx_path": str, "engine_cache_dir": str, "precision": str, "inference_threads": int,
                   "force_engine_update": _flag, "full_resolution_logits": _flag, "network_image_width": int,
                   "network_image_height": int, "max_image_pixels": int, "calibration_data": str,
                   "inference_busy_wait": _flag, "test_time_flip": _flag}
# Node parameters the replay sets itself: as --node-param they would make the report describe another run.
REPLAY_SET_PARAMETERS = {"model_path": "use --model", "backend": "use --backend", "device": "use --device",
                         "input_transport": "the replay sets it from the bag's image type"}


def add_bag_commands(subparsers) -> None:
    from .backends import BACKEND_NAMES
    from .cli import parse_size
    from .replay_report import NODE_OUTPUTS

    make = subparsers.add_parser(
        "make-bag", help="write a CamVid-layout split as a rosbag2 (images, CameraInfo, labels)",
        description=f"Writes {IMAGE_TOPIC} (sensor_msgs/Image), {CAMERA_INFO_TOPIC} (pinhole, plumb_bob, no "
                    f"distortion) and, where labels exist, {LABELS_TOPIC} (mono8 class ids), one frame every "
                    "1/rate seconds in header stamps and bag time. An --out ending in .mcap or .db3 is one file; "
                    "any other name is a rosbag2 folder.")
    make.add_argument("--data", required=True, help="CamVid-layout folder (<split>/ and <split>annot/)")
    make.add_argument("--split", default="val")
    make.add_argument("--out", required=True, help="bag to create (must not exist)")
    make.add_argument("--format", choices=tuple(STORAGE_SUFFIXES), help="storage (default: from the suffix, else mcap)")
    make.add_argument("--rate", type=float, default=2.0, help="frames per second (default 2)")
    make.add_argument("--limit", type=int, help="only the first N frames")
    make.add_argument("--encoding", choices=("rgb8", "bgr8"), default="rgb8")
    defaults = CameraModel()
    make.add_argument("--fx", type=float, default=defaults.fx, help=f"focal length in px (default {defaults.fx:g})")
    make.add_argument("--fy", type=float, default=defaults.fy, help=f"focal length in px (default {defaults.fy:g})")
    make.add_argument("--cx", type=float, help="principal point in px (default: image centre, 239.5 for CamVid)")
    make.add_argument("--cy", type=float, help="principal point in px (default: image centre, 179.5 for CamVid)")
    make.add_argument("--frame-id", default=defaults.frame_id)
    make.set_defaults(func=cmd_make_bag)

    replay = subparsers.add_parser(
        "replay", help="play a bag to the node over DDS (or the core offline) and report latency and IoU",
        description="Plays the bag's camera images in real time (times --rate) to a segmentation node started "
                    "for the purpose, matches its class masks to the bag's labels by header stamp and writes "
                    "report.json, report.md and plots to --out.")
    replay.add_argument("bag", help="rosbag2 folder, .mcap or .db3 file")
    replay.add_argument("--out", required=True, help="report folder")
    replay.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1: the bag's timing)")
    replay.add_argument("--topic", help="image topic, sensor_msgs/Image or CompressedImage (default: auto-detect)")
    replay.add_argument("--labels-topic",
                        help="mono8 ground truth (default: the one image topic named like labels or ground_truth)")
    replay.add_argument("--limit", type=int, help="only the first N frames")
    replay.add_argument("--record", nargs="?", const="", metavar="OUT_BAG",
                        help=f"record the node's outputs into this bag (default name: --out/{RECORD_NAME})")
    replay.add_argument("--outputs", metavar="NAME,NAME",
                        help=f"node outputs to subscribe to (and record), comma-separated, from: "
                             f"{', '.join(NODE_OUTPUTS)}; default: class_mask, or with --record every output the "
                             "node publishes (drivable_grid when the bag has CameraInfo). Latency is always "
                             "measured on class_mask; each subscribed output is work for the node")
    replay.add_argument("--prefix", default="", help="publish the bag's topics under this namespace")
    replay.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                        help="a parameter of the node, e.g. qos_reliability:=reliable (repeatable); the offline "
                             f"run applies those of the core too ({', '.join(CORE_PARAMETERS)})")
    replay.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node")
    mode = replay.add_mutually_exclusive_group()
    mode.add_argument("--offline", action="store_true", help="run the frames through the core, without DDS")
    mode.add_argument("--compare", action="store_true", help="run over DDS, then offline, and report both")
    replay.add_argument("--model", type=model_argument, default=str(default_model_path()),
                        help="model file (.pt), or a bundled model: default, accurate")
    replay.add_argument("--backend", choices=BACKEND_NAMES, default="auto")
    replay.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    replay.add_argument("--input-size", type=parse_size, metavar="WxH",
                        help="network input size (multiples of 32) for the node and the offline run; default: "
                             "the model file's")
    replay.add_argument("--frame-pngs", action="store_true",
                        help="also write each overlay of the report's strip as a full-size PNG in --out/overlays/")
    replay.set_defaults(func=cmd_replay)

    add_fleet_command(subparsers)
    add_fleet_scaling_command(subparsers)


def cmd_make_bag(args) -> int:
    from .bags import write_dataset_bag

    camera = CameraModel(args.fx, args.fy, args.cx, args.cy, args.frame_id)
    try:
        count = write_dataset_bag(args.data, args.split, args.out, args.format, args.rate, args.limit,
                                  args.encoding, camera)
    except BagError as exc:
        print(f"fcnseg make-bag: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {count} frames at {args.rate:g} Hz to {args.out}")
    return 0


def cmd_replay(args) -> int:
    from .replay_files import format_summary, write_report
    from .replay_report import ReplayError

    out = Path(args.out)
    try:
        node_params, core_params = _node_params(args)
        outputs = _outputs(args)
    except ValueError as exc:
        print(f"fcnseg replay: error: {exc}", file=sys.stderr)
        return 2
    record = None if args.record is None else Path(args.record or out / RECORD_NAME)
    try:
        if args.offline:
            summary, report = _offline(args, core_params)
            offline = None
        else:
            from .model.model_file import load_model_file
            from .ros.replay import ReplayOptions, replay_over_dds

            _, info = load_model_file(args.model)  # fail here, with the loader's message, before DDS starts
            options = ReplayOptions(Path(args.bag), out, str(args.model), args.backend, args.device, args.topic,
                                    args.labels_topic, args.rate, args.limit, args.timeout, args.prefix,
                                    node_params, outputs=outputs, record=record)
            summary, report = replay_over_dds(options, info)
            offline = _offline(args, core_params)[0] if args.compare else None
    except (BagError, ReplayError) as exc:
        print(f"fcnseg replay: error: {exc}", file=sys.stderr)
        return 2
    from .cli import command_line
    summary = {"command": command_line(), **summary}
    offline = {"command": command_line(), **offline} if offline else None
    path = write_report(out, summary, report, offline, frame_pngs=args.frame_pngs)
    for run in (summary, offline):
        if run:
            print(format_summary(run))
    print(f"report: {path}" + (f"\nnode outputs recorded in {record}" if record else ""))
    node_failed = summary["node_exit_code"] not in (None, 0)
    if node_failed:
        print(f"error: the node exited with code {summary['node_exit_code']}; see {summary['node_log']}",
              file=sys.stderr)
    return 1 if node_failed or not summary["frames_received"] else 0


def _node_params(args):
    """(the node's parameters as given, those of them the core applies, typed). ValueError says what
    is wrong."""
    if any(":=" not in item for item in args.node_param):
        raise ValueError("--node-param takes NAME:=VALUE")
    node_params = dict(item.split(":=", 1) for item in args.node_param)
    for name, why in REPLAY_SET_PARAMETERS.items():
        if name in node_params:
            raise ValueError(f"--node-param {name} is not for replay: {why}")
    if args.input_size:
        node_params["network_image_height"], node_params["network_image_width"] = map(str, args.input_size)
    core_params = {}
    for name, convert in CORE_PARAMETERS.items():
        if name in node_params:
            try:
                core_params[name] = convert(node_params[name])
            except ValueError as exc:
                raise ValueError(f"--node-param {name}:={node_params[name]}: {exc}") from exc
    if bool(core_params.get("network_image_width")) != bool(core_params.get("network_image_height")):
        raise ValueError("set both network_image_width and network_image_height, or neither")
    return node_params, core_params


def _outputs(args):
    """The --outputs list; None: the replay's default (class_mask, or every output with --record)."""
    from .replay_report import NODE_OUTPUTS

    if args.offline and (args.record is not None or args.outputs):
        raise ValueError("--record and --outputs concern the node's outputs; they need a DDS run (drop --offline)")
    if not args.outputs:
        return None if args.record is not None else ("class_mask",)
    outputs = [name.strip() for name in args.outputs.split(",") if name.strip()]
    unknown = [name for name in outputs if name not in NODE_OUTPUTS]
    if unknown:
        raise ValueError(f"--outputs: unknown output(s) {', '.join(unknown)}; choose from {', '.join(NODE_OUTPUTS)}")
    return tuple(outputs)


def _offline(args, core_params: Dict[str, object]):
    """The same frames through the core, with the node parameters that change what it computes."""
    from .frames import DEFAULT_MAX_PIXELS
    from .replay_report import core_segmenter, replay_offline

    segmenter = core_segmenter(args.backend, args.model, args.device, core_params)
    return replay_offline(args.bag, segmenter, args.topic, args.labels_topic, args.limit,
                          max_pixels=core_params.get("max_image_pixels", DEFAULT_MAX_PIXELS), model=str(args.model),
                          node_params=core_params)


def add_fleet_command(subparsers) -> None:
    from .backends import BACKEND_NAMES
    from .cli import parse_size
    from .fleet import WORST_FRAMES

    fleet = subparsers.add_parser(
        "evaluate-bags", help="evaluate the core on many bags over Ray and write one report",
        description="Runs every frame of the bags through the core as `fcnseg replay --offline` does (same "
                    "decoding, same matching of labels by stamp), spread over Ray workers that load the model "
                    "once each, one bag at a time, and merges them into one report: mIoU and per-class IoU over "
                    "all labelled frames, a row per bag, the worst frames. Without --ray-address a local Ray "
                    "runs on this machine's cores. Every worker reads the bags at the paths given: on a "
                    "cluster they must be on a file system all nodes mount at the same path.")
    fleet.add_argument("bags", nargs="+", metavar="BAG_OR_FOLDER",
                       help="rosbag2 folders, .mcap / .db3 files, or folders searched for them")
    fleet.add_argument("--out", required=True, help="report folder (written at the end, file by file, atomically)")
    fleet.add_argument("--workers", type=int, default=2, help="Ray actors, each with the model loaded (default 2)")
    fleet.add_argument("--threads-per-worker", type=int, default=1,
                       help="CPUs (inference threads) per worker, reserved from Ray (default 1)")
    fleet.add_argument("--ray-address", metavar="HOST:PORT|auto",
                       help="join this Ray cluster (`ray start --head` prints it); default: a local Ray")
    fleet.add_argument("--topic", help="image topic (default: auto-detect in each bag)")
    fleet.add_argument("--labels-topic", help="mono8 ground truth (default: auto-detect in each bag)")
    fleet.add_argument("--limit", type=int, help="only the first N frames of each bag")
    fleet.add_argument("--worst", type=int, default=WORST_FRAMES, metavar="N",
                       help=f"worst frames shown in the report (default {WORST_FRAMES})")
    fleet.add_argument("--frame-pngs", action="store_true",
                       help="also write each worst frame's overlay full size in --out/worst_frames/")
    fleet.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                       help="a node parameter the core applies, as for replay --offline "
                            f"({', '.join(CORE_PARAMETERS)})")
    fleet.add_argument("--model", type=model_argument, default=str(default_model_path()),
                       help="model file (.pt), or a bundled model: default, accurate")
    fleet.add_argument("--backend", choices=BACKEND_NAMES, default="auto")
    fleet.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    fleet.add_argument("--input-size", type=parse_size, metavar="WxH",
                       help="network input size (multiples of 32); default: the model file's")
    fleet.set_defaults(func=cmd_evaluate_bags)


def cmd_evaluate_bags(args) -> int:
    from .cli import command_line
    from .fleet import FleetError, FleetOptions, evaluate_fleet, find_bags, format_fleet_summary, merge, \
        worst_frames, write_fleet_report
    from .model.model_file import load_model_file

    try:
        _, core_params = _node_params(args)
        if "inference_threads" in core_params:
            raise ValueError("--node-param inference_threads is not for evaluate-bags: use --threads-per-worker")
    except ValueError as exc:
        print(f"fcnseg evaluate-bags: error: {exc}", file=sys.stderr)
        return 2
    load_model_file(args.model)  # fail here, with the loader's message, before Ray starts
    options = FleetOptions(str(Path(args.model).resolve()), args.backend, args.device, core_params,
                           args.threads_per_worker, args.topic, args.labels_topic, args.limit, args.worst)
    try:
        run = evaluate_fleet(find_bags(args.bags), options, args.workers, args.ray_address)
    except FleetError as exc:
        print(f"fcnseg evaluate-bags: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fcnseg evaluate-bags: interrupted; the workers were stopped and no report was written",
              file=sys.stderr)
        return 130
    report = {"command": command_line(), **merge(run)}
    path = write_fleet_report(args.out, report, worst_frames(run, args.worst), frame_pngs=args.frame_pngs)
    print(format_fleet_summary(report))
    print(f"report: {path}")
    return 1 if report["bags_failed"] or not report["frames"] else 0


def add_fleet_scaling_command(subparsers) -> None:
    from .backends import BACKEND_NAMES
    from .cli import parse_size

    scaling = subparsers.add_parser(
        "fleet-scaling", help="frames/s of evaluate-bags with 1 and 2 Ray workers on the same bags, and a fleet "
                              "estimate",
        description="Evaluates the same bags with 1 worker and with 2 workers (alternating, --repeats times each) in "
                    "a local Ray, reports frames/s, speedup and efficiency, and estimates on paper what N machines "
                    "would take for a fleet (--fleet-bags bags of --bag-seconds at --rate). A benchmark: other "
                    "load on the machine lowers the figures (the load average is recorded).")
    scaling.add_argument("bags", nargs="+", metavar="BAG_OR_FOLDER")
    scaling.add_argument("--out", required=True, help="JSON file to write")
    scaling.add_argument("--repeats", type=int, default=2)
    scaling.add_argument("--threads-per-worker", type=int, default=1)
    scaling.add_argument("--limit", type=int, help="only the first N frames of each bag")
    scaling.add_argument("--fleet-bags", type=int, default=1000)
    scaling.add_argument("--bag-seconds", type=float, default=60.0)
    scaling.add_argument("--rate", type=float, default=10.0, help="the fleet's camera rate in Hz (default 10)")
    scaling.add_argument("--machine-cores", type=int,
                         help="cores of each machine of the estimate (default: this one's)")
    scaling.add_argument("--model", type=model_argument, default=str(default_model_path()),
                         help="model file (.pt), or a bundled model: default, accurate")
    scaling.add_argument("--backend", choices=BACKEND_NAMES, default="auto")
    scaling.add_argument("--input-size", type=parse_size, metavar="WxH")
    scaling.set_defaults(func=cmd_fleet_scaling)


def cmd_fleet_scaling(args) -> int:
    import json
    import os

    from .cli import command_line
    from .files import private_temp_path
    from .fleet import FleetError, FleetOptions, find_bags, format_scaling, scaling_benchmark

    core_params = {}
    if args.input_size:
        core_params["network_image_height"], core_params["network_image_width"] = args.input_size
    options = FleetOptions(str(Path(args.model).resolve()), args.backend, "cpu", core_params,
                           args.threads_per_worker, limit=args.limit, worst_frames=0)
    try:
        result = scaling_benchmark(find_bags(args.bags), options, args.repeats, args.fleet_bags, args.bag_seconds,
                                   args.rate, args.machine_cores)
    except FleetError as exc:
        print(f"fcnseg fleet-scaling: error: {exc}", file=sys.stderr)
        return 2
    result = {"command": command_line(), **result}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = private_temp_path(out)
    temp.write_text(json.dumps(result, indent=2))
    os.replace(temp, out)
    print(format_scaling(result))
    print(f"written: {out}")
    return 0
