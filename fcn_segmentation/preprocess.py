"""Image -> network input. One implementation shared by training, evaluation, export and the node."""

from typing import Sequence

import cv2
import numpy as np


class Preprocessor:
    """Resize an RGB uint8 image to the network size and normalise it.

    ``__call__`` returns a (1, 3, H, W) float32 array that may be overwritten by the next call.
    """

    def __init__(self, input_height: int, input_width: int, mean: Sequence[float], std: Sequence[float]):
        self.input_height, self.input_width = int(input_height), int(input_width)
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, 3)
        self.inv_std = (1.0 / np.asarray(std, np.float32)).reshape(1, 1, 3)
        self._resized = np.empty((self.input_height, self.input_width, 3), np.uint8)
        # One scale for all channels (the bundled models' 128): OpenCV normalises and reorders to CHW
        # in one pass, 0.26 instead of 0.87 ms at 320x224 (measured; README, Performance).
        one_scale = bool(np.all(self.inv_std == self.inv_std.flat[0]))
        self._blob_scale_mean = (float(self.inv_std.flat[0]), tuple(float(v) for v in self.mean.flat)) \
            if one_scale else None
        if not one_scale:  # numpy's buffers, reused frame after frame
            self._hwc = np.empty((self.input_height, self.input_width, 3), np.float32)
            self._chw = np.empty((1, 3, self.input_height, self.input_width), np.float32)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.shape[:2] == (self.input_height, self.input_width):
            resized = rgb
        else:
            resized = cv2.resize(rgb, (self.input_width, self.input_height), dst=self._resized,
                                 interpolation=cv2.INTER_LINEAR)
        if self._blob_scale_mean:
            scale, mean = self._blob_scale_mean
            return cv2.dnn.blobFromImage(np.ascontiguousarray(resized), scale, None, mean, False, False, cv2.CV_32F)
        np.subtract(resized, self.mean, out=self._hwc)
        np.multiply(self._hwc, self.inv_std, out=self._hwc)
        self._chw[0] = self._hwc.transpose(2, 0, 1)
        return self._chw


def normalize(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32, (x - mean) / std, no resizing (training crops)."""
    chw = (rgb.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(chw.transpose(2, 0, 1))
