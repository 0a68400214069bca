"""An honest word at the end of a run: is the model better than guessing, and can that even be told?

The validation mean IoU alone says little: on a few dozen webcam photos of one person, a model that
draws the same box on every frame scores well above 0, and two validation photos judge nothing.
So a run is compared with the laziest detector there is, the average training box drawn on every
photo, and with the pre-labeller (YuNet, its boxes placed as this dataset's labels place theirs),
on the same validation photos, and says when there are too few of them to judge. A model clearly
worse than the pre-labeller is not yet worth more than the pre-labels the photos could have had.
"""

from __future__ import annotations

import numpy as np

from facetracker.boxes import iou

MIN_VALIDATION_PHOTOS = 10
"""Fewer, and one photo more or less moves the mean IoU by a tenth: too few to judge a model by."""
MARGIN = 0.05
"""A model must beat the average box by this much mean IoU to count as having learnt anything."""
PRELABEL_MARGIN = 0.1
"""A model this much below the pre-labeller's mean IoU is clearly worse than it (a few photos of
difference between the two are noise)."""


def run_verdict(model_val_iou: float, val_has_face: np.ndarray, val_boxes: np.ndarray, train_has_face: np.ndarray,
                train_boxes: np.ndarray, validated_on_training: bool = False,
                prelabel_val_iou: float | None = None, prelabel_photos: int | None = None,
                prelabel_unreadable: int = 0) -> dict:
    """What the run's status records: the figures, and a warning per reason not to trust the model.

    `prelabel_val_iou` is the pre-labeller's mean IoU on the validation photos with a face it could
    read (None: not measured), `prelabel_photos` how many those were and `prelabel_unreadable` how
    many it could not read (removed since training read them): those count for nothing, not as 0."""
    val_faces = np.asarray(val_boxes, np.float64)[np.asarray(val_has_face) > 0.5]
    train_faces = np.asarray(train_boxes, np.float64)[np.asarray(train_has_face) > 0.5]
    mean_box = train_faces.mean(axis=0) if len(train_faces) else np.full(4, np.nan)
    guess = float(iou(np.broadcast_to(mean_box, val_faces.shape), val_faces).mean()) if len(val_faces) else float("nan")
    warnings = []
    if validated_on_training:
        warnings.append("there were no validation photos, so the model was measured on the photos it trained on: "
                        "add photos (or split folders) to judge it")
    elif len(val_has_face) < MIN_VALIDATION_PHOTOS:
        warnings.append(f"only {len(val_has_face)} validation photos: too few to judge the model "
                        f"(at least {MIN_VALIDATION_PHOTOS}; add photos)")
    if np.isfinite(guess) and model_val_iou < guess + MARGIN:
        warnings.append(f"no better than guessing: the model's validation mean IoU is {model_val_iou:.2f}, and "
                        f"drawing the average box on every photo scores {guess:.2f}")
    prelabel = float(prelabel_val_iou) if prelabel_val_iou is not None and np.isfinite(prelabel_val_iou) else None
    if prelabel is not None and model_val_iou < prelabel - PRELABEL_MARGIN:
        warnings.append(f"worse than the pre-labels: YuNet's boxes, placed as your labels place theirs, score "
                        f"{prelabel:.2f} mean IoU on the same photos against the model's {model_val_iou:.2f}; "
                        "label more photos (YuNet pre-labels them for you) and train again")
    return {"val_photos": int(len(val_has_face)), "val_faces": int(len(val_faces)),
            "model_val_iou": round(float(model_val_iou), 4),
            "mean_box_val_iou": round(guess, 4) if np.isfinite(guess) else None,
            "prelabel_val_iou": round(prelabel, 4) if prelabel is not None else None,
            "prelabel_photos": prelabel_photos if prelabel is not None else 0,
            "prelabel_unreadable": int(prelabel_unreadable), "warnings": warnings}


def comparison_line(verdict: dict) -> str:
    """The verdict's figures side by side, as the log and the Train page say them."""
    def figure(key: str) -> str:
        value = verdict.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
        return f"{value:.3f}" if ok else "not measured"

    def count(key: str) -> int | None:
        value = verdict.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    photos = count("val_photos")
    where = f" on the same {photos} validation photos" if photos is not None else ""
    prelabel = figure("prelabel_val_iou")
    unreadable, scored = count("prelabel_unreadable"), count("prelabel_photos")
    if unreadable and prelabel == "not measured":
        prelabel = (f"not measured: none of the {unreadable} validation photos with a face could be read again "
                    "(moved or deleted during training?)")
    elif unreadable:
        prelabel += (f" on the {scored} validation photos with a face it could read ({unreadable} could not be "
                     "read again and were left out)" if scored is not None else
                     f" ({unreadable} validation photos could not be read again and were left out)")
    return (f"your model: mean IoU {figure('model_val_iou')}; YuNet pre-labels: {prelabel}; "
            f"always-the-average-box: {figure('mean_box_val_iou')}{where}")
