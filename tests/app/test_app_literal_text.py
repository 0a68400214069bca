"""Names and texts from outside the app are shown as text on every page, never rendered as Markdown;
and the browser is told nothing of the server's folders.

A dataset, its photos, a run, a zip entry and a run's error are given names full of Markdown: a
link, an image, bold, a formula, Streamlit's colour and icon directives, an emoji shortcode and a
bare web address. `ui.literal` is checked against a CommonMark parser (markdown-it-py) and against
the patterns Streamlit's own Markdown plugins look for; each page is then opened with AppTest and
every Markdown field it sends to the browser (bodies, labels, captions, help, progress texts) is
checked for the raw syntax.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from app_pages import ui
from facetracker.runs import ownership
from facetracker.runs import run_folder as runs
from tests.helpers.app import (  # noqa: F401  (fixtures: the data root, no webcam session)
    assert_no_exception,
    copy_helen,
    face_jpeg,
    no_webrtc_session,
    open_page,
    root,
    write_run,
)

# A folder or file name cannot hold "/", so the names use what a name can hold.
NAME = "[click](https:evil.example) ![x](evil.png) **bold** $x$ :red[red] :smile: www.evil.example"
TEXT = ("[click](http://example.com) ![x](http://example.com/a.png) **bold** $x$ :material/warning: :red[red] "
        ":smile: www.example.com me@example.com")
RAW = ["[click](", "![x](", "**bold**", "$x$", ":red[", ":material/", ":smile:", "www.evil", "www.example",
       "http://", "me@example"]

# What Streamlit's Markdown (react-markdown with remark-gfm, remark-emoji, remark-math and its own
# directives) finds in text nodes and in the raw source, copied from its frontend bundle (1.67).
GFM_LITERAL_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.IGNORECASE)
GFM_LITERAL_EMAIL = re.compile(r"(?:^|(?<=[\s\W]))([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)")
EMOJI_IN_TEXT = re.compile(r":\+1:|:-1:|:[\w-]+:")
EMOJI_PLUGIN_NEEDED = re.compile(r":(?!material/|streamlit:)[\w+-][\w_+-]*:")
COMMONMARK = MarkdownIt("commonmark").enable(["strikethrough", "table"])


def rendered_text(markdown: str) -> str:
    """The text a CommonMark renderer shows for `markdown`, which must be one paragraph of plain text."""
    tokens = COMMONMARK.parse(markdown)
    if not tokens:
        return ""
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"], [t.type for t in tokens]
    kinds = {child.type for child in tokens[1].children}
    assert kinds <= {"text"}, f"{markdown!r} renders {kinds}"
    return "".join(child.content for child in tokens[1].children)


NASTY = [NAME, TEXT, "plain-name_with.dots (1).jpg", "1. not a list", "- not a list", "+ nor this", "# no heading",
         "> no quote", "    no code block", "`code` and ``more``", "<b>bold</b> <https://example.com>",
         "&#91;x&#93;(y) &amp;", "a\\*b\\", "~~struck~~ ~one~", "| a | b |", "[ref]: https://example.com",
         "[x][ref] [y][]", "***", "---", "line one\nline two\r\n# three", "__init__.py", "_x_ *y*", "$$a$$ $b$",
         ":material/home: :streamlit: :blue-background[x] :small[y]", "12:30:00 :+1: :-1:", "WWW.EXAMPLE.COM",
         "HTTPS://example.com", "x@y.z", "!", "\\", "", "ünïcödé ☺"]


@pytest.mark.parametrize("text", NASTY)
def test_literal_text_renders_as_itself_and_nothing_else(text):
    shown = ui.literal(text)
    expected = " ".join(text.splitlines())
    got = rendered_text(shown).replace(ui.WORD_JOINER, "")
    assert got.strip() == re.sub(r"^\s+", " ", expected).strip() or (not expected.strip() and not got)
    visible = rendered_text(shown)
    assert not GFM_LITERAL_URL.search(visible) and not GFM_LITERAL_EMAIL.search(visible), visible
    assert not EMOJI_IN_TEXT.search(visible), visible
    assert not EMOJI_PLUGIN_NEEDED.search(shown) and ":material/" not in shown
    assert not re.search(r"(?<!\\)\$", shown), "every $ is escaped: no formula"


def test_literal_text_stays_text_inside_the_apps_own_markdown():
    """As the pages use it: between bold words, after a list marker, in a sentence."""
    for text in filter(None, NASTY):
        for template in ("**{}** is empty", "- {}", "Saved {} with its box.", "{}: cannot read it"):
            markdown = template.format(ui.literal(text))
            tokens = COMMONMARK.parse(markdown)
            inline = [t for t in tokens if t.type == "inline"]
            assert len(inline) == 1, markdown
            kinds = {child.type for child in inline[0].children}
            assert kinds <= {"text", "strong_open", "strong_close"}, (markdown, kinds)


# ----------------------------------------------------------------------------------------------
# Every page, with names from outside


MARKDOWN_FIELDS = {"body", "label", "help", "caption", "text"}
"""Proto fields Streamlit renders as Markdown (selectbox options and table cells are plain text)."""


def markdown_fields(message) -> list[str]:
    found = []
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in (value if field.is_repeated else [value]):
                found += markdown_fields(item)
        elif field.type == field.TYPE_STRING and field.name in MARKDOWN_FIELDS:
            found += list(value) if field.is_repeated else [value]
    return found


def markdown_on_page(at) -> list[str]:
    texts = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None and hasattr(proto, "ListFields"):
            texts.extend(markdown_fields(proto))
        children = getattr(node, "children", None)
        for child in (children.values() if isinstance(children, dict) else []):
            walk(child)

    walk(at._tree)
    return texts


def assert_shown_as_text(at, *must_show: str) -> list[str]:
    """No Markdown field holds raw syntax from outside; each of `must_show` is shown, escaped."""
    assert_no_exception(at)
    texts = markdown_on_page(at)
    rendered = [t for t in texts if any(raw in t for raw in RAW)]
    assert not rendered, rendered
    for text in must_show:
        assert any(ui.literal(text) in t for t in texts), (text, texts)
    return texts


@pytest.fixture
def nasty_dataset(root, helen) -> Path:
    """Real photos in a dataset folder named with Markdown, two photos renamed so too, and a note."""
    folder = copy_helen(helen, root / NAME, faces=6, empty=2)
    for i, label in enumerate(sorted((folder / "labels").glob("*.json"))[:2]):
        content = json.loads(label.read_text())
        image = folder / "images" / Path(content["imagePath"]).name
        new_stem = f"{NAME} {i}"
        image.rename(folder / "images" / f"{new_stem}{image.suffix}")
        content["imagePath"] = f"../images/{new_stem}{image.suffix}"
        (folder / "labels" / f"{new_stem}.json").write_text(json.dumps(content))
        label.unlink()
    (folder / "images" / f"{NAME}.jpg").write_text("not a photo")  # listed as skipped, with its reason
    return folder


@pytest.fixture
def nasty_run(root, nasty_dataset) -> Path:
    run_dir = write_run(root / "runs", NAME, nasty_dataset, state="failed", steps=2, epochs_done=1, error=TEXT)
    (run_dir / runs.LOG).write_text(f"epoch 1/3\nerror: {TEXT}\n")
    return run_dir


def test_home_shows_dataset_and_run_names_as_text(nasty_run):
    at = open_page("app_pages/home.py")
    assert_shown_as_text(at, NAME)


def test_dataset_page_shows_names_notes_and_captions_as_text(nasty_dataset):
    at = open_page("app_pages/dataset.py")
    at.selectbox(key="dataset_choice").set_value(NAME).run()
    texts = assert_shown_as_text(at, NAME, f"{NAME} 0")
    assert any(t.startswith(f"**{ui.literal(NAME)}**") for t in texts), "the dataset's line names it in bold"


def test_a_zip_with_markdown_in_its_names_is_refused_in_plain_words(root, nasty_dataset):
    at = open_page("app_pages/dataset.py")
    at.text_input(key="new_dataset_name").set_value("uploaded").run()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/a.jpg", face_jpeg())
        archive.writestr(f"../{TEXT}.jpg", b"x")
    at.file_uploader(key="dataset_zip").set_value((f"{NAME}.zip", buffer.getvalue(), "application/zip")).run()
    at.button[[b.label for b in at.button].index("Unpack the zip as this dataset")].click().run()
    assert_shown_as_text(at, f"{NAME}.zip")
    assert any("climbs out with" in e.value for e in at.error)


def test_augment_page_shows_names_and_a_broken_config_as_text(nasty_dataset):
    (nasty_dataset / "augment.json").write_text(json.dumps({TEXT: 1}))
    at = open_page("app_pages/augment.py")  # the only dataset: chosen at once
    texts = assert_shown_as_text(at, NAME)
    assert any("unknown field" in t for t in texts)


def test_train_page_shows_a_runs_name_and_error_as_text(nasty_run):
    at = open_page("app_pages/train.py")
    at.selectbox(key="dataset_choice").set_value(NAME).run()
    assert_shown_as_text(at, NAME, TEXT)
    assert any("The run failed" in e.value for e in at.error)


def test_detect_page_shows_an_uploads_name_and_a_models_name_as_text(nasty_run):
    (nasty_run / runs.MODEL).write_text("not a model")
    at = open_page("app_pages/detect.py")
    model = at.selectbox[[s.label for s in at.selectbox].index("Model")]
    model.set_value(next(o for o in model.options if o.startswith(NAME))).run()
    texts = assert_shown_as_text(at)
    assert any("Cannot load this model" in t for t in texts), texts
    at = open_page("app_pages/detect.py")  # YuNet, the newest model that did not fail
    at.file_uploader(key="detect_upload").set_value((f"{NAME}.jpg", b"just text", "image/jpeg")).run()
    assert_shown_as_text(at, f"{NAME}.jpg")


def test_evaluate_page_shows_photo_names_as_text(nasty_run, nasty_dataset):
    from facetracker.nn.model import build_model, inference_copy

    inference_copy(build_model("mobilenet-0.25", "none", head="spatial")).save(nasty_run / runs.MODEL)
    at = open_page("app_pages/evaluate.py")
    at.selectbox(key=f"eval_split_{NAME}").set_value("all images").run()
    at.button[[b.label for b in at.button].index("Evaluate")].click().run()
    assert_no_exception(at)
    captions = [c for image in at.image for c in image.captions]
    assert any(ui.literal(f"{NAME} 0") in c for c in captions), captions
    assert_shown_as_text(at)


def test_a_copied_live_run_is_not_offered_a_stop(root, nasty_dataset, request):
    """The Train page takes a copy of a live run folder for what it is: a run nobody trains."""
    run_dir = write_run(root / "runs", "live", nasty_dataset, state="running", pid=None, steps=3)
    ownership.acquire_lock(run_dir)  # this process plays the trainer
    request.addfinalizer(lambda: ownership.release_lock(run_dir))
    runs.update_status(run_dir, pid=__import__("os").getpid())
    shutil.copytree(run_dir, root / "runs" / "live-backup")
    at = open_page("app_pages/train.py")
    at.selectbox[[s.label for s in at.selectbox].index("Run")].set_value("live-backup").run()
    assert_no_exception(at)
    assert "Stop" not in [b.label for b in at.button]
    assert any("ended without finishing" in e.value for e in at.error)
