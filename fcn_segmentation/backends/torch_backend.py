from typing import Tuple

import numpy as np
import torch

from .base import Backend, BackendUnavailable


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: torch.nn.Module, info, device: str = "cpu"):
        super().__init__(info)
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("torch has no CUDA device")
        self.device = device
        self.model = model.eval().to(device)

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        scores = self.model(torch.from_numpy(batch).to(self.device, non_blocking=True))
        return scores.float().cpu().numpy()

    @torch.inference_mode()
    def segment(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.device != "cuda":  # on the CPU numpy's argmax beats torch's
            return super().segment(batch)
        scores = self.model(torch.from_numpy(batch).to(self.device, non_blocking=True))
        classes = scores[0].argmax(0).to(torch.uint8)
        return scores.float().cpu().numpy(), classes.cpu().numpy()
