"""An honest word at the end of a run: has the model learnt to find faces, and can that even be told?

The validation mean IoU alone says little. A person in front of a webcam barely moves, so on the
photos of one recording drawing the same box on every photo (the average training box) can score
0.9, and the model must do more than that to have learnt anything. So the run is measured a
second time on the validation photos *moved*: each photo with a face cropped and mirrored at random
a few times (`moved_photos`), as training's own augmentation does, so that the face sits elsewhere
in the picture. A model that finds faces follows them and keeps most of its score; a box drawn in
one place stops fitting, and so does a model that only learnt where the face usually sits. The
verdict warns when the model does not clearly beat the same box on the moved photos.

Beside it stands YuNet, a detector trained elsewhere, its boxes placed as this dataset's labels
place theirs, scored only on validation photos whose labels it did not draw: on its own pre-labels
it would only be agreeing with itself. A model clearly worse than YuNet on a person's own labels is
not yet worth more than the pre-labels the photos could have had. And with too few validation
photos nothing can be judged, which is said too.
"""

from __future__ import annotations

import cv2
import numpy as np

from facetracker.boxes import iou

MIN_VALIDATION_PHOTOS = 10
"""Fewer photos, and one photo more or less moves the mean IoU by a tenth: too few to judge a model
by. The verdict warns below it about the validation photos, the Evaluate page about any split."""
MARGIN = 0.05
"""A model must beat the same box on every photo by this much mean IoU to count as having learnt anything."""
PRELABEL_MARGIN = 0.1
"""A model this much below YuNet's mean IoU is clearly worse than it (a few photos of difference
between the two are noise)."""
MOVED_COPIES = 3
"""Moved versions of each validation photo with a face: three give a ten-photo split thirty moved
faces, enough for the comparison not to hang on one crop."""
MOVED_CROP = (0.7, 0.9)
"""The side of a moved photo's crop, as a fraction of the photo's: within what every preset's
augmentation crops (a side from 0.71 for `quick`, `fast` and `multi`, 0.77 for `original`), so a
model meets nothing it was not trained on, and the face moves by up to a third of the picture."""
MOVED_PHOTOS_MOST = 40
"""Validation photos moved at most (spread over the split): a few hundred would cost every epoch of
`multi` thrice their validation time, and forty already judge a model."""
MOVED_SEED = 0
"""Every run of a dataset is judged on the same moved photos."""
STILL_FACES_IOU = 0.8
"""From this mean IoU of the same box on every validation photo, the faces barely move there: the
photos as they are cannot tell a model that finds faces from one that learnt where the face sits."""


def moved_photos(images: np.ndarray, boxes: np.ndarray, seed: int = MOVED_SEED,
                 copies: int = MOVED_COPIES) -> tuple[np.ndarray, np.ndarray]:
    """`copies` moved versions of each square photo `images` [N, S, S, 3] with its face `boxes` [N, 4]
    (0..1 of the photo): a square crop of `MOVED_CROP` of the side at a random place that keeps the
    face whole where it fits, scaled back to S, and mirrored half the time, at random. Returns the
    moved photos [N * copies, S, S, 3] and their faces' boxes [N * copies, 4]."""
    images = np.asarray(images)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(images):
        return np.zeros((0, *images.shape[1:]), np.uint8), np.zeros((0, 4))
    rng = np.random.default_rng(seed)
    side = images.shape[1]
    out_images, out_boxes = [], []
    for image, box in zip(images, boxes):
        for _ in range(copies):
            crop = float(rng.uniform(*MOVED_CROP))
            corner = []
            for low_edge, high_edge in ((box[0], box[2]), (box[1], box[3])):
                # The crop's start, so that the face stays inside it: [high - crop, low], within the photo.
                first, last = max(0.0, high_edge - crop), min(low_edge, 1.0 - crop)
                if first > last:  # a face larger than the crop: centred on it
                    first = last = min(max((low_edge + high_edge - crop) / 2, 0.0), 1.0 - crop)
                corner.append(float(rng.uniform(first, last)))
            left, top = corner
            x0, y0 = int(round(left * side)), int(round(top * side))
            width = max(1, int(round(crop * side)))
            cut = image[y0:y0 + width, x0:x0 + width]
            moved = cv2.resize(cut, (side, side), interpolation=cv2.INTER_LINEAR)
            scale = np.array([cut.shape[1], cut.shape[0], cut.shape[1], cut.shape[0]], np.float64)
            new_box = np.clip((box * side - [x0, y0, x0, y0]) / scale, 0.0, 1.0)
            if rng.random() < 0.5:
                moved = moved[:, ::-1]
                new_box = np.array([1.0 - new_box[2], new_box[1], 1.0 - new_box[0], new_box[3]])
            out_images.append(np.ascontiguousarray(moved))
            out_boxes.append(new_box)
    return np.stack(out_images), np.array(out_boxes)


