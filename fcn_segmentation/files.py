"""Files that appear whole or not at all, even when several processes write the same one."""

import os
import uuid
from pathlib import Path


def private_temp_path(path: Path, suffix: str = "") -> Path:
    """A temporary name beside ``path`` that no other process or call uses: write there, then
    ``os.replace`` it onto ``path`` (an atomic rename on one file system)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
