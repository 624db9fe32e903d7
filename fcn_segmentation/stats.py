"""Frame counters and a latency window, shared by the node's worker and its diagnostics timer."""

import threading
import time
from collections import OrderedDict, deque
from typing import Dict, Hashable, Optional

import numpy as np


class PipelineStats:
    fps_window_s = 5.0

    def __init__(self, window: int = 300):
        self._lock = threading.Lock()
        self.received = self.processed = self.dropped = self.rejected = self.failed = self.missed = 0
        self.grid_failed = 0
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
                        "rejected": self.rejected, "failed": self.failed, "missed": self.missed,
                        "grid_failed": self.grid_failed}
        # Rate over the last few seconds, so a stalled pipeline reads 0, not its old rate.
        recent = [t for t in done if t >= time.monotonic() - self.fps_window_s]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        return {**counters,
                "latency_p50_ms": float(np.percentile(latency, 50)) if latency.size else float("nan"),
                "latency_p95_ms": float(np.percentile(latency, 95)) if latency.size else float("nan"),
                "fps": fps, **{f"{k}_p50_ms": v for k, v in stages.items()}}


class SequenceGaps:
    """Frames a publisher sent that never reached us, from the gaps in its publication sequence
    numbers: lost by a best-effort transport, or replaced in a keep-last queue before we took them.
    Counted from the first frame seen from each publisher; a publisher that restarts (its numbers
    go back) starts over."""

    def __init__(self, max_publishers: int = 64):
        self._last: "OrderedDict[Hashable, int]" = OrderedDict()
        self._max_publishers = max_publishers

    def missed(self, publisher: Hashable, sequence_number: Optional[int]) -> int:
        if sequence_number is None:  # the RMW does not report sequence numbers
            return 0
        last = self._last.pop(publisher, None)
        self._last[publisher] = sequence_number
        if len(self._last) > self._max_publishers:
            self._last.popitem(last=False)  # the publisher heard from longest ago
        return sequence_number - last - 1 if last is not None and sequence_number > last else 0
