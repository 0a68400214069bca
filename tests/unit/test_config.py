"""One TrainConfig from the Train page or the command line to the training process, checked where it is read."""

from __future__ import annotations

import json
import math

import pytest

from facetracker.config.jsonconfig import ConfigError
from facetracker.config.training import SETTINGS, TrainConfig, config_for
from facetracker.runs import run_folder as runs


def fast_values(**changes) -> dict:
    return {**config_for("d", "fast").to_dict(), **changes}


@pytest.mark.parametrize("changes, message", [
    ({"box_weight": math.nan}, "box_weight must be a number from 0 to 1000, got nan"),
    ({"class_weight": math.inf}, "class_weight must be a number from 0 to 1000, got inf"),
    ({"box_weight": -1.0}, "box_weight must be a number from 0 to 1000"),
    ({"box_weight": 0.0, "class_weight": 0.0}, "must not both be 0"),
    ({"lr": math.nan}, "lr must be a number from 1e-06 to 0.5, got nan"),
    ({"lr": math.inf}, "lr must be a number from 1e-06 to 0.5, got inf"),
    ({"weight_decay": -0.01}, "weight_decay must be at least 0 and below 1, got -0.01"),
    ({"weight_decay": math.nan}, "weight_decay must be at least 0"),
    ({"cache_size": 1_000_000}, "cache_size must be between image_size (120) and 1024, got 1000000"),
    ({"warmup_epochs": 10**9}, "warmup_epochs must be from 0 to epochs (30), got 1000000000"),
    ({"warmup_epochs": -1}, "warmup_epochs must be from 0 to epochs (30), got -1"),
    ({"freeze_backbone_epochs": 10**9}, "freeze_backbone_epochs must be from 0 to 10000, got 1000000000"),
    ({"early_stopping": -1}, "early_stopping must be from 0 to 10000, got -1"),
    ({"early_stopping": 10**9}, "early_stopping must be from 0 to 10000"),
    ({"best_from_epoch": 0}, "best_from_epoch must be from 1 to 10000, got 0"),
    ({"min_val_photos": -1}, "min_val_photos must be from 0 to 10000, got -1"),
    ({"min_images_per_epoch": -5}, "min_images_per_epoch must be from 0 to 1000000, got -5"),
])
def test_out_of_range_values_are_refused_where_the_config_is_read(changes, message):
    with pytest.raises(ConfigError, match="config.json: .*" + __import__("re").escape(message)):
        TrainConfig.from_dict(fast_values(**changes), source="config.json")


def test_the_presets_and_the_defaults_pass_the_checks():
    for preset in (None, "quick", "fast", "original"):
        for weights in ("imagenet", "none"):
            assert config_for("d", preset, weights=weights).weights == weights


def test_quick_keeps_the_backbone_frozen_however_long_it_trains_and_guards_its_validation():
    from facetracker.config.training import suggested_preset

    quick = config_for("d", "quick")
    assert quick.weights == "imagenet" and quick.backbone.startswith("mobilenetv2")
    assert config_for("d", "quick", epochs=500).freeze_backbone_epochs >= 500
    assert quick.min_val_photos >= 10 and 1 < quick.best_from_epoch < quick.epochs and quick.min_images_per_epoch > 0
    assert config_for("d", "original").best_from_epoch == 1 and config_for("d", "original").min_val_photos == 0
    assert suggested_preset(40) == "quick" and suggested_preset(600) == "multi"


def test_a_short_run_of_a_preset_shrinks_its_warm_up_but_an_explicit_one_is_checked():
    one = config_for("d", "fast", weights="none", epochs=1)  # the variant warms up 2 epochs
    assert (one.epochs, one.warmup_epochs) == (1, 1)
    # The frozen phase is kept: a resume that lengthens the run carries on with it.
    assert config_for("d", "fast", epochs=1).freeze_backbone_epochs == 3
    with pytest.raises(ConfigError, match=r"warmup_epochs must be from 0 to epochs \(2\), got 5"):
        config_for("d", "fast", epochs=2, warmup_epochs=5)


def test_the_random_weights_fallback_has_one_name_and_an_old_config_still_loads():
    config = config_for("d", "fast", allow_random_weights=True)
    assert config.to_dict()["allow_random_weights"] is True and "allow_random_fallback" not in config.to_dict()
    old = config.to_dict()
    old["allow_random_fallback"] = old.pop("allow_random_weights")
    assert TrainConfig.from_dict(old) == config


