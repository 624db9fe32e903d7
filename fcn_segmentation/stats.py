"""Frame counters and a latency window, shared by the node's worker and its diagnostics timer."""

import threading
import time
from collections import deque
from typing import Dict

import numpy as np


class PipelineStats:
    fps_window_s = 5.0

    def __init__(self, window: int = 300):
        self._lock = threading.Lock()
        self.received = self.processed = self.dropped = self.rejected = self.failed = 0
        self._latency_ms = deque(maxlen=window)
        self._done_at = deque(maxlen=window)
        self.stage_ms: Dict[str, deque] = {}
        self.last_error = ""

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def record(self, latency_ms: float, stages_ms: Dict[str, float]) -> None:
        with self._lock:
            self.processed += 1
            self._latency_ms.append(latency_ms)
            self._done_at.append(time.monotonic())
            for stage, value in stages_ms.items():
                self.stage_ms.setdefault(stage, deque(maxlen=self._latency_ms.maxlen)).append(value)

    def snapshot(self) -> Dict[str, float]:
        with self._lock:
            latency = np.asarray(self._latency_ms, np.float64)
            done = list(self._done_at)
            stages = {k: float(np.median(v)) for k, v in self.stage_ms.items() if v}
            counters = {"received": self.received, "processed": self.processed, "dropped": self.dropped,
                        "rejected": self.rejected, "failed": self.failed}
        # Rate over the last few seconds, so a stalled pipeline reads 0, not its old rate.
        recent = [t for t in done if t >= time.monotonic() - self.fps_window_s]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        return {**counters,
                "latency_p50_ms": float(np.percentile(latency, 50)) if latency.size else float("nan"),
                "latency_p95_ms": float(np.percentile(latency, 95)) if latency.size else float("nan"),
                "fps": fps, **{f"{k}_p50_ms": v for k, v in stages.items()}}
