"""Augment: a widget for every augmentation setting and a preview made exactly as training makes it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import streamlit as st

from app_pages import ui
from facetracker.config.jsonconfig import ConfigError
from facetracker.config.training import (
    DEFAULT_PRESET,
    PRESETS,
    TrainConfig,
    preset_augment,
)
from facetracker.data import datasets as data_lib
from facetracker.data.augment import (
    AUGMENT_FILE,
    AugmentConfig,
    augment,
    augment_faces,
    build_transform,
    make_scene,
)
from facetracker.data.images import model_input, sample_pixels
from facetracker.runs import run_folder as runs

# Training caches images at this size and augments them to the model's input size (TrainConfig).
CACHE_SIZE = TrainConfig.cache_size
MODEL_SIZE = TrainConfig.image_size
DISPLAY_SIZE = 240

# field: (label, minimum, maximum, step, help); probabilities share one spec
PROBABILITY = (0.0, 1.0, 0.05)
FIELDS: dict[str, tuple[str, float, float, float, str]] = {
    "crop_p": ("Random crop: probability", *PROBABILITY,
               "How often a random part of the image is cut out and resized."),
    "crop_min_scale": ("Random crop: smallest crop (share of the area)", 0.05, 1.0, 0.05, ""),
    "crop_max_scale": ("Random crop: largest crop (share of the area)", 0.05, 1.0, 0.05, ""),
    "min_visibility": ("Face kept when at least this share stays in the crop", *PROBABILITY,
                       "Below it, the sample becomes a no-face sample."),
    "hflip_p": ("Horizontal flip: probability", *PROBABILITY, ""),
    "vflip_p": ("Vertical flip: probability", *PROBABILITY,
                "Upside-down faces: rare on a webcam, so the fast preset uses 0 (the original design 0.5)."),
    "brightness_contrast_p": ("Brightness/contrast: probability", *PROBABILITY, ""),
    "brightness_limit": ("Brightness: strength", 0.0, 1.0, 0.05, ""),
    "contrast_limit": ("Contrast: strength", 0.0, 1.0, 0.05, ""),
    "gamma_p": ("Gamma: probability", *PROBABILITY, ""),
    "gamma_min": ("Gamma: lowest (100 = unchanged)", 20.0, 200.0, 5.0, ""),
    "gamma_max": ("Gamma: highest (100 = unchanged)", 20.0, 300.0, 5.0, ""),
    "rgb_shift_p": ("Colour shift: probability", *PROBABILITY, ""),
    "rgb_shift_limit": ("Colour shift: strength (0-255)", 0, 100, 1, ""),
    "zoom_out_p": ("Zoom out: probability", *PROBABILITY,
                   "How often the photo is shrunk onto a larger canvas (a no-face photo of the dataset), so a "
                   "close-up also teaches faces far from the camera. Models that find every face only (multi)."),
    "zoom_out_max": ("Zoom out: most shrinking (times)", 1.0, 8.0, 0.5, ""),
    "mosaic_p": ("Mosaic: probability", *PROBABILITY,
                 "How often a sample is a grid of photos of the dataset, so one picture holds many faces of "
                 "many sizes, like a group photo. Models that find every face only (multi)."),
    "mosaic_max": ("Mosaic: largest grid (2 = 2x2 ... 4 = 4x4 photos)", 2, 4, 1, ""),
}
assert set(FIELDS) == {f.name for f in dataclasses.fields(AugmentConfig)}, "a setting has no widget"

GROUPS = {"Crop": ["crop_p", "crop_min_scale", "crop_max_scale", "min_visibility"],
          "Flips": ["hflip_p", "vflip_p"],
          "Light and colour": ["brightness_contrast_p", "brightness_limit", "contrast_limit", "gamma_p", "gamma_min",
                               "gamma_max", "rgb_shift_p", "rgb_shift_limit"],
          "Small faces and crowds": ["zoom_out_p", "zoom_out_max", "mosaic_p", "mosaic_max"]}
DENSE_PRESET = "multi"
DENSE = PRESETS[DENSE_PRESET]
SCENE_PHOTOS = 15  # other photos of the dataset drawn into the preview's mosaics and canvases


def saved_config(folder) -> tuple[AugmentConfig, str | None]:
    """The dataset's augment.json, or the augmentation of the preset the Train page offers first
    (with the reason when the file is unusable)."""
    path = folder / AUGMENT_FILE
    defaults = preset_augment(DEFAULT_PRESET)
    if not path.is_file():
        return defaults, None
    try:
        data_lib.real_path_inside(path, ui.data_root())
        return AugmentConfig.load(path), None
    except data_lib.OutsideRoot as error:
        return defaults, (f"{ui.shown_path(path)}: {ui.readable(error)}; showing the {DEFAULT_PRESET} preset's "
                          "settings")
    except ConfigError as error:  # its message names the file by its server path: shown relative to the data root
        return defaults, f"{ui.readable(error)}; showing the {DEFAULT_PRESET} preset's settings"


def put_config_in_widgets(config: AugmentConfig) -> None:
    for name, value in config.to_dict().items():
        _, low, high, _, _ = FIELDS[name]
        st.session_state[f"aug_{name}"] = type(low)(min(max(value, low), high))


def settings_widgets(folder) -> AugmentConfig | None:
    """The config the sliders describe (None after showing why it is invalid)."""
    if st.session_state.get("aug_loaded_for") != str(folder):
        config, problem = saved_config(folder)
        if problem:
            st.warning(ui.literal(problem))
        put_config_in_widgets(config)
        st.session_state["aug_loaded_for"] = str(folder)
    elif any(f"aug_{name}" not in st.session_state for name in FIELDS):
        # Streamlit forgets a widget's value on another page: bring back what was set here.
        put_config_in_widgets(st.session_state.get("aug_config") or saved_config(folder)[0])
    values = {}
    for group, names in GROUPS.items():
        st.markdown(f"**{group}**")
        for name in names:
            label, low, high, step, help_text = FIELDS[name]
            if isinstance(low, int) and isinstance(step, int):
                values[name] = st.slider(label, int(low), int(high), step=int(step), key=f"aug_{name}",
                                         help=help_text or None)
            else:
                values[name] = st.slider(label, float(low), float(high), step=float(step), key=f"aug_{name}",
                                         help=help_text or None)
    try:
        config = AugmentConfig.from_dict(values, source="these settings")
    except ConfigError as error:
        st.error(ui.literal(ui.readable(error)))
        return None
    st.session_state["aug_config"] = config
    return config


@st.cache_data(max_entries=64, show_spinner=False)
def training_view(image: str, embedded: bool) -> np.ndarray:
    """The image as a single-box model's training caches it: decoded at up to twice the cache size,
    stretched to a square."""
    sample = data_lib.Sample(image, None, embedded=embedded, root=str(ui.data_root()))
    pixels = sample_pixels(sample, max_side=CACHE_SIZE * 2)
    return model_input(pixels, CACHE_SIZE)


@st.cache_data(max_entries=64, show_spinner=False)
def letterboxed_view(image: str, embedded: bool, faces: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The image and its faces as a dense model's training caches them: letterboxed into a square."""
    from facetracker.inference.dense import letterbox

    sample = data_lib.Sample(image, None, embedded=embedded, root=str(ui.data_root()))
    side = DENSE["cache_size"]
    square, placed = letterbox(sample_pixels(sample, max_side=side * 2), side)
    return square, placed.to_input(np.array(faces, np.float64).reshape(-1, 4))


