import cv2
import numpy as np
import torch

from fcn_segmentation.data import IGNORE_INDEX, AugmentedSegmentationSet, median_frequency_weights, read_label, \
    split_pairs
from fcn_segmentation.postprocess import class_map, confidence_map, resize_nearest
from fcn_segmentation.preprocess import Preprocessor
from fcn_segmentation.visualize import color_mask, palette_lut


def test_preprocess_resizes_and_normalises():
    rgb = np.full((360, 480, 3), (255, 127, 0), np.uint8)
    out = Preprocessor(352, 480, (127, 127, 127), (128, 128, 128))(rgb)
    assert out.shape == (1, 3, 352, 480) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 100, 100], [1.0, 0.0, -127 / 128], atol=1e-6)


def test_preprocess_one_scale_and_per_channel_scales_normalise_alike():
    # the bundled models' single scale takes OpenCV's one-pass path; other models numpy's
    rgb = np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    mean, std = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)
    for size, image in (((224, 320), rgb), ((360, 480), rgb[:, ::-1])):  # resized, and a strided view as it is
        resized = image if image.shape[:2] == size else cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
        for scales in ((64.0,) * 3, std):
            expected = ((resized.astype(np.float32) - np.float32(mean)) / np.float32(scales)).transpose(2, 0, 1)
            got = Preprocessor(*size, mean, scales)(image)
            assert got.shape == (1, 3, *size) and got.dtype == np.float32
            np.testing.assert_allclose(got[0], expected, atol=1e-5)


def test_confidence_is_max_softmax_probability():
    scores = np.random.default_rng(0).normal(size=(1, 5, 4, 6)).astype(np.float32)
    expected = torch.softmax(torch.from_numpy(scores), 1).max(1).values[0].numpy() * 255
    assert np.abs(confidence_map(scores).astype(float) - expected).max() <= 1.0
    np.testing.assert_array_equal(class_map(scores), scores[0].argmax(0))


def test_nearest_resize_keeps_class_ids():
    mask = np.array([[0, 3], [7, 10]], np.uint8)
    big = resize_nearest(mask, (360, 480))
    assert big.shape == (360, 480) and set(np.unique(big)) == {0, 3, 7, 10}


def test_nearest_resize_takes_the_source_pixel_under_each_output_pixel_centre():
    # Output pixel x has its centre at (x + 0.5) * src / dst in the source; a resize that rounds
    # towards the top-left corner instead shifts the whole mask by up to half a source pixel.
    src_h, src_w, dst_h, dst_w = 224, 320, 360, 480
    rows = np.arange(src_h, dtype=np.uint8)[:, None].repeat(src_w, 1)
    got = resize_nearest(rows, (dst_h, dst_w))[:, 0].astype(int)
    centre = (np.arange(dst_h) + 0.5) * src_h / dst_h
    on_a_border = np.isclose(centre, np.round(centre))  # either neighbour is right there
    np.testing.assert_array_equal(got[~on_a_border], np.floor(centre[~on_a_border]).astype(int))


def test_palette_lookup():
    lut = palette_lut([(1, 2, 3), (4, 5, 6)])
    np.testing.assert_array_equal(color_mask(np.array([[1, 0]], np.uint8), lut), [[[4, 5, 6], [1, 2, 3]]])


def test_void_label_is_ignored(sample_dir):
    label = read_label(split_pairs(sample_dir, "val")[0][1], 11)
    assert label.max() <= 10 or IGNORE_INDEX in label
    assert not ((label > 10) & (label != IGNORE_INDEX)).any()


def test_median_frequency_weights_favour_rare_classes():
    common = np.zeros((10, 10), np.uint8)
    common[:1] = 1  # class 1 covers 10% of the only image
    weights = median_frequency_weights([common], 3)
    assert weights[1] > weights[0] > 0 and weights[2] == 0


def test_augmented_samples_have_crop_size_and_valid_labels(sample_dir):
    data = AugmentedSegmentationSet(split_pairs(sample_dir, "val"), 11, crop_hw=(128, 160), base_hw=(352, 480),
                                    mean=(127,) * 3, std=(128,) * 3, scale_range=(0.3, 1.5), seed=1)
    for index in range(len(data)):
        image, label = data[index]
        assert image.shape == (3, 128, 160) and label.shape == (128, 160)
        assert set(np.unique(label)) <= set(range(11)) | {IGNORE_INDEX}


