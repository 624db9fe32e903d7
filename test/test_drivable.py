import math

import numpy as np
import pytest

from fcn_segmentation.drivable import (FREE, OCCUPIED, UNKNOWN, CameraMount, GridSpec, GroundGridProjector,
                                       MaskCleaning, camera_info_error, camera_info_key, class_ids, drivable_mask,
                                       field_of_view_error, grid_image, project_to_image, scaled_intrinsics)

K = np.array([[500.0, 0, 240], [0, 500.0, 180], [0, 0, 1]])
K_ROS = [500.0, 0, 240, 0, 500.0, 180, 0, 0, 1]  # the same, as camera_info's row-major list


def cell_centres(grid: GridSpec):
    """Vehicle-frame (x, y) of every cell centre, in the projector's cell order (row = y, column = x)."""
    rows, cols = grid.cells
    row, col = np.divmod(np.arange(rows * cols), cols)
    return grid.origin_xy[0] + (col + 0.5) * grid.resolution, grid.origin_xy[1] + (row + 0.5) * grid.resolution


def test_projection_matches_hand_computed_points():
    mount = CameraMount(height=1.5)
    points = np.array([[10.0, 0, 0], [10.0, 2.0, 0], [5.0, -1.0, 0], [-3.0, 0, 0]])
    uv, in_front = project_to_image(points, K, mount)
    # optical = (-y, height, x): u = 240 + 500 * (-y) / x, v = 180 + 500 * 1.5 / x
    np.testing.assert_allclose(uv[:3], [[240, 255], [140, 255], [340, 330]], atol=1e-9)
    assert in_front.tolist() == [True, True, True, False]
    assert np.isnan(uv[3]).all(), "a point behind the camera has no pixel"


def test_pitch_moves_the_horizon_down_and_yaw_moves_points_right():
    pitch = math.atan(0.1)
    uv, _ = project_to_image(np.array([[1e6, 0, 0]]), K, CameraMount(height=1.5, pitch=pitch))
    assert uv[0, 1] == pytest.approx(180 - 500 * 0.1, abs=1e-3)  # a far point sits 50 px above centre
    uv, _ = project_to_image(np.array([[10.0, 0, 0]]), K, CameraMount(height=1.5, yaw=math.atan(0.2)))
    assert uv[0, 0] == pytest.approx(240 + 500 * 0.2, abs=1e-6)  # camera looks left, straight ahead is right


def test_an_offset_camera_sees_the_ground_shifted_by_its_offset():
    # Camera 1 m ahead and 0.5 m left: (11, 2.5) is where (10, 2) is for a camera at the origin, i.e.
    # optical (-2, 1.5, 10): u = 240 - 500 * 2 / 10 = 140, v = 180 + 500 * 1.5 / 10 = 255.
    offset = CameraMount(height=1.5, x=1.0, y=0.5)
    uv, _ = project_to_image(np.array([[11.0, 2.5, 0], [7.0, 0.5, 0]]), K, offset)
    np.testing.assert_allclose(uv, [[140, 255], [240, 180 + 500 * 1.5 / 6]], atol=1e-9)
    at_origin, _ = project_to_image(np.array([[10.0, 2.0, 0]]), K, CameraMount(height=1.5))
    np.testing.assert_allclose(uv[0], at_origin[0], atol=1e-9)


def test_positive_roll_puts_the_right_side_down():
    """REP 103: roll is about the forward axis, positive = left side up, right side down. The camera's
    right edge then looks lower, so the ground on the right rises in the image (it turns anticlockwise)."""
    roll = math.asin(0.6)  # cos 0.8
    uv, _ = project_to_image(np.array([[10.0, 0, 0], [10.0, -2.0, 0], [10.0, 2.0, 0]]), K,
                             CameraMount(height=1.5, roll=roll))
    # Camera body coordinates of p - camera = Rx(roll)^T (x, y, -1.5) = (x, 0.8 y - 0.9, -0.6 y - 1.2);
    # optical = (-body y, -body z, body x).
    # (10, 0):  optical (0.9, 1.2, 10)  -> (240 + 45, 180 + 60)
    # (10, -2): optical (2.5, 0, 10)    -> (240 + 125, 180): the right side rises to the horizon
    # (10, 2):  optical (-0.7, 2.4, 10) -> (240 - 35, 180 + 120)
    np.testing.assert_allclose(uv, [[285, 240], [365, 180], [205, 300]], atol=1e-9)


