"""Pre-labels: boxes for photos nobody has labelled yet, from a detector, drawn as the dataset draws them.

The person then only checks each box instead of drawing it. A detector that was trained elsewhere
(YuNet: forehead to chin) finds the faces but places the edges by its own habit; when the dataset
already holds labelled faces, the detector is run on a sample of them and its boxes are moved onto
the dataset's habit (see `facetracker.labelling.convention`), so new labels match the old ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from facetracker.boxes import PixelBox, iou, iou_matrix
from facetracker.data import datasets as data_lib
from facetracker.data.images import sample_pixels
from facetracker.data.labelme import labelme_faces_json
from facetracker.data.labels import face_descriptions
from facetracker.inference import models
from facetracker.inference.detect import YUNET, Detection
from facetracker.inference.video import video_frames
from facetracker.io import atomic
from facetracker.labelling.convention import BoxConvention, fit_convention

CONVENTION_PHOTOS = 40
"""Labelled photos the convention is learnt from: its medians settle within a few dozen."""
MIN_OVERLAP = 0.2
"""A detected face overlapping a labelled one less than this is another face, not the same one."""


def learn_convention(samples: list[data_lib.Sample], detect: Callable[[np.ndarray], Detection],
                     photos: int = CONVENTION_PHOTOS) -> BoxConvention:
    """The dataset's box convention relative to `detect`'s boxes, from up to `photos` labelled photos
    spread over the dataset. A photo that cannot be read is passed over (the dataset's own listing
    names it)."""
    labelled = [sample for sample in samples if sample.has_face]
    if len(labelled) > photos:
        labelled = [labelled[int(i)] for i in np.linspace(0, len(labelled) - 1, photos)]
    pairs = []
    for sample in labelled:
        try:
            rgb = sample_pixels(sample, max_side=640)
        except (ValueError, OSError):
            continue
        height, width = rgb.shape[:2]
        faces = detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)).faces
        if not faces:
            continue
        label = np.array(sample.box) * [width, height, width, height]
        overlaps = iou_matrix(np.array([face.box for face in faces], float), label[None])[:, 0]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= MIN_OVERLAP:
            pairs.append((faces[best].box, tuple(label)))
    return fit_convention(pairs)


def prelabel_boxes(frame_bgr: np.ndarray, detect: Callable[[np.ndarray], Detection],
                   convention: BoxConvention = BoxConvention()) -> list[PixelBox]:
    """Every face `detect` finds in the frame, most confident first, moved onto the convention."""
    height, width = frame_bgr.shape[:2]
    boxes = []
    for face in detect(frame_bgr).faces:
        x0, y0, x1, y1 = convention.apply(face.box, width, height)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            boxes.append((int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))))
    return boxes


@dataclasses.dataclass(frozen=True)
class PrelabelFit:
    """How well pre-labels fit the labelled faces of a set of photos."""

    mean_iou: float | None
    """Mean IoU over the photos with a face that could be read; None when none could."""
    photos: int
    """Photos with a labelled face that were scored."""
    unreadable: int
    """Photos with a labelled face that could not be read (deleted or changed since they were
    listed): left out, never scored as a miss."""
    own_labels: int = 0
    """Photos with a face whose label is the detector's own pre-label (`drawn_by_yunet`): left out,
    since scoring a detector on its own boxes measures nothing."""


def prelabel_ious(labelled: list[data_lib.Sample], photos: list[data_lib.Sample],
                  detect: Callable[[np.ndarray], Detection]) -> tuple[np.ndarray, int]:
    """How well pre-labels fit the labelled faces of `photos`: per photo with a face, the IoU of the
    most confident pre-label (placed in the convention learnt from `labelled`, as `label_dataset`
    places it) with the labelled box, 0 where no face is found; and how many photos with a face
    could not be read, which get no score at all (a photo nobody could see is no miss of YuNet's)."""
    convention = learn_convention(labelled, detect)
    scores, unreadable = [], 0
    for sample in photos:
        if not sample.has_face:
            continue
        try:
            rgb = sample_pixels(sample, max_side=640)
        except (ValueError, OSError):
            unreadable += 1
            continue
        height, width = rgb.shape[:2]
        boxes = prelabel_boxes(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), detect, convention)
        if not boxes:
            scores.append(0.0)
            continue
        found = np.array(boxes[0], float) / [width, height, width, height]
        scores.append(float(iou(found, np.array(sample.box, float))))
    return np.array(scores, float), unreadable


def drawn_by_yunet(sample: data_lib.Sample) -> bool:
    """Whether every face of the sample's label is YuNet's pre-label as YuNet drew it: a labelme
    rectangle described "pre-label: ..." naming YuNet, as `label_dataset`, the Dataset page's
    recording and its webcam photos write them. A box a person drew or corrected says otherwise."""
    descriptions = face_descriptions(sample)
    return bool(descriptions) and all(d.lower().startswith("pre-label:") and "yunet" in d.lower()
                                      for d in descriptions)


