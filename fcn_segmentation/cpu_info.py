"""What this CPU can do for inference: its model name and the instruction sets that decide how
fast INT8 and BF16 run (read from /proc/cpuinfo on Linux)."""

import functools
import platform
from pathlib import Path
from typing import Dict

# feature name in reports -> /proc/cpuinfo flags, any of which provides it
FEATURE_FLAGS = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "vnni": ("avx512_vnni", "avx_vnni"),  # INT8 dot products (AVX-512 VNNI or AVX-VNNI)
    "bf16": ("avx512_bf16",),
    "amx": ("amx_bf16", "amx_int8", "amx_tile"),
}

LABELS = {"avx2": "AVX2", "avx512": "AVX-512", "vnni": "VNNI", "bf16": "BF16", "amx": "AMX"}


@functools.lru_cache(maxsize=1)
def cpu_features() -> Dict[str, object]:
    """``{"model": str, "avx2": bool, "avx512": bool, "vnni": bool, "bf16": bool, "amx": bool}``."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags":
            flags = set(value.split())
    features: Dict[str, object] = {"model": model}
    features.update({name: any(flag in flags for flag in wanted) for name, wanted in FEATURE_FLAGS.items()})
    return features


def describe_cpu(features: Dict[str, object] = None) -> str:
    """``AMD EPYC (AVX2; no AVX-512, VNNI, BF16, AMX)``: the model and what it has and lacks."""
    features = features or cpu_features()
    has = [LABELS[name] for name in FEATURE_FLAGS if features[name]]
    lacks = [LABELS[name] for name in FEATURE_FLAGS if not features[name]]
    parts = [", ".join(has) or "none of " + "/".join(lacks)]
    if has and lacks:
        parts.append("no " + ", ".join(lacks))
    return f"{features['model']} ({'; '.join(parts)})"
