"""Faces hidden in a video (`facetracker blur`): what is covered in each frame, how it is hidden, and the
video written around it (size, frames, rate, sound), with every bad input refused by name."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facetracker import cli
from facetracker.evaluation.leak import covered_share
from facetracker.inference.blur import (
    BLUR,
    BOX,
    PIXELATE,
    Cover,
    CoverSettings,
    FaceCovers,
    blur_video,
    grown,
    hide,
    outermost,
)
from facetracker.inference.detect import Detection, FaceBox
from tests.conftest import FIXTURE_FACES

RATE = 25
SIZE = (320, 240)


def face_at(index: int) -> tuple[float, float, float, float]:
    """A 40x48 face moving right 4 px a frame."""
    x = 20 + 4 * index
    return (x, 80, x + 40, 128)


def covers_for(seen: dict[int, list], frames: int, **settings) -> list[Cover]:
    """Each frame's cover when the detector reports `seen[index]` (boxes) in frame `index`."""
    covers_of = FaceCovers(CoverSettings(**settings), *SIZE, RATE)
    decided = []
    for index in range(frames):
        boxes = seen.get(index, [])
        decided += covers_of.push(index, index / RATE, boxes, [0.9] * len(boxes))
    decided += covers_of.finish()
    assert [index for index, _ in decided] == list(range(frames)), "every frame once, in order"
    return [cover for _, cover in decided]


def share(box, cover: Cover) -> float:
    return covered_share(box, cover.mask(*SIZE))


def test_a_face_missed_for_a_few_frames_stays_covered_where_it_went():
    seen = {index: [face_at(index)] for index in range(40) if not 15 <= index < 22}
    tracked = covers_for(seen, 40)
    per_frame = covers_for(seen, 40, tracked=False)
    for index in range(15, 22):
        assert share(face_at(index), tracked[index]) >= 0.99, index
        assert share(face_at(index), per_frame[index]) == 0.0, "frame by frame, a missed face is left bare"
        assert tracked[index].unsure
    assert not tracked[30].unsure and share(face_at(30), tracked[30]) == 1.0


def test_a_face_is_covered_in_the_frames_before_it_is_first_found():
    seen = {index: [face_at(index)] for index in range(20, 40)}
    covers = covers_for(seen, 40)
    lookback_frames = int(CoverSettings().lookback_s * RATE)
    for index in range(20 - lookback_frames, 20):
        assert share(face_at(index), covers[index]) >= 0.9, f"frame {index}: where the face came from"
    assert covers[0].boxes == (), "not further back than the look-back"


def test_a_lost_face_is_covered_where_it_was_heading_until_the_tracker_lets_it_go():
    seen = {index: [face_at(index)] for index in range(20)}
    covers = covers_for(seen, 80)
    memory_frames = int(CoverSettings().memory_s * RATE)
    for index in range(20, 20 + memory_frames):
        assert share(face_at(index), covers[index]) >= 0.9, f"frame {index}: the face kept moving"
    assert covers[20 + memory_frames + 2].boxes == (), "forgotten after the tracker's memory"


def test_the_whole_frame_is_covered_while_a_face_is_unsure_but_not_for_a_single_false_alarm():
    seen = {index: [face_at(index)] for index in range(40) if not 15 <= index < 18}
    covers = covers_for(seen, 40, whole_frame_when_unsure=True)
    assert all(covers[index].whole_frame for index in range(15, 18))
    assert not any(covers[index].whole_frame for index in range(5, 15))
    flash = covers_for({10: [(200, 20, 230, 50)]}, 40, whole_frame_when_unsure=True)
    assert not any(cover.whole_frame for cover in flash), "a box seen once is no face to be unsure of"
    assert share((200, 20, 230, 50), flash[11]) == 1.0, "but it stays covered"


def test_margins_grow_the_box_and_boxes_inside_others_are_dropped():
    assert grown((100, 100, 200, 150), 0.2, 640, 480) == (80, 90, 220, 160)
    assert grown((0, 0, 50, 50), 0.5, 60, 60) == (0, 0, 60, 60), "clipped to the frame"
    assert outermost([(10, 10, 20, 20), (0, 0, 50, 50), (40, 40, 90, 90)]) == ((0, 0, 50, 50), (40, 40, 90, 90))


def face_photo() -> np.ndarray:
    image = cv2.imread(str(FIXTURE_FACES / "images" / "astronaut.jpg"))
    assert image is not None
    return image


