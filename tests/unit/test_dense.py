"""The dense detector's geometry: letterboxing, which cells learn which face, decoding, scenes."""

import numpy as np
import pytest

from facetracker.data import datasets as data
from facetracker.data.augment import (
    AugmentConfig,
    augment_faces,
    build_transform,
    make_scene,
)
from facetracker.data.images import sample_pixels
from facetracker.inference.dense import (
    STRIDE,
    cell_targets,
    closer_tiles,
    decode,
    grid_centres,
    input_for_frame,
    letterbox,
    merge_faces,
    nms,
    tile_inputs,
)


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


def test_a_camera_frame_gets_the_smallest_input_that_holds_it_at_the_live_scale():
    # the live network sees the frame 1.2 times as large as the square input would (320x240 of 320x320)
    assert input_for_frame(320, 640, 480) == (384, 288)
    assert input_for_frame(320, 1280, 720) == (384, 224)  # 384x216 of frame, rounded up to a multiple of 32
    assert input_for_frame(320, 480, 640) == (288, 384)  # a phone held upright
    assert input_for_frame(128, 640, 480) == (160, 128)
    # at the square input's own scale
    assert input_for_frame(320, 640, 480, zoom=1.0) == (320, 256)
    assert input_for_frame(320, 1280, 720, zoom=1.0) == (320, 192)
    assert input_for_frame(128, 640, 480, zoom=1.0) == (128, 96)
    live, placed = letterbox(np.zeros((480, 640, 3), np.uint8), input_for_frame(320, 640, 480))
    assert live.shape == (288, 384, 3) and placed.scale == pytest.approx(0.6)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:200, 300:380] = 255
    wide, placed = letterbox(frame, (320, 256))
    square, _ = letterbox(frame, 320)
    assert wide.shape == (256, 320, 3) and placed.scale == pytest.approx(0.5)
    np.testing.assert_array_equal(wide[:240], square[:240])  # the same pixels at the same scale
    assert (wide[240:] == 127).all()  # only 16 grey rows below the frame, not 80
    box = np.array([[300 / 640, 100 / 480, 380 / 640, 200 / 480]])
    on_input = placed.to_input(box)
    np.testing.assert_allclose(on_input * [320, 256, 320, 256], [[150, 50, 190, 100]])
    np.testing.assert_allclose(placed.to_frame(on_input), [[300, 100, 380, 200]])


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


def test_closer_tiles_cover_the_frame_at_twice_the_scale_and_hold_every_small_face_whole():
    tiles = closer_tiles(640, 480, 320)
    assert len(tiles) == 6 and {t.scale for t in tiles} == {1.0}  # twice 0.5: the photo's own pixels
    assert sorted({t.x for t in tiles}) == [0, 160, 320] and sorted({t.y for t in tiles}) == [0, 160]
    assert closer_tiles(320, 240, 320) == []  # the whole-frame pass already sees every pixel
    big = closer_tiles(1920, 1080, 320)
    assert big[0].scale == pytest.approx(640 / 1920)
    covered = np.zeros((round(1080 * big[0].scale), 640), bool)
    for tile in big:
        covered[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width] = True
    assert covered.all()
    assert_small_faces_lie_whole_in_a_tile(tiles, 320)
    wide = closer_tiles(640, 480, (320, 256))  # tiles of an input shaped for camera frames
    assert len(wide) == 9 and {t.scale for t in wide} == {1.0}
    assert sorted({t.y for t in wide}) == [0, 112, 224] and all(t.height == 256 for t in wide)
    assert_small_faces_lie_whole_in_a_tile(wide, (320, 256))


def assert_small_faces_lie_whole_in_a_tile(tiles, size) -> None:
    """Any face up to half a tile wide and tall lies whole in a tile, away from its cut sides."""
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(0)
    for _ in range(200):
        side = rng.uniform(4, min(width, height) / 2)
        x, y = rng.uniform(0, 640 - side), rng.uniform(0, 480 - side)
        box = np.array([[x, y, x + side, y + side]])
        inside = [t for t in tiles if t.x <= x and t.y <= y and x + side <= t.x + t.width and y + side <= t.y + t.height
                  and t.whole((box - [t.x, t.y, t.x, t.y]) / [width, height, width, height], size)[0]]
        assert inside, box


