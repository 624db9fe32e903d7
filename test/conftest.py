import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fcn_segmentation.defaults import dds_profile_environment  # noqa: E402

# This process publishes camera frames to the node as a camera driver would: with the package's Fast
# DDS profile (set before any participant exists, which is when Fast DDS reads it).
os.environ.update(dds_profile_environment(os.environ))

SAMPLE_DIR = ROOT / "sample" / "camvid_sample"
BUNDLED_MODEL = ROOT / "models" / "fcn4s_effnetlite0_camvid.pt"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    """The bundled model, with the files the node makes on its first start (the ONNX export and the
    INT8 graph of the default configuration) made here once, as the demo does, so that node start-up
    timeouts in the tests do not include them."""
    assert BUNDLED_MODEL.is_file(), f"bundled model missing: {BUNDLED_MODEL}"
    from fcn_segmentation.backends import create_backend
    from fcn_segmentation.confidence import DEFAULT_STRIDE

    create_backend("auto", BUNDLED_MODEL, scores_stride=DEFAULT_STRIDE)  # the node's graph
    return BUNDLED_MODEL


def _tiny_model_file(path, variant: str):
    """An untrained ``variant`` (random backbone) for a 96x64 input, saved as a model file."""
    import torch

    from fcn_segmentation.classes import CAMVID_CLASSES, CAMVID_PALETTE
    from fcn_segmentation.model.model_file import ModelInfo, build_model, save_model_file

    torch.manual_seed(0)
    info = ModelInfo(list(CAMVID_CLASSES), [list(c) for c in CAMVID_PALETTE], 64, 96, (127.0,) * 3, (128.0,) * 3,
                     variant=variant)
    model = build_model(info)
    if variant == "fcn4s":
        with torch.no_grad():  # the finest skip is zero at init: give it a say in the outputs
            model.score_pool2.weight.normal_(0, 0.1)
    save_model_file(path, model, info)
    return path


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """An untrained FCN-8s (random backbone) saved as a model file, for format and export tests."""
    return _tiny_model_file(tmp_path_factory.mktemp("models") / "tiny.pt", "fcn8s")


@pytest.fixture(scope="session")
def tiny_fcn4s_model_file(tmp_path_factory):
    """An untrained FCN-4s whose stride-4 skip is not zero, for the graphs of a 4x final upsampling."""
    return _tiny_model_file(tmp_path_factory.mktemp("models") / "tiny_fcn4s.pt", "fcn4s")


@pytest.fixture(scope="module")
def dds_env():
    """A private DDS domain with localhost-only discovery for a test module (and the node processes
    it starts), so parallel runs and other ROS traffic do not mix. Skips the test without rclpy."""
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -r requirements.txt)")
    saved = dict(os.environ)
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(100, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    yield os.environ["ROS_DOMAIN_ID"]
    os.environ.clear()
    os.environ.update(saved)