def detail(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


@pytest.mark.parametrize("mode", [BLUR, PIXELATE, BOX])
def test_each_mode_hides_the_face_and_leaves_the_rest(mode):
    image = face_photo()
    box = (150, 60, 330, 280)
    hidden = hide(image.copy(), Cover((box,)), mode)
    x0, y0, x1, y1 = box
    face, before = hidden[y0:y1, x0:x1], image[y0:y1, x0:x1]
    if mode == BOX:
        assert not face.any()
    elif mode == PIXELATE:
        blocks = np.unique(face.reshape(-1, 3), axis=0)
        assert len(blocks) <= 8 * 8, "large blocks of one colour each"
    else:
        assert detail(face) < detail(before) / 50, "the face's detail is gone"
    rest = np.ones(image.shape[:2], bool)
    rest[y0:y1, x0:x1] = False
    assert np.array_equal(hidden[rest], image[rest]), "nothing outside the box changes"
    whole = hide(image.copy(), Cover(whole_frame=True), mode)
    if mode == BOX:
        assert not whole.any()
    elif mode == PIXELATE:
        assert len(np.unique(whole.reshape(-1, 3), axis=0)) <= 8 * 8
    else:
        assert detail(whole) < detail(image) / 50


def write_video(path: Path, frames: int = 20, size=SIZE, sound: str | None = "aac", rate: int = RATE,
                fmt: str | None = None, options: dict | None = None, pix_fmt: str = "yuv420p") -> Path:
    """A small video of a face photo drifting right, with a tone in `sound` (None: silent)."""
    photo = cv2.resize(face_photo(), (size[0] * 2, size[1]))
    with av.open(str(path), "w", format=fmt, options=options or {}) as output:
        video = output.add_stream("libx264", rate=rate)
        video.width, video.height = size
        video.pix_fmt = pix_fmt
        audio = output.add_stream(sound, rate=48_000, layout="stereo") if sound else None
        for index in range(frames):
            image = np.ascontiguousarray(photo[:, 4 * index: 4 * index + size[0]])
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, rate)
            output.mux(video.encode(frame))
        output.mux(video.encode())
        if audio is not None:
            kind = audio.codec_context.format.name
            samples = audio.codec_context.frame_size or 1024
            for index in range(round(frames / rate * 48_000 / samples)):
                tone = av.AudioFrame(format=kind, layout="stereo", samples=samples)
                for plane in tone.planes:
                    plane.update(bytes(plane.buffer_size))
                tone.sample_rate, tone.pts = 48_000, index * samples
                output.mux(audio.encode(tone))
            output.mux(audio.encode())
    return path


class FixedFace:
    """A stand-in detector: one face at the same place in every frame but those it misses."""

    def __init__(self, box=(100, 60, 180, 160), misses=()):
        self.box, self.misses, self.calls = box, set(misses), 0

    def detect(self, frame) -> Detection:
        self.calls += 1
        if self.calls - 1 in self.misses:
            return Detection(0.0, None, 0.0)
        return Detection(0.9, self.box, 0.0, (FaceBox(self.box, 0.9),))


def read_video(path: Path) -> tuple[list[np.ndarray], list[str], Fraction]:
    with av.open(str(path)) as container:
        sounds = [stream.codec_context.codec.canonical_name for stream in container.streams.audio]
        rate = container.streams.video[0].average_rate
        frames = [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]
    return frames, sounds, rate


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_the_blurred_video_keeps_its_frames_size_rate_and_sound(tmp_path, suffix):
    source = write_video(tmp_path / "walk.mp4")
    out = tmp_path / f"blurred{suffix}"
    progress = []
    result = blur_video(source, out, FixedFace(misses={5, 6}), CoverSettings(mode=BOX), keep_covers=True,
                        progress=lambda done, total: progress.append((done, total)))
    frames, sounds, rate = read_video(out)
    originals, _, _ = read_video(source)
    assert len(frames) == len(originals) == result.frames == 20
    assert frames[0].shape == originals[0].shape and result.size == SIZE
    assert rate == RATE and sounds == ["aac"]
    x0, y0, x1, y1 = 100, 60, 180, 160
    for index in (0, 5, 6, 19):  # 5 and 6: missed by the detector, covered all the same
        assert frames[index][y0 + 8:y1 - 8, x0 + 8:x1 - 8].max() < 40, f"frame {index}: the face is boxed out"
    assert np.abs(frames[3][:, 250:].astype(int) - originals[3][:, 250:]).mean() < 4, "the rest as it was"
    assert progress[-1] == (20, 20)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["walk.mp4", out.name]), "no temporary file"