def _same_box_iou(guess: np.ndarray, boxes: np.ndarray) -> float:
    return float(iou(np.broadcast_to(guess, boxes.shape), boxes).mean()) if len(boxes) else float("nan")


def _rounded(value: float | None) -> float | None:
    return round(float(value), 4) if value is not None and np.isfinite(value) else None


def run_verdict(model_val_iou: float, val_has_face: np.ndarray, val_boxes: np.ndarray, train_has_face: np.ndarray,
                train_boxes: np.ndarray, validated_on_training: bool = False,
                prelabel_val_iou: float | None = None, prelabel_photos: int | None = None,
                prelabel_unreadable: int = 0, prelabel_own_labels: int = 0,
                model_moved_iou: float | None = None, moved_boxes: np.ndarray | None = None) -> dict:
    """What the run's status records: the figures, and a warning per reason not to trust the model.

    `prelabel_val_iou` is YuNet's mean IoU on the validation photos with a face whose labels it did
    not draw and could read (None: not measured), `prelabel_photos` how many those were,
    `prelabel_own_labels` how many it was not scored on because their labels are its own
    pre-labels, and `prelabel_unreadable` how many it could not read (removed since training read
    them): those count for nothing, not as 0. `model_moved_iou` is the model's mean IoU on the
    moved validation photos (see `moved_photos`) whose faces' boxes are `moved_boxes`; without them
    the model is judged against the same box on the photos as they are."""
    val_faces = np.asarray(val_boxes, np.float64)[np.asarray(val_has_face) > 0.5]
    train_faces = np.asarray(train_boxes, np.float64)[np.asarray(train_has_face) > 0.5]
    mean_box = train_faces.mean(axis=0) if len(train_faces) else np.full(4, np.nan)
    guess = _same_box_iou(mean_box, val_faces)
    moved = np.asarray(moved_boxes if moved_boxes is not None else np.zeros((0, 4)), np.float64).reshape(-1, 4)
    moved_model = float(model_moved_iou) if model_moved_iou is not None and len(moved) else float("nan")
    # The average of the moved faces' own boxes: the guess is told where they went on average.
    moved_guess = _same_box_iou(moved.mean(axis=0), moved) if np.isfinite(moved_model) else float("nan")
    warnings = []
    if validated_on_training:
        warnings.append("there were no validation photos, so the model was measured on the photos it trained on: "
                        "add photos (or split folders) to judge it")
    elif len(val_has_face) < MIN_VALIDATION_PHOTOS:
        warnings.append(f"only {len(val_has_face)} validation photos: too few to judge the model "
                        f"(at least {MIN_VALIDATION_PHOTOS}; add photos)")
    if np.isfinite(moved_guess) and moved_model < moved_guess + MARGIN:
        warnings.append(f"no better than guessing: with the faces moved (the validation photos cropped and mirrored "
                        f"at random) the model's mean IoU is {moved_model:.2f}, and the same box on every photo "
                        f"scores {moved_guess:.2f}: it has learnt where the face usually is, not to find it; check "
                        "the labels (do the boxes sit on the faces?), add photos and train again")
    elif not np.isfinite(moved_guess) and np.isfinite(guess) and model_val_iou < guess + MARGIN:
        warnings.append(f"no better than guessing: the model's validation mean IoU is {model_val_iou:.2f}, and "
                        f"drawing the average box on every photo scores {guess:.2f}")
    prelabel = float(prelabel_val_iou) if prelabel_val_iou is not None and np.isfinite(prelabel_val_iou) else None
    if prelabel is not None and model_val_iou < prelabel - PRELABEL_MARGIN:
        warnings.append(f"worse than YuNet: its boxes, placed as your labels place theirs, score {prelabel:.2f} mean "
                        f"IoU on the same photos against the model's {model_val_iou:.2f}; label more photos (YuNet "
                        "pre-labels them for you) and train again")
    return {"val_photos": int(len(val_has_face)), "val_faces": int(len(val_faces)),
            "model_val_iou": round(float(model_val_iou), 4), "mean_box_val_iou": _rounded(guess),
            "model_moved_iou": _rounded(moved_model), "mean_box_moved_iou": _rounded(moved_guess),
            "moved_photos": int(len(moved)) if np.isfinite(moved_guess) else 0,
            "prelabel_val_iou": round(prelabel, 4) if prelabel is not None else None,
            "prelabel_photos": prelabel_photos if prelabel is not None else 0,
            "prelabel_unreadable": int(prelabel_unreadable), "prelabel_own_labels": int(prelabel_own_labels),
            "warnings": warnings}