def test_tiles_hold_the_frames_pixels_and_map_boxes_back_to_it():
    frame = np.random.default_rng(1).integers(0, 255, (300, 700, 3), np.uint8)
    tiles = closer_tiles(700, 300, 320)
    inputs = tile_inputs(frame, tiles, 320)
    scale = tiles[0].scale
    assert scale == pytest.approx(640 / 700) and inputs.shape == (len(tiles), 320, 320, 3)
    import cv2

    # a mild shrink (0.91) is bilinear: see dense.scaled_rgb
    scaled = cv2.resize(frame, (640, round(300 * scale)), interpolation=cv2.INTER_LINEAR)
    last = tiles[-1]
    np.testing.assert_array_equal(inputs[-1, :last.height, :last.width],
                                  scaled[last.y:last.y + last.height, last.x:last.x + last.width])
    assert (inputs[-1, last.height:] == 127).all()  # grey below the frame
    on_tile = np.array([[0.25, 0.25, 0.5, 0.5]])
    expected = (np.array([80, 80, 160, 160]) + [last.x, last.y, last.x, last.y]) / scale
    np.testing.assert_allclose(last.to_frame(on_tile, 320), [expected])
    cut = np.array([[0.0, 0.3, 0.1, 0.4], [0.5, 0.3, 0.6, 0.4]])  # the first touches the shared left side
    assert list(last.whole(cut, 320)) == [not last.cut_left, True]


def test_merging_passes_keeps_the_best_box_of_each_face():
    boxes, scores = merge_faces([np.array([[10, 10, 50, 50]]), np.array([[12, 11, 51, 52], [200, 200, 220, 220]])],
                                [np.array([0.6]), np.array([0.8, 0.4])])
    np.testing.assert_allclose(boxes, [[12, 11, 51, 52], [200, 200, 220, 220]])
    assert list(scores) == pytest.approx([0.8, 0.4])


class BrightSquareFinder:
    """A stand-in dense runtime that 'detects' bright squares of at least 12 input pixels."""

    dense = True
    input_wh = (320, 320)

    def __init__(self):
        self.calls = 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        import cv2

        self.calls += 1
        rows = np.zeros((len(images), (320 // STRIDE) ** 2, 5), np.float32)
        for index, image in enumerate(images):
            mask = (np.asarray(image).min(axis=-1) > 250).astype(np.uint8)
            count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            for row, (x, y, w, h, _) in enumerate(stats[1:count]):
                if min(w, h) >= 12:
                    rows[index, row] = [0.9, x / 320, y / 320, (x + w) / 320, (y + h) / 320]
        return rows


def test_looking_closer_finds_a_face_too_small_for_the_whole_frame_pass_where_it_is():
    from facetracker.inference.detect import Detector

    frame = np.zeros((960, 1280, 3), np.uint8)
    frame[500:530, 900:930] = 255  # 7 px of the whole-frame input, 15 px of a tile
    frame[100:400, 100:400] = 255  # too big for any tile: the whole-frame pass finds it
    runtime = BrightSquareFinder()
    whole = Detector(runtime, threshold=0.5).detect(frame)
    assert [f.box for f in whole.faces] == [(100, 100, 400, 400)] and runtime.calls == 1
    closer = Detector(runtime, threshold=0.5, look_closer=True).detect(frame)
    assert runtime.calls == 1 + 1 + len(closer_tiles(1280, 960, 320))
    assert sorted(f.box for f in closer.faces) == [(100, 100, 400, 400), (900, 500, 930, 530)]


def _face_patch(image: np.ndarray, box, side: int = 24) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = (np.asarray(box) * [w, h, w, h]).round().astype(int)
    return cv2.resize(image[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


@pytest.mark.parametrize("kind", ["mosaic", "zoom_out", "mosaic_zoomed_out"])
def test_scene_boxes_follow_real_faces(helen, kind):
    """Mosaics and zoom-outs of a real photo: every box still frames that face."""
    sample = next(s for s in data.load_dataset(helen, check_pixels=False).samples if s.has_face)
    pixels = sample_pixels(sample, max_side=640)
    square, placed = letterbox(pixels, 320)
    faces = [placed.to_input(np.array(sample.faces))]
    reference = _face_patch(square, faces[0][0])
    config = AugmentConfig(mosaic_p=1.0 if kind.startswith("mosaic") else 0.0,
                           zoom_out_p=1.0 if kind.endswith("zoom_out") or kind.endswith("zoomed_out") else 0.0,
                           zoom_out_max=4.0 if kind != "mosaic_zoomed_out" else 8.0, mosaic_max=4)
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
    elif kind == "mosaic_zoomed_out":  # a mosaic shrinks at most zoom_out_max / k more: never below 1/8
        assert all(2 - 1e-6 <= s <= 8.01 for s in shrinks) and max(shrinks) > 4.2
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
