"""The dense detector's geometry, without TensorFlow: letterboxing, cell targets, decoding.

The `multi` preset's network looks at a square input and answers at every cell of its stride-8
grid: "a face is centred here" (a score) and the face's box. This module holds what surrounds the
network, in NumPy, so training, the live path, evaluation and every exported model share it:

    frame (any size) --letterbox--> size x size input --network--> [cells, 5] rows
      [score, x0, y0, x1, y1] (box in 0..1 of the input) --decode--> faces in frame pixels

The network trains on square inputs, but every layer is a convolution, so the same weights run on
any input whose sides are multiples of 32. Live video uses that (`input_for_frame`): the network is
rebuilt for the camera's frame shape, and at `LIVE_ZOOM` times the square input's scale, so that a
640x480 frame is seen at 384x288 rather than squeezed to 320x240 inside a grey 320x320 square. Every
function here that takes an input `size` also takes a (width, height) pair for such an input.

`decode` is also the reference post-processing for exported models (TFLite, ONNX), which carry
the network and the box decoding but not the non-maximum suppression: see `decode`.

Photos are also searched closer (`closer_tiles`): the whole frame squeezed into one input loses
small faces (a 32 px face of a 640 px group photo is 16 px of a 320 input), so the photo is also
seen at twice that scale, cut into overlapping input-sized tiles, and the faces of every pass are
merged (`merge_faces`): the same suppression, then a box lying mostly inside a larger one dropped
as a part of that face. Live video keeps the one whole-frame pass: it must be fast.

Cell assignment (`cell_targets`): a cell learns a face when its centre lies inside the face box
and within `CENTRE_RADIUS` strides of the face's centre (FCOS's centre sampling); the cell nearest
the centre always does, so a face smaller than a cell is still learnt. A cell inside two faces
learns the smaller one. Every other cell learns "no face". Why this rule: it needs no anchors or
size ranges (one grid serves 8 px and 250 px faces), and positives sit where the features see the
whole face, which is what makes their boxes good.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from facetracker.boxes import nms, suppress_contained

STRIDE = 8
"""Input pixels per grid cell."""
CENTRE_RADIUS = 1.5
"""How far (in strides) from a face's centre a cell may be and still learn that face."""
PAD_VALUE = 127
"""Grey fill outside the letterboxed image: it scales to 0 in the backbone's input range."""
INPUT_MULTIPLE = 32
"""An input side the dense network takes is a multiple of its coarsest stride."""
LIVE_FRAME = (640, 480)
"""The camera frame (width, height) the live network is shaped for: what browsers give a webcam
stream by default. Other frames still work; they are letterboxed into it."""
LIVE_ZOOM = 1.2
"""How much larger the live network sees a camera frame than the square input it trained at would
(`input_for_frame`). At the square scale a face across a room is so few pixels of the input that
its box comes out too large and it is mostly missed. 1.2 times finds far more of them, for a few
more pixels than the square input, and keeps the frame path faster than YuNet's, where 1.3 times
was slower than YuNet; see docs/notes/2026-12-01-live-zoom.md."""

InputSize = int | tuple[int, int]
"""A network input: the side of a square, or (width, height)."""


