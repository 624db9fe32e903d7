"""Palette lookup, colour masks and overlays."""

from typing import Optional, Sequence, Tuple

import numpy as np


def palette_lut(palette: Sequence[Tuple[int, int, int]]) -> np.ndarray:
    """(256, 3) uint8 lookup table; class ids beyond the palette map to black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    return lut


def color_mask(classes: np.ndarray, lut: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) RGB."""
    return np.take(lut, classes, axis=0, out=out)


def overlay(rgb: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the image; ``alpha`` is the mask's weight."""
    import cv2

    return cv2.addWeighted(colors, float(alpha), rgb, 1.0 - float(alpha), 0.0)
