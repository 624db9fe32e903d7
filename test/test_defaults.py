"""Bundled files and the DDS environment given to node processes."""

import pytest

from fcn_segmentation.defaults import DDS_PROFILE_VARIABLE, default_dds_profile_path, default_model_path, \
    default_sample_dir, dds_profile_environment


def test_bundled_files_exist():
    assert default_model_path().is_file()
    assert (default_sample_dir() / "val").is_dir()
    assert default_dds_profile_path().is_file()


@pytest.mark.parametrize("rmw", [None, "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"])
def test_fast_dds_nodes_get_the_large_image_profile(rmw):
    environ = {} if rmw is None else {"RMW_IMPLEMENTATION": rmw}
    assert dds_profile_environment(environ) == {DDS_PROFILE_VARIABLE: str(default_dds_profile_path())}


@pytest.mark.parametrize("environ", [{DDS_PROFILE_VARIABLE: "/etc/dds/car.xml"}, {DDS_PROFILE_VARIABLE: ""},
                                     {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}])
def test_a_profile_or_rmw_chosen_by_the_environment_is_kept(environ):
    assert dds_profile_environment(environ) == {}


def test_model_path_takes_a_bundled_models_name_or_a_path(tmp_path):
    from fcn_segmentation.defaults import (ACCURATE_MODEL_FILENAME, default_model_path, is_bundled_model,
                                           model_argument, resolve_model_path)

    assert resolve_model_path("default") == default_model_path()
    assert resolve_model_path("accurate").name == ACCURATE_MODEL_FILENAME
    assert resolve_model_path("accurate").parent == default_model_path().parent
    assert resolve_model_path(tmp_path / "mine.pt") == tmp_path / "mine.pt"
    assert model_argument("default") == str(default_model_path())
    assert is_bundled_model(default_model_path()) and not is_bundled_model(tmp_path / "mine.pt")


def test_the_accurate_bundled_model_is_lite2_fcn4s_at_640x480_and_segments_the_sample_frames(sample_dir):
    from fcn_segmentation.backends import create_backend
    from fcn_segmentation.defaults import resolve_model_path
    from fcn_segmentation.evaluate import evaluate_split
    from fcn_segmentation.pipeline import Segmenter

    assert resolve_model_path("accurate").is_file()
    backend, _ = create_backend("torch", "accurate", device="cpu")  # the accurate setting: its own input size
    info = backend.info
    assert (info.backbone, info.variant) == ("efficientnet_lite2", "fcn4s")
    assert (info.input_width, info.input_height) == (640, 480)
    # the sample frames are CamVid val frames, which it was trained on: a check of the file, not of accuracy
    summary = evaluate_split(Segmenter(backend), sample_dir, "val", progress=False)
    assert summary["miou"] > 0.6, summary["miou"]