def input_wh(size: InputSize) -> tuple[int, int]:
    """(width, height) of an input given as a square side or a (width, height) pair."""
    return (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def input_for_frame(size: int, frame_width: int, frame_height: int, zoom: float = LIVE_ZOOM) -> tuple[int, int]:
    """(width, height) of the smallest input, in multiples of 32, that holds a frame of this shape at
    `zoom` times the scale a square `size` input gives it: (384, 288) for 640x480 frames and a 320
    network (zoom 1: (320, 256))."""
    scale = zoom * size / max(frame_width, frame_height)

    def up(pixels: float) -> int:
        return max(INPUT_MULTIPLE, int(np.ceil(round(pixels, 6) / INPUT_MULTIPLE)) * INPUT_MULTIPLE)

    return up(frame_width * scale), up(frame_height * scale)


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """Where a frame sits in the input: scaled by `scale`, at the top-left corner."""

    scale: float
    input_width: int
    input_height: int
    width: int
    height: int

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes in 0..1 of the input -> frame pixels, clipped to the frame."""
        inputs = [self.input_width, self.input_height, self.input_width, self.input_height]
        pixels = np.asarray(boxes, np.float64).reshape(-1, 4) * inputs / self.scale
        return np.clip(pixels, 0, [self.width, self.height, self.width, self.height])

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes normalised to the frame (0..1 of width and height) -> 0..1 of the input."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        inputs = [self.input_width, self.input_height, self.input_width, self.input_height]
        return boxes * [self.width, self.height, self.width, self.height] * self.scale / inputs


def scaled_rgb(image: np.ndarray, scale: float, *, bgr: bool = False) -> np.ndarray:
    """The frame (grey, BGR or RGB) resized by `scale` as RGB. A shrink to less than half goes
    bilinear to twice the size, then INTER_AREA's exact 2x2 average: a fraction of INTER_AREA's cost
    over a whole camera frame, for nearly the same pixels (see data.model_input). A milder shrink
    goes bilinear alone: its samples are at most 2 px apart, so every pixel still counts, where
    INTER_AREA's fractional weights cost several times as much (docs/speed.md)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if bgr else cv2.COLOR_GRAY2RGB)
    height, width = image.shape[:2]
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        if min(height, width) > 2 * min(new_h, new_w):
            image = cv2.resize(image, (2 * new_w, 2 * new_h), interpolation=cv2.INTER_LINEAR)
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        else:
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image


def letterbox(image: np.ndarray, size: InputSize, *, bgr: bool = False) -> tuple[np.ndarray, Letterbox]:
    """The frame scaled to fit the RGB input (`size`: a square side or (width, height)), keeping its
    aspect, grey to the right and below."""
    input_width, input_height = input_wh(size)
    height, width = image.shape[:2]
    scale = min(input_width / width, input_height / height)
    resized = scaled_rgb(image, scale, bgr=bgr)
    new_h, new_w = resized.shape[:2]
    out = np.full((input_height, input_width, 3), PAD_VALUE, np.uint8)
    out[:new_h, :new_w] = resized[:input_height, :input_width]
    return out, Letterbox(scale, input_width, input_height, width, height)


def grid_centres(size: int, stride: int = STRIDE) -> np.ndarray:
    """[cells, 2] (x, y) of every cell's centre in 0..1 of the input, row by row."""
    cells = size // stride
    ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)