def test_a_ground_point_on_the_optical_axis_lands_on_the_principal_point():
    # Pitch with tan 0.15 meets the ground 1.5 / 0.15 = 10 m away (horizontally) along the yaw direction
    # (cos 0.8, sin 0.6), from the camera at (1, 0.5): (1 + 8, 0.5 + 6). Roll turns about that axis.
    mount = CameraMount(height=1.5, pitch=math.atan(0.15), yaw=math.atan2(3, 4), roll=0.3, x=1.0, y=0.5)
    uv, in_front = project_to_image(np.array([[9.0, 6.5, 0]]), K, mount)
    np.testing.assert_allclose(uv[0], [240, 180], atol=1e-9)
    assert in_front[0]
    # Without roll, the horizon in the yaw direction is f * tan(pitch) = 75 px above the principal point.
    level = CameraMount(height=1.5, pitch=math.atan(0.15), yaw=math.atan2(3, 4), x=1.0, y=0.5)
    uv, _ = project_to_image(np.array([[1 + 0.8e9, 0.5 + 0.6e9, 0]]), K, level)
    np.testing.assert_allclose(uv[0], [240, 105], atol=1e-6)


def test_plumb_bob_distortion_moves_a_point_as_the_formula_says():
    k1, k2, p1, p2, k3 = -0.3, 0.1, 0.01, -0.02, 0.05
    # (10, 2, 0) from 1.5 m: normalised x = -2 / 10, y = 1.5 / 10; r^2 = 0.0625.
    x, y = -0.2, 0.15
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    x_distorted = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    y_distorted = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    expected = [240 + 500 * x_distorted, 180 + 500 * y_distorted]
    np.testing.assert_allclose(expected, [140.1097, 254.7615], atol=1e-4)  # the same, worked out on paper
    uv, _ = project_to_image(np.array([[10.0, 2.0, 0]]), K, CameraMount(height=1.5),
                             np.array([k1, k2, p1, p2, k3]))
    np.testing.assert_allclose(uv[0], expected, atol=1e-9)


def test_a_cell_takes_the_pixel_whose_centre_is_nearest():
    """ROS and OpenCV put pixel centres on integer coordinates: pixel 0 spans u in [-0.5, 0.5)."""
    grid = GridSpec(resolution=0.5, range_ahead=30.0, width=16.0)
    rows, cols = grid.cells
    cell_index = lambda x_m, y_m: int((y_m + 8 - 0.25) / 0.5) * cols + int((x_m - 0.25) / 0.5)  # noqa: E731
    projector = GroundGridProjector(K, (360, 480), CameraMount(height=1.5), grid)
    pixel_of = dict(zip(projector.seen_cells.tolist(), projector.seen_pixels.tolist()))
    # (10.25, 0.25): u = 240 - 500 * 0.25 / 10.25 = 227.80 -> 228, v = 180 + 750 / 10.25 = 253.17 -> 253.
    assert pixel_of[cell_index(10.25, 0.25)] == 253 * 480 + 228
    # A 24 px wide image with cx = 11.9: (10.25, 0.25) is at u = 11.9 - 12.195 = -0.295, inside pixel 0;
    # (10.75, -0.25) is at u = 11.9 + 500 * 0.25 / 10.75 = 23.53, past the right edge (23.5).
    edge_K = np.array([[500.0, 0, 11.9], [0, 500.0, 180], [0, 0, 1]])
    narrow = GroundGridProjector(edge_K, (360, 24), CameraMount(height=1.5), grid)
    pixel_of = dict(zip(narrow.seen_cells.tolist(), narrow.seen_pixels.tolist()))
    assert pixel_of[cell_index(10.25, 0.25)] == 253 * 24 + 0
    assert cell_index(10.75, -0.25) not in pixel_of


