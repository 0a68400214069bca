"""A labelme dataset made at test time that holds every kind of bad input next to good real photos.

`make_bad_corpus(folder, helen)` writes `folder/images/` and `folder/labels/` and returns a
`Corpus` whose `expected` maps each file (relative to the folder) to what every reader must do
with it: use it (with or without a face) or skip it with a reason containing a keyword.

Good photos are copied from faces-helen (`$FACETRACKER_DATA/faces-helen`); the bad files are
derived from them here, so nothing derived from the dataset is ever stored in the repository.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Expected:
    path: str
    """The file a reader reports, relative to the corpus folder (the image, or the label when alone)."""
    usable: bool
    face: bool | None = None
    """For a usable file: does it hold a labelled face."""
    reason: str | None = None
    """For a skipped file: a keyword its skip reason must contain (lower case)."""
    pixels_ok: bool = False
    """The image itself decodes; only its label is wrong (so `predict`, which reads no labels, uses it)."""


@dataclasses.dataclass
class Corpus:
    root: Path
    expected: dict[str, Expected]
    reference: dict[str, tuple[np.ndarray, tuple[float, float, float, float]]]
    """For the unusual pixel formats and the EXIF-rotated photo: the RGB pixels a reader must give
    (upright, alpha over white) and the normalised face box."""

    @property
    def usable(self) -> list[Expected]:
        return [e for e in self.expected.values() if e.usable]

    @property
    def skipped(self) -> list[Expected]:
        return [e for e in self.expected.values() if not e.usable]

    @property
    def image_files(self) -> list[Expected]:
        """Entries in images/ (what `predict` sees)."""
        return [e for e in self.expected.values() if e.path.startswith("images/")]


def helen_pairs(helen: Path, n: int, *, faces: bool) -> list[tuple[Path, Path | None]]:
    """The first `n` helen photos with a face label (faces=True) or with no label (a no-face photo)."""
    labels = helen / "labels"
    out = []
    for image in sorted((helen / "images").glob("*.jpg")):
        label = labels / f"{image.stem}.json"
        if label.exists() == faces:
            out.append((image, label if faces else None))
            if len(out) == n:
                break
    if len(out) < n:
        raise FileNotFoundError(f"{helen}: fewer than {n} photos {'with' if faces else 'without'} a face")
    return out


def labelme(image_name: str, width: int, height: int, boxes: list[tuple[float, float, float, float]],
            **overrides) -> dict:
    shapes = [{"label": "face", "points": [[x0, y0], [x1, y1]], "group_id": None, "description": "",
               "shape_type": "rectangle", "flags": {}, "mask": None} for x0, y0, x1, y1 in boxes]
    data = {"version": "5.6.1", "flags": {}, "shapes": shapes, "imagePath": f"../images/{image_name}",
            "imageData": None, "imageHeight": height, "imageWidth": width}
    data.update(overrides)
    return data


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_png_header(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose header says width x height but which holds pixel data for a few rows only.

    Made in microseconds; a reader that decodes before checking the size would either allocate
    1.2 GB or fail on the short data with a different reason than "too large".
    """
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b""))


def huge_jpeg_header(small_jpeg: bytes, width: int = 20000, height: int = 20000) -> bytes:
    """A real small JPEG with its frame header (SOF0) patched to claim width x height."""
    at = small_jpeg.index(b"\xff\xc0")
    # SOF0: marker(2) length(2) precision(1) height(2) width(2)
    return small_jpeg[:at + 5] + struct.pack(">HH", height, width) + small_jpeg[at + 9:]


