"""A fleet's bags evaluated over Ray: each worker (a Ray actor) loads the model once and runs whole
bags through the offline replay path (``replay_report.open_frames`` / ``segment_frames``: the
decoding, core and matching of labels by stamp of ``fcnseg replay --offline``); the driver merges
the results exactly (confusion matrices add, latency percentiles of all frames' samples) into one
report. Bags are read where they lie: every worker must see the same paths (a shared file system).

Ray is optional: it is imported only here, when a fleet is evaluated."""

import json
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .bags import STORAGE_SUFFIXES, BagError, BagReader
from .files import private_temp_path
from .frames import DEFAULT_MAX_PIXELS, FrameError
from .metrics import ConfusionMatrix
from .replay_files import format_value, plot_iou, write_frame_pngs, write_strip
from .replay_report import (STRIP_HEIGHT, ReplayError, ReplayReport, core_segmenter, latency_summary, offline_summary,
                            open_frames, segment_frames)

RAY_INSTALL_HINT = ("Ray is not installed; install it with `pip install 'ray==2.60.*'` (or `pip install -r "
                    "requirements.txt`, the standalone set-up)")
WORST_FRAMES = 6
WORST_DIR = "worst_frames"
# A worker that dies (killed, out of memory, lost node) is restarted and its bag run again this many times.
MAX_TASK_RETRIES = 3


class FleetError(RuntimeError):
    """A fleet evaluation that cannot start (no Ray, no bags, too few CPUs); the message says why."""


@dataclass
class FleetOptions:
    model: str
    backend: str = "auto"
    device: str = "cpu"
    core_params: Dict[str, object] = field(default_factory=dict)  # as replay's --node-param for the core
    threads_per_worker: int = 1
    image_topic: Optional[str] = None
    labels_topic: Optional[str] = None
    limit: Optional[int] = None             # only the first N frames of each bag
    worst_frames: int = WORST_FRAMES


def find_bags(paths: Sequence) -> List[Path]:
    """Each path as a bag (a .mcap / .db3 file or a rosbag2 folder with metadata.yaml), or a folder
    searched for bags (rosbag2 folders, and .mcap / .db3 files outside them). A path that does not
    exist is kept: the report names it as a bag that could not be opened."""
    bags: List[Path] = []
    for path in map(Path, paths):
        if not path.is_dir() or (path / "metadata.yaml").is_file():
            bags.append(path)
            continue
        folders = sorted(meta.parent for meta in path.rglob("metadata.yaml"))
        files = sorted(f for suffix in STORAGE_SUFFIXES.values() for f in path.rglob(f"*{suffix}")
                       if not any(folder in f.parents for folder in folders))
        bags += folders + files
    return list(dict.fromkeys(p.resolve() for p in bags))


def bag_frames(path: Path, options: FleetOptions) -> int:
    """Frames the evaluation will read from ``path`` (0 when it cannot be opened): the progress total."""
    try:
        with BagReader(path) as bag:
            return bag.frame_count(bag.choose_topics(options.image_topic, options.labels_topic), options.limit)
    except BagError:
        return 0


class Progress:
    """Ray actor: frames done per bag, reported by the workers as they go (a retried bag starts over,
    so the highest count is kept)."""

    def __init__(self):
        self.done: Dict[int, int] = {}

    def update(self, bag_index: int, frames_done: int) -> None:
        self.done[bag_index] = max(self.done.get(bag_index, 0), frames_done)

    def total(self) -> int:
        return sum(self.done.values())