def test_road_trapezoid_gives_free_cells_where_the_road_is():
    """A synthetic image whose drivable pixels are exactly the ground within |y| <= 2 m, x in 4..20 m."""
    mount, grid = CameraMount(height=1.5), GridSpec(resolution=0.5, range_ahead=30.0, width=16.0)
    v, u = np.mgrid[0:360, 0:480]  # pixel centres on integer coordinates, as in ROS and OpenCV
    with np.errstate(divide="ignore", invalid="ignore"):  # rows at and above the horizon see no ground
        x = np.where(v > 180, 500 * 1.5 / (v - 180), np.inf)
        y = -(u - 240) * x / 500
    mask = (((np.abs(y) <= 2.0) & (x >= 4) & (x <= 20)) * 255).astype(np.uint8)
    values = GroundGridProjector(K, (360, 480), mount, grid).grid_values(mask)
    rows, cols = grid.cells
    xs = (np.arange(cols) + 0.5) * grid.resolution
    ys = -grid.width / 2 + (np.arange(rows) + 0.5) * grid.resolution
    cell = lambda x_m, y_m: values[np.argmin(abs(ys - y_m)), np.argmin(abs(xs - x_m))]  # noqa: E731
    assert cell(10.25, 0.25) == FREE and cell(18.25, -1.25) == FREE
    assert cell(10.25, 3.25) == OCCUPIED and cell(25.25, 0.25) == OCCUPIED
    assert cell(10.25, 5.25) == UNKNOWN, "u = 240 - 500 * 5.25 / 10.25 < 0: outside the field of view"
    # The bottom row's lower edge, v = 359.5, sees x = 750 / 179.5 = 4.18 m: nearer cells are never seen.
    assert cell(4.25, 0.25) == FREE, "v = 180 + 750 / 4.25 = 356.5: the row 356"
    assert cell(3.75, 0.25) == UNKNOWN, "v = 180 + 750 / 3.75 = 380: below the image"
    assert cell(1.25, 0.25) == UNKNOWN
    assert cell(0.25, 7.75) == UNKNOWN


def test_barrel_distortion_sees_no_cell_outside_the_field_of_view():
    """k1 < 0: r_d = r (1 + k1 r^2) grows only up to r^2 = 1 / (3 |k1|) and then falls back, so the lens
    polynomial sends rays far outside the view back into the image; those cells must stay unknown."""
    k1 = -0.3
    grid = GridSpec()
    projector = GroundGridProjector(K, (360, 480), CameraMount(height=1.5), grid, np.array([k1, 0, 0, 0, 0]))
    x, y = cell_centres(grid)
    nx, ny = -y / x, 1.5 / x  # the camera at the origin looking ahead: optical (-y, 1.5, x)
    r2 = nx ** 2 + ny ** 2
    u = np.floor(240 + 500 * nx * (1 + k1 * r2) + 0.5)
    v = np.floor(180 + 500 * ny * (1 + k1 * r2) + 0.5)
    lands_in_image = (u >= 0) & (u < 480) & (v >= 0) & (v < 360)
    before_the_fold = r2 < 1 / (3 * abs(k1))
    assert np.count_nonzero(lands_in_image & ~before_the_fold) > 1000, "the case this test is about"
    assert set(projector.seen_cells.tolist()) == set(np.flatnonzero(lands_in_image & before_the_fold).tolist())
    seen = projector.seen_cells
    np.testing.assert_array_equal(projector.seen_pixels, (v[seen] * 480 + u[seen]).astype(np.int64))


