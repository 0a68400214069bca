"""What a dataset is made of: samples (an image and its faces, normalised), skipped files, the
dataset with its splits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from facetracker.boxes import Box
from facetracker.data.files import printable

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Sample:
    image: str
    """Path of the image file, or of the label file whose embedded `imageData` holds the image."""
    box: Box | None
    """Normalised box of the largest face (what a single-box model learns), or None for a no-face image."""
    split: str | None = None
    label: str | None = None
    embedded: bool = False
    """The pixels come from the label's base64 `imageData`, not from an image file."""
    root: str | None = None
    """The data root the files must stay inside when read again (the app's), or None (unconfined)."""
    faces: tuple[Box, ...] = ()
    """Every labelled face, normalised, the largest first (`box` is the first)."""

    def __post_init__(self) -> None:
        if not self.faces and self.box is not None:
            object.__setattr__(self, "faces", (self.box,))

    @property
    def has_face(self) -> bool:
        return self.box is not None

    @property
    def name(self) -> str:
        return Path(self.image).stem


@dataclasses.dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def __post_init__(self) -> None:
        # A file name that is not UTF-8 must not make printing, JSON or the page fail on this line.
        object.__setattr__(self, "path", printable(str(self.path)))
        object.__setattr__(self, "reason", printable(str(self.reason)))

    def __str__(self) -> str:
        return f"skipped {self.path}: {self.reason}"


@dataclasses.dataclass
class Dataset:
    root: str
    samples: list[Sample]
    skipped: list[Skipped]
    notes: list[str]
    layout: str
    has_splits: bool

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def summary(self) -> dict:
        counts = {
            "images": len(self.samples),
            "faces": sum(s.has_face for s in self.samples),
            "no_face": sum(not s.has_face for s in self.samples),
            "labelled_faces": sum(len(s.faces) for s in self.samples),
            "several_faces": sum(len(s.faces) > 1 for s in self.samples),
            "skipped": len(self.skipped),
            "layout": self.layout,
        }
        for split in SPLITS:
            members = self.split(split)
            if members:
                counts[split] = {
                    "faces": sum(s.has_face for s in members),
                    "no_face": sum(not s.has_face for s in members),
                }
        return counts

    def describe(self) -> str:
        """One line for people: what was found and what was skipped."""
        s = self.summary()
        parts = [f"{s['images']} images ({s['faces']} with a face, {s['no_face']} without)"]
        if s["several_faces"]:
            parts.append(f"{s['labelled_faces']} faces labelled, {s['several_faces']} images with several")
        per_split = [f"{k} {s[k]['faces'] + s[k]['no_face']}" for k in SPLITS if k in s]
        if per_split:
            parts.append("split " + " / ".join(per_split))
        parts.append(f"{s['skipped']} skipped")
        return f"{self.root}: " + ", ".join(parts)
