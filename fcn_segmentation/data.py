"""Datasets in the CamVid/SegNet folder layout: ``<split>/`` images and ``<split>annot/`` labels
(single-channel PNG, pixel value = class index, ``void_label`` ignored)."""

import math
import random
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .preprocess import normalize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IGNORE_INDEX = 255


class DatasetError(RuntimeError):
    pass


def split_pairs(root, split: str, require_labels: bool = True) -> List[Tuple[Path, Optional[Path]]]:
    """Sorted (image, label) paths of one split; label is None when absent and not required."""
    root = Path(root)
    image_dir, label_dir = root / split, root / f"{split}annot"
    if not image_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DatasetError(f"no folder {image_dir} (dataset root {root} has: {', '.join(found) or 'nothing'})")
    pairs = []
    for image in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        label = label_dir / (image.stem + ".png")
        if not label.is_file():
            if require_labels:
                raise DatasetError(f"image {image} has no label {label}")
            label = None
        pairs.append((image, label))
    if not pairs:
        raise DatasetError(f"no images in {image_dir}")
    return pairs


def calibration_images(data_dir, count: int, split: str = "train") -> List[Path]:
    """``count`` images spread evenly over ``split`` of a CamVid-layout folder, or over a plain folder
    of images: sorted names are video order, and the first N would all come from one sequence."""
    root = Path(data_dir)
    if (root / split).is_dir():
        images = [image for image, _ in split_pairs(root, split, require_labels=False)]
    elif root.is_dir():
        images = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise DatasetError(f"calibration data {root} is not a folder")
    if not images:
        raise DatasetError(f"no images in {root} or {root / split} to calibrate with")
    if count >= len(images):
        return images
    return [images[int(i * len(images) / count)] for i in range(count)]


def calibration_batches(data_dir, info, count: int = 64, split: str = "train"):
    """A function giving preprocessed (1, 3, H, W) batches of ``count`` images spread over ``split``
    (see ``calibration_images``) at ``info``'s input size: INT8 calibration reads them only when it runs."""
    def batches():
        from tqdm import tqdm

        from .preprocess import Preprocessor

        preprocess = Preprocessor(info.input_height, info.input_width, info.image_mean, info.image_std)
        for image in tqdm(calibration_images(data_dir, count, split), desc="INT8 calibration", unit="img"):
            yield preprocess(read_rgb(image)).copy()
    return batches