def cell_targets(boxes: np.ndarray, size: int, stride: int = STRIDE) -> np.ndarray:
    """[cells, 5] training targets for the faces `boxes` ([n, 4], 0..1 of the input):
    column 0 is 1 where the cell learns a face, columns 1-4 that face's box (zeros elsewhere)."""
    centres = grid_centres(size, stride)
    cells = size // stride
    targets = np.zeros((len(centres), 5), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not len(boxes):
        return targets
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    best_area = np.full(len(centres), np.inf, np.float32)
    radius = CENTRE_RADIUS / cells
    for box, area in zip(boxes, areas):
        if area <= 0:
            continue
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        inside = ((centres[:, 0] > box[0]) & (centres[:, 0] < box[2]) & (centres[:, 1] > box[1])
                  & (centres[:, 1] < box[3]))
        near = (np.abs(centres[:, 0] - cx) <= radius) & (np.abs(centres[:, 1] - cy) <= radius)
        chosen = inside & near
        col, row = min(int(cx * cells), cells - 1), min(int(cy * cells), cells - 1)
        chosen[max(row, 0) * cells + max(col, 0)] = True
        chosen &= area < best_area
        best_area[chosen] = area
        targets[chosen, 0] = 1.0
        targets[chosen, 1:] = box
    return targets


def top_cells(rows: np.ndarray) -> np.ndarray:
    """Each image's most confident cell [N, 5] of the network's rows [N, cells, 5]: a dense model's
    one answer per photo, scored like a single-box model's (validation, `evaluate`'s per-photo figures)."""
    rows = np.asarray(rows, np.float32)
    if not len(rows):
        return np.zeros((0, 5), np.float32)
    return rows[np.arange(len(rows)), np.argmax(rows[:, :, 0], axis=1)]


DEFAULT_THRESHOLD = 0.3
"""Score from which a cell's face counts, unless told otherwise (the Detect page, `evaluate`,
`predict`). The focal loss keeps scores lower than plain cross-entropy does: on held-out helen
portraits 0.3 finds every face where 0.5 misses some; see
docs/notes/2026-11-30-multi-variants.md."""
NMS_IOU = 0.4
MAX_FACES = 100


def decode(rows: np.ndarray, threshold: float = DEFAULT_THRESHOLD, nms_iou: float = NMS_IOU,
           max_faces: int = MAX_FACES, candidates: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """One image's network output [cells, 5] -> (boxes [k, 4] in 0..1 of the input, scores [k]),
    best first: the cells scoring at least `threshold`, then greedy NMS at `nms_iou`.

    This is the whole post-processing of an exported dense model, for anyone running the .tflite
    or .onnx file elsewhere: take the rows with score >= threshold, keep the `candidates` best,
    suppress boxes overlapping a better one by more than `nms_iou` IoU.
    """
    rows = np.asarray(rows, np.float32).reshape(-1, 5)
    finite = np.isfinite(rows).all(axis=1)
    rows = rows[finite & (rows[:, 0] >= threshold)]
    if len(rows) > candidates:
        rows = rows[np.argsort(-rows[:, 0], kind="stable")[:candidates]]
    boxes = np.clip(rows[:, 1:], 0.0, 1.0)
    keep = nms(boxes, rows[:, 0], nms_iou, max_faces)
    return boxes[keep].reshape(-1, 4), rows[keep, 0]


TILE_EDGE_PX = 4
"""A tile's box this close to a side the tile shares with a neighbour is a face cut by the tile."""


@dataclasses.dataclass(frozen=True)
class Tile:
    """One input cut from the frame scaled by `scale`, its top-left corner at (x, y) of the scaled
    frame; `width` x `height` of it is frame, the rest grey."""

    x: int
    y: int
    width: int
    height: int
    scale: float
    cut_left: bool
    cut_top: bool
    cut_right: bool
    cut_bottom: bool

    def to_frame(self, boxes: np.ndarray, size: InputSize) -> np.ndarray:
        """Boxes in 0..1 of the tile's input -> frame pixels, clipped to the frame the tile holds."""
        pixels = np.clip(_input_pixels(boxes, size), 0, [self.width, self.height, self.width, self.height])
        return (pixels + [self.x, self.y, self.x, self.y]) / self.scale

    def whole(self, boxes: np.ndarray, size: InputSize) -> np.ndarray:
        """Which boxes (0..1 of the input) are not cut by a side shared with a neighbouring tile: a
        face cut there lies whole in the neighbour, as the tiles overlap by half a tile."""
        pixels = _input_pixels(boxes, size)
        cut = ((self.cut_left & (pixels[:, 0] <= TILE_EDGE_PX))
               | (self.cut_top & (pixels[:, 1] <= TILE_EDGE_PX))
               | (self.cut_right & (pixels[:, 2] >= self.width - TILE_EDGE_PX))
               | (self.cut_bottom & (pixels[:, 3] >= self.height - TILE_EDGE_PX)))
        return ~cut


def _input_pixels(boxes: np.ndarray, size: InputSize) -> np.ndarray:
    width, height = input_wh(size)
    return np.asarray(boxes, np.float64).reshape(-1, 4) * [width, height, width, height]


def _tile_starts(length: int, size: int) -> list[int]:
    """Tile origins along one side: `size` long, overlapping by at least half, the last at the end."""
    if length <= size:
        return [0]
    count = int(np.ceil((length - size) / (size / 2))) + 1
    return [int(v) for v in np.linspace(0, length - size, count).round()]


def closer_tiles(width: int, height: int, size: InputSize) -> list[Tile]:
    """Where to look closer at a frame of `width` x `height`: the frame at twice the scale a square
    input of the longer input side sees it (never beyond its own pixels), cut into input-sized tiles
    that overlap by half a tile, so any face up to half a tile wide lies whole in one of them. None
    when the frame fits the input at its own scale. A 640x480 photo at size 320: 6 tiles at its own
    scale (4 of 320x256)."""
    tile_w, tile_h = input_wh(size)
    if width <= tile_w and height <= tile_h:
        return []
    scale = min(1.0, 2 * max(tile_w, tile_h) / max(width, height))
    scaled_w, scaled_h = max(1, round(width * scale)), max(1, round(height * scale))
    xs, ys = _tile_starts(scaled_w, tile_w), _tile_starts(scaled_h, tile_h)
    return [Tile(x, y, min(tile_w, scaled_w - x), min(tile_h, scaled_h - y), scale, x > 0, y > 0,
                 x + tile_w < scaled_w, y + tile_h < scaled_h) for y in ys for x in xs]


def tile_inputs(image: np.ndarray, tiles: list[Tile], size: InputSize, *, bgr: bool = False) -> np.ndarray:
    """[tiles, height, width, 3] RGB inputs: each tile of the scaled frame, grey beyond the frame."""
    tile_w, tile_h = input_wh(size)
    if not tiles:
        return np.zeros((0, tile_h, tile_w, 3), np.uint8)
    scaled = scaled_rgb(image, tiles[0].scale, bgr=bgr)
    out = np.full((len(tiles), tile_h, tile_w, 3), PAD_VALUE, np.uint8)
    for index, tile in enumerate(tiles):
        out[index, :tile.height, :tile.width] = scaled[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width]
    return out


SAME_FACE_CONTAINED = 0.5
"""A box with this share of its area inside a larger box of a photo's faces is the same face as it
(`merge_faces`). Neighbouring faces in a crowd share a small part of the smaller face at most; a
part of a face lies wholly or mostly inside it. See docs/notes/2026-12-07-one-face-one-box.md."""
PART_OF_LARGE_FACE = 0.3
"""The same, inside the box of a face too large for a tile to hold whole: a tile shows such a face
cut, and the network may box a part of it (eyes and brow, or mouth and chin) that reaches out of
the face's box. A face a tile holds whole is seen whole, so a smaller face has no such parts, and
neighbours in a crowd keep `SAME_FACE_CONTAINED`."""
PART_SCORE_MARGIN = 0.1
"""Two boxes of one face whose scores differ by more than this: the better-scoring one is kept (a
box inside a larger one and scoring clearly higher is a face of its own)."""


def merge_faces(boxes: list[np.ndarray], scores: list[np.ndarray], nms_iou: float = NMS_IOU,
                max_faces: int = MAX_FACES, whole_in_tile: float | None = None,
                contained: float = SAME_FACE_CONTAINED, contained_in_large: float = PART_OF_LARGE_FACE,
                score_margin: float = PART_SCORE_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """The faces of a photo's passes (boxes in frame pixels), one box a face, best first: overlaps
    suppressed (NMS at `nms_iou`), then each box lying mostly inside a larger one merged with it
    (`boxes.suppress_contained`), the box kept scored as the better of the two. `whole_in_tile`:
    the longest side, in frame pixels, of a face the closer tiles hold whole (`closer_tile_face`),
    None when there are no tiles.

    Why the merge: a tile at twice the scale holds only a part of a large face, and the network may
    call that part (nose, mouth and chin) a face. Its box lies in the whole-frame pass's box of the
    face but covers a fraction of it, so their IoU stays under the suppression's threshold. A box
    `contained` in another is the same face; in the box of a face too large for a tile to hold
    whole, `contained_in_large` is enough. Of two boxes of a face scoring alike, the larger is kept
    where the face is too large for a tile, so the tile saw a part of it; a smaller face lies whole
    in a tile, which sees it at twice the scale, where the whole frame sees it so small that its box
    comes out too large: there the inner, tighter box is kept
    (docs/notes/2026-12-07-one-face-one-box.md)."""
    every_box = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes])
    every_score = np.concatenate([np.asarray(s, np.float32).reshape(-1) for s in scores])
    keep = nms(every_box, every_score, nms_iou, len(every_box))
    kept = every_box[keep]
    large = np.zeros(len(kept), bool)
    if whole_in_tile is not None:
        large = np.maximum(kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]) > whole_in_tile
    threshold = np.where(large, contained_in_large, contained)
    keep_outer = large if whole_in_tile is not None else None
    merged, merged_scores = suppress_contained(kept, every_score[keep], threshold, score_margin, keep_outer)
    return kept[merged][:max_faces].reshape(-1, 4), merged_scores[:max_faces].astype(np.float32)


def closer_tile_face(tiles: list[Tile], size: InputSize) -> float | None:
    """The longest side, in frame pixels, of a face that lies whole in one of the `tiles`
    (`closer_tiles`: half a tile, as they overlap by half), None without tiles."""
    if not tiles:
        return None
    return min(input_wh(size)) / 2 / tiles[0].scale
