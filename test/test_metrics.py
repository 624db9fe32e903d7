import numpy as np
import pytest

from fcn_segmentation.metrics import ConfusionMatrix


def test_confusion_matrix_against_hand_counts():
    truth = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    cm = ConfusionMatrix(3)
    cm.update(truth, pred)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    # class 0: tp 1, fp 1, fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 0 -> 0
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 0.0])
    assert cm.mean_iou() == pytest.approx((1 / 3 + 2 / 3) / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)


def test_absent_class_is_left_out_of_the_mean():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    assert np.isnan(cm.iou()[2])
    assert cm.mean_iou() == 1.0
    assert cm.summary(["a", "b", "c"])["per_class_iou"]["c"] is None


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(2).update(np.zeros((2, 2), int), np.zeros((2, 3), int))
