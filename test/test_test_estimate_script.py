"""scripts/test_estimate.py: the reference recipe must come out at its own test figures, and another
recipe moves by its unseen difference from the reference."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("test_estimate", ROOT / "scripts" / "test_estimate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_unseen(folder: Path, name: str, size: str, miou: float, pole: float, pedestrian: float):
    (folder / f"{name}_unseen_0006R0_{size}.json").write_text(
        json.dumps({"miou": miou, "per_class_iou": {"Pole": pole, "Pedestrian": pedestrian}}))


def test_estimate_adds_the_reference_recipes_test_minus_unseen_difference(tmp_path, capsys):
    script = load_script()
    for size, miou in (("320x224", 0.40), ("480x352", 0.44)):
        write_unseen(tmp_path, script.REFERENCE, size, miou, 0.10, 0.20)
    write_unseen(tmp_path, "better", "384x288", 0.50, 0.30, 0.35)
    script.main([str(tmp_path), f"{script.REFERENCE}@320x224", f"{script.REFERENCE}@480x352", "better@384x288"])
    rows = [line.strip("| ").split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    # the reference recipe at the measured sizes: exactly the independent test figures (0.548, 0.582)
    assert rows[0][3] == "0.548" and rows[1][3] == "0.582"
    assert rows[0][4] == "0.100 / 0.160" and rows[0][5] == "0.200 / 0.250"
    # 384x288: the mean of the two offsets ((0.148 + 0.142) / 2) on its own unseen figure
    assert rows[2][3] == "0.645" and rows[2][4] == "0.300 / 0.360"