def draw_faces(image: np.ndarray, boxes) -> np.ndarray:
    for box in boxes:
        image = ui.draw_box(image, box, label="face")
    return image


def preview(sample: data_lib.Sample, config: AugmentConfig, seed: int, count: int) -> None:
    try:
        square = training_view(sample.image, sample.embedded)
    except (ValueError, OSError) as error:
        st.error(ui.literal(f"{ui.shown_path(sample.image)}: {ui.readable(error)}"))
        return
    transform = build_transform(config, MODEL_SIZE, seed=seed)
    images = [ui.draw_box(square, sample.box, label="face" if sample.box else None)]
    captions = ["as training reads it" + ("" if sample.box else " (no face)")]
    for i in range(count):
        out, box = augment(transform, square, sample.box)
        big = model_input(out, DISPLAY_SIZE)
        images.append(ui.draw_box(big, box, label="face" if box else None))
        lost = "" if box else " · no face" if sample.box is None else " · face cropped away"
        captions.append(f"sample {i + 1}{lost}")
    ui.image_grid(images, captions, columns=4)


def scene_preview(sample: data_lib.Sample, others: list[data_lib.Sample], config: AugmentConfig, seed: int,
                  count: int) -> None:
    """As `preview`, for a model that finds every face: the photo, mosaics with other photos of the
    dataset and zoom-outs onto them, every face boxed, made by training's own functions."""
    squares, faces, backgrounds = [], [], []
    for item in [sample, *others]:
        try:
            square, boxes = letterboxed_view(item.image, item.embedded, tuple(map(tuple, item.faces)))
        except (ValueError, OSError) as error:
            if item is sample:
                st.error(ui.literal(f"{ui.shown_path(sample.image)}: {ui.readable(error)}"))
                return
            continue  # another photo that cannot be read is left out of the mosaics
        if not item.has_face:
            backgrounds.append(len(squares))
        squares.append(square)
        faces.append(boxes)
    rng = np.random.default_rng(seed)
    transform = build_transform(config, DENSE["image_size"], seed=seed)
    images = [draw_faces(squares[0], faces[0])]
    captions = [f"as training reads it · {len(faces[0])} face{'s' if len(faces[0]) != 1 else ''}"]
    for i in range(count):
        scene, boxes = make_scene(rng, config, np.stack(squares), faces, 0, np.array(backgrounds, np.int64))
        out, kept = augment_faces(transform, scene, boxes)
        images.append(draw_faces(model_input(out, DISPLAY_SIZE), kept))
        captions.append(f"sample {i + 1} · {len(kept)} face{'s' if len(kept) != 1 else ''}")
    ui.image_grid(images, captions, columns=4)


