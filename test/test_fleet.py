"""``fcnseg evaluate-bags``: bags sharded over a real local Ray (2 CPUs), merged into one report that
equals the single-process offline replay; a corrupt bag, a killed worker, Ctrl-C and no Ray."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fcn_segmentation.bags import write_dataset_bag
from fcn_segmentation.cli import main
from fcn_segmentation.fleet import BagWorker, FleetOptions, evaluate_fleet, find_bags, merge
from fcn_segmentation.replay_report import core_segmenter, replay_offline

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements.txt)")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def fleet_bags(sample_dir, tmp_path_factory):
    """Three bags of the sample frames (MCAP files and a sqlite3 folder, different lengths and
    stamps) in a folder, and a corrupt one beside them."""
    folder = tmp_path_factory.mktemp("fleet")
    write_dataset_bag(sample_dir, "val", folder / "drive_a.mcap", limit=3, start_ns=1_000_000_000_000)
    write_dataset_bag(sample_dir, "val", folder / "drive_b", storage="sqlite3", limit=2, rate_hz=5,
                      start_ns=2_000_000_000_000)
    write_dataset_bag(sample_dir, "val", folder / "nested" / "drive_c.mcap", limit=4, encoding="bgr8",
                      start_ns=3_000_000_000_000)
    good = find_bags([folder])
    corrupt = folder / "drive_corrupt.mcap"
    corrupt.write_bytes(b"\x89MCAP0\r\n" + os.urandom(4000))
    return good, corrupt


@pytest.fixture(scope="module")
def single_process(fleet_bags, bundled_model):
    """The offline replay of each good bag in this process, with the workers' settings (1 thread)."""
    segmenter = core_segmenter("auto", bundled_model, "cpu", {"inference_threads": 1})
    return {str(bag): replay_offline(bag, segmenter)[0] for bag in fleet_bags[0]}


def test_bags_in_folders_are_found(fleet_bags):
    good, _ = fleet_bags
    assert [p.name for p in good] == ["drive_b", "drive_a.mcap", "drive_c.mcap"]  # folders, then files


def test_merged_report_equals_the_single_process_replay_and_names_the_corrupt_bag(
        local_ray, fleet_bags, single_process, bundled_model, tmp_path):
    good, corrupt = fleet_bags
    out = tmp_path / "report"
    code = main(["evaluate-bags", str(good[0].parent), "--out", str(out), "--model", str(bundled_model),
                 "--workers", "2", "--frame-pngs", "--worst", "4"])
    assert code == 1  # a bag failed; the others are in the report
    report = json.loads((out / "report.json").read_text())
    assert report["command"].startswith("fcnseg ")  # this process's command line (pytest's here)
    expected = sum(np.array(r["confusion_matrix"], np.int64) for r in single_process.values())
    np.testing.assert_array_equal(np.array(report["confusion_matrix"]), expected)
    assert (report["bags"], report["bags_evaluated"], report["frames"], report["frames_labelled"]) == (4, 3, 9, 9)
    assert report["frames_failed"] == 0
    assert [f["bag"] for f in report["bags_failed"]] == [str(corrupt)]
    assert "cannot open bag" in report["bags_failed"][0]["error"]
    rows = {row["bag"]: row for row in report["per_bag"]}
    for bag, replay in single_process.items():
        assert rows[bag]["frames"] == replay["frames_sent"]
        assert rows[bag]["confusion_matrix"] == replay["confusion_matrix"]
        assert rows[bag]["miou"] == pytest.approx(replay["miou"])
    # per-frame milliseconds: not seconds (under 1), not a bag's or the run's sum (against the single
    # process's figures it would depend on the machine's load at two moments)
    assert 1.0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] < 1000 * report["wall_time_s"]
    assert 0.4 < report["miou"] < 1 and report["per_class_iou"]["Road"] > 0.8
    # the worst frames: the lowest pixel accuracies of all bags, each also as a full-size PNG
    accuracies = sorted((f["pixel_accuracy"], bag, f["index"]) for bag, r in single_process.items()
                        for f in r["frames"])[:4]
    worst = report["worst_frames"]
    assert [(w["bag"], w["index"]) for w in worst] == [(bag, index) for _, bag, index in accuracies]
    assert [w["pixel_accuracy"] for w in worst] == pytest.approx([a for a, _, _ in accuracies])
    import cv2
    strip = cv2.imread(str(out / "worst_frames.png"))
    assert strip.shape[0] == 2 * 360  # 4 frames, 3 to a row, 360 px high
    assert cv2.imread(str(out / worst[0]["png"])).shape == (360, 480, 3)
    text = (out / "report.md").read_text()
    assert "drive_corrupt.mcap" in text and "| `drive_a.mcap` | 3 | 3 |" in text
    assert (out / "per_class_iou.png").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_worker_killed_mid_bag_is_restarted_and_the_report_is_complete(
        local_ray, fleet_bags, single_process, bundled_model, tmp_path):
    good, _ = fleet_bags
    marker = tmp_path / "crashed_once"

    class CrashOnceWorker(BagWorker):
        """Dies (os._exit, as a killed process) in the middle of drive_c's frames, the first time only."""

        def _on_frame(self, bag_index):
            report = super()._on_frame(bag_index)

            def on_frame(done):
                report(done)
                if done == 2 and self.bag_name == "drive_c.mcap" and not marker.exists():
                    marker.write_text(str(os.getpid()))
                    os._exit(1)
            return on_frame

        def evaluate(self, bag_index, bag_path):
            self.bag_name = os.path.basename(bag_path)
            return super().evaluate(bag_index, bag_path)

    options = FleetOptions(str(bundled_model))
    run = evaluate_fleet(good, options, workers=2, worker_class=CrashOnceWorker, show_progress=False)
    assert marker.exists()  # the worker did die
    report = merge(run)
    assert report["workers_restarted"] >= 1 and not report["bags_failed"]
    assert report["frames"] == sum(r["frames_sent"] for r in single_process.values())
    expected = sum(np.array(r["confusion_matrix"], np.int64) for r in single_process.values())
    np.testing.assert_array_equal(np.array(report["confusion_matrix"]), expected)
    by_bag = {r["bag"]: r for r in run.results}
    crashed = by_bag[str(good[2])]
    assert crashed["worker_pid"] != int(marker.read_text())  # finished by the restarted worker
    assert [f["index"] for f in crashed["frames"]] == [0, 1, 2, 3]  # every frame once, from the start


