"""Files that appear whole or not at all, even when several processes write the same one."""

import os
import stat
import uuid
from pathlib import Path
from typing import Optional


def private_temp_path(path: Path, suffix: str = "") -> Path:
    """A temporary name beside ``path`` that no other process or call uses: write there, then
    ``os.replace`` it onto ``path`` (an atomic rename on one file system)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def regular_file_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be read as a file ("does not exist", "is not a regular file (a device)",
    ...), or None. A device such as /dev/zero would otherwise be read for ever."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:  # permission denied on a folder on the way, a name too long, ...
        return f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    what = "a folder" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
        else "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file"
    return f"is not a regular file ({what})"