def test_a_camera_that_sees_no_cell_builds_an_all_unknown_grid():
    for mount in (CameraMount(yaw=math.pi), CameraMount(pitch=-math.pi / 2)):  # facing back; facing up
        for distortion in (None, np.array([-0.3, 0.1, 0, 0, 0])):
            projector = GroundGridProjector(K, (360, 480), mount, GridSpec(resolution=1.0), distortion)
            assert len(projector.seen_cells) == 0
            assert (projector.grid_values(np.full((360, 480), 255, np.uint8)) == UNKNOWN).all()


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
    # pixel centres on integers: pixel 0 of the small image covers pixels 0 and 1 of the large one,
    # so its centre (0) is at 0.5 there
    np.testing.assert_allclose(scaled, [[1000, 0, 480.5], [0, 1000, 360.5], [0, 0, 1]])
    np.testing.assert_allclose(scaled_intrinsics(scaled, (720, 960), (360, 480)), K)
    centre = np.array([[500.0, 0, 479.5], [0, 500.0, 359.5], [0, 0, 1]])  # the centre of a 960x720 image
    np.testing.assert_allclose(scaled_intrinsics(centre, (720, 960), (360, 480))[:2, 2], [239.5, 179.5])


def test_grid_picture_puts_forward_up_and_left_left():
    values = np.full((4, 6), OCCUPIED, np.int8)  # rows: y from right to left, columns: x forward
    values[3, 5] = FREE                           # far left corner
    picture = grid_image(values, pixels_per_cell=1)
    assert picture.shape == (6, 4, 3)
    assert tuple(picture[0, 0]) == (40, 200, 60)


@pytest.mark.parametrize("model, d", [
    ("plumb_bob", [-0.3, 0.1, 0.001, -0.002, 0.01]),
    ("plumb_bob", [-0.3, 0.1, 0.001, -0.002]),
    ("plumb_bob", []),
    ("plumb_bob", [0.0] * 5),
    ("rational_polynomial", [-0.3, 0.1, 0.001, -0.002, 0.01, 0.02, 0.01, 0.005]),
    ("rational_polynomial", [-0.3, 0.1, 0.001, -0.002, 0.01, 0.02, 0.01, 0.005, 1e-3, -1e-3, 1e-3, -1e-3]),
    ("rational_polynomial", [-0.3, 0.1, 0.001, -0.002, 0.01, 0.02, 0.01, 0.005, 1e-3, -1e-3, 1e-3, -1e-3,
                             0.01, -0.01]),
    ("", []),
    ("", [0.0] * 5),
])
def test_a_camera_info_that_passes_the_check_builds_a_projector(model, d):
    assert camera_info_error(K_ROS, d, model, 480, 360) is None
    distortion = np.asarray(d, np.float64) if model else None  # as the node passes it
    projector = GroundGridProjector(np.reshape(K_ROS, (3, 3)), (360, 480), CameraMount(pitch=0.1),
                                    GridSpec(resolution=0.5), distortion)
    assert len(projector.seen_cells) > 1000