def test_sound_that_the_container_cannot_hold_is_encoded_as_aac_and_other_sound_is_copied(tmp_path):
    pcm = write_video(tmp_path / "pcm.mkv", sound="pcm_s16le")
    blur_video(pcm, tmp_path / "pcm.mp4", FixedFace())
    assert read_video(tmp_path / "pcm.mp4")[1] == ["aac"], "MP4 cannot close with PCM sound"
    blur_video(pcm, tmp_path / "pcm-kept.mkv", FixedFace())
    assert read_video(tmp_path / "pcm-kept.mkv")[1] == ["pcm_s16le"]
    silent = write_video(tmp_path / "silent.mp4", sound=None)
    assert blur_video(silent, tmp_path / "silent-out.mp4", FixedFace()).sound_streams == 0


def test_an_odd_sized_video_loses_one_row_and_column_at_most(tmp_path):
    source = write_video(tmp_path / "odd.mkv", size=(161, 121), sound=None, pix_fmt="yuv444p")  # 4:2:0 must be even
    blur_video(source, tmp_path / "odd-out.mp4", FixedFace((10, 10, 60, 60)))
    frames, _, _ = read_video(tmp_path / "odd-out.mp4")
    assert frames[0].shape[:2] == (120, 160) and len(frames) == 20


def truncated(tmp_path: Path, name: str, **write) -> Path:
    whole = write_video(tmp_path / f"whole-{name}", frames=50, **write)
    content = whole.read_bytes()
    path = tmp_path / name
    path.write_bytes(content[: len(content) // 2])
    whole.unlink()
    return path


def sound_only(path: Path) -> Path:
    with av.open(str(path), "w") as output:
        audio = output.add_stream("aac", rate=48_000, layout="stereo")
        for index in range(20):
            tone = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
            for plane in tone.planes:
                plane.update(bytes(plane.buffer_size))
            tone.sample_rate, tone.pts = 48_000, index * 1024
            output.mux(audio.encode(tone))
        output.mux(audio.encode())
    return path


BAD_INPUTS = {
    "not a video": (lambda tmp: _text(tmp / "notes.mp4"), "notes.mp4: cannot open the video"),
    "no video stream": (lambda tmp: sound_only(tmp / "song.m4a"), "song.m4a: the file has no video stream"),
    "truncated, index at the end": (lambda tmp: truncated(tmp, "cut.mp4"), "cut.mp4: "),
    "truncated, index at the start": (lambda tmp: truncated(tmp, "cut-fast.mp4", options={"movflags": "faststart"}),
                                      "cut-fast.mp4: "),
    "truncated Matroska": (lambda tmp: truncated(tmp, "cut.mkv"), "cut.mkv: "),
}


def _text(path: Path) -> Path:
    path.write_text("a shopping list, not a video\n")
    return path


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_a_bad_video_is_refused_by_name_and_leaves_no_output(tmp_path, capsys, kind):
    make, message = BAD_INPUTS[kind]
    source = make(tmp_path)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    (out_folder / "kept.mp4").write_bytes(b"an earlier result")
    code, _, err = run_cli(["blur", str(source), "-o", str(out_folder / "kept.mp4")], capsys)
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and message in err, err
    if "truncated" in kind:
        assert "truncated or damaged" in err
    assert [path.name for path in out_folder.iterdir()] == ["kept.mp4"], "no temporary file left"
    assert (out_folder / "kept.mp4").read_bytes() == b"an earlier result", "the earlier output is untouched"


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write into: read-only for a user, a /proc folder for root."""
    import os

    if os.geteuid() == 0:
        return Path("/proc/self")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


@pytest.mark.parametrize("where", ["read-only folder", "missing folder", "a file as the folder", "a folder as the file",
                                   "not a video format"])
def test_an_output_that_cannot_be_written_is_refused_by_name(tmp_path, capsys, where):
    source = write_video(tmp_path / "walk.mp4", frames=5)
    out = {"read-only folder": lambda: unwritable_folder(tmp_path) / "blurred.mp4",
           "missing folder": lambda: tmp_path / "no-such-folder" / "blurred.mp4",
           "a file as the folder": lambda: source / "blurred.mp4",
           "a folder as the file": lambda: tmp_path,
           "not a video format": lambda: tmp_path / "blurred.gif"}[where]()
    before = sorted(tmp_path.rglob("*"))
    code, _, err = run_cli(["blur", str(source), "-o", str(out)], capsys)
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and str(out) in err, err
    assert sorted(tmp_path.rglob("*")) == before, "nothing written"
    assert not out.is_file()


def test_the_video_is_not_written_over_itself(tmp_path, capsys):
    source = write_video(tmp_path / "walk.mp4", frames=5)
    content = source.read_bytes()
    code, _, err = run_cli(["blur", str(source), "-o", str(source)], capsys)
    assert code != 0 and "is the video being blurred" in err
    assert source.read_bytes() == content
