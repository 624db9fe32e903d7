from typing import Tuple

import numpy as np
import torch

from .base import Backend, BackendError, BackendUnavailable


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: torch.nn.Module, info, device: str = "cpu", half: bool = False, threads: int = 0):
        """``half``: FP16 weights and activations (CUDA only; CPU convolutions are not faster in FP16).
        ``threads``: torch's CPU threads (process-wide), 0 = its default."""
        super().__init__(info)
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("torch has no CUDA device")
        if half and device != "cuda":
            raise BackendError("torch runs FP16 only on CUDA")
        if threads and device == "cpu":
            torch.set_num_threads(threads)
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        self.model = model.eval().to(device=device, dtype=self.dtype)

    def _scores(self, batch: np.ndarray) -> torch.Tensor:
        return self.model(torch.from_numpy(batch).to(self.device, non_blocking=True).to(self.dtype))

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._scores(batch).float().cpu().numpy()

    @torch.inference_mode()
    def segment(self, batch: np.ndarray, scores_stride: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        if self.device != "cuda":  # on the CPU numpy's argmax beats torch's
            return super().segment(batch, scores_stride)
        scores = self._scores(batch)
        classes = scores[0].argmax(0).to(torch.uint8)
        return scores[:, :, ::scores_stride, ::scores_stride].float().cpu().numpy(), classes.cpu().numpy()

    def describe(self) -> str:
        return f"{self.name} ({self.device}, fp16)" if self.dtype == torch.float16 else super().describe()