def _box_px(label: Path) -> tuple[float, float, float, float]:
    shape = json.loads(label.read_text())["shapes"][0]
    (x0, y0), (x1, y1) = shape["points"]
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def make_bad_corpus(folder: Path, helen: Path, n_good_faces: int = 16, n_good_empty: int = 4) -> Corpus:
    """Write the corpus into `folder` (which must not hold one yet) and say what to expect of each file."""
    folder = Path(folder)
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    expected: dict[str, Expected] = {}
    reference: dict = {}

    def remember(name: str, pixels: np.ndarray, box: tuple[float, float, float, float]) -> None:
        height, width = pixels.shape[:2]
        reference[f"images/{name}"] = (pixels, (box[0] / width, box[1] / height, box[2] / width, box[3] / height))

    def usable(name: str, face: bool) -> None:
        expected[f"images/{name}"] = Expected(f"images/{name}", True, face=face, pixels_ok=True)

    def skip(path: str, reason: str, pixels_ok: bool = False) -> None:
        expected[path] = Expected(path, False, reason=reason, pixels_ok=pixels_ok)

    def write_label(name: str, data: dict | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        (labels / f"{Path(name).stem}.json").write_text(text, encoding="utf-8")

    faces = helen_pairs(helen, n_good_faces + 24, faces=True)
    empties = helen_pairs(helen, n_good_empty, faces=False)

    # Good real photos, some under awkward names.
    awkward = {0: "with spaces in it.jpg", 1: "ünïcødé-顔.jpg", 2: "-rf --leading-dashes.jpg"}
    for i, (image, label) in enumerate(faces[:n_good_faces]):
        name = awkward.get(i, image.name)
        shutil.copyfile(image, images / name)
        data = json.loads(label.read_text())
        data["imagePath"] = f"../images/{name}"
        write_label(name, data)
        usable(name, True)
    for image, _ in empties:
        shutil.copyfile(image, images / image.name)
        usable(image.name, False)

    donors = iter(faces[n_good_faces:])

    def donor() -> tuple[Path, Image.Image, tuple[float, float, float, float]]:
        image, label = next(donors)
        return image, Image.open(image).convert("RGB"), _box_px(label)

    # Images that cannot be read at all: each has a valid-looking label so only the pixels are at fault.
    src, pil, box = donor()
    raw = src.read_bytes()
    (images / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    write_label("truncated.jpg", labelme("truncated.jpg", *pil.size, [box]))
    skip("images/truncated.jpg", "broken")

    (images / "zero-bytes.jpg").write_bytes(b"")
    write_label("zero-bytes.jpg", labelme("zero-bytes.jpg", *pil.size, [box]))
    skip("images/zero-bytes.jpg", "empty")

    (images / "text-file.jpg").write_text("this is a shopping list, not a photo\n")
    write_label("text-file.jpg", labelme("text-file.jpg", *pil.size, [box]))
    skip("images/text-file.jpg", "not an image")

    Image.new("RGB", (1, 1), (128, 128, 128)).save(images / "one-pixel.png")
    write_label("one-pixel.png", labelme("one-pixel.png", 1, 1, []))
    skip("images/one-pixel.png", "1x1")

    (images / "huge-20000px.png").write_bytes(huge_png_header())
    write_label("huge-20000px.png", labelme("huge-20000px.png", 20000, 20000, [(100, 100, 5000, 5000)]))
    skip("images/huge-20000px.png", "400 megapixels")

    small = io.BytesIO()
    pil.resize((64, 64)).save(small, "JPEG")
    (images / "huge-20000px-header.jpg").write_bytes(huge_jpeg_header(small.getvalue()))
    skip("images/huge-20000px-header.jpg", "400 megapixels")

    # Unusual but valid pixel formats: usable, and the box is the donor's.
    src, pil, box = donor()
    gray16 = (np.asarray(pil.convert("L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(images / "sixteen-bit.png")
    write_label("sixteen-bit.png", labelme("sixteen-bit.png", *pil.size, [box]))
    usable("sixteen-bit.png", True)
    remember("sixteen-bit.png", np.asarray(pil.convert("L").convert("RGB")), box)

    src, pil, box = donor()
    pil.convert("L").save(images / "grayscale.jpg", quality=90)
    write_label("grayscale.jpg", labelme("grayscale.jpg", *pil.size, [box]))
    usable("grayscale.jpg", True)
    remember("grayscale.jpg", np.asarray(pil.convert("L").convert("RGB")), box)

    src, pil, box = donor()
    rgba = pil.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(images / "rgba.png")
    write_label("rgba.png", labelme("rgba.png", *pil.size, [box]))
    usable("rgba.png", True)
    remember("rgba.png", np.asarray(Image.alpha_composite(Image.new("RGBA", pil.size, (255, 255, 255, 255)), rgba)
                                    .convert("RGB")), box)

    src, pil, box = donor()
    pil.convert("CMYK").save(images / "cmyk.jpg", quality=90)
    write_label("cmyk.jpg", labelme("cmyk.jpg", *pil.size, [box]))
    usable("cmyk.jpg", True)
    remember("cmyk.jpg", np.asarray(pil), box)

    # EXIF orientation 6 ("rotate 90 clockwise to display"): the stored pixels lie on their side;
    # labelme shows the photo upright and the label's box and size are in that upright frame.
    src, pil, box = donor()
    stored = pil.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise: displaying turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(images / "exif-rotated.jpg", quality=95, exif=exif.tobytes())
    write_label("exif-rotated.jpg", labelme("exif-rotated.jpg", *pil.size, [box]))
    usable("exif-rotated.jpg", True)
    remember("exif-rotated.jpg", np.asarray(pil), box)

    # Good pixels, bad labels.
    def bad_label(name: str, label: dict | str, reason: str) -> None:
        src, pil, _ = donor()
        shutil.copyfile(src, images / name)
        write_label(name, label(pil.size) if callable(label) else label)
        skip(f"images/{name}", reason, pixels_ok=True)

    bad_label("label-not-json.jpg", '{"shapes": [ {"label": "face", ', "json")
    bad_label("label-no-shapes.jpg", lambda size: {k: v for k, v in labelme("label-no-shapes.jpg", *size, [])
                                                   .items() if k != "shapes"}, "shapes")
    bad_label("label-polygon.jpg", lambda size: labelme("label-polygon.jpg", *size, [], shapes=[
        {"label": "face", "points": [[10, 10], [60, 12], [55, 70], [12, 65]], "shape_type": "polygon"}]),
        "polygon")
    bad_label("label-outside.jpg", lambda size: labelme("label-outside.jpg", *size,
                                                        [(size[0] * 1.5, 10, size[0] * 2.5, 90)]), "outside")
    bad_label("label-zero-area.jpg", lambda size: labelme("label-zero-area.jpg", *size, [(50, 40, 50, 90)]),
              "zero size")
    bad_label("label-wrong-width.jpg", lambda size: labelme("label-wrong-width.jpg", size[0] * 2, size[1],
                                                            [(10, 10, 60, 60)]), "imagewidth")
    bad_label("label-other-image.jpg", lambda size: labelme("label-other-image.jpg", *size, [(10, 10, 60, 60)],
                                                            imagePath="../images/somebody-else.jpg"), "imagepath")

    bad_label("label-nan.jpg", lambda size: labelme("label-nan.jpg", *size, [(float("nan"), 10, 60, 60)]),
              "finite")  # Python's json writes and reads NaN

    # Label values of the wrong kind or out of range: each is that one file's skip line, naming the field.
    bad_label("label-string-points.jpg", lambda size: labelme("label-string-points.jpg", *size, [], shapes=[
        {"label": "face", "points": [["12", 10], [60, 70]], "shape_type": "rectangle"}]), "points[0][0]")
    bad_label("label-huge-point.jpg", lambda size: labelme("label-huge-point.jpg", *size, [(10**400, 10, 60, 60)]),
              "digit number")
    bad_label("label-width-inf.jpg", lambda size: json.dumps(labelme("label-width-inf.jpg", *size, [(10, 10, 60, 60)]))
              .replace(f'"imageWidth": {size[0]}', '"imageWidth": 1e309'), "imagewidth")
    bad_label("label-height-nan.jpg", lambda size: labelme("label-height-nan.jpg", size[0], float("nan"),
                                                           [(10, 10, 60, 60)]), "imageheight")
    bad_label("label-height-huge-int.jpg", lambda size: labelme("label-height-huge-int.jpg", size[0], 10**30,
                                                                [(10, 10, 60, 60)]), "imageheight")
    bad_label("label-5000-digits.jpg", lambda size: json.dumps(labelme("label-5000-digits.jpg", *size, []))
              .replace(f'"imageWidth": {size[0]}', '"imageWidth": ' + "9" * 5000), "json")
    bad_label("label-deep-nesting.jpg", "[" * 100_000 + "]" * 100_000, "nested too deeply")
    write_label("orphan-bad-imagedata.jpg", labelme("orphan-bad-imagedata.jpg", 640, 480, [(10, 10, 60, 60)],
                                                    imageData="%%% not base64 %%%"))
    skip("labels/orphan-bad-imagedata.json", "imagedata")
    write_label("orphan-number-imagedata.jpg", labelme("orphan-number-imagedata.jpg", 640, 480, [(10, 10, 60, 60)],
                                                       imageData=12345))
    skip("labels/orphan-number-imagedata.json", "imagedata")

    # A label that cannot be read makes its photo unusable, never a no-face photo; reading must not block.
    src, _, _ = donor()
    shutil.copyfile(src, images / "fifo-label.jpg")
    os.mkfifo(labels / "fifo-label.json")
    skip("images/fifo-label.jpg", "fifo", pixels_ok=True)

    # Photo name and label name differ only in case: matched (one to one, so unambiguous).
    src, _, _ = donor()
    shutil.copyfile(src, images / "Case-Mismatch.jpg")
    data = json.loads((helen / "labels" / f"{src.stem}.json").read_text())
    data["imagePath"] = "../images/Case-Mismatch.jpg"
    write_label("case-mismatch.jpg", data)
    usable("Case-Mismatch.jpg", True)

    # A file name that is not UTF-8 (possible on Linux): it would pass reading and fail where the
    # name is written as text (split.json, status.json, the page).
    src, _, _ = donor()
    raw_name = b"not-utf8-\xff.jpg"
    shutil.copyfile(src, os.fsencode(images) + b"/" + raw_name)
    skip("images/" + raw_name.decode("utf-8", "backslashreplace"), "not valid utf-8")

    write_label("orphan-label.jpg", labelme("orphan-label.jpg", 640, 480, [(10, 10, 60, 60)]))
    skip("labels/orphan-label.json", "without an image")

    # A symlink that points at itself: following it fails with ELOOP.
    os.symlink("symlink-loop.jpg", images / "symlink-loop.jpg")
    write_label("symlink-loop.jpg", labelme("symlink-loop.jpg", 640, 480, [(10, 10, 60, 60)]))
    skip("images/symlink-loop.jpg", "symbolic link loop")
    # A directory loop, for readers that would walk sub-folders.
    os.symlink(".", images / "loop-dir")

    return Corpus(folder, expected, reference)


def make_unusable_corpus(folder: Path, helen: Path) -> Path:
    """A dataset folder where no file can be used: training must refuse it before it starts."""
    folder = Path(folder)
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    (images / "zero-bytes.jpg").write_bytes(b"")
    (images / "text-file.jpg").write_text("not a photo")
    (images / "huge.png").write_bytes(huge_png_header())
    (image, label), = helen_pairs(helen, 1, faces=True)
    raw = image.read_bytes()
    (images / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    data = json.loads(label.read_text())
    data["imagePath"] = "../images/truncated.jpg"
    (labels / "truncated.json").write_text(json.dumps(data))
    return folder
