"""An exponential moving average of a network's weights during training (Polyak averaging): a shadow
copy that follows the trained weights and smooths out the last steps' noise. The training itself is
unchanged, so one run gives both the trained weights and the averaged ones."""

import copy

import torch


class WeightAverage:
    """``average = d * average + (1 - d) * weights`` after each optimiser step, with the decay ramped up
    as ``min(decay, (1 + updates) / (10 + updates))`` so the first updates do not keep the random head
    for long (TensorFlow's ExponentialMovingAverage with num_updates). Batch-norm running statistics are
    averaged the same way; integer buffers (batch counters) are copied."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.current_decay()
        trained = model.state_dict()
        for name, average in self.model.state_dict().items():
            value = trained[name].detach()
            if average.is_floating_point():
                average.lerp_(value.to(average.dtype), 1.0 - decay)
            else:
                average.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.model.load_state_dict(state["model"])
