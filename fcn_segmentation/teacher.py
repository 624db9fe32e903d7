"""Teacher predictions for distillation: the averaged class probabilities of one or more trained
models (an ensemble), each run at its own input size and optionally on the mirror image too, at the
size of the picture (or a fraction of it). Computed once per training image before training, so
distillation costs the training loop only its loss term; the crops cut them with the same scale, crop
and flip as the labels."""

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .model.model_file import ModelFileError, load_model_file
from .preprocess import Preprocessor


class Teacher:
    """``paths``: model files with the same classes; ``input_hw``: (height, width) to run them at
    (default: each file's own); ``flip``: average each with its mirror image's prediction."""

    def __init__(self, paths: Sequence, input_hw: Optional[Tuple[int, int]] = None, flip: bool = True):
        if not paths:
            raise ModelFileError("a teacher needs at least one model file")
        self.members, self.flip = [], flip
        for path in paths:
            model, info = load_model_file(path)
            height, width = input_hw or (info.input_height, info.input_width)
            if self.members and info.class_names != self.members[0][1].class_names:
                raise ModelFileError(f"teacher {path} has classes {info.class_names}, but {paths[0]} has "
                                     f"{self.members[0][1].class_names}; a teacher's models must share their classes")
            self.members.append((model.eval(), info, Preprocessor(height, width, info.image_mean, info.image_std)))
        self.paths = [str(Path(p)) for p in paths]
        self.class_names = self.members[0][1].class_names

    @torch.inference_mode()
    def probabilities(self, rgb: np.ndarray, downsample: int = 1) -> np.ndarray:
        """(H, W, C) float32 class probabilities at the size of ``rgb`` (uint8 RGB) divided by ``downsample``."""
        height, width = (max(1, round(side / downsample)) for side in rgb.shape[:2])
        total = None
        for model, _, preprocess in self.members:
            batch = torch.from_numpy(preprocess(rgb).copy())
            if self.flip:
                batch = torch.cat([batch, batch.flip(3)])
            probabilities = model(batch).float().softmax(1)
            if self.flip:
                probabilities = (probabilities[:1] + probabilities[1:].flip(3)) / 2
            total = probabilities if total is None else total + probabilities
        mean = (total / len(self.members))[0].permute(1, 2, 0).numpy()
        return cv2.resize(mean, (width, height), interpolation=cv2.INTER_LINEAR)  # cv2 areas take <= 4 channels

    def describe(self) -> str:
        sizes = sorted({f"{p.input_width}x{p.input_height}" for _, _, p in self.members})
        return f"{len(self.members)} model(s) at {'/'.join(sizes)}{' with flip' if self.flip else ''}: " \
               + ", ".join(self.paths)


def teacher_targets(teacher: Teacher, images: List[np.ndarray], downsample: int = 2,
                    progress: bool = True) -> List[np.ndarray]:
    """The teacher's (H, W, C) float32 probabilities for each training image, at 1/``downsample`` of its
    size: a stride-4 network's scores hold no finer detail, and CamVid train then takes 0.6 GB, not 2.3."""
    images = tqdm(images, desc="teacher predictions", unit="img", disable=not progress)
    return [teacher.probabilities(image, downsample) for image in images]