class BagWorker:
    """Ray actor: the core loaded once, whole bags evaluated one after another."""

    def __init__(self, options: FleetOptions, progress_actor: Optional[str] = None):
        import cv2
        import ray
        import torch

        self.options = options
        # By name, not by handle: arguments Ray keeps in its object store could be gone when it restarts us.
        self.progress = ray.get_actor(progress_actor) if progress_actor else None
        threads = options.threads_per_worker
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)  # decoding and resizing stay on the worker's CPUs too
        self.segmenter = core_segmenter(options.backend, options.model, options.device,
                                        {**options.core_params, "inference_threads": threads})

    def pid(self) -> int:
        return os.getpid()

    def evaluate(self, bag_index: int, bag_path: str) -> dict:
        """The bag's summary as ``replay --offline`` makes it, plus its confusion matrix and worst
        frames; ``{"bag", "error"}`` when it cannot be read."""
        options = self.options
        max_pixels = options.core_params.get("max_image_pixels", DEFAULT_MAX_PIXELS)
        cpu_start = time.process_time()
        try:
            with BagReader(bag_path) as bag:
                choice, total = open_frames(bag, options.image_topic, options.labels_topic, options.limit,
                                            max_pixels)
                report = ReplayReport(self.segmenter.info, total, strip_frames=0, worst_frames=options.worst_frames)
                run = segment_frames(bag, choice, total, self.segmenter, report, max_pixels, self._on_frame(bag_index))
                summary = offline_summary(bag_path, choice, self.segmenter, report, run, model=options.model)
        except (BagError, ReplayError, FrameError) as exc:
            return {"bag": bag_path, "error": str(exc)}
        summary["confusion_counts"] = report.confusion.matrix
        summary["worst"] = report.worst
        summary["class_names"] = list(self.segmenter.info.class_names)
        summary["worker_pid"] = os.getpid()
        summary["worker_cpu_s"] = time.process_time() - cpu_start  # all the process's threads
        return summary

    def _on_frame(self, bag_index: int) -> Optional[Callable[[int], None]]:
        if self.progress is None:
            return None
        return lambda done: self.progress.update.remote(bag_index, done)


@dataclass
class FleetRun:
    bags: List[str]
    results: List[dict]            # one per bag, in the order of ``bags``
    wall_time_s: float             # from the workers being ready (models loaded) to the last bag done
    workers: int
    threads_per_worker: int
    ray_address: Optional[str]
    workers_restarted: int = 0     # worker processes Ray started again during the run (that finished a bag)
    startup_s: float = 0.0         # starting the workers and loading their models


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise FleetError(RAY_INSTALL_HINT) from exc
    return ray


def start_ray(ray, address: Optional[str] = None, **options) -> None:
    """Join the cluster at ``address`` (HOST:PORT or auto), or start a Ray of this machine's cores
    (``local``: a new one, even when a `ray start` cluster runs here)."""
    try:
        if address:
            ray.init(address=address, include_dashboard=False, **options)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = ("; with token authentication (`ray start` enables it) set RAY_AUTH_MODE=token and give this "
                "machine the cluster's ~/.ray/auth_token" if "auth" in str(exc).lower() else "")
        raise FleetError(f"cannot {'join the Ray cluster at ' + address if address else 'start Ray'}: "
                         f"{exc}{hint}") from exc


def evaluate_fleet(bags: Sequence[Path], options: FleetOptions, workers: int = 2, ray_address: Optional[str] = None,
                   worker_class=BagWorker, on_progress: Optional[Callable[[int, list], None]] = None,
                   show_progress: bool = True) -> FleetRun:
    """Every bag through ``workers`` Ray actors of ``options.threads_per_worker`` CPUs each, bags as
    units of work, the largest first. Uses the Ray already initialised in this process, else joins
    ``ray_address`` (HOST:PORT or auto), else starts a local Ray on this machine's cores (shut down
    at the end). ``on_progress(frames done, actors)`` is called as frames are done (tests kill a worker
    from it). Ctrl-C (KeyboardInterrupt) kills the workers and propagates."""
    ray = import_ray()
    if not bags:
        raise FleetError("no bags found")
    if workers < 1 or options.threads_per_worker < 1:
        raise FleetError("--workers and --threads-per-worker must be at least 1")
    started_here = not ray.is_initialized()
    if started_here:
        start_ray(ray, ray_address)
    actors, progress_actor = [], None
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if workers * options.threads_per_worker > cpus:
            raise FleetError(f"{workers} workers x {options.threads_per_worker} threads need "
                             f"{workers * options.threads_per_worker} CPUs; the Ray cluster has {cpus:g}")
        counts = [bag_frames(path, options) for path in bags]
        progress_name = f"fcnseg-progress-{uuid.uuid4().hex}"
        progress_actor = ray.remote(num_cpus=0)(Progress).options(name=progress_name).remote()
        actor_class = ray.remote(num_cpus=options.threads_per_worker, max_restarts=-1,
                                 max_task_retries=MAX_TASK_RETRIES)(worker_class)
        start = time.perf_counter()
        actors = [actor_class.remote(options, progress_name) for _ in range(min(workers, len(bags)))]
        try:
            first_pids = set(ray.get([actor.pid.remote() for actor in actors]))  # the models are loaded
        except ray.exceptions.RayError as exc:
            raise FleetError(f"the workers could not start: {exc}") from exc
        startup = time.perf_counter() - start
        start = time.perf_counter()
        results, pids = _dispatch(ray, actors, progress_actor, [str(b) for b in bags], counts, on_progress,
                                  show_progress)
        wall = time.perf_counter() - start
    finally:
        for actor in actors + ([progress_actor] if progress_actor else []):
            ray.kill(actor)
        if started_here:
            ray.shutdown()
    address = ray_address or ("local" if started_here else "the Ray of this process")
    return FleetRun([str(b) for b in bags], results, wall, len(actors), options.threads_per_worker, address,
                    workers_restarted=len(pids - first_pids), startup_s=startup)


