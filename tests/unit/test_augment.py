import numpy as np
import pytest

from facetracker.config.jsonconfig import ConfigError
from facetracker.data import datasets as data
from facetracker.data.augment import AugmentConfig, augment, build_transform
from facetracker.data.images import model_input, sample_pixels
from tests.helpers.synthetic import face_image


def test_config_round_trips_through_json_and_refuses_nonsense():
    config = AugmentConfig(crop_min_scale=0.3, hflip_p=0.25, rgb_shift_limit=10)
    assert AugmentConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="unknown field"):
        AugmentConfig.from_dict({"crop_p": 1.0, "blur": 3})
    with pytest.raises(ConfigError, match="hflip_p"):
        AugmentConfig.from_dict({"hflip_p": 1.5})
    with pytest.raises(ConfigError, match="must be a number"):
        AugmentConfig.from_dict({"gamma_p": "often"})


def _face_centre_colour_matches(image, box):
    h, w = image.shape[:2]
    cx, cy = int((box[0] + box[2]) / 2 * w), int((box[1] + box[3]) / 2 * h)
    b, g, r = image[cy, cx].astype(int)  # RGB image here, face drawn as (80,160,240) BGR
    return b > 170 and r < 140


def test_augmented_boxes_stay_on_the_face():
    bgr = face_image(224, 224, (60, 50, 150, 170))
    rgb = bgr[:, :, ::-1].copy()
    box = (60 / 224, 50 / 224, 150 / 224, 170 / 224)
    config = AugmentConfig(brightness_contrast_p=0, gamma_p=0, rgb_shift_p=0)
    transform = build_transform(config, 120, seed=1)
    kept = 0
    for _ in range(40):
        image, new_box = augment(transform, rgb, box)
        assert image.shape == (120, 120, 3) and image.dtype == np.uint8
        if new_box is not None:
            kept += 1
            assert 0 <= new_box[0] < new_box[2] <= 1 and 0 <= new_box[1] < new_box[3] <= 1
            assert _face_centre_colour_matches(image, new_box)
    assert kept >= 20


def test_a_crop_that_cuts_the_face_away_makes_a_no_face_sample():
    rgb = face_image(224, 224, (0, 0, 30, 30))[:, :, ::-1].copy()
    config = AugmentConfig(crop_p=1.0, crop_min_scale=0.2, crop_max_scale=0.3, min_visibility=0.5)
    transform = build_transform(config, 120, seed=0)
    results = [augment(transform, rgb, (0, 0, 30 / 224, 30 / 224))[1] for _ in range(30)]
    assert any(r is None for r in results)


def test_the_same_seed_gives_the_same_preview():
    rgb = face_image(224, 224, (60, 50, 150, 170))[:, :, ::-1].copy()
    first = augment(build_transform(AugmentConfig(), 120, seed=7), rgb, (0.3, 0.2, 0.7, 0.8))
    second = augment(build_transform(AugmentConfig(), 120, seed=7), rgb, (0.3, 0.2, 0.7, 0.8))
    assert np.array_equal(first[0], second[0]) and first[1] == second[1]


def test_real_face_augmentations_keep_valid_boxes(helen):
    samples = [s for s in data.load_dataset(helen, check_pixels=False).samples if s.box][:10]
    transform = build_transform(AugmentConfig(), 120, seed=0)
    faces = 0
    for sample in samples:
        image = model_input(sample_pixels(sample, 448), 224)
        for _ in range(5):
            out, box = augment(transform, image, sample.box)
            assert out.shape == (120, 120, 3)
            if box:
                faces += 1
                assert box[2] - box[0] > 0.05 and box[3] - box[1] > 0.05
    assert faces > 25
