"""The layering the app relies on: pages never reach into the model or the training loop, and the
modules the command line's parser and the pages read do not load TensorFlow."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

FORBIDDEN_IN_PAGES = ("facetracker.model", "facetracker.train")


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an AST imports, at any depth (inside functions too), with its line."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            # `from facetracker import model` names the module in the alias
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def forbidden_imports(source: str) -> list[str]:
    """`line N: module` for each forbidden module an import reaches."""
    hits = {(line, bad) for line, name in imported_modules(ast.parse(source)) for bad in FORBIDDEN_IN_PAGES
            if name == bad or name.startswith(bad + ".")}
    return [f"line {line}: {bad}" for line, bad in sorted(hits)]


def test_the_scan_sees_imports_inside_functions_and_from_the_package():
    source = "def f():\n    from facetracker.model import load_model\nfrom facetracker import train\nimport os\n"
    assert forbidden_imports(source) == ["line 2: facetracker.model", "line 3: facetracker.train"]
    assert forbidden_imports("from facetracker import training_utils, workspace\n") == []


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "app_pages").glob("*.py")))
def test_pages_do_not_import_the_model_or_the_training_loop(page):
    assert forbidden_imports((REPO / "app_pages" / page).read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("module", ["facetracker.cli", "facetracker.config", "facetracker.catalog",
                                    "facetracker.recording"])
def test_light_modules_do_not_load_tensorflow(module):
    code = (f"import sys, {module}\n"
            + ("facetracker.cli.build_parser()\n" if module == "facetracker.cli" else "")
            + "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing {module} loaded {result.stdout.strip()}"


def test_the_catalog_names_what_the_model_builds():
    from facetracker import catalog, model

    assert tuple(model.BACKBONES) == catalog.BACKBONE_NAMES
    assert tuple(model.BOX_LOSSES) == catalog.BOX_LOSS_NAMES
    assert model.HEADS == catalog.HEADS and model.INPUT_SIZE == catalog.INPUT_SIZE
    assert {name: spec.weights_file for name, spec in model.BACKBONES.items()} == catalog.BACKBONE_WEIGHT_FILES


def test_help_and_inspect_do_not_load_tensorflow(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(tmp_path / "images" / "empty-room.jpg")  # a no-face image
    code = ("import sys\nfrom facetracker.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['inspect', sys.argv[1]]):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: python -m facetracker" in result.stdout and "error" not in result.stderr, result.stderr
    assert "1 images (0 with a face, 1 without)" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "LOADED []"


def test_the_dataset_page_with_its_webcam_recorder_does_not_load_tensorflow(tmp_path):
    (tmp_path / "mine" / "images").mkdir(parents=True)
    code = ("import sys\nfrom unittest import mock\nimport streamlit_webrtc\n"
            "from streamlit.testing.v1 import AppTest\n"
            "with mock.patch('streamlit_webrtc.component.get_this_session_info', return_value=None):\n"
            "    at = AppTest.from_file('streamlit_app.py', default_timeout=120)\n"
            "    at.switch_page('app_pages/dataset.py')\n"
            "    at.run()\n"
            "assert not at.exception, [e.value for e in at.exception]\n"
            "assert 'Record' in [b.label for b in at.button]\n"
            "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "FACETRACKER_DATA_ROOT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "LOADED []"
