import math

import numpy as np
import pytest

from fcn_segmentation.drivable import (FREE, OCCUPIED, UNKNOWN, CameraMount, GridSpec, GroundGridProjector,
                                       MaskCleaning, class_ids, drivable_mask, grid_image, project_to_image,
                                       scaled_intrinsics)

K = np.array([[500.0, 0, 240], [0, 500.0, 180], [0, 0, 1]])


def test_projection_matches_hand_computed_points():
    mount = CameraMount(height=1.5)
    points = np.array([[10.0, 0, 0], [10.0, 2.0, 0], [5.0, -1.0, 0], [-3.0, 0, 0]])
    uv, in_front = project_to_image(points, K, mount)
    # optical = (-y, height, x): u = 240 + 500 * (-y) / x, v = 180 + 500 * 1.5 / x
    np.testing.assert_allclose(uv[:3], [[240, 255], [140, 255], [340, 330]], atol=1e-9)
    assert in_front.tolist() == [True, True, True, False]


def test_pitch_moves_the_horizon_down_and_yaw_moves_points_right():
    pitch = math.atan(0.1)
    uv, _ = project_to_image(np.array([[1e6, 0, 0]]), K, CameraMount(height=1.5, pitch=pitch))
    assert uv[0, 1] == pytest.approx(180 - 500 * 0.1, abs=1e-3)  # a far point sits 50 px above centre
    uv, _ = project_to_image(np.array([[10.0, 0, 0]]), K, CameraMount(height=1.5, yaw=math.atan(0.2)))
    assert uv[0, 0] == pytest.approx(240 + 500 * 0.2, abs=1e-6)  # camera looks left, straight ahead is right


def test_road_trapezoid_gives_free_cells_where_the_road_is():
    """A synthetic image whose drivable pixels are exactly the ground within |y| <= 2 m, x in 4..20 m."""
    mount, grid = CameraMount(height=1.5), GridSpec(resolution=0.5, range_ahead=30.0, width=16.0)
    v, u = np.mgrid[0:360, 0:480]
    with np.errstate(divide="ignore"):
        x = np.where(v > 180, 500 * 1.5 / (v + 0.5 - 180), np.inf)
    y = -(u + 0.5 - 240) * x / 500
    mask = (((np.abs(y) <= 2.0) & (x >= 4) & (x <= 20)) * 255).astype(np.uint8)
    values = GroundGridProjector(K, (360, 480), mount, grid).grid_values(mask)
    rows, cols = grid.cells
    xs = (np.arange(cols) + 0.5) * grid.resolution
    ys = -grid.width / 2 + (np.arange(rows) + 0.5) * grid.resolution
    cell = lambda x_m, y_m: values[np.argmin(abs(ys - y_m)), np.argmin(abs(xs - x_m))]  # noqa: E731
    assert cell(10.25, 0.25) == FREE and cell(18.25, -1.25) == FREE
    assert cell(10.25, 3.25) == OCCUPIED and cell(25.25, 0.25) == OCCUPIED
    assert cell(10.25, 5.25) == UNKNOWN, "u = 240 - 500 * 5.25 / 10.25 < 0: outside the field of view"
    # Cells beside the car at x < 2.7 m are below the image's bottom edge: never seen.
    assert cell(1.25, 0.25) == UNKNOWN
    assert cell(0.25, 7.75) == UNKNOWN


def test_projector_rejects_a_mask_of_another_size():
    projector = GroundGridProjector(K, (360, 480), CameraMount(), GridSpec(resolution=1.0))
    with pytest.raises(ValueError, match="projector expects 480x360"):
        projector.grid_values(np.zeros((100, 100), np.uint8))


def test_cleaning_closes_holes_removes_specks_and_keeps_the_ego_region():
    classes = np.zeros((100, 100), np.uint8)
    classes[60:, 20:80] = 3            # road in front of the car
    classes[80, 50] = 0                # a one-pixel hole in it
    classes[10:14, 10:14] = 3          # a speck of road far away
    classes[40:55, 85:99] = 3          # a big road patch not connected to the ego lane
    raw = drivable_mask(classes, [3], None)
    assert raw[80, 50] == 0 and raw[12, 12] == 255 and raw[45, 90] == 255
    cleaned = drivable_mask(classes, [3], MaskCleaning(close_kernel_px=5, min_region_px=50, connect_to_ego=True))
    assert cleaned[80, 50] == 255, "hole closed"
    assert cleaned[12, 12] == 0, "speck removed"
    assert cleaned[45, 90] == 0, "region not connected to the ego lane removed"
    assert cleaned[90, 50] == 255
    unconnected = drivable_mask(classes, [3], MaskCleaning(close_kernel_px=0, min_region_px=50, connect_to_ego=False))
    assert unconnected[45, 90] == 255 and unconnected[12, 12] == 0


def test_class_names_are_checked():
    assert class_ids(["Road", "Pavement"], ["Sky", "Road", "Pavement"]) == [1, 2]
    with pytest.raises(ValueError, match="unknown drivable classes \\['Rood'\\]; the model's classes are: Sky, Road"):
        class_ids(["Rood"], ["Sky", "Road"])


def test_intrinsics_follow_a_resized_image():
    scaled = scaled_intrinsics(K, (360, 480), (720, 960))
    np.testing.assert_allclose(scaled, [[1000, 0, 480], [0, 1000, 360], [0, 0, 1]])


def test_grid_picture_puts_forward_up_and_left_left():
    values = np.full((4, 6), OCCUPIED, np.int8)  # rows: y from right to left, columns: x forward
    values[3, 5] = FREE                           # far left corner
    picture = grid_image(values, pixels_per_cell=1)
    assert picture.shape == (6, 4, 3)
    assert tuple(picture[0, 0]) == (40, 200, 60)