def _dispatch(ray, actors, progress_actor, bags: List[str], counts: List[int], on_progress, show_progress):
    """One bag per idle actor until all are done; (results in bag order, worker pids seen)."""
    queue = deque(sorted(range(len(bags)), key=lambda i: -counts[i]))
    pending: Dict[object, Tuple[object, int]] = {}
    results: List[Optional[dict]] = [None] * len(bags)
    pids = set()

    def submit(actor) -> None:
        if queue:
            index = queue.popleft()
            pending[actor.evaluate.remote(index, bags[index])] = (actor, index)

    for actor in actors:
        submit(actor)
    done_frames = 0
    with tqdm(total=sum(counts), desc=f"evaluate-bags ({len(actors)} workers)", unit="frame",
              disable=not show_progress) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
            for ref in ready:
                actor, index = pending.pop(ref)
                try:
                    results[index] = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died more often than it is retried
                    results[index] = {"bag": bags[index], "error": f"the worker evaluating it failed: {exc}"}
                if "worker_pid" in results[index]:
                    pids.add(results[index]["worker_pid"])
                submit(actor)
            done = ray.get(progress_actor.total.remote())
            if done != done_frames:
                bar.update(done - done_frames)
                done_frames = done
                if on_progress:
                    on_progress(done, actors)
    return results, pids


# ---------------------------------------------------------------------------------------------
# merging and the report

def merge(run: FleetRun) -> dict:
    """One report of the fleet: the bags' confusion matrices summed, latency percentiles of all
    frames, a row per bag, the worst frames of all bags."""
    good = [r for r in run.results if "error" not in r]
    failed = [{"bag": r["bag"], "error": r["error"]} for r in run.results if "error" in r]
    class_names = good[0]["class_names"] if good else []
    confusion = ConfusionMatrix(len(class_names))
    for result in good:
        confusion.matrix += np.asarray(result["confusion_counts"], np.int64)
    latencies = np.array([f["latency_ms"] for r in good for f in r["frames"] if f["received"]], np.float64)
    frames = sum(r["frames_sent"] for r in good)
    labelled = sum(r["frames_labelled"] for r in good)
    report = {
        "bags": len(run.bags), "bags_evaluated": len(good), "bags_failed": failed,
        "frames": frames, "frames_labelled": labelled, "frames_failed": sum(r["frames_dropped"] for r in good),
        "latency_ms": latency_summary(latencies),
        "fps": frames / run.wall_time_s if run.wall_time_s > 0 else None, "wall_time_s": round(run.wall_time_s, 3),
        "workers": run.workers, "threads_per_worker": run.threads_per_worker, "ray_address": run.ray_address,
        "workers_restarted": run.workers_restarted, "startup_s": round(run.startup_s, 3),
        "model": good[0]["model"] if good else None, "backend": good[0]["backend"] if good else None,
        "input_size": good[0]["input_size"] if good else None,
        "miou": None, "pixel_accuracy": None, "per_class_iou": {}, "confusion_matrix": confusion.matrix.tolist(),
    }
    if labelled:
        scores = confusion.summary(class_names)
        report.update(miou=scores["miou"], pixel_accuracy=scores["pixel_accuracy"],
                      per_class_iou=scores["per_class_iou"])
    report["per_bag"] = [_bag_row(r) for r in run.results]
    return report


def worst_frames(run: FleetRun, count: int) -> List[Tuple[float, str, int, np.ndarray]]:
    """(pixel accuracy, bag, frame index, overlay) of the ``count`` worst labelled frames of the fleet."""
    frames = [(accuracy, r["bag"], index, image) for r in run.results if "error" not in r
              for accuracy, index, image in r["worst"]]
    return sorted(frames, key=lambda f: f[:3])[:count]