def save_section(folder, config: AugmentConfig) -> None:
    c1, c2 = st.columns(2)
    if c1.button("Save for this dataset", type="primary", help=f"Writes {AUGMENT_FILE} into the dataset folder; "
                 "training uses it by default"):
        try:  # written through a link as open() would: only to a file inside the data root
            runs.atomic_write_text(data_lib.real_path_inside(folder / AUGMENT_FILE, ui.data_root()), config.to_json())
            st.success(f"Saved {ui.literal(ui.shown_path(folder / AUGMENT_FILE))}: training on this dataset uses it "
                       "by default.")
        except (OSError, data_lib.OutsideRoot) as error:
            st.error(f"Cannot save: {ui.literal(ui.readable(error))}")
    c2.button(f"Back to the {DEFAULT_PRESET} preset's settings", on_click=put_config_in_widgets,
              args=(preset_augment(DEFAULT_PRESET),))


def main() -> None:
    st.title("Augment")
    st.write("Each training image is shown to the model many times, changed a little each time. "
             "Move the sliders and watch what the model will see.")
    folder = ui.choose_dataset()
    if folder is None:
        return
    dataset = ui.load_dataset(folder)
    if dataset is None:
        st.info("Add images to this dataset first (Dataset page).")
        return
    if dataset.skipped:
        with st.expander(f"{len(dataset.skipped)} skipped files, not shown here"):
            st.dataframe(pd.DataFrame([{"file": ui.shown_path(s.path), "reason": s.reason} for s in dataset.skipped]),
                         hide_index=True, width="stretch")
    settings, previews = st.columns([1, 2])
    with settings:
        config = settings_widgets(folder)
    with previews:
        faces = [s for s in dataset.samples if s.has_face] + [s for s in dataset.samples if not s.has_face]
        names = [f"{s.name}{'' if s.has_face else ' (no face)'}" for s in faces]
        c1, c2, c3 = st.columns([2, 1, 1])
        chosen = c1.selectbox("Image", range(len(faces)), format_func=lambda i: names[i], key="aug_image")
        seed = c2.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="aug_seed",
                               help="The same seed gives the same samples")
        count = c3.slider("Samples", 3, 15, 7, key="aug_count")
        kinds = [f"finds every face ({DENSE_PRESET}, quick)", "one face (fast, original)"]
        kind = st.radio("Preview as training makes it for a model that", kinds, horizontal=True, key="aug_kind",
                        index=0 if DEFAULT_PRESET == DENSE_PRESET else 1,
                        help="Zoom-out and mosaics teach small faces and crowds to the models that find every "
                             "face; a one-face model trains on each photo alone.")
        if config is not None:
            if kind == kinds[0]:
                rng = np.random.default_rng(int(seed))
                pool = [s for i, s in enumerate(faces) if i != chosen]
                others = [pool[i] for i in rng.permutation(len(pool))[:SCENE_PHOTOS]]
                scene_preview(faces[chosen], others, config, int(seed), count)
            else:
                preview(faces[chosen], config, int(seed), count)
            save_section(folder, config)


with ui.page_guard():
    main()