def test_a_config_from_the_page_round_trips_through_config_json(tmp_path):
    from facetracker.data.augment import AugmentConfig

    config = config_for(tmp_path, "fast", weights="none", epochs=4, augment=AugmentConfig(hflip_p=0.25))
    (tmp_path / "config.json").write_text(config.to_json())
    assert TrainConfig.load(tmp_path / "config.json") == config
    assert config.epochs == 4 and config.augment.hflip_p == 0.25 and config.head == "grid"


# ----------------------------------------------------------------------------------------------
# The command line checks its values as it reads them


def cli_error(capsys, argv: list[str]) -> str:
    from facetracker.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("threshold", ["nan", "inf", "-0.1", "1.5", "half"])
def test_a_threshold_outside_0_to_1_is_refused(capsys, tmp_path, command, threshold):
    where = ["--data", str(tmp_path)] if command == "evaluate" else ["--images", str(tmp_path), "--out", str(tmp_path)]
    err = cli_error(capsys, [command, "--model", str(tmp_path), *where, "--threshold", threshold])
    assert "--threshold" in err and threshold in err


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--epochs", "-2"), ("--batch-size", "0"),
                                         ("--copies", "1.5"), ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0")])
def test_train_values_are_checked_by_the_parser(capsys, tmp_path, flag, value):
    err = cli_error(capsys, ["train", "--data", str(tmp_path), "--run-dir", str(tmp_path / "r"), flag, value])
    assert flag in err and value in err


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_setting_s_range_is_the_same_for_the_parser_and_the_config(capsys, tmp_path, name):
    """Each setting's allowed values are written once (`SETTINGS`): the edges pass both, a value just
    past either edge is refused by both, in the same words."""
    allowed = SETTINGS[name]
    flag = "--" + name.replace("_", "-")
    step = 1 if allowed.whole else allowed.low / 2
    for value in (allowed.low, allowed.high):
        TrainConfig.from_dict(fast_values(**{name: value, "warmup_epochs": 0})).validate()
    for value in (allowed.low - step, allowed.high + step):
        text = str(int(value) if allowed.whole else value)
        err = cli_error(capsys, ["train", "--data", str(tmp_path), "--run-dir", str(tmp_path / "r"), flag, text])
        assert flag in err and allowed.describe() in err
        with pytest.raises(ConfigError, match=f"{name} must be {allowed.describe()}"):
            TrainConfig.from_dict(fast_values(**{name: value, "warmup_epochs": 0})).validate()


def test_resume_with_zero_epochs_is_refused_not_ignored(capsys, tmp_path):
    err = cli_error(capsys, ["train", "--run-dir", str(tmp_path), "--resume", "--epochs", "0"])
    assert "--epochs" in err and "must be a whole number from 1 to 10000" in err


def test_resume_refuses_options_that_config_json_sets(capsys, tmp_path):
    from facetracker.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / runs.CONFIG).write_text(config_for(tmp_path, "fast").to_json())
    assert main(["train", "--run-dir", str(run), "--resume", "--lr", "0.01", "--epochs", "40"]) == 2
    err = capsys.readouterr().err
    assert "--lr" in err and str(run / runs.CONFIG) in err and "only --epochs" in err
    assert main(["train", "--run-dir", str(run), "--resume", "--data", str(tmp_path)]) == 2
    assert "error: --data: a resume trains from" in capsys.readouterr().err
    assert json.loads((run / runs.CONFIG).read_text())["lr"] == 1e-3


def test_resume_with_fewer_epochs_than_the_warm_up_names_the_problem(capsys, tmp_path):
    from facetracker.cli import main

    (tmp_path / runs.CONFIG).write_text(config_for(tmp_path, "fast", weights="none").to_json())  # warm-up 2
    assert main(["train", "--run-dir", str(tmp_path), "--resume", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 1" in err and "warmup_epochs must be from 0 to epochs (1), got 2" in err


def test_train_without_data_needs_a_config_json_in_the_run_folder(capsys, tmp_path):
    from facetracker.cli import main

    assert main(["train", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: --data is required (no config.json)" in err