def test_segmenter_gives_image_sized_classes_and_confidence_on_demand(tiny_model_file):
    from fcn_segmentation.backends import create_backend
    from fcn_segmentation.pipeline import Segmenter

    backend, _ = create_backend("torch", tiny_model_file, device="cpu")
    segmenter = Segmenter(backend)
    rgb = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)  # not the network's size
    result = segmenter(rgb)
    assert result.classes.shape == (90, 130) and result.classes.dtype == np.uint8
    assert result.network_classes.shape == (64, 96)
    np.testing.assert_array_equal(result.network_classes, class_map(result.scores))
    confidence = result.confidence()
    assert confidence.shape == (90, 130) and confidence.dtype == np.uint8
    # 11 classes: the winning probability is at least 1/11
    assert confidence.min() >= 255 // 11
    np.testing.assert_array_equal(confidence, resize_nearest(confidence_map(result.scores), (90, 130)))
    assert set(result.timings_ms) == {"preprocess", "inference", "postprocess"}


def test_a_segmenter_with_a_scores_stride_gives_sampled_scores_unless_asked_for_all(tiny_model_file):
    from fcn_segmentation.backends import create_backend
    from fcn_segmentation.pipeline import Segmenter

    backend, _ = create_backend("onnxruntime", tiny_model_file, device="cpu")
    rgb = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    full = Segmenter(backend)(rgb)
    sampled = Segmenter(backend, scores_stride=4)(rgb)
    assert sampled.scores_stride == 4 and full.scores_stride == 1
    np.testing.assert_array_equal(sampled.scores, full.scores[:, :, ::4, ::4])
    np.testing.assert_array_equal(sampled.classes, full.classes)
    everything = Segmenter(backend, scores_stride=4)(rgb, all_scores=True)
    assert everything.scores_stride == 1 and everything.scores.shape == full.scores.shape
    assert Segmenter(backend, full_resolution_logits=True, scores_stride=4).scores_stride == 1


def model_file_with_infinite_scores(tiny_model_file, path):
    """Finite-looking metadata over weights whose last layer gives +inf and -inf scores (as an
    image_std of 0 would): a model that must not publish masks of one class."""
    import torch

    from fcn_segmentation.model.model_file import load_model_file, save_model_file

    model, info = load_model_file(tiny_model_file)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("score_fr"):
                parameter.mul_(1e38).mul_(1e38)
    save_model_file(path, model, info)
    return path


def test_non_finite_scores_are_an_error_not_a_mask(tiny_model_file, tmp_path):
    import pytest

    from fcn_segmentation.backends import create_backend
    from fcn_segmentation.pipeline import NonFiniteScoresError, Segmenter

    path = model_file_with_infinite_scores(tiny_model_file, tmp_path / "inf.pt")
    segmenter = Segmenter(create_backend("torch", path, device="cpu")[0])
    rgb = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    with pytest.raises(NonFiniteScoresError, match=r"the network gave \d+ non-finite scores"):
        segmenter(rgb)


def test_full_resolution_logits_of_a_large_frame_are_resized_in_bounded_bands():
    from fcn_segmentation.postprocess import full_resolution_classes, resize_scores

    scores = np.random.default_rng(1).standard_normal((1, 11, 64, 96)).astype(np.float32)
    for size in ((90, 130), (360, 480), (1000, 1333)):
        expected = class_map(resize_scores(scores, size))
        banded = full_resolution_classes(scores, size, max_bytes=11 * size[1] * 4 * 7)  # 7 rows a band
        assert (banded != expected).mean() < 1e-4, size  # float rounding may flip an exact tie


def test_segmenter_output_size_and_bounded_full_resolution_memory(tiny_model_file, monkeypatch):
    import tracemalloc

    from fcn_segmentation import pipeline
    from fcn_segmentation.backends import create_backend

    backend = create_backend("torch", tiny_model_file, device="cpu")[0]
    rgb = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)  # decoded at 1/8 of 768 x 512
    for full_resolution in (False, True):
        result = pipeline.Segmenter(backend, full_resolution_logits=full_resolution)(rgb, output_hw=(512, 768))
        assert result.classes.shape == (512, 768)
    monkeypatch.setattr(pipeline, "FULL_RESOLUTION_SCORES_MAX_BYTES", 4 * 1024 * 1024)
    segmenter = pipeline.Segmenter(backend, full_resolution_logits=True)
    tracemalloc.start()
    result = segmenter(rgb, output_hw=(2048, 2048))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.classes.shape == (2048, 2048)
    # Whole, the scores would be 11 x 2048 x 2048 x 4 = 185 MB (and a copy); banded: the 4 MB budget
    # and its temporaries plus the 4 MB mask.
    assert peak < 40 * 1024 * 1024, peak
