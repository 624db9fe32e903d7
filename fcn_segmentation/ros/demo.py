"""``fcnseg demo``: the main job on the bundled default. Replays the sample bag
(sample/camvid_val_sample.mcap: 6 CamVid frames, camera info and labels) over DDS to the node,
started as its own process; saves the class masks, colour masks and overlays it sends back as PNG,
writes the replay report and prints a summary. Exits non-zero if a frame is lost or the node fails."""

import tempfile
from pathlib import Path

import cv2

from ..bags import BagError, write_dataset_bag
from ..defaults import default_sample_dir
from ..model.model_file import load_model_file
from ..replay_report import ReplayError, format_summary, write_report
from .client import Received, image_to_array
from .replay import ReplayOptions, replay_over_dds

SAMPLE_BAG_NAME = "camvid_val_sample.mcap"
OUTPUTS = ("class_mask", "color_mask", "overlay")


def default_sample_bag() -> Path:
    return default_sample_dir().parent / SAMPLE_BAG_NAME


def save_outputs(out: Path, index: int, entry: Received) -> None:
    for name, msg in entry.outputs.items():
        array = image_to_array(msg)
        cv2.imwrite(str(out / f"frame_{index:03d}_{name}.png"),
                    array if array.ndim == 2 else cv2.cvtColor(array, cv2.COLOR_RGB2BGR))


def run_demo(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, info = load_model_file(args.model)  # fail here, with the loader's message, before starting DDS
    with tempfile.TemporaryDirectory() as scratch:
        try:
            bag = Path(args.bag) if args.bag else default_sample_bag()
            if args.data:  # a CamVid-layout folder: make it a bag, then replay that
                bag = Path(scratch) / "demo.mcap"
                write_dataset_bag(args.data, args.split, bag)
            # Under /demo so that a camera running on this machine does not feed the demo's node.
            options = ReplayOptions(bag, out, str(args.model), args.backend, args.device, rate=args.rate,
                                    timeout=args.timeout, prefix="/demo", outputs=OUTPUTS,
                                    on_output=lambda index, entry: save_outputs(out, index, entry))
            summary, report = replay_over_dds(options, info)
        except (BagError, ReplayError) as exc:
            print(f"error: {exc}")
            return 1
    path = write_report(out, summary, report)
    print()
    print(format_summary(summary))
    diag = summary["node_diagnostics"] or {}
    if diag:
        print(f"node: backend {diag.get('backend')}, {diag.get('processed')} processed, "
              f"{diag.get('dropped')} dropped, {diag.get('rejected')} rejected, "
              f"in-node latency p50 {diag.get('latency_p50_ms')} ms")
    print(f"masks, colour masks and overlays: {out}/frame_*.png  report: {path}")
    if summary["node_exit_code"] != 0:
        print(f"error: the node exited with code {summary['node_exit_code']}; see {summary['node_log']}")
    lost = summary["frames_dropped"] > 0 or summary["frames_received"] == 0
    return 1 if lost or summary["node_exit_code"] != 0 else 0
