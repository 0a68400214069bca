"""The allowed epochs come from one place (config.training.SETTINGS); a finished run recorded at or near
the limit, or beyond it (a config.json from elsewhere), still opens on the Train page, whose Resume
box offers what the limit allows."""

from __future__ import annotations

import pytest

from facetracker.config.jsonconfig import ConfigError
from facetracker.config.training import SETTINGS, TrainConfig
from facetracker.runs import launcher
from facetracker.runs import run_folder as runs
from tests.helpers.app import (  # noqa: F401
    assert_no_exception,
    faces,
    no_webrtc_session,
    open_page,
    root,
    texts,
    write_run,
)

MIN_EPOCHS, MAX_EPOCHS = int(SETTINGS["epochs"].low), int(SETTINGS["epochs"].high)
RECORDED = [9_995, 9_996, 9_999, MAX_EPOCHS, MAX_EPOCHS + 1, 50_000, 0, -3]


def record_epochs(run_dir, epochs: int) -> None:
    config = runs.read_json(run_dir / runs.CONFIG)
    runs.write_json(run_dir / runs.CONFIG, {**config, "epochs": epochs})
    status = runs.read_json(run_dir / runs.STATUS)
    runs.write_json(run_dir / runs.STATUS, {**status, "epochs": epochs, "epoch": max(epochs, 1)})


@pytest.mark.parametrize("state", ["finished", "stopped"])
@pytest.mark.parametrize("recorded", RECORDED)
def test_the_train_page_opens_a_run_recorded_with_any_number_of_epochs(faces, root, recorded, state):
    run_dir = write_run(root / "runs", "long", faces, state=state, steps=4, epochs_done=2)
    record_epochs(run_dir, recorded)
    at = open_page("app_pages/train.py")
    at.selectbox[[s.label for s in at.selectbox].index("Run")].set_value("long").run()
    assert_no_exception(at)
    boxes = [n for n in at.number_input if n.label == "Epochs in total"]
    if MIN_EPOCHS <= recorded <= MAX_EPOCHS:
        assert len(boxes) == 1
        assert (boxes[0].min, boxes[0].max) == (MIN_EPOCHS, MAX_EPOCHS)
        assert boxes[0].value == min(recorded + (5 if state == "finished" else 0), MAX_EPOCHS)
    else:  # no run trains or resumes with it: listed as damaged, with the reason, and not offered
        assert not boxes
        reason = f"'epochs' is {recorded}, not a whole number from {MIN_EPOCHS} to {MAX_EPOCHS}"
        assert any(reason in e for e in texts(at, "error")), texts(at, "error")


def test_resuming_a_run_finished_at_the_limit_keeps_the_limit(faces, root, monkeypatch):
    run_dir = write_run(root / "runs", "long", faces, state="finished", steps=4, epochs_done=2)
    record_epochs(run_dir, MAX_EPOCHS - 2)
    started = []
    monkeypatch.setattr(launcher, "_spawn", lambda run, command: started.append(command) or 4242)
    at = open_page("app_pages/train.py")
    at.selectbox[[s.label for s in at.selectbox].index("Run")].set_value("long").run()
    assert next(n for n in at.number_input if n.label == "Epochs in total").value == MAX_EPOCHS
    at.button(key="resume_long").click().run()
    assert_no_exception(at)
    assert started and runs.read_json(run_dir / runs.CONFIG)["epochs"] == MAX_EPOCHS


def test_the_new_run_form_offers_the_configs_range(faces):
    at = open_page("app_pages/train.py")
    box = next(n for n in at.number_input if n.label == "Epochs")
    assert (box.min, box.max) == (MIN_EPOCHS, MAX_EPOCHS)


@pytest.mark.parametrize("epochs, allowed", [(MIN_EPOCHS - 1, False), (MIN_EPOCHS, True), (MAX_EPOCHS, True),
                                             (MAX_EPOCHS + 1, False)])
def test_a_config_allows_exactly_that_range(epochs, allowed):
    config = TrainConfig(data="faces", epochs=epochs)
    if allowed:
        config.validate()
    else:
        with pytest.raises(ConfigError, match=f"epochs must be a whole number from {MIN_EPOCHS} to {MAX_EPOCHS}"):
            config.validate()
