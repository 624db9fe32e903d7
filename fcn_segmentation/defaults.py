"""Locations of the bundled model, sample and DDS profile, in a source checkout or an installed package."""

from pathlib import Path
from typing import Dict, Mapping

MODEL_FILENAME = "fcn4s_effnetlite0_camvid.pt"
ACCURATE_MODEL_FILENAME = "fcn4s_effnetlite2_camvid.pt"
# Names that model_path and --model accept for the bundled files
BUNDLED_MODELS = {"default": MODEL_FILENAME, "accurate": ACCURATE_MODEL_FILENAME}
# Bundled files of earlier versions -> the name to use now (configs may still name the old file)
FORMER_BUNDLED_MODELS = {"fcn8s_effnetlite0_camvid.pt": "default", "fcn8s_effnetlite2_camvid.pt": "accurate"}
SAMPLE_DIRNAME = "camvid_sample"
CALIBRATION_DIRNAME = "calibration"
CALIBRATION_IMAGES = 32  # INT8 calibration set size: enough for val mIoU within 0.5 point of FP32 (README)
DDS_PROFILE_FILENAME = "fastdds_large_images.xml"
DDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
FAST_DDS_RMWS = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")  # "": the default RMW
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


def resolve_model_path(value) -> Path:
    """A model file's path, or the name of a bundled model (``default``, ``accurate``)."""
    name = str(value)
    return _bundled(f"models/{BUNDLED_MODELS[name]}") if name in BUNDLED_MODELS else Path(value)


def model_argument(text: str) -> str:
    """argparse type of --model: a model file, or a bundled model's name, as a path."""
    return str(resolve_model_path(text))


def missing_model_hint(path) -> str:
    """What to do about a model file that is not there, naming the file a bundled one became."""
    former = FORMER_BUNDLED_MODELS.get(Path(path).name)
    if former:
        return (f"{Path(path).name} was the bundled {former} model of an earlier version; it is now "
                f"models/{BUNDLED_MODELS[former]}: set model_path (--model) to '{former}'")
    return f"pass an existing .pt file, or 'default' / 'accurate' (the bundled default is models/{MODEL_FILENAME})"


def is_bundled_model(path) -> bool:
    resolved = Path(path).resolve()
    return any(resolved == _bundled(f"models/{name}").resolve() for name in BUNDLED_MODELS.values())


def default_calibration_dir() -> Path:
    """INT8 calibration images of the bundled model: 32 CamVid train frames spread over its sequences."""
    return _bundled(f"models/{CALIBRATION_DIRNAME}")


def default_sample_dir() -> Path:
    return _bundled(f"sample/{SAMPLE_DIRNAME}")


def default_sample_image() -> Path:
    """The first bundled CamVid val frame (480x360): the benchmarks' test image."""
    return sorted((default_sample_dir() / "val").glob("*.png"))[0]


def default_dds_profile_path() -> Path:
    return _bundled(f"config/{DDS_PROFILE_FILENAME}")


def dds_profile_environment(environ: Mapping[str, str]) -> Dict[str, str]:
    """Environment to add for a node process so that Fast DDS gets a shared-memory segment large
    enough for camera images (config/fastdds_large_images.xml); nothing where the environment
    names its own profile or another RMW."""
    if DDS_PROFILE_VARIABLE in environ or environ.get("RMW_IMPLEMENTATION", "") not in FAST_DDS_RMWS:
        return {}
    return {DDS_PROFILE_VARIABLE: str(default_dds_profile_path())}