def _bag_row(result: dict) -> dict:
    if "error" in result:
        return {"bag": result["bag"], "error": result["error"]}
    return {"bag": result["bag"], "image_topic": result["image_topic"], "labels_topic": result["labels_topic"],
            "frames": result["frames_sent"], "frames_labelled": result["frames_labelled"],
            "failures": result["frames_dropped"], "miou": result["miou"],
            "pixel_accuracy": result["pixel_accuracy"], "latency_p50_ms": result["latency_ms"]["p50"],
            "latency_p95_ms": result["latency_ms"]["p95"], "warnings": result["warnings"],
            "confusion_matrix": np.asarray(result["confusion_counts"]).tolist()}


def write_fleet_report(out_dir, report: dict, worst: List[Tuple[float, str, int, np.ndarray]],
                       frame_pngs: bool = False) -> Path:
    """report.json, report.md, per_class_iou.png and worst_frames.png (and with ``frame_pngs`` each worst
    frame full size in worst_frames/) in ``out_dir``, every file written whole under a private name
    and then renamed, after the whole run: an interrupted run leaves none of them half done."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    if report["per_class_iou"]:
        temp = private_temp_path(out / "per_class_iou.png", ".png")
        plot_iou(report, temp)
        os.replace(temp, out / "per_class_iou.png")
        plots["per_class_iou"] = "per_class_iou.png"
    names = {i: f"{i:02d}_{Path(bag).stem}_frame_{index:05d}.png" for i, (_, bag, index, _) in enumerate(worst)}
    if worst:
        plots["worst_frames"] = write_strip({i: f[3] for i, f in enumerate(worst)}, out / "worst_frames.png")
        if frame_pngs:
            write_frame_pngs({i: f[3] for i, f in enumerate(worst)}, out / WORST_DIR, names)
    report = {**report, "plots": plots,
              "worst_frames": [{"bag": bag, "index": index, "pixel_accuracy": accuracy,
                                "png": f"{WORST_DIR}/{names[i]}" if frame_pngs else None}
                               for i, (accuracy, bag, index, _) in enumerate(worst)]}
    _write_text(out / "report.json", json.dumps(report, indent=2))
    _write_text(out / "report.md", fleet_markdown(report))
    return out / "report.md"


def _write_text(path: Path, text: str) -> None:
    temp = private_temp_path(path)
    temp.write_text(text)
    os.replace(temp, path)


def fleet_markdown(report: dict) -> str:
    lat = report["latency_ms"]
    lines = [f"# Fleet evaluation: {report['bags']} bags", "",
             f"- command: `{report.get('command')}`",
             f"- model: `{report['model']}`, backend: {report['backend']}, network input: {report['input_size']}",
             f"- {report['workers']} Ray workers x {report['threads_per_worker']} threads ({report['ray_address']}); "
             f"workers restarted by Ray: {report['workers_restarted']}",
             "", "| | |", "|---|---|",
             f"| bags evaluated / failed | {report['bags_evaluated']} / {len(report['bags_failed'])} |",
             f"| frames / labelled / failed | {report['frames']} / {report['frames_labelled']} / "
             f"{report['frames_failed']} |",
             f"| mIoU / pixel accuracy | {format_value(report['miou'], 3)} / "
             f"{format_value(report['pixel_accuracy'], 3)} |",
             f"| latency p50 / p95 / p99 (decode + segment) | {format_value(lat['p50'])} / "
             f"{format_value(lat['p95'])} / {format_value(lat['p99'])} ms |",
             f"| frames/s (all workers) / wall time | {format_value(report['fps'], 2)} / "
             f"{report['wall_time_s']:.1f} s |"]
    if report["bags_failed"]:
        lines += ["", "## Bags that could not be evaluated", ""]
        lines += [f"- `{f['bag']}`: {f['error']}" for f in report["bags_failed"]]
    lines += ["", "## Per bag", "", "| bag | frames | labelled | mIoU | latency p50 | latency p95 | failures |",
              "|---|---|---|---|---|---|---|"]
    for row in report["per_bag"]:
        if "error" in row:
            lines.append(f"| `{Path(row['bag']).name}` | could not be evaluated (see above) | | | | | |")
        else:
            lines.append(f"| `{Path(row['bag']).name}` | {row['frames']} | {row['frames_labelled']} | "
                         f"{format_value(row['miou'], 3)} | {format_value(row['latency_p50_ms'])} ms | "
                         f"{format_value(row['latency_p95_ms'])} ms | {row['failures']} |")
    warnings = [f"`{Path(r['bag']).name}`: {w}" for r in report["per_bag"] for w in r.get("warnings", [])]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    if report["per_class_iou"]:
        lines += ["", "## Per-class IoU (all bags)", "", "| class | IoU |", "|---|---|"]
        lines += [f"| {name} | {format_value(iou, 3)} |" for name, iou in report["per_class_iou"].items()]
        lines += ["", f"![per-class IoU]({report['plots']['per_class_iou']})"]
    if report["worst_frames"]:
        lines += ["", f"## Worst frames (lowest pixel accuracy; {STRIP_HEIGHT} px high, left to right, top to "
                      "bottom)", ""]
        lines += [f"{i + 1}. `{Path(f['bag']).name}` frame {f['index']}: pixel accuracy {f['pixel_accuracy']:.3f}"
                  + (f" ([full size]({f['png']}))" if f["png"] else "") for i, f in enumerate(report["worst_frames"])]
        lines += ["", f"![worst frames]({report['plots']['worst_frames']})"]
    return "\n".join(lines) + "\n"


def format_fleet_summary(report: dict) -> str:
    lat = report["latency_ms"]
    lines = [f"bags: {report['bags_evaluated']} evaluated, {len(report['bags_failed'])} failed; frames: "
             f"{report['frames']} ({report['frames_labelled']} labelled, {report['frames_failed']} failed); "
             f"{format_value(report['fps'], 2)} frames/s over {report['workers']} workers",
             f"latency decode + segment: p50 {format_value(lat['p50'])} ms, p95 {format_value(lat['p95'])} ms"]
    if report["miou"] is not None:
        lines.append(f"mIoU on {report['frames_labelled']} labelled frames: {report['miou']:.3f} "
                     f"(pixel accuracy {report['pixel_accuracy']:.3f})")
    lines += [f"failed: {f['bag']}: {f['error']}" for f in report["bags_failed"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# scaling benchmark

def scaling_benchmark(bags: Sequence[Path], options: FleetOptions, repeats: int = 2, fleet_bags: int = 1000,
                      bag_seconds: float = 60.0, rate_hz: float = 10.0,
                      machine_cores: Optional[int] = None) -> dict:
    """frames/s of 1 worker and of 2 workers (``options.threads_per_worker`` threads each) on the same
    bags, alternating, ``repeats`` times each, in one local Ray on this machine's cores; the speedup,
    the efficiency and, on paper, what N such machines would take for a fleet of ``fleet_bags`` bags
    of ``bag_seconds`` at ``rate_hz`` (bags as units: the last round of bags counts whole)."""
    ray = import_ray()
    cores = os.cpu_count() or 1
    if 2 * options.threads_per_worker > cores:
        raise FleetError(f"2 workers x {options.threads_per_worker} threads need {2 * options.threads_per_worker} "
                         f"CPUs; this machine has {cores}")
    started_here = not ray.is_initialized()
    if started_here:
        start_ray(ray, log_to_driver=False)
    load_before = os.getloadavg()
    runs = []
    try:
        for repeat in range(repeats):
            for workers in ((1, 2) if repeat % 2 == 0 else (2, 1)):
                run = evaluate_fleet(bags, options, workers, show_progress=False)
                failed = [r["bag"] for r in run.results if "error" in r]
                if failed:
                    raise FleetError(f"bags that could not be evaluated: {', '.join(failed)}")
                frames = sum(r["frames_sent"] for r in run.results)
                cpu = sum(r["worker_cpu_s"] for r in run.results)
                # CPU seconds the workers got per second of wall time: below the workers' count, other
                # processes had the cores part of the time.
                runs.append({"workers": workers, "frames": frames, "wall_time_s": round(run.wall_time_s, 3),
                             "fps": frames / run.wall_time_s, "startup_s": round(run.startup_s, 3),
                             "worker_cpu_per_wall_s": round(cpu / run.wall_time_s, 3)})
                tqdm.write(f"{workers} worker(s): {frames} frames in {run.wall_time_s:.2f} s, "
                           f"{frames / run.wall_time_s:.2f} frames/s, the workers had "
                           f"{cpu / run.wall_time_s:.2f} CPUs on average")
    finally:
        if started_here:
            ray.shutdown()
    fps = {w: float(np.median([r["fps"] for r in runs if r["workers"] == w])) for w in (1, 2)}
    speedup = fps[2] / fps[1]
    # Frames per CPU second the workers really got: what the scaling is once other load is taken out.
    per_cpu = {w: float(np.median([r["fps"] / r["worker_cpu_per_wall_s"] for r in runs if r["workers"] == w]))
               for w in (1, 2)}
    per_worker = fps[2] / 2  # two workers side by side: the contention of a loaded machine included
    workers_per_machine = max(1, (machine_cores or cores) // options.threads_per_worker)
    frames_per_bag = round(bag_seconds * rate_hz)
    estimate = fleet_estimate(fleet_bags, frames_per_bag, workers_per_machine, per_worker)
    # Upper bound: every worker as fast as one alone on this machine (efficiency 100 %).
    unloaded = fleet_estimate(fleet_bags, frames_per_bag, workers_per_machine, fps[1])
    return {"bags": [str(b) for b in bags], "frames": runs[0]["frames"],
            "threads_per_worker": options.threads_per_worker, "model": options.model, "backend": options.backend,
            "runs": runs,
            "fps_1_worker": fps[1], "fps_2_workers": fps[2], "speedup": speedup, "efficiency": speedup / 2,
            "frames_per_cpu_s_1_worker": per_cpu[1], "frames_per_cpu_s_2_workers": per_cpu[2],
            "efficiency_per_cpu_s": per_cpu[2] / per_cpu[1],
            "host": host_description(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "fleet": {"bags": fleet_bags, "bag_seconds": bag_seconds, "rate_hz": rate_hz,
                      "frames": fleet_bags * frames_per_bag, "machine_cores": machine_cores or cores,
                      "workers_per_machine": workers_per_machine, "frames_per_s_per_worker": per_worker,
                      "estimate": estimate, "estimate_at_one_worker_rate": unloaded}}


def fleet_estimate(bags: int, frames_per_bag: int, workers_per_machine: int, frames_per_s_per_worker: float,
                   machine_counts=(1, 2, 4, 8, 16, 32, 64, 128)) -> List[dict]:
    """Hours for ``bags`` equal bags on N machines, bags as units: ceil(bags / workers) rounds of one
    bag per worker (Ray's per-bag scheduling, milliseconds, and reading the bags not counted)."""
    rows = []
    for machines in machine_counts:
        workers = machines * workers_per_machine
        hours = -(-bags // workers) * frames_per_bag / frames_per_s_per_worker / 3600
        rows.append({"machines": machines, "workers": workers, "hours": round(hours, 3),
                     "fleet_frames_per_s": round(bags * frames_per_bag / hours / 3600, 1)})
    return rows


def host_description() -> dict:
    """CPU model, cores and whether it has AVX2 / AVX-512 (from /proc/cpuinfo, Linux)."""
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "avx2": "avx2" in flags, "avx512f": "avx512f" in flags}


def format_scaling(result: dict) -> str:
    fleet = result["fleet"]
    lines = [f"{result['frames']} frames, {result['threads_per_worker']} thread(s) per worker, on "
             f"{result['host']['cpu']} ({result['host']['cores']} cores); load average before "
             f"{result['load_average_before'][0]:.2f}, after {result['load_average_after'][0]:.2f}",
             f"1 worker: {result['fps_1_worker']:.2f} frames/s; 2 workers: {result['fps_2_workers']:.2f} frames/s; "
             f"speedup {result['speedup']:.2f}x, efficiency {100 * result['efficiency']:.0f}%",
             f"frames per CPU second the workers got: {result['frames_per_cpu_s_1_worker']:.2f} (1 worker), "
             f"{result['frames_per_cpu_s_2_workers']:.2f} (2 workers): {100 * result['efficiency_per_cpu_s']:.0f}% "
             "once other load is taken out",
             f"on paper, {fleet['bags']} bags of {fleet['bag_seconds']:g} s at {fleet['rate_hz']:g} Hz "
             f"({fleet['frames']} frames), {fleet['workers_per_machine']} workers per {fleet['machine_cores']}-core "
             f"machine at {fleet['frames_per_s_per_worker']:.2f} frames/s each:"]
    lines += [f"  {row['machines']:4d} machines: {row['hours']:8.2f} h ({row['fleet_frames_per_s']:.0f} frames/s); "
              f"at one worker's rate: {bound['hours']:.2f} h"
              for row, bound in zip(fleet["estimate"], fleet["estimate_at_one_worker_rate"])]
    return "\n".join(lines)
