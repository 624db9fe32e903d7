"""``fcnseg demo``: the main job on the bundled default. Replays the sample bag
(sample/camvid_val_sample.mcap: 6 CamVid frames, camera info and labels) over DDS to the node,
started as its own process; saves the class masks, colour masks and overlays it sends back as PNG,
writes the replay report and prints a summary. Exits non-zero if a frame is lost or the node fails."""

import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..backends import BackendError, create_backend
from ..bags import BagError, write_dataset_bag
from ..confidence import DEFAULT_STRIDE as CONFIDENCE_STRIDE
from ..defaults import default_sample_dir
from ..model.model_file import load_model_file
from ..replay_files import format_summary, write_report
from ..replay_report import ReplayError
from ..drivable import grid_image
from .client import Received, image_to_array
from .replay import ReplayOptions, replay_over_dds

SAMPLE_BAG_NAME = "camvid_val_sample.mcap"
OUTPUTS = ("class_mask", "color_mask", "overlay", "drivable_grid")


def default_sample_bag() -> Path:
    return default_sample_dir().parent / SAMPLE_BAG_NAME


def save_outputs(out: Path, index: int, entry: Received) -> None:
    images = {name: image_to_array(msg) for name, msg in entry.outputs.items() if name != "drivable_grid"}
    for name, array in images.items():
        cv2.imwrite(str(out / f"frame_{index:03d}_{name}.png"),
                    array if array.ndim == 2 else cv2.cvtColor(array, cv2.COLOR_RGB2BGR))
    grid = entry.outputs.get("drivable_grid")
    if grid is not None and "overlay" in images:
        cv2.imwrite(str(out / f"frame_{index:03d}_overlay_grid.png"),
                    cv2.cvtColor(overlay_beside_grid(images["overlay"], grid), cv2.COLOR_RGB2BGR))


def overlay_beside_grid(overlay: np.ndarray, grid) -> np.ndarray:
    """The overlay and the bird's-eye occupancy grid (forward up; free green, occupied red,
    unknown grey) side by side at the same height."""
    values = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
    picture = grid_image(values, pixels_per_cell=1)
    height = overlay.shape[0]
    picture = cv2.resize(picture, (max(1, round(picture.shape[1] * height / picture.shape[0])), height),
                         interpolation=cv2.INTER_NEAREST)
    gap = np.full((height, 8, 3), 255, np.uint8)
    return np.concatenate([overlay, gap, picture], axis=1)


def run_demo(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, info = load_model_file(args.model)  # fail here, with the loader's message, before starting DDS
    try:  # the node's cached files (ONNX export, INT8 model) made here, once, in view, not inside its start
        create_backend(args.backend, args.model, device=args.device, scores_stride=CONFIDENCE_STRIDE)
    except BackendError as exc:
        print(f"error: {exc}")
        return 1
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
    print(f"masks, colour masks, overlays and overlay + drivable grid: {out}/frame_*.png  report: {path}")
    if summary["node_exit_code"] != 0:
        print(f"error: the node exited with code {summary['node_exit_code']}; see {summary['node_log']}")
    lost = summary["frames_dropped"] > 0 or summary["frames_received"] == 0
    return 1 if lost or summary["node_exit_code"] != 0 else 0
