"""The leak figure: labelled faces (MOTChallenge ground truth) less than 90% covered, over all of them."""

from __future__ import annotations

import pytest

from facetracker.evaluation.leak import (
    COVERED_ENOUGH,
    FaceFrame,
    measure_leak,
    read_mot_labels,
)
from facetracker.inference.blur import Cover


def test_motchallenge_lines_are_read_and_the_ones_not_to_consider_skipped(tmp_path):
    labels = tmp_path / "gt.txt"
    labels.write_text("# frame, id, left, top, width, height, consider, class, visibility\n"
                      "1,1,10.5,20,30,40,1,1,1.0\n"
                      "2,1,12,20,30,40,0,1,1.0\n"
                      "\n"
                      "3,2,0,0,5,5\n")
    assert read_mot_labels(labels) == [FaceFrame(0, 1, (10.5, 20.0, 40.5, 60.0)), FaceFrame(2, 2, (0.0, 0.0, 5.0, 5.0))]


@pytest.mark.parametrize("line, problem", [("1,1,10,20,30", "line 1: 5 fields"),
                                           ("1,1,ten,20,30,40", "line 1: a field is not a number"),
                                           ("0,1,10,20,30,40", "line 1: frame 0 is not a frame number"),
                                           ("1,1,10,20,0,40", "line 1: a box of 0x40 px"),
                                           ("1,1,10,20,nan,40", "line 1: a field is not a finite number")])
def test_a_line_that_is_no_box_is_named_with_its_file_and_line(tmp_path, line, problem):
    labels = tmp_path / "gt.txt"
    labels.write_text(line + "\n")
    with pytest.raises(ValueError, match=problem) as error:
        read_mot_labels(labels)
    assert str(labels) in str(error.value)


def test_a_face_leaks_below_ninety_percent_covered_and_only_its_part_inside_the_frame_counts():
    face = (0, 0, 100, 10)  # 1000 pixels
    labels = [FaceFrame(0, 1, face), FaceFrame(1, 1, face), FaceFrame(2, 1, (-100, 0, 50, 10)),
              FaceFrame(3, 1, (700, 0, 800, 10))]
    covers = [Cover(((0, 0, 89, 10),)), Cover(((0, 0, 90, 10),)), Cover(((0, 0, 50, 10),)), Cover(whole_frame=True)]
    leak = measure_leak(covers, labels, (640, 480))
    assert COVERED_ENOUGH == 0.9
    assert (leak.face_frames, leak.leaked) == (3, 1), "89% leaks, 90% does not; a box wholly outside is no face"
    assert leak.whole_frames == 1 and leak.rate == pytest.approx(1 / 3)
    assert "33.33% of 3 labelled face-frames leaked (1)" in leak.describe()


def test_a_label_past_the_last_frame_is_refused():
    with pytest.raises(ValueError, match="gt.txt: a face is labelled in frame 3, but the video has 2 frames"):
        measure_leak([Cover(), Cover()], [FaceFrame(2, 1, (0, 0, 5, 5))], (64, 48), "gt.txt")
