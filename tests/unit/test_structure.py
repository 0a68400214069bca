"""The layering the app relies on: pages never reach into the model or the training loop, and the
modules the command line's parser and the pages read do not load TensorFlow."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

NETWORK_WING = "facetracker.nn"
"""The one wing that imports TensorFlow and Keras at module level."""
TENSORFLOW = ("tensorflow", "keras")
FORBIDDEN_IN_PAGES = (NETWORK_WING,)


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an AST imports, at any depth (inside functions too), with its line."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            # `from facetracker import nn` names the module in the alias
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def forbidden_imports(source: str) -> list[str]:
    """`line N: module` for each forbidden module an import reaches."""
    hits = {(line, bad) for line, name in imported_modules(ast.parse(source)) for bad in FORBIDDEN_IN_PAGES
            if name == bad or name.startswith(bad + ".")}
    return [f"line {line}: {bad}" for line, bad in sorted(hits)]


def test_the_scan_sees_imports_inside_functions_and_from_the_package():
    source = "def f():\n    from facetracker.nn.model import load_model\nfrom facetracker import nn\nimport os\n"
    assert forbidden_imports(source) == ["line 2: facetracker.nn", "line 3: facetracker.nn"]
    assert forbidden_imports("from facetracker.runs import workspace\nfrom facetracker import nnx\n") == []


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "app_pages").glob("*.py")))
def test_pages_do_not_import_the_network_wing(page):
    assert forbidden_imports((REPO / "app_pages" / page).read_text(encoding="utf-8")) == []


# ----------------------------------------------------------------------------------------------
# The package's import graph


def package_modules() -> dict[str, Path]:
    """Every module of the package by its dotted name."""
    modules = {}
    for path in sorted((REPO / "facetracker").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The package module an imported name lives in (`facetracker.boxes.iou` -> `facetracker.boxes`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@dataclasses.dataclass
class ImportGraph:
    module_level: dict[str, set[str]]
    """Package modules each module imports when it is imported."""
    local_imports: dict[str, int]
    """Import statements of the package's own modules inside functions, per module."""
    tensorflow_at_import: set[str]
    """Modules that import TensorFlow or Keras themselves at module level."""


def import_graph() -> ImportGraph:
    modules = package_modules()
    graph = ImportGraph({name: set() for name in modules}, {}, set())
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.ImportFrom):
                targets = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                targets = [alias.name for alias in node.names]
            if id(node) in top and any(t.split(".")[0] in TENSORFLOW for t in targets):
                graph.tensorflow_at_import.add(name)
            owners = {_owner(t, modules) for t in targets if t.startswith("facetracker")} - {None, name}
            if id(node) in top:
                graph.module_level[name] |= owners
            elif owners:
                graph.local_imports[name] = graph.local_imports.get(name, 0) + 1
        # importing a.b.c runs a/__init__ and a/b/__init__ too
        parents = name.split(".")
        graph.module_level[name] |= {".".join(parents[:i]) for i in range(1, len(parents))} - {name}
    return graph


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return found


def test_the_package_has_no_import_circle():
    assert _cycles(import_graph().module_level) == []


def test_only_the_network_wing_reaches_tensorflow_when_imported():
    graph = import_graph()
    assert graph.tensorflow_at_import and all(m.startswith(NETWORK_WING + ".") for m in graph.tensorflow_at_import), \
        graph.tensorflow_at_import
    reaching = set(graph.tensorflow_at_import)
    changed = True
    while changed:
        new = {m for m, targets in graph.module_level.items() if targets & reaching} - reaching
        reaching |= new
        changed = bool(new)
    outside = sorted(m for m in reaching if not (m == NETWORK_WING or m.startswith(NETWORK_WING + ".")))
    assert outside == [], f"these modules load TensorFlow when imported: {outside}"


def test_the_graph_sees_a_circle_and_a_parent_package():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    graph = import_graph()
    assert "facetracker.inference" in graph.module_level["facetracker.inference.detect"]
    assert "facetracker.boxes" in graph.module_level["facetracker.inference.tracking"]


LOCAL_IMPORTS_ALLOWED = 20
"""Function-local imports of the package's own modules, at most: the command line imports each
command's wing when that command runs, and the door reaches the network wing only when a model must
be exported in a process that has TensorFlow already. Everything else imports at module level."""


def test_the_package_imports_its_own_modules_at_module_level():
    local = import_graph().local_imports
    assert sum(local.values()) < LOCAL_IMPORTS_ALLOWED, local
    assert set(local) <= {"facetracker.cli", "facetracker.inference.models", "facetracker.inference.runtimes"}, local


def test_box_geometry_is_a_leaf():
    assert import_graph().module_level["facetracker.boxes"] <= {"facetracker"}


@pytest.mark.parametrize("page", ["streamlit_app.py", *sorted(f"app_pages/{p.name}" for p in (REPO / "app_pages").glob("*.py")
                                                                 if p.name != "ui.py")])
def test_pages_write_nothing_by_streamlit_magic(page):
    """A bare string or value on its own line in a page script is written onto the page by Streamlit
    ("magic"): a note meant for the reader of the code would greet the person using the app."""
    from streamlit.runtime.scriptrunner.magic import add_magic

    tree = add_magic((REPO / page).read_text(encoding="utf-8"), page)
    written = [node.lineno for node in ast.walk(tree)
               if isinstance(node, ast.Call) and "__streamlitmagic__" in ast.dump(node.func)]
    assert written == [], f"{page}: lines {written} would be shown on the page"


@pytest.mark.parametrize("module", ["facetracker.cli", "facetracker.config.training", "facetracker.config.catalog",
                                    "facetracker.labelling.recording"])
def test_light_modules_do_not_load_tensorflow(module):
    code = (f"import sys, {module}\n"
            + ("facetracker.cli.build_parser()\n" if module == "facetracker.cli" else "")
            + "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing {module} loaded {result.stdout.strip()}"


def test_the_catalog_names_what_the_model_builds():
    from facetracker.config import catalog
    from facetracker.nn import model

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
    assert "usage: facetracker" in result.stdout and "error" not in result.stderr, result.stderr
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