def test_an_interrupted_run_stops_its_workers(local_ray, fleet_bags, bundled_model):
    good, _ = fleet_bags
    seen = []

    def interrupt(done, actors):
        seen.extend(actors)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_fleet(good, FleetOptions(str(bundled_model)), workers=2, on_progress=interrupt,
                       show_progress=False)
    assert seen
    for actor in seen:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.pid.remote(), timeout=30)


def _as_a_terminal_foreground_job() -> None:
    # A test run started in the background (`cmd &` in a script) passes SIGINT on as ignored, and Python
    # then installs no KeyboardInterrupt handler: the command would not see the Ctrl-C it is meant to get.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_writes_no_report(fleet_bags, bundled_model, tmp_path):
    """The command in its own process with its own local Ray, interrupted while it evaluates."""
    good, _ = fleet_bags
    # 40 bags (hard links: the same frames, distinct bags): the 3 bags alone take half a second, and a
    # loaded machine could finish them before the signal arrives
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    mcap = next(bag for bag in good if bag.suffix == ".mcap")
    for index in range(40):
        os.link(mcap, fleet / f"drive_{index:02d}.mcap")
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "fcn_segmentation", "evaluate-bags", str(fleet),
                                "--out", str(out), "--model", str(bundled_model), "--workers", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               preexec_fn=_as_a_terminal_foreground_job)
    output = ""
    deadline = time.monotonic() + 120
    while "evaluate-bags (1 workers)" not in output and time.monotonic() < deadline:
        output += process.stdout.read(1) or ""
        if process.poll() is not None:
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output + rest
    assert "no report was written" in rest
    assert not out.exists() or not any(out.iterdir())


def test_without_ray_the_command_says_how_to_install_it(fleet_bags, bundled_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError, as when it is not installed
    code = main(["evaluate-bags", str(fleet_bags[0][0]), "--out", str(tmp_path / "r"), "--model", str(bundled_model)])
    assert code == 2
    err = capsys.readouterr().err
    assert "Ray is not installed" in err and "pip install 'ray==2.60.*'" in err
    assert not (tmp_path / "r").exists()


def test_the_scaling_benchmark_times_one_and_two_workers_on_the_same_frames(local_ray, fleet_bags, bundled_model):
    from fcn_segmentation.fleet import scaling_benchmark

    result = scaling_benchmark(fleet_bags[0], FleetOptions(str(bundled_model), worst_frames=0), repeats=1,
                               fleet_bags=10, bag_seconds=2, rate_hz=10, machine_cores=4)
    assert [(r["workers"], r["frames"]) for r in result["runs"]] == [(1, 9), (2, 9)]
    assert result["speedup"] == pytest.approx(result["fps_2_workers"] / result["fps_1_worker"])
    assert result["efficiency"] == pytest.approx(result["speedup"] / 2)
    assert all(0 < r["worker_cpu_per_wall_s"] <= r["workers"] * 1.5 for r in result["runs"])  # 1 thread each
    assert result["efficiency_per_cpu_s"] == pytest.approx(
        result["frames_per_cpu_s_2_workers"] / result["frames_per_cpu_s_1_worker"])
    fleet = result["fleet"]
    assert (fleet["frames"], fleet["workers_per_machine"]) == (200, 4)
    one, two = fleet["estimate"][:2]  # 10 bags of 20 frames: 3 rounds on 4 workers, 2 rounds on 8
    assert one["hours"] == pytest.approx(3 * 20 / fleet["frames_per_s_per_worker"] / 3600, abs=1e-3)
    assert two["hours"] == pytest.approx(2 * 20 / fleet["frames_per_s_per_worker"] / 3600, abs=1e-3)
    assert result["host"]["cores"] == os.cpu_count()
