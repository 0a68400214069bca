"""The labelled face photos the bench makes its camera frames and training batches from (faces-helen),
found and checked without TensorFlow, so a missing folder is said at once."""

from __future__ import annotations

import os
from pathlib import Path

from facetracker.data import datasets as data_lib

DATA_ENV = "FACETRACKER_DATA"


def helen_folder(data: str | Path | None, environ: dict | None = None) -> Path:
    """The faces-helen photos: in `data` (--data) or else in $FACETRACKER_DATA, either the folder
    holding faces-helen/ or faces-helen itself. FileNotFoundError saying what is needed otherwise."""
    data = data or (environ if environ is not None else os.environ).get(DATA_ENV)
    if not data:
        raise FileNotFoundError(f"the bench needs labelled face photos: give --data DIR or set {DATA_ENV} to the "
                                "folder holding faces-helen/")
    data = Path(data)
    folder = data / "faces-helen" if (data / "faces-helen").is_dir() else data
    if not folder.is_dir():
        raise FileNotFoundError(f"{data}: no such folder, and no faces-helen folder in it (give --data or set "
                                f"{DATA_ENV} to the folder holding faces-helen/)")
    return folder


def face_samples(folder: Path) -> list[data_lib.Sample]:
    dataset = data_lib.load_dataset(folder, check_pixels=False)
    faces = [s for s in dataset.samples if s.box is not None]
    if not faces:
        raise data_lib.DatasetError(f"{folder}: no labelled face photo to make frames from")
    return faces
