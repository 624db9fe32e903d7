"""Picture of the recipe levers on the default's recipe (issue 16): each lever's change in mIoU, in
points, on the drive held out of training and on standard val, at each input size, for each held-out
drive it was run on, beside what a second run of the same recipe moved (the noise to beat).
Reads the JSON that scripts/unseen_ablation.sh writes; a pair whose files are missing is left out.
Usage: python scripts/lever_chart.py [EVAL_DIR (models/eval)] [OUT.png (EVAL_DIR/levers.png)]"""

import json
import sys
from pathlib import Path

SIZES = ("320x224", "384x288", "480x352")
# held-out drive -> (folder under EVAL_DIR, its colour in the picture, its legend)
FOLDS = {
    "0006R0": ("unseen", "tab:blue", "daytime drive 0006R0"),
    "0001TP": ("unseen_0001TP", "tab:orange", "dusk drive 0001TP"),
    "0016E5": ("unseen_0016E5", "tab:green", "daytime drive 0016E5 (cyclists)"),
}
RECIPE = "bf16_fcn4s_ohem_unweighted_lighting_e56"  # the default's recipe, trained without the drive
# (label, held-out drive, reference run, run with the lever); the first rows are repeats of one recipe
PAIRS = (
    ("another seed (noise)", "0006R0", RECIPE, "bf16_fcn4s_ohem_unweighted_lighting_seed1_e56"),
    ("FP32 instead of BF16 (noise)", "0001TP", RECIPE, "fp32_fcn4s_ohem_unweighted_lighting_e56"),
    ("FP32 instead of BF16 (noise)", "0006R0", RECIPE, "fp32_fcn4s_ohem_unweighted_lighting_e56"),
    ("another seed, FP32 (noise)", "0001TP", "fp32_fcn4s_ohem_unweighted_lighting_e56",
     "fp32_fcn4s_ohem_unweighted_lighting_seed1_ema_e56_raw"),
    ("lighting augmentation (adopted)", "0006R0", "bf16_fcn4s_ohem_unweighted_e56", RECIPE),
    ("lighting augmentation (adopted)", "0001TP", "bf16_fcn4s_ohem_unweighted_e56", RECIPE),
    ("rare-class crops, 25%", "0006R0", RECIPE, "bf16_fcn4s_ohem_unweighted_lighting_rare25_e56"),
    ("scale 0.5-2x", "0006R0", RECIPE, "bf16_fcn4s_ohem_unweighted_lighting_scale50_200_e56"),
    ("Lovász-softmax, weight 1", "0006R0", RECIPE, "bf16_fcn4s_ohem_unweighted_lighting_lovasz_e56"),
    ("Lovász-softmax, weight 1 (FP32 pair)", "0001TP", "fp32_fcn4s_ohem_unweighted_lighting_e56",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz_e56"),
    ("Lovász-softmax, weight 0.5 (FP32 pair, adopted)", "0001TP", "fp32_fcn4s_ohem_unweighted_lighting_e56",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_e56"),
    ("Lovász-softmax, weight 0.5 (FP32 pair, adopted)", "0006R0", "fp32_fcn4s_ohem_unweighted_lighting_e56",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_e56"),
    ("Lovász-softmax, weight 0.5 (FP32 pair, adopted)", "0016E5", "fp32_fcn4s_ohem_unweighted_lighting_e56",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_e56"),
    ("Lovász-softmax, weight 0.5, seed 1 (BF16 pair)", "0016E5", "bf16_fcn4s_ohem_unweighted_lighting_seed1_e56",
     "bf16_fcn4s_ohem_unweighted_lighting_lovasz50_seed1_e56"),
    ("Lovász-softmax, weight 0.5, seed 2 (BF16 pair)", "0016E5", "bf16_fcn4s_ohem_unweighted_lighting_seed2_e56",
     "bf16_fcn4s_ohem_unweighted_lighting_lovasz50_seed2_e56"),
    ("another seed, BF16 seed 1 vs FP32 seed 0 (noise)", "0016E5", "fp32_fcn4s_ohem_unweighted_lighting_e56",
     "bf16_fcn4s_ohem_unweighted_lighting_seed1_e56"),
    ("another seed, BF16 seed 2 vs seed 1 (noise)", "0016E5", "bf16_fcn4s_ohem_unweighted_lighting_seed1_e56",
     "bf16_fcn4s_ohem_unweighted_lighting_seed2_e56"),
    ("Lovász-softmax, weight 0.5, seed 1 (FP32 pair)", "0001TP",
     "fp32_fcn4s_ohem_unweighted_lighting_seed1_ema_e56_raw", "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_seed1_e56"),
    ("another seed of Lovász 0.5 (noise)", "0001TP", "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_e56",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_seed1_e56"),
    ("Lovász-softmax, weight 0.5, seed 1 (vs BF16 seed 1)", "0006R0",
     "bf16_fcn4s_ohem_unweighted_lighting_seed1_e56", "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_seed1_e56"),
    ("another seed of Lovász 0.5 (noise)", "0006R0", "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_e56",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_seed1_e56"),
    ("moving average of the weights (same run)", "0001TP", "fp32_fcn4s_ohem_unweighted_lighting_seed1_ema_e56_raw",
     "fp32_fcn4s_ohem_unweighted_lighting_seed1_ema_e56"),
    ("rare-class pasting, 50%", "0006R0", RECIPE, "bf16_fcn4s_ohem_unweighted_lighting_paste50_e56"),
    ("rare-class pasting, 50%", "0001TP", RECIPE, "bf16_fcn4s_ohem_unweighted_lighting_paste50_e56"),
    ("distillation from two runs at 480x352 + flip (vs Lovász 0.5)", "0006R0",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_e56", "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_distill_e56"),
    ("distillation from two runs at 480x352 + flip (vs Lovász 0.5)", "0001TP",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_e56", "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_distill_e56"),
    ("Lovász 0.5 over the thin classes only (vs over all)", "0006R0",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_e56", "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_thin_e56"),
    ("Lovász 0.5 over the thin classes only (vs over all)", "0001TP",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_e56", "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_thin_e56"),
    ("Lovász 0.5 over the thin classes only, seed 1 (vs over all, seed 1)", "0006R0",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_seed1_e56",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_thin_seed1_e56"),
    ("another seed of Lovász 0.5 over the thin classes (noise)", "0006R0",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_thin_e56",
     "fp32_fcn4s_ohem_unweighted_lighting_lovasz50_thin_seed1_e56"),
)


def miou(folder: Path, run: str, split: str, size: str):
    path = folder / f"{run}_{split}_{size}.json"
    return json.loads(path.read_text())["miou"] if path.is_file() else None


def lever_rows(eval_dir: Path):
    """[(label, drive, {"unseen": [points per size], "val": [...]})] for the pairs whose JSON exist."""
    rows = []
    for label, drive, reference, variant in PAIRS:
        folder = eval_dir / FOLDS[drive][0]
        changes = {}
        for panel, split in (("unseen", f"unseen_{drive}"), ("val", "val")):
            pairs = [(miou(folder, reference, split, size), miou(folder, variant, split, size)) for size in SIZES]
            if any(a is None or b is None for a, b in pairs):
                break
            changes[panel] = [100 * (b - a) for a, b in pairs]
        if len(changes) == 2:
            rows.append((label, drive, changes))
    return rows


def draw(rows, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = ("o", "s", "^")
    colours = {drive: colour for drive, (_, colour, _) in FOLDS.items()}
    figure, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(rows) + 2.5), sharey=True)
    labels = [f"{label}  [{drive} held out]" for label, drive, _ in rows]
    for axis, panel, title in zip(axes, ("unseen", "val"), ("drive held out of training", "standard val")):
        for y, (_, drive, changes) in enumerate(rows):
            values = changes[panel]
            axis.plot([min(values), max(values)], [y, y], color=colours[drive], alpha=0.4)
            for value, marker, size in zip(values, markers, SIZES):
                axis.plot(value, y, marker, color=colours[drive], label=f"{size}" if y == 0 else None)
        # one run's spread: how far the repeats of the recipe moved
        noise = [abs(v) for label, _, changes in rows if "noise" in label for v in changes[panel]]
        if noise:
            axis.axvspan(-max(noise), max(noise), color="0.9", zorder=0)
        axis.axvline(0, color="0.5", linewidth=0.8)
        axis.set_title(f"mIoU change, points:\n{title}")
        axis.set_xlabel("points")
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), labels)
    axes[0].invert_yaxis()
    axes[1].legend(title="input size", loc="lower left", fontsize=8)
    folds = ", ".join(f"{colour[4:]}: {legend} held out" for _, colour, legend in FOLDS.values())
    figure.suptitle(f"Recipe levers of the default (Lite0 FCN-4s)\n{folds}\n"
                    "grey: the largest change a repeat of the same recipe made (the noise rows)")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    eval_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("models/eval")
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else eval_dir / "levers.png"
    rows = lever_rows(eval_dir)
    width = max((len(label) for label, _, _ in rows), default=0)
    for label, drive, changes in rows:
        print(f"{label:{width}s} {drive}: unseen " + " / ".join(f"{v:+.1f}" for v in changes["unseen"])
              + ", val " + " / ".join(f"{v:+.1f}" for v in changes["val"]))
    draw(rows, out)
    print(f"wrote {out}")