def read_rgb(path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label(path, num_classes: int) -> np.ndarray:
    """Label PNG -> uint8 (H, W) with every value >= num_classes (void) mapped to IGNORE_INDEX."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"cannot read label {path}")
    if label.ndim != 2:
        raise DatasetError(f"label {path} must be single-channel, got shape {label.shape}")
    label = label.astype(np.uint8)
    label[label >= num_classes] = IGNORE_INDEX
    return label


def median_frequency_weights(labels: List[np.ndarray], num_classes: int) -> np.ndarray:
    """SegNet's median frequency balancing: w_c = median(freq) / freq_c, where freq_c is the
    class's pixel count over the pixels of the images that contain it."""
    counts = np.zeros(num_classes, np.float64)
    present_pixels = np.zeros(num_classes, np.float64)
    for label in labels:
        hist = np.bincount(label[label < num_classes].ravel(), minlength=num_classes)[:num_classes]
        counts += hist
        present_pixels += (hist > 0) * label.size
    freq = counts / np.maximum(present_pixels, 1)
    weights = np.where(freq > 0, np.median(freq[freq > 0]) / np.maximum(freq, 1e-12), 0.0)
    return weights.astype(np.float32)


class AugmentedSegmentationSet:
    """Training samples: random scale, random crop (padded with void), horizontal flip and
    photometric jitter. Images are decoded once and kept in memory (CamVid train is ~200 MB).

    With ``rare_crop_prob`` > 0, that share of crops is centred on a random pixel of one of
    ``rare_classes`` present in the image (chosen uniformly among those present), so thin and
    small classes are seen whole and more often; at 0 the random draws are the plain recipe's.
    With ``rare_paste_prob`` > 0, that share of crops gets the ``rare_classes`` pixels of another
    image's random crop pasted over it (image and label, same place): pedestrians and poles in front
    of other streets, more often (at 0 again no random draw).
    ``photometric_strength`` and ``colour_cast``: see ``photometric_jitter``.
    ``soft_targets``: per image, (h, w, C) float32 class probabilities of a teacher (any size; see
    ``teacher.teacher_targets``), cut like the labels and returned third; zero where the crop is padding."""

    def __init__(self, pairs, num_classes: int, crop_hw: Tuple[int, int], base_hw: Tuple[int, int],
                 mean, std, scale_range=(0.75, 1.5), augment: bool = True, seed: int = 0,
                 rare_classes: Tuple[int, ...] = (), rare_crop_prob: float = 0.0,
                 photometric_strength: float = 0.25, colour_cast: float = 0.0, rare_paste_prob: float = 0.0,
                 soft_targets: Optional[List[np.ndarray]] = None):
        for name, value in (("rare crop probability", rare_crop_prob), ("rare paste probability", rare_paste_prob)):
            if not 0.0 <= value <= 1.0:
                raise DatasetError(f"{name} must be in [0, 1], got {value}")
        for name, value in (("photometric strength", photometric_strength), ("colour cast", colour_cast)):
            if not 0.0 <= value < 1.0:
                raise DatasetError(f"{name} must be in [0, 1), got {value}")
        self.photometric_strength, self.colour_cast = photometric_strength, colour_cast
        self.images = [read_rgb(image) for image, _ in pairs]
        self.labels = [read_label(label, num_classes) for _, label in pairs]
        self.num_classes = num_classes
        self.set_soft_targets(soft_targets)
        self.crop_hw, self.base_hw = crop_hw, base_hw
        self.mean, self.std = mean, std
        self.scale_range = scale_range
        self.augment = augment
        self.rng = random.Random(seed)
        self.rare_crop_prob = rare_crop_prob if rare_classes else 0.0
        self.rare_classes = tuple(rare_classes)
        self.rare_present = [[c for c in rare_classes if (label == c).any()] for label in self.labels] \
            if self.rare_crop_prob or rare_paste_prob else []
        self.rare_paste_prob = rare_paste_prob if rare_classes else 0.0
        self.paste_donors = [i for i, present in enumerate(self.rare_present) if present]

    def __len__(self) -> int:
        return len(self.images)

    def set_soft_targets(self, soft_targets: Optional[List[np.ndarray]]) -> None:
        """Teacher probabilities for the images already loaded (see the class docstring); None = none."""
        if soft_targets is not None and (len(soft_targets) != len(self.images) or any(
                target.ndim != 3 or target.shape[2] != self.num_classes for target in soft_targets)):
            raise DatasetError(f"soft targets must be one (h, w, {self.num_classes}) array per image "
                               f"({len(self.images)})")
        self.soft_targets = soft_targets

    def rare_crop_centre(self, index: int, label: np.ndarray, probability: float):
        """(row, col) of a random pixel of a rare class in ``label`` (the scaled label), drawn with
        ``probability`` when the image has one; else None (and no random draw at 0)."""
        if not probability or not self.rare_present[index] or self.rng.random() >= probability:
            return None
        pixels = np.flatnonzero(label == self.rng.choice(self.rare_present[index]))
        if not len(pixels):  # scaled down until it vanished
            return None
        return divmod(int(pixels[self.rng.randrange(len(pixels))]), label.shape[1])

    def __getitem__(self, index: int):
        """(normalised (3, H, W) float32 image, (H, W) uint8 labels[, (H, W, C) float32 soft targets])."""
        crop = self.scaled_crop(index)
        if self.augment:
            if self.rare_paste_prob and self.paste_donors and self.rng.random() < self.rare_paste_prob:
                crop = self.paste_rare_pixels(*crop)
            crop = (photometric_jitter(crop[0], self.rng, self.photometric_strength, self.colour_cast), *crop[1:])
        image, *targets = (np.ascontiguousarray(array) for array in crop)
        return (normalize(image, self.mean, self.std), *targets)

    def paste_rare_pixels(self, *crop):
        """The rare-class pixels of a crop of another image that has some (centred on one of them),
        pasted over this crop (image, labels and soft targets alike)."""
        donor = self.scaled_crop(self.rng.choice(self.paste_donors), rare_centre_prob=1.0)
        pasted = np.isin(donor[1], self.rare_classes)
        crop = tuple(array.copy() for array in crop)
        for mine, theirs in zip(crop, donor):
            mine[pasted] = theirs[pasted]
        return crop

    def scaled_crop(self, index: int, rare_centre_prob: Optional[float] = None):
        """Image ``index`` scaled, cropped and flipped, as uint8 RGB and labels (and soft targets when the
        set has them); the crop is centred on a rare-class pixel with ``rare_centre_prob`` (default
        ``rare_crop_prob``)."""
        image, label = self.images[index], self.labels[index]
        rng = self.rng
        base_h, base_w = self.base_hw
        scale = rng.uniform(*self.scale_range) if self.augment else 1.0
        height, width = max(1, round(base_h * scale)), max(1, round(base_w * scale))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
        soft = None if self.soft_targets is None else \
            cv2.resize(self.soft_targets[index], (width, height), interpolation=cv2.INTER_LINEAR)
        crop_h, crop_w = self.crop_hw
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(127, 127, 127))
            label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
            if soft is not None:  # cv2's border value has at most 4 channels
                soft = np.pad(soft, ((0, pad_h), (0, pad_w), (0, 0)))
        if rare_centre_prob is None:
            rare_centre_prob = self.rare_crop_prob
        centre = self.rare_crop_centre(index, label, rare_centre_prob) if self.augment else None
        if centre is not None:  # the crop holding that pixel nearest its middle
            top = min(max(centre[0] - crop_h // 2, 0), image.shape[0] - crop_h)
            left = min(max(centre[1] - crop_w // 2, 0), image.shape[1] - crop_w)
        else:
            top = rng.randint(0, image.shape[0] - crop_h) if self.augment else 0
            left = rng.randint(0, image.shape[1] - crop_w) if self.augment else 0
        crop = tuple(array[top:top + crop_h, left:left + crop_w] for array in (image, label, soft)
                     if array is not None)
        if self.augment and rng.random() < 0.5:
            crop = tuple(array[:, ::-1] for array in crop)
        return crop


def photometric_jitter(rgb: np.ndarray, rng: random.Random, strength: float = 0.25,
                       colour_cast: float = 0.0) -> np.ndarray:
    """Random brightness, contrast and saturation, each scaled in [1 - strength, 1 + strength], and
    with ``colour_cast`` > 0 a gain per channel in [1 - colour_cast, 1 + colour_cast] (the light of
    dusk, sodium lamps, a camera's white balance); at 0 no random draw is made for it."""
    image = rgb.astype(np.float32)
    brightness = rng.uniform(1 - strength, 1 + strength)
    contrast = rng.uniform(1 - strength, 1 + strength)
    saturation = rng.uniform(1 - strength, 1 + strength)
    gray = image @ np.array([0.299, 0.587, 0.114], np.float32)
    image = gray[..., None] + saturation * (image - gray[..., None])
    image = (image - gray.mean()) * contrast + gray.mean()
    image *= brightness
    if colour_cast:
        image *= np.array([rng.uniform(1 - colour_cast, 1 + colour_cast) for _ in range(3)], np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def batches(dataset: AugmentedSegmentationSet, batch_size: int, rng: random.Random, drop_last: bool = True):
    """Shuffled (images, labels[, soft targets]) numpy batches for one epoch."""
    order = list(range(len(dataset)))
    rng.shuffle(order)
    count = len(order) // batch_size if drop_last else math.ceil(len(order) / batch_size)
    for b in range(count):
        items = [dataset[i] for i in order[b * batch_size:(b + 1) * batch_size]]
        yield tuple(np.stack(column) for column in zip(*items))
