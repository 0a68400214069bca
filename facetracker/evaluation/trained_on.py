"""What a model knows: the faces and photos it was trained on, and where it is not expected to work.

Training writes `describe_training` of its training photos into the run folder (`trained_on.json`,
see `facetracker.runs.run_folder`) before its first epoch; the app reads that file with
`read_trained_on` and says it in words (`knows`, `limits`), so telling what a model has seen
never opens the model, and the web server never loads TensorFlow.

What the figures mean for the model depends on how it was trained: crops enlarge the faces of the
photos by up to 1 / sqrt(crop_min_scale), and a dense model's zoom-outs and mosaics shrink them by
up to zoom_out_max (or mosaic_max), so the sizes it has seen run from the smallest face shrunk the
most to the largest enlarged the most.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from facetracker.config.training import TrainConfig
from facetracker.data import datasets as data_lib
from facetracker.inference.dense import STRIDE
from facetracker.runs import run_folder as runs

FEW_EMPTY_PHOTOS = 5
"""Fewer photos without a face than this, and an empty scene is something the model has hardly seen."""
WEBCAM_WIDTH = 640
"""The frame width sizes are also said in: the Detect page's webcam frames."""
FIELDS = {"photos": int, "faces": int, "no_face_photos": int, "several_faces_photos": int, "most_faces": int,
          "face_width_fraction": list, "face_width_px": list, "photo_sizes": dict, "finds_every_face": bool,
          "several_in_training": bool, "smallest_seen": float, "largest_seen": float, "one_recording": bool}
"""Every field of trained_on.json and its kind, as `read_trained_on` checks them."""


def _spread(values: list[float], digits: int) -> list[float] | None:
    """Smallest, median and largest, rounded; None for no values."""
    if not values:
        return None
    return [round(float(v), digits) for v in (min(values), float(np.median(values)), max(values))]


def describe_training(samples: list[data_lib.Sample], config: TrainConfig) -> dict:
    """The training photos in figures, as trained_on.json holds them. A photo whose size cannot be
    read any more counts for the fractions of the photo, which its label gives, but not in pixels."""
    widths_px, fractions, sizes = [], [], Counter()
    for sample in samples:
        size = None
        if not sample.embedded:
            try:
                size = data_lib.image_size(sample.image, root=sample.root)
            except (ValueError, OSError):
                size = None
        if size is not None:
            sizes[f"{size[0]}x{size[1]}"] += 1
        for face in sample.faces:
            fraction = float(face[2] - face[0])
            fractions.append(fraction)
            if size is not None:
                widths_px.append(fraction * size[0])
    augment = config.augment
    dense = config.head == "dense"
    shrink = 1.0
    if dense and augment.zoom_out_p > 0:
        shrink = max(shrink, augment.zoom_out_max)
    if dense and augment.mosaic_p > 0:
        shrink = max(shrink, float(augment.mosaic_max))
    enlarge = 1.0 / math.sqrt(augment.crop_min_scale) if augment.crop_p > 0 else 1.0
    several = sum(len(sample.faces) > 1 for sample in samples)
    face_photos = [sample for sample in samples if sample.has_face]
    return {
        "photos": len(samples), "faces": len(fractions), "no_face_photos": len(samples) - len(face_photos),
        "several_faces_photos": several, "most_faces": max((len(s.faces) for s in samples), default=0),
        "face_width_fraction": _spread(fractions, 4) or [], "face_width_px": _spread(widths_px, 1) or [],
        "photo_sizes": dict(sizes.most_common(3)), "finds_every_face": dense,
        "several_in_training": several > 0 or (dense and augment.mosaic_p > 0),
        # A dense model finds no face narrower than one cell of its grid, however small its training faces.
        "smallest_seen": round(max(min(fractions) / shrink, STRIDE / config.image_size if dense else 0.0), 4)
        if fractions else 0.0,
        "largest_seen": round(min(1.0, max(fractions) * enlarge), 4) if fractions else 0.0,
        # One size of photo, one face at most in each: the frames of one camera, most likely one
        # person recording themselves (labels cannot tell people apart).
        "one_recording": bool(face_photos) and several == 0 and len(sizes) == 1,
    }


def read_trained_on(run_dir: str | Path) -> dict | None:
    """trained_on.json of a run, or None when it is missing or not what training writes (a run
    from before the file existed, a hand-edited one): the page then says nothing rather than
    something wrong."""
    value = runs.read_json(Path(run_dir) / runs.TRAINED_ON)
    if not isinstance(value, dict):
        return None
    for field, kind in FIELDS.items():
        item = value.get(field)
        if kind is float:
            ok = isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item) and item >= 0
        elif kind is int:
            ok = isinstance(item, int) and not isinstance(item, bool) and item >= 0
        elif kind is list:
            ok = isinstance(item, list) and len(item) in (0, 3) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in item)
        elif kind is dict:
            ok = isinstance(item, dict) and all(isinstance(k, str) and isinstance(v, int) for k, v in item.items())
        else:
            ok = isinstance(item, kind)
        if not ok:
            return None
    return value


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%" if fraction >= 0.02 else f"{fraction * 100:.1f}%"


def knows(profile: dict) -> str:
    """What the model was trained on, in one or two sentences."""
    photos, faces, empty = profile["photos"], profile["faces"], profile["no_face_photos"]
    said = f"Trained on {photos} photos: {faces} faces"
    fraction, pixels = profile["face_width_fraction"], profile["face_width_px"]
    if fraction:
        said += (f", {_percent(fraction[0])} to {_percent(fraction[2])} of the photo's width (median "
                 f"{_percent(fraction[1])}")
        said += f"; {pixels[0]:.0f} to {pixels[2]:.0f} px)" if pixels else ")"
    said += f", and {empty} photos without a face."
    if profile["several_faces_photos"]:
        said += (f" {profile['several_faces_photos']} photos hold several faces (up to {profile['most_faces']}): "
                 "several people.")
    elif profile["one_recording"]:
        size = next(iter(profile["photo_sizes"]), "")
        said += f" One face a photo, every photo {size}: most likely one person, from one camera."
    else:
        said += " One face a photo at most."
    return said


def limits(profile: dict) -> list[str]:
    """Where the model is not expected to work, from what it was trained on (empty: nothing to say)."""
    said = []
    smallest, largest = profile["smallest_seen"], profile["largest_seen"]
    if profile["faces"]:
        said.append(f"faces narrower than {_percent(smallest)} of the frame (about "
                    f"{max(1, round(smallest * WEBCAM_WIDTH))} px of a {WEBCAM_WIDTH} px webcam frame): smaller than "
                    "any it saw, even shrunk in training")
        if largest < 0.8:
            said.append(f"faces wider than {_percent(largest)} of the frame: closer to the camera than any it saw")
    if not profile["finds_every_face"]:
        said.append("several people in view: it draws one box a frame, on one of them")
    elif not profile["several_in_training"]:
        said.append("several people in view: every photo it trained on held one face")
    if profile["one_recording"] and not profile["several_faces_photos"]:
        said.append("other people: its photos are most likely of one person, in one place")
    if profile["no_face_photos"] == 0:
        said.append("an empty scene: it never saw a photo without a face, and may box something in one")
    elif profile["no_face_photos"] < FEW_EMPTY_PHOTOS:
        said.append(f"an empty scene: it saw only {profile['no_face_photos']} photos without a face")
    return said
