"""The dense detector's geometry: letterboxing, which cells learn which face, decoding, scenes."""

import numpy as np
import pytest

from facetracker import data
from facetracker.augment import AugmentConfig, augment_faces, build_transform, make_scene
from facetracker.dense import STRIDE, cell_targets, decode, grid_centres, letterbox, nms


def test_letterbox_keeps_the_aspect_and_maps_boxes_both_ways():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:200, 300:380] = 255
    image, placed = letterbox(frame, 256)
    assert image.shape == (256, 256, 3) and placed.scale == pytest.approx(0.4)
    assert image[:192].mean() < 10 and (image[192:] == 127).all()  # grey below the frame
    box = np.array([[300 / 640, 100 / 480, 380 / 640, 200 / 480]])
    on_input = placed.to_input(box)
    np.testing.assert_allclose(on_input * 256, [[120, 40, 152, 80]])
    np.testing.assert_allclose(placed.to_frame(on_input), [[300, 100, 380, 200]])
    assert image[45:75, 125:148].mean() > 250  # the bright patch is where the box says


def test_cells_near_the_centre_learn_the_face_and_the_smaller_face_wins_a_shared_cell():
    size = 256
    big = [0.1, 0.1, 0.6, 0.7]
    tiny = [0.30, 0.30, 0.32, 0.32]  # 5 px: smaller than a cell, inside the big face
    targets = cell_targets(np.array([big, tiny]), size)
    centres = grid_centres(size)
    assert targets.shape == ((size // STRIDE) ** 2, 5)
    positive = targets[:, 0] == 1
    for_tiny = positive & np.all(targets[:, 1:] == np.float32(tiny), axis=1)
    for_big = positive & np.all(targets[:, 1:] == np.float32(big), axis=1)
    assert for_tiny.sum() == 1 and for_big.sum() >= 4
    assert np.all(np.abs(centres[for_big] - [0.35, 0.4]) <= 1.5 / 32 + 1e-6)  # near the big face's centre
    assert not positive[(centres[:, 0] > 0.7)].any()
    assert cell_targets(np.zeros((0, 4)), size).sum() == 0


def test_decoding_the_targets_gives_back_every_face_once():
    faces = np.array([[0.1, 0.1, 0.3, 0.35], [0.5, 0.2, 0.9, 0.8], [0.05, 0.7, 0.09, 0.76]], np.float32)
    rows = cell_targets(faces, 256)
    rows[:, 0] *= 0.9
    boxes, scores = decode(rows, threshold=0.5)
    assert len(boxes) == 3
    np.testing.assert_allclose(np.sort(boxes[:, 0]), np.sort(faces[:, 0]))
    assert np.all(scores == pytest.approx(0.9))
    assert len(decode(rows, threshold=0.95)[0]) == 0
    rows[5, 1:] = np.nan  # a broken row is no face
    rows[5, 0] = 1.0
    assert len(decode(rows, threshold=0.5)[0]) == 3


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float64)
    assert list(nms(boxes, np.array([0.5, 0.9, 0.8]), 0.4, 10)) == [1, 2]
    assert list(nms(boxes, np.array([0.5, 0.9, 0.8]), 0.4, 1)) == [1]


def _face_patch(image: np.ndarray, box, side: int = 24) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = (np.asarray(box) * [w, h, w, h]).round().astype(int)
    return cv2.resize(image[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


@pytest.mark.parametrize("kind", ["mosaic", "zoom_out"])
def test_scene_boxes_follow_real_faces(helen, kind):
    """Mosaics and zoom-outs of a real photo: every box still frames that face."""
    sample = next(s for s in data.load_dataset(helen, check_pixels=False).samples if s.has_face)
    pixels = data.sample_pixels(sample, max_side=640)
    square, placed = letterbox(pixels, 320)
    faces = [placed.to_input(np.array(sample.faces))]
    reference = _face_patch(square, faces[0][0])
    config = AugmentConfig(mosaic_p=1.0 if kind == "mosaic" else 0.0, zoom_out_p=1.0 if kind == "zoom_out" else 0.0,
                           zoom_out_max=4.0, mosaic_max=4)
    rng = np.random.default_rng(3)
    images = np.stack([square] * 3)
    backgrounds = np.array([], np.int64)
    shrinks = []
    for _ in range(6):
        scene, boxes = make_scene(rng, config, images, faces * 3, 0, backgrounds)
        assert scene.shape == square.shape and len(boxes) >= 1
        assert np.all((boxes >= -1e-9) & (boxes <= 1 + 1e-9))
        for box in boxes:
            if (box[2] - box[0]) * 320 >= 12:  # tiny faces lose the detail to compare
                assert np.abs(_face_patch(scene, box) - reference).mean() < 25
        shrinks.append((faces[0][0][2] - faces[0][0][0]) / (boxes[0][2] - boxes[0][0]))
    if kind == "mosaic":
        assert set(np.round(shrinks).astype(int)) <= {2, 3, 4} and len(boxes) in (4, 9, 16)
    else:
        assert all(1 <= s <= 4.01 for s in shrinks) and max(shrinks) > 1.3


def test_augmenting_keeps_every_face_and_drops_the_cropped_ones():
    image = np.full((256, 256, 3), 90, np.uint8)
    boxes = np.array([[0.05, 0.05, 0.15, 0.15], [0.6, 0.6, 0.9, 0.9]])
    transform = build_transform(AugmentConfig(crop_p=0.0, hflip_p=1.0, vflip_p=0.0), 128, seed=0)
    out, kept = augment_faces(transform, image, boxes)
    assert out.shape == (128, 128, 3)
    np.testing.assert_allclose(kept, [[0.85, 0.05, 0.95, 0.15], [0.1, 0.6, 0.4, 0.9]])
    crop = build_transform(AugmentConfig(crop_p=1.0, crop_min_scale=0.1, crop_max_scale=0.1, hflip_p=0, vflip_p=0),
                           128, seed=0)
    counts = {len(augment_faces(crop, image, boxes)[1]) for _ in range(20)}
    assert 0 in counts  # a small crop misses both faces at times: they are dropped, not kept outside
