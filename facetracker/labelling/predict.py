"""Pre-labelling: let a model draw the boxes, then a person corrects them in labelme."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from facetracker.data import datasets as data_lib
from facetracker.data.labelme import labelme_faces_json
from facetracker.inference import models
from facetracker.runs.run_folder import atomic_write_text


def prelabel_folder(model: str | Path, images: str | Path, out: str | Path, threshold: float | None = None,
                    overwrite: bool = False, log: Callable[[str], None] = print,
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """Write `<out>/<stem>.json` for every image in `images`, a rectangle for every face the model (a
    model file, run folder, or `yunet` / `haar`) finds; existing labels are kept unless `overwrite`."""

    images_dir, out_dir = Path(images), Path(out)
    if not images_dir.is_dir():
        raise data_lib.DatasetError(f"{images_dir}: no such folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    detector = models.open_detector(model, models.PHOTO, threshold)
    summary = {"written": 0, "faces": 0, "kept": 0, "skipped": 0}
    skipped: list[data_lib.Skipped] = []
    files = data_lib.list_files(images_dir, data_lib.IMAGE_EXTENSIONS, skipped)
    for done, (stem, path) in enumerate(files.items(), start=1):
        if progress:
            progress(done - 1, len(files))
        target = out_dir / f"{stem}.json"
        if target.exists() and not overwrite:
            summary["kept"] += 1
            continue
        try:
            rgb = data_lib.read_image(path)
        except data_lib.ImageError as error:
            skipped.append(data_lib.Skipped(str(path), str(error)))
            continue
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        detection = detector.detect(bgr)
        height, width = rgb.shape[:2]
        relative = Path("..", images_dir.name, path.name) if out_dir.parent == images_dir.parent else path.resolve()
        faces = [(face.box, f"pre-label p={face.score:.2f}") for face in detection.faces]
        atomic_write_text(target, labelme_faces_json(str(relative), width, height, faces))
        summary["written"] += 1
        summary["faces"] += len(faces)
    if progress:
        progress(len(files), len(files))
    for item in skipped:
        log(str(item))
    summary["skipped"] = len(skipped)
    return summary