def yunet_prelabel_fit(labelled: list[data_lib.Sample], photos: list[data_lib.Sample],
                       threshold: float = 0.6) -> PrelabelFit:
    """YuNet's pre-labels on the faces of `photos` whose labels it did not draw, in `labelled`'s
    convention: what a trained model has to beat to be worth more than pre-labelling."""
    own = [sample for sample in photos if sample.has_face and drawn_by_yunet(sample)]
    own_images = {sample.image for sample in own}
    others = [sample for sample in photos if sample.has_face and sample.image not in own_images]
    if not others:
        return PrelabelFit(None, 0, 0, len(own))
    scores, unreadable = prelabel_ious(labelled, others, models.open_detector(YUNET, models.PHOTO, threshold).detect)
    return PrelabelFit(float(scores.mean()) if len(scores) else None, len(scores), unreadable, len(own))


def label_dataset(folder: str | Path, model: str = "yunet", *, video: str | Path | None = None,
                  every_s: float = 0.5, threshold: float = 0.6, log: Callable[[str], None] = print,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Pre-label a dataset folder (`images/` + `labels/`): every photo without a label gets a labelme
    file with a rectangle per face found, placed as the folder's existing labels place theirs. With
    `video`, a frame every `every_s` seconds of it is first added to `images/`. A photo where no face
    is found keeps no label: it counts as a no-face photo. Existing labels are never touched.

    Returns what was done: frames added, photos looked at, labels written, faces in them.
    """

    folder = Path(folder)
    if not (every_s > 0 and np.isfinite(every_s)):
        raise ValueError(f"the sampling interval must be a positive number of seconds, got {every_s!r}")
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    detector = models.open_detector(model, models.PHOTO, threshold)
    done = {"frames": 0, "photos": 0, "labelled": 0, "faces": 0}
    if video is not None:
        done["frames"] = _add_video_frames(Path(video), images, every_s, progress)
        log(f"{video}: {done['frames']} frames added to {images} as {video_frame_prefix(Path(video))}-*.jpg")
    try:
        labelled = [s for s in data_lib.load_dataset(folder, check_pixels=False).samples if s.label]
    except data_lib.DatasetError:
        labelled = []
    convention = learn_convention(labelled, detector.detect)
    if convention.pairs:
        log(f"boxes placed as this folder's labels place theirs (learnt from {convention.pairs} faces)")
    skipped: list[data_lib.Skipped] = []
    photos = sorted(data_lib.list_files(images, data_lib.IMAGE_EXTENSIONS, skipped).items())
    for index, (stem, path) in enumerate(photos, start=1):
        if progress:
            progress(index - 1, len(photos))
        if (labels / f"{stem}.json").exists():
            continue
        try:
            rgb = data_lib.read_image(path)
        except data_lib.ImageError as error:
            skipped.append(data_lib.Skipped(str(path), str(error)))
            continue
        done["photos"] += 1
        frame = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        boxes = prelabel_boxes(frame, detector.detect, convention)
        if not boxes:
            continue
        height, width = rgb.shape[:2]
        faces = [(box, f"pre-label: {model}") for box in boxes]
        atomic.write_text(labels / f"{stem}.json", labelme_faces_json(f"../images/{path.name}", width, height, faces))
        done["labelled"] += 1
        done["faces"] += len(boxes)
    if progress:
        progress(len(photos), len(photos))
    for item in skipped:
        log(str(item))
    return done


VIDEO_DIGEST_CHARS = 10
"""Hex digits of the video's SHA-256 in its frames' names: two different videos never share a name."""


def video_frame_prefix(video: Path) -> str:
    """`<file stem>-<content digest>`: the name the frames of this video start with.

    Two recordings are often called the same (`VID_0001.mp4`, `clip.mp4`); named by the file alone,
    the second one's frames would replace the first one's, whose labels would then describe photos
    they were not drawn on. The same video imported again gives the same names (and frames)."""
    with open(video, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()[:VIDEO_DIGEST_CHARS]
    return f"{video.stem}-{digest}"


def _add_video_frames(video: Path, images: Path, every_s: float,
                      progress: Callable[[int, int | None], None] | None = None) -> int:
    """A frame every `every_s` seconds of the video, saved as JPEG photos named after it and its
    content (`video_frame_prefix`); a photo already there is never replaced. Returns how many were
    added; `progress` counts the frames read."""
    try:
        prefix = video_frame_prefix(video)
    except OSError as error:
        raise ValueError(f"{video}: cannot read the video ({error.strerror or error})") from None
    added, next_time = 0, 0.0
    for index, (frame, seconds) in enumerate(video_frames(video, max_frames=100_000, max_side=1280,
                                                          name=video.name)):
        if progress:
            progress(index + 1, None)
        if seconds + 1e-6 < next_time:
            continue
        next_time = seconds + every_s
        target = images / f"{prefix}-{index:06d}.jpg"
        if target.exists() or target.is_symlink():  # this very frame, from an earlier import of this video
            continue
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if ok:
            atomic.write_bytes(target, encoded.tobytes())
            added += 1
    return added