@pytest.mark.parametrize("k, d, model, width, height, problem", [
    ([0.0] * 9, [0.0] * 5, "plumb_bob", 640, 480, "K has no positive focal length (fx 0, fy 0)"),
    ([500.0, 0, 240, 0, -500.0, 180, 0, 0, 1], [], "", 480, 360, "fy -500"),
    (K_ROS[:6], [], "", 480, 360, "K has 6 values"),
    ([500.0, 0, math.nan, 0, 500.0, 180, 0, 0, 1], [], "", 480, 360, "K has non-finite values"),
    ([500.0, 0, 240, 0, 500.0, 180, 0, 0, 0], [], "", 480, 360, "K's last row is 0 0 0"),
    (K_ROS, [], "", 0, 0, "the image size is 0x0"),
    (K_ROS, [0.1, 0.01, 0.0, 0.0], "equidistant", 480, 360, "distortion model 'equidistant' is not supported"),
    (K_ROS, [], "equidistant", 480, 360, "distortion model 'equidistant' is not supported"),
    (K_ROS, [-0.3, 0.1, 0.0], "plumb_bob", 480, 360,
     "plumb_bob takes 5 coefficients (OpenCV also 4, 8, 12 or 14); D has 3"),
    (K_ROS, [-0.3, 0.1, 0.0, 0.0, 0.0], "rational_polynomial", 480, 360,
     "rational_polynomial takes 8 coefficients (OpenCV also 12 or 14); D has 5"),
    (K_ROS, [-0.3, math.inf, 0.0, 0.0, 0.0], "plumb_bob", 480, 360, "D has non-finite values"),
    (K_ROS, [-0.3, 0.1, 0.0, 0.0, 0.0], "", 480, 360, "D has 5 coefficients but distortion_model is empty"),
    (["a"] * 9, [], "", 480, 360, "K and D must be lists of numbers"),
    # issue 17 item 10: these projected every cell onto one pixel (an all-occupied grid), or cost a copy of D
    ([1e-300, 0, 240, 0, 1e-300, 180, 0, 0, 1], [], "", 480, 360, "more than a pinhole camera sees (179)"),
    ([1.0, 0, 240, 0, 1.0, 180, 0, 0, 1], [], "", 480, 360, "field of view of 179.5 x 179.4 degrees"),
    (K_ROS, [], "", 4294967295, 4294967295, "the image size is 4294967295x4294967295: more than 65535"),
    (K_ROS, [0.0] * 4_000_000, "", 480, 360, "D has 4000000 coefficients; no distortion model takes more than 14"),
])
def test_camera_info_problems_are_named(k, d, model, width, height, problem):
    error = camera_info_error(k, d, model, width, height)
    assert error is not None and problem in error


def test_the_projector_raises_value_error_not_cv2_error_for_what_the_check_rejects():
    with pytest.raises(ValueError, match="K has no positive focal length"):
        GroundGridProjector(np.zeros((3, 3)), (360, 480), CameraMount(), GridSpec(resolution=1.0))
    with pytest.raises(ValueError, match="distortion has 3 coefficients"):
        GroundGridProjector(K, (360, 480), CameraMount(), GridSpec(resolution=1.0), np.array([-0.3, 0.1, 0.0]))
    with pytest.raises(ValueError, match="non-finite"):
        GroundGridProjector(K, (360, 480), CameraMount(), GridSpec(resolution=1.0), np.array([math.nan] * 5))
    with pytest.raises(ValueError, match="image size is 0x0"):
        GroundGridProjector(K, (0, 0), CameraMount(), GridSpec(resolution=1.0))


def test_a_wide_but_real_lens_passes_the_field_of_view_check():
    # 170 degrees across 480 pixels: fx = 240 / tan(85 degrees) = 21 pixels
    fx = 240 / math.tan(math.radians(85))
    assert field_of_view_error([fx, 0, 240, 0, fx, 180, 0, 0, 1], 480, 360) is None


def test_the_camera_info_key_is_equal_for_nan_and_does_not_copy_a_huge_d():
    import time

    k = [math.nan, 0, 240, 0, 500.0, 180, 0, 0, 1]
    assert camera_info_key(k, [0.0] * 5, "plumb_bob", 480, 360) == camera_info_key(list(k), [0.0] * 5, "plumb_bob",
                                                                                   480, 360)
    assert camera_info_key(K_ROS, [0.1] * 5, "plumb_bob", 480, 360) != camera_info_key(K_ROS, [0.2] * 5, "plumb_bob",
                                                                                       480, 360)
    import array
    huge = array.array("d", bytes(8 * 4_000_000))  # what rclpy gives for a float64[] field
    start = time.perf_counter()
    for _ in range(100):
        key = camera_info_key(K_ROS, huge, "", 480, 360)
    assert (time.perf_counter() - start) / 100 < 1e-3, "the key of a 4-million-value D is its length, not a copy"
    assert key == camera_info_key(K_ROS, array.array("d", [1.0] * 4_000_000), "", 480, 360)  # refused alike
