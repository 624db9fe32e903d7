"""The backend interface. A backend maps a (1, 3, H, W) float32 array to (1, C, H, W) class
scores; it knows nothing about images, classes or ROS. Which backend runs: ``selection.py``."""

from typing import Tuple

import numpy as np

from ..model.model_file import ModelInfo


class BackendError(RuntimeError):
    """A backend could not be created (bad parameter, unreadable artefact)."""


class BackendUnavailable(BackendError):
    """The runtime or device a backend needs is not present on this machine."""


class Backend:
    name = "base"
    device = "cpu"

    def __init__(self, info: ModelInfo):
        self.info = info

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def segment(self, batch: np.ndarray, scores_stride: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """Scores (1, C, h, w) and class ids (h, w) uint8 at the network's size. ``scores_stride`` s:
        the scores of every s-th pixel only, ``scores[:, :, ::s, ::s]`` (the caller needs no more;
        a backend may then skip work). Backends that can take the argmax faster than numpy (in their
        graph, on their device) override this."""
        from ..postprocess import class_map

        scores = self.infer(batch)
        return sampled(scores, scores_stride), class_map(scores)

    def describe(self) -> str:
        return f"{self.name} ({self.device})"


def sampled(scores: np.ndarray, stride: int) -> np.ndarray:
    """``scores[:, :, ::stride, ::stride]``, a view."""
    return scores if stride == 1 else scores[:, :, ::stride, ::stride]
