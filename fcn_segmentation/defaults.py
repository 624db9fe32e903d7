"""Locations of the bundled model and sample, in a source checkout or an installed package."""

from pathlib import Path

MODEL_FILENAME = "fcn8s_effnetlite0_camvid.pt"
SAMPLE_DIRNAME = "camvid_sample"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """The package's share folder: the ament index where installed, else the source checkout."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory("fcn_segmentation"))
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH (standalone venv)
            pass
    except ImportError:
        pass
    return _SOURCE_ROOT


def _bundled(relative: str) -> Path:
    """A bundled file: from the source checkout, else the installed share folder."""
    for root in (_SOURCE_ROOT, share_dir()):
        if (root / relative).exists():
            return root / relative
    return _SOURCE_ROOT / relative


def default_model_path() -> Path:
    return _bundled(f"models/{MODEL_FILENAME}")


def default_sample_dir() -> Path:
    return _bundled(f"sample/{SAMPLE_DIRNAME}")