def _figure(verdict: dict, key: str) -> float | None:
    """A figure of a verdict read back from status.json: a finite number, else None."""
    value = verdict.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    return float(value) if ok else None


def _count(verdict: dict, key: str) -> int | None:
    value = verdict.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _yunet_words(verdict: dict) -> str:
    prelabel = _figure(verdict, "prelabel_val_iou")
    unreadable, scored, own = (_count(verdict, key) for key in ("prelabel_unreadable", "prelabel_photos",
                                                                 "prelabel_own_labels"))
    if prelabel is None:
        if own and not unreadable:
            return "not compared: the validation labels are its own pre-labels"
        if unreadable:
            return (f"not measured: none of the {unreadable} validation photos with a face could be read again "
                    "(moved or deleted during training?)")
        return "not measured"
    said = f"{prelabel:.3f}"
    on = f" on the {scored} validation photos" if scored is not None else ""
    if own and unreadable:
        said += (f"{on} it could be scored on ({own} hold its own pre-labels and {unreadable} could not be read "
                 "again: those were left out)")
    elif own:
        said += f"{on} whose labels it did not draw ({own} hold its own pre-labels and were left out)"
    elif unreadable:
        said += (f"{on} with a face it could read ({unreadable} could not be read again and were left out)" if on
                 else f" ({unreadable} validation photos could not be read again and were left out)")
    return said


def comparison_line(verdict: dict) -> str:
    """The verdict's figures side by side, as the log and the Train page say them."""
    def figure(key: str) -> str:
        value = _figure(verdict, key)
        return "not measured" if value is None else f"{value:.3f}"

    photos = _count(verdict, "val_photos")
    model = f"your model: mean IoU {figure('model_val_iou')}"
    model += f" on the {photos} validation photos" if photos is not None else " on the validation photos"
    guess = f"the same box on every photo: {figure('mean_box_val_iou')}"
    if _figure(verdict, "model_moved_iou") is not None and _figure(verdict, "mean_box_moved_iou") is not None:
        model += f", {figure('model_moved_iou')} with the faces moved"
        guess += f", {figure('mean_box_moved_iou')} moved"
    return f"{model}; {guess}; YuNet, trained elsewhere: {_yunet_words(verdict)}"


def meaning(verdict: dict) -> list[str]:
    """What the figures of `comparison_line` mean, in plain words, for the Train page."""
    said = []
    guess, moved_guess = _figure(verdict, "mean_box_val_iou"), _figure(verdict, "mean_box_moved_iou")
    if moved_guess is not None and _figure(verdict, "model_moved_iou") is not None:
        said.append(f"With the faces moved (each validation photo cropped and mirrored at random {MOVED_COPIES} "
                    "times), a model that finds faces keeps most of its score, and the same box on every photo "
                    "loses it: this is the comparison that judges the model.")
        if guess is not None and guess >= STILL_FACES_IOU:
            said.append(f"The faces barely move in the validation photos (the same box on every photo scores "
                        f"{guess:.2f} there), so the photos as they are cannot tell a model that finds faces from "
                        "one that learnt where the face sits.")
    elif guess is not None:
        said.append("The same box on every photo is the average training box: a model must beat it clearly to "
                    "have learnt anything.")
    if _figure(verdict, "prelabel_val_iou") is not None:
        said.append("YuNet's boxes are placed as your labels place theirs: a model close to it is as good as "
                    "pre-labelling, one far below it is not yet worth having.")
    elif _count(verdict, "prelabel_own_labels"):
        said.append("The validation labels are YuNet's own pre-labels, so YuNet is no yardstick here: the figures "
                    "say how closely the model draws YuNet's boxes.")
    return said
