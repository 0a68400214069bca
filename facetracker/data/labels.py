"""Label files: labelme, Pascal VOC and YOLO. Each reader returns (boxes in pixels, (width, height)
the label claims or None) and refuses what it cannot use with a `LabelError` naming the field."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from facetracker.boxes import Box
from facetracker.config.jsonconfig import NestedTooDeep, parse_json
from facetracker.data.files import ImageError, LabelError, printable, read_bytes
from facetracker.data.samples import Sample

FACE_LABELS = ("face",)
# labelme lets a corner sit a little outside the image when dragged to the edge.
EDGE_TOLERANCE = 0.02
# imageWidth / imageHeight beyond this are not a photo's size but a broken or hostile label.
MAX_LABEL_SIDE = 1_000_000


def shown(value: object, limit: int = 40) -> str:
    text = printable(repr(value))
    return text if len(text) <= limit else text[:limit] + "…"


def label_number(value: object, what: str) -> float:
    """A label's number as a finite float; anything else is the label's problem, named."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LabelError(f"{what} is {shown(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise LabelError(f"{what} is a {len(str(value))}-digit number, not a coordinate") from None
    if not math.isfinite(number):
        raise LabelError(f"{what} is {number}, not a finite number")
    return number


def label_side(value: object, what: str) -> int:
    number = label_number(value, what)
    if number != int(number) or not 1 <= number <= MAX_LABEL_SIDE:
        raise LabelError(f"{what} is {shown(value)}, not a whole number of pixels from 1 to {MAX_LABEL_SIDE:,}")
    return int(number)


def parse_label_json(path: Path, root: str | Path | None) -> object:
    try:
        return parse_json(read_bytes(path, root).decode("utf-8"))
    except UnicodeDecodeError:
        raise LabelError("not a text file") from None
    except json.JSONDecodeError as error:
        raise LabelError(f"not valid JSON ({error.msg} at line {error.lineno})") from None
    except NestedTooDeep as error:  # a labelme or a COCO file: neither nests past a few levels
        raise LabelError(f"its JSON is nested too deeply to read ({error})") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise LabelError(f"not valid JSON ({error})") from None


def read_labelme(path: Path, root: str | Path | None = None) -> tuple[list[Box], tuple[int, int] | None, dict]:
    data = parse_label_json(path, root)
    if not isinstance(data, dict):
        raise LabelError("not a labelme file (expected a JSON object)")
    shapes = data.get("shapes")
    if not isinstance(shapes, list):
        raise LabelError("not a labelme file (no 'shapes' list)")
    boxes: list[Box] = []
    for shape in shapes:
        if not isinstance(shape, dict) or str(shape.get("label", "")).lower() not in FACE_LABELS:
            continue
        kind = shape.get("shape_type", "rectangle")
        if kind != "rectangle":
            raise LabelError(f"the 'face' shape is a {kind}, expected a rectangle")
        points = shape.get("points")
        try:
            (x0, y0), (x1, y1) = points
        except (TypeError, ValueError):
            raise LabelError("the 'face' rectangle does not have two [x, y] points") from None
        # Checked one by one: "12" compares with 9 as text, and a NaN or a 400-digit integer
        # would fail far from here without naming the label.
        x0, y0, x1, y1 = (label_number(v, f"the 'face' rectangle's {name}") for v, name in
                          ((x0, "points[0][0]"), (y0, "points[0][1]"), (x1, "points[1][0]"), (y1, "points[1][1]")))
        boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    size = None
    if data.get("imageWidth") is not None or data.get("imageHeight") is not None:
        size = (label_side(data.get("imageWidth"), "imageWidth"), label_side(data.get("imageHeight"), "imageHeight"))
    return boxes, size, data


def face_descriptions(sample: Sample) -> list[str]:
    """The descriptions of a labelme label's face rectangles, which say what drew each box
    ("pre-label: <detector>", "corrected by hand"); [] for another format or a label that cannot be
    read now."""
    if not (sample.label and sample.label.lower().endswith(".json")):
        return []
    try:
        _, _, data = read_labelme(Path(sample.label), sample.root)
    except (LabelError, ImageError, OSError, ValueError):
        return []
    return [str(shape.get("description") or "") for shape in data.get("shapes", [])
            if isinstance(shape, dict) and str(shape.get("label", "")).lower() in FACE_LABELS]


def read_voc(path: Path, data_root: str | Path | None = None) -> tuple[list[Box], tuple[int, int] | None]:
    try:
        root = ElementTree.fromstring(read_bytes(path, data_root))
    except ElementTree.ParseError as error:
        raise LabelError(f"not valid XML ({error})") from None
    if root.tag != "annotation":  # any other XML would read as a photo without a face
        raise LabelError(f"not a Pascal VOC file (its root element is <{shown(root.tag)[1:-1]}>, "
                         "expected <annotation>)")
    boxes: list[Box] = []
    for obj in root.iter("object"):
        if (obj.findtext("name") or "").strip().lower() not in FACE_LABELS:
            continue
        bndbox = obj.find("bndbox")
        try:
            x0, y0, x1, y1 = (float(bndbox.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise LabelError("an object 'face' has no usable <bndbox>") from None
        boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    texts = [root.findtext(f"size/{side}") for side in ("width", "height")]
    if all(text is None or text.strip() in ("", "0") for text in texts):
        return boxes, None  # no size, or 0 x 0: what some tools write when they do not know it
    numbers = []
    for text, side in zip(texts, ("width", "height")):
        try:
            numbers.append(float((text or "").strip()))
        except ValueError:
            raise LabelError(f"<size><{side}> is {shown(text)}, not a number") from None
    return boxes, (label_side(numbers[0], "<size><width>"), label_side(numbers[1], "<size><height>"))


def read_yolo(path: Path, width: int, height: int, root: str | Path | None = None) -> tuple[list[Box], str]:
    """The face boxes in pixels, and a note when a segmentation polygon was reduced to its bounding box."""
    boxes: list[Box] = []
    polygons = []
    try:
        text = read_bytes(path, root).decode("utf-8")
    except UnicodeDecodeError:
        raise LabelError("not a text file") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            cls, values = int(fields[0]), [float(v) for v in fields[1:]]
        except (ValueError, IndexError):
            raise LabelError(f"line {number} is not 'class cx cy w h'") from None
        if len(values) == 4:
            cx, cy, w, h = values
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        elif len(values) >= 6 and len(values) % 2 == 0:
            # A YOLO segmentation line: class x1 y1 x2 y2 ... (a polygon of 3 or more points).
            xs, ys = values[0::2], values[1::2]
            box = (min(xs), min(ys), max(xs), max(ys))
            if cls == 0:
                polygons.append(number)
        else:
            raise LabelError(f"line {number} holds {len(values)} numbers after the class; expected 'class cx cy w h' "
                             "(4) or a segmentation polygon 'class x1 y1 x2 y2 ...' (6 or more, in pairs)")
        if cls != 0:
            continue
        boxes.append((box[0] * width, box[1] * height, box[2] * width, box[3] * height))
    note = ""
    if polygons:
        note = f"line {', '.join(map(str, polygons))} is a segmentation polygon; its bounding box is the face box"
    return boxes, note


def normalise(box: Box, width: int, height: int) -> Box:
    if not all(math.isfinite(v) for v in box):  # json, XML and YOLO text all let NaN and Infinity through
        raise LabelError("the face box has a corner that is not a finite number")
    x0, y0, x1, y1 = box
    tol_x, tol_y = EDGE_TOLERANCE * width, EDGE_TOLERANCE * height
    if x0 < -tol_x or y0 < -tol_y or x1 > width + tol_x or y1 > height + tol_y:
        raise LabelError(
            f"the face box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) lies outside the "
            f"{width}x{height} image"
        )
    x0, x1 = np.clip([x0, x1], 0, width) / width
    y0, y1 = np.clip([y0, y1], 0, height) / height
    if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
        raise LabelError("the face box has zero size")
    return (float(x0), float(y0), float(x1), float(y1))


def area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])
