"""Real-browser test helpers: a Streamlit server + headless Debian Chromium with a fake webcam.

Why this exists: the app's webcam path (streamlit-webrtc -> aiortc -> our frame callback -> back to
the browser) can only be exercised end-to-end by a real browser. Chromium can play a YUV4MPEG2 file
as its camera (``--use-file-for-fake-video-capture``), so a test controls exactly what the "webcam"
sees. Everything here is plain functions/context managers so that any test module can use them.

Usage sketch::

    import browser as bt                      # tests/ is on sys.path under pytest
    def test_x(tmp_path):
        bt.require_browser()                  # skip locally / fail under CI=true if no browser
        video = bt.write_y4m(tmp_path / "cam.y4m", bt.face_frames_from_dataset(n=4))
        with bt.streamlit_server("app.py") as url, bt.browser(video) as page:
            page.goto(url); bt.wait_for_app(page)
            assert bt.page_exceptions(page) == []
            bt.start_webrtc(page); img = bt.video_frame_png(page); bt.stop_webrtc(page)

Never import tensorflow here: importing it before streamlit_webrtc segfaults, and this module must
stay cheap to import for tests that only need the browser.
"""
from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import cv2
import numpy as np
import pytest

if TYPE_CHECKING:  # playwright is imported lazily so that a missing install can be skipped cleanly
    from playwright.sync_api import FrameLocator, Locator, Page

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("FACETRACKER_CHROMIUM", "/usr/bin/chromium")
WEBRTC_IFRAME = 'iframe[title="streamlit_webrtc.component.webrtc_streamer"]'
FRAME_W, FRAME_H = 640, 480

# Flags seen working in headless Debian chromium on these machines.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",  # auto-accept the camera prompt
    "--use-fake-device-for-media-stream",  # no real webcam here
    "--disable-background-networking",  # no internet: avoid stalls on update/metrics requests
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)

browser_mark = pytest.mark.browser
"""Marker for tests that need a real browser (register ``browser`` in the pytest config)."""


# --------------------------------------------------------------------------- skip / fail policy
def browser_unavailable_reason() -> str | None:
    """Why a real-browser test cannot run here, or None if it can."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"chromium not found at {CHROMIUM} (apt-get install chromium)"
    # find_spec, not import: importing streamlit_webrtc here would start Streamlit machinery in the
    # pytest process (noisy "No runtime found" warnings) for a mere availability check
    for mod, hint in (("playwright", "pip install playwright (never `playwright install`)"),
                      ("streamlit_webrtc", "pip install streamlit-webrtc")):
        if importlib.util.find_spec(mod) is None:
            return f"python package {mod} is not installed; {hint}"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip on a developer machine, but FAIL under CI=true so a broken CI setup can't look green."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true and a browser test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def require_browser() -> None:
    """Call at the start of a browser test (or from a fixture): skip locally / fail in CI if missing."""
    reason = browser_unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)


# --------------------------------------------------------------------------- fake camera video
def _letterbox(img: np.ndarray, w: int = FRAME_W, h: int = FRAME_H) -> np.ndarray:
    """Fit img into w x h keeping aspect ratio, padding with black (y4m needs one fixed size)."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    ih, iw = img.shape[:2]
    if (iw, ih) == (w, h):
        return np.ascontiguousarray(img)
    s = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = small
    return out


def write_y4m(path: str | os.PathLike, frames_bgr: Sequence[np.ndarray], fps: int = 30,
              repeat: int = 15) -> Path:
    """Write frames as a YUV4MPEG2 (C420jpeg, 640x480) file for ``--use-file-for-fake-video-capture``.

    No ffmpeg needed: I420 planes come from cv2. Each frame is written ``repeat`` times in a row
    (Chromium loops the file, so this sets how long each image stays on camera: 15 = 0.5 s at 30 fps).
    Frames of another size are letterboxed to 640x480. Returns the path.
    """
    if not frames_bgr:
        raise ValueError("write_y4m needs at least one frame")
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{FRAME_W} H{FRAME_H} F{int(fps)}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for img in frames_bgr:
            yuv = cv2.cvtColor(_letterbox(img), cv2.COLOR_BGR2YUV_I420)  # (H*3/2, W): Y, U, V planes
            data = yuv.tobytes()
            for _ in range(repeat):
                f.write(b"FRAME\n")
                f.write(data)
    return path


def data_root() -> Path:
    """The real photos, as every test finds them (tests.conftest.photos_folder)."""
    from tests.conftest import photos_folder

    return photos_folder()


def _face_box(label: dict) -> tuple[float, float, float, float] | None:
    """The single "face" rectangle of a labelme file as (x0, y0, x1, y1), or None."""
    rects = [s for s in label.get("shapes", [])
             if s.get("label") == "face" and s.get("shape_type") == "rectangle"
             and len(s.get("points", [])) == 2]
    if len(rects) != 1:
        return None
    (ax, ay), (bx, by) = rects[0]["points"]
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def load_face_samples(root: str | os.PathLike | None = None, n: int = 4,
                      face_fraction: float = 0.5) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Real face photos as 640x480 BGR frames, each with its face box (x0, y0, x1, y1) in that frame.

    Each photo is cropped (padded with black where the crop leaves the photo) around its labelled
    face so the face is centred and about ``face_fraction`` of the frame height: large enough for any
    detector. Samples are spread evenly over the sorted label files, so the choice is deterministic.
    Nothing is written to the dataset folder.
    """
    base = Path(root) if root is not None else data_root()
    ds = base / "faces-helen"
    labels = sorted((ds / "labels").glob("*.json"))
    if not labels:
        raise FileNotFoundError(f"no labelme files in {ds / 'labels'} (set FACETRACKER_DATA?)")
    step = max(1, len(labels) // max(1, n * 3))
    out: list[tuple[np.ndarray, tuple[int, int, int, int]]] = []
    for lp in labels[::step]:
        if len(out) >= n:
            break
        label = json.loads(lp.read_text())
        box = _face_box(label)
        if box is None:
            continue
        ip = (lp.parent / label.get("imagePath", "")).resolve()
        if not ip.is_file():
            ip = ds / "images" / Path(label.get("imagePath", lp.stem + ".jpg")).name
        img = cv2.imread(str(ip), cv2.IMREAD_COLOR)
        if img is None:
            continue
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0)
        if side < 40:  # too small to be a useful "large face" sample
            continue
        ch = side / face_fraction
        cw = ch * FRAME_W / FRAME_H
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        l, t = int(round(cx - cw / 2)), int(round(cy - ch / 2))
        r, b = l + int(round(cw)), t + int(round(ch))
        ih, iw = img.shape[:2]
        pad = max(0, -l, -t, r - iw, b - ih)
        if pad:
            img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        crop = img[t + pad:b + pad, l + pad:r + pad]
        sx, sy = FRAME_W / crop.shape[1], FRAME_H / crop.shape[0]
        frame = cv2.resize(crop, (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR)
        fbox = (int(round((x0 - l) * sx)), int(round((y0 - t) * sy)),
                int(round((x1 - l) * sx)), int(round((y1 - t) * sy)))
        out.append((frame, fbox))
    if len(out) < n:
        raise FileNotFoundError(f"only {len(out)} usable labelled faces in {ds}, wanted {n}")
    return out


def face_frames_from_dataset(data_root: str | os.PathLike | None = None, n: int = 4) -> list[np.ndarray]:
    """n real face photos from ``<data_root>/faces-helen`` as 640x480 BGR frames (large, centred face)."""
    return [frame for frame, _ in load_face_samples(data_root, n=n)]


def fake_camera_video(folder: str | os.PathLike) -> Path:
    """Check that a browser can run, then write ``folder/faces.y4m``: 4 real faces, 0.5 s each at
    30 fps. Skips locally / fails in CI when the browser or the face photos are missing."""
    require_browser()
    try:
        frames = face_frames_from_dataset(data_root(), n=4)
    except FileNotFoundError as error:
        skip_or_fail(f"face dataset missing: {error}")
    return write_y4m(Path(folder) / "faces.y4m", frames, fps=30, repeat=15)


# --------------------------------------------------------------------------- streamlit server
class ServerUrl(str):
    """The server's base URL (a plain str for ``page.goto``) that also knows where its log is."""

    log_path: Path
    pid: int

    def log_tail(self, n_lines: int = 60) -> str:
        """Last lines of the server's stdout+stderr (for assertion messages)."""
        return _tail(self.log_path, n_lines)


def _tail(path: Path, n_lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n_lines:])
    except OSError:
        return "<no log>"


def mapped_libraries(pid: int, word: str) -> list[str]:
    """The shared libraries of a running process whose path holds `word` (from /proc/PID/maps; TensorFlow
    lives in `/tensorflow/`, LiteRT in `/ai_edge_litert/`):
    a library is mapped once imported, whatever the process's modules say."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({line.split()[-1] for line in lines if word in line.split()[-1] and ".so" in line.split()[-1]})


def resident_mb(pid: int) -> float:
    """A running process's resident memory in MB (VmRSS), 0 when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def free_port() -> int:
    """A TCP port that was free a moment ago (tiny race, fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the server's process group, SIGKILL it if it is still alive after timeout."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def streamlit_server(app_path: str | os.PathLike, env: Mapping[str, str] | None = None,
                     port: int | None = None, startup_timeout: float = 90.0,
                     stop_timeout: float = 10.0, extra_args: Sequence[str] = (),
                     cwd: str | os.PathLike | None = None) -> Iterator[ServerUrl]:
    """Run ``streamlit run app_path`` on 127.0.0.1, yield its base URL, stop it on exit.

    ``env`` is merged over os.environ. The server runs in its own process group (so SIGTERM reaches
    every child) with the file watcher off (a watcher scanning big folders caused webrtc Start
    failures). Startup failure raises RuntimeError with the log tail; if the ``with`` body raises,
    the log tail is printed to stderr so pytest shows it with the failure.
    """
    app = Path(app_path)
    if not app.is_absolute():
        app = (REPO_ROOT / app).resolve()
    if not app.is_file():
        raise FileNotFoundError(app)
    port = port or free_port()
    logdir = Path(tempfile.mkdtemp(prefix="st-server-"))
    log_path = logdir / "streamlit.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [sys.executable, "-m", "streamlit", "run", str(app),
           "--server.headless", "true", "--server.fileWatcherType", "none",
           "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", *extra_args]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=str(cwd or REPO_ROOT), env=full_env, stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    url = ServerUrl(f"http://127.0.0.1:{port}")
    url.log_path, url.pid = log_path, proc.pid
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode} during startup:\n"
                                   f"{_tail(log_path, 60)}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit not healthy after {startup_timeout:.0f} s:\n{_tail(log_path, 60)}")
            time.sleep(0.25)
        try:
            yield url
        except BaseException:
            print(f"\n----- streamlit log tail ({log_path}) -----\n{_tail(log_path, 80)}\n-----",
                  file=sys.stderr)
            raise
    finally:
        _stop_group(proc, stop_timeout)
        if os.environ.get("FACETRACKER_KEEP_LOGS") != "1":
            shutil.rmtree(logdir, ignore_errors=True)


# --------------------------------------------------------------------------- browser
@contextlib.contextmanager
def browser(video_path: str | os.PathLike | None = None, *, default_timeout_ms: float = 30_000,
            viewport: tuple[int, int] = (1280, 900)) -> Iterator["Page"]:
    """Headless Debian Chromium page with a fake camera (the y4m file if given, else the test pattern).

    Persistent context on a fresh temp profile (that is how Playwright takes a user-data dir) with
    camera permission granted. Console messages and page errors are collected in ``page.console_log``.
    """
    from playwright.sync_api import sync_playwright

    args = list(CHROMIUM_ARGS)
    if video_path is not None:
        vp = Path(video_path).resolve()
        if not vp.is_file():
            raise FileNotFoundError(vp)
        args.append(f"--use-file-for-fake-video-capture={vp}")
    udd = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                udd, executable_path=CHROMIUM, headless=True, args=args,
                viewport={"width": viewport[0], "height": viewport[1]}, permissions=["camera"])
            try:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                page.set_default_timeout(default_timeout_ms)
                log: list[str] = []
                page.console_log = log  # type: ignore[attr-defined]
                page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
                yield page
            finally:
                ctx.close()
    finally:
        shutil.rmtree(udd, ignore_errors=True)


def wait_for_app(page: "Page", timeout: float = 60.0) -> None:
    """Wait until Streamlit is connected and the script run finished (no "Running..." widget).

    Needed before interacting: widgets re-render during a run, and a component clicked mid-run can
    be reset ("not rendered for 1 script runs").
    """
    ms = timeout * 1000
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]',
                           state="attached", timeout=ms)
    # two quiet checks in a row: a widget change can start a new run just after the previous ended
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Streamlit script still running after {timeout:.0f} s")
        page.wait_for_timeout(150)
        done = page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').count() > 0
        running_icon = page.locator('[data-testid="stStatusWidgetRunningIcon"]').count() > 0
        quiet = quiet + 1 if done and not running_icon else 0


def page_exceptions(page: "Page") -> list[str]:
    """Texts of the exception boxes Streamlit shows (a script error does not fail the page load)."""
    return page.locator('[data-testid="stException"]').all_inner_texts()


def slider_thumb(page: "Page", label: str | None = None) -> "Locator":
    """The focusable thumb of an st.slider (by its exact label, else the first slider on the page).

    Streamlit 1.67 renders a react-aria slider: the thumb is a visually hidden
    ``input[type=range]`` whose role is only implicit (CSS ``[role="slider"]`` misses it) and whose
    accessible name includes its value ("3 probe slider"), so match the widget label instead.
    Older Streamlit (baseweb) used ``div[role=slider]``; both are covered.
    """
    sliders = page.get_by_test_id("stSlider")
    if label:
        sliders = sliders.filter(has=page.get_by_test_id("stWidgetLabel").get_by_text(label, exact=True))
    return sliders.locator('input[type="range"], [role="slider"]').first


def press_slider(page: "Page", label: str | None = None, key: str = "ArrowRight", times: int = 1) -> None:
    """Move a slider with the keyboard (focus the thumb, press key) and wait for the re-run."""
    thumb = slider_thumb(page, label)
    thumb.focus()
    for _ in range(times):
        page.keyboard.press(key)
    wait_for_app(page)


def webrtc_frame(page: "Page") -> "FrameLocator":
    """The streamlit-webrtc component's iframe (its buttons and video live there)."""
    return page.frame_locator(WEBRTC_IFRAME).first


def _video_value(page: "Page", script: str, absent):
    """`script` evaluated on the processed video element, or `absent` while the component shows none."""
    video = webrtc_frame(page).locator("video")
    if video.count() == 0:
        return absent
    try:
        return video.first.evaluate(script, timeout=2000)
    except Exception:  # element replaced between count() and evaluate()
        return absent


def _video_playing(page: "Page") -> bool:
    return bool(_video_value(page, "v => v.videoWidth > 0 && v.currentTime > 0", False))


def video_width(page: "Page") -> int:
    """The processed video's width in pixels now; 0 while the component shows no video."""
    return int(_video_value(page, "v => v.videoWidth", 0))


def start_webrtc(page: "Page", timeout: float = 30.0, attempt_timeout: float = 8.0) -> float:
    """Click Start and wait until the processed video plays; returns seconds from last click.

    If nothing plays within attempt_timeout, clicks Stop and Start once more: streamlit-webrtc
    occasionally drops a fresh connection ("resetting stale state") and the browser only notices
    several seconds later.
    """
    fl = webrtc_frame(page)
    start = fl.get_by_role("button", name="Start", exact=True)
    stop = fl.get_by_role("button", name="Stop", exact=True)
    deadline = time.monotonic() + timeout
    for attempt in range(2):
        start.wait_for(state="visible", timeout=max(1.0, deadline - time.monotonic()) * 1000)
        wait_for_app(page)  # clicking during a script run is what leads to "resetting stale state"
        t_click = time.monotonic()
        start.click()
        limit = min(deadline, t_click + (attempt_timeout if attempt == 0 else timeout))
        while time.monotonic() < limit:
            if _video_playing(page):
                return time.monotonic() - t_click
            page.wait_for_timeout(100)
        if attempt == 0 and time.monotonic() < deadline:
            print(f"start_webrtc: no video {attempt_timeout:.0f} s after Start; clicking Stop and Start again",
                  file=sys.stderr)
            with contextlib.suppress(Exception):  # Stop may be missing if the component already reset
                stop.click(timeout=5000)
            continue
        break
    try:
        body = fl.locator("body").inner_text(timeout=2000)[:300]
    except Exception:
        body = "<unreadable>"
    raise TimeoutError(f"webrtc video did not start within {timeout:.0f} s (2 Start clicks); "
                       f"iframe says: {body!r}")


def stop_webrtc(page: "Page", timeout: float = 15.0) -> None:
    """Click Stop and wait for the Start button to come back."""
    fl = webrtc_frame(page)
    stop = fl.get_by_role("button", name="Stop", exact=True)
    if stop.is_visible():
        stop.click()
    fl.get_by_role("button", name="Start", exact=True).wait_for(state="visible", timeout=timeout * 1000)


_GRAB_JS = """v => {
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext('2d').drawImage(v, 0, 0);
  return c.toDataURL('image/png');
}"""


def video_frame_png(page: "Page") -> np.ndarray:
    """The processed video's current frame as BGR pixels at the stream's native size.

    Drawn through a canvas (exact stream pixels, independent of CSS size); falls back to a
    screenshot of the video element if the canvas route fails. The size can be below 640x480
    (WebRTC adapts resolution under CPU load; 480x360 was seen): compare positions relatively.
    """
    video = webrtc_frame(page).locator("video").first
    png: bytes
    try:
        url = video.evaluate(_GRAB_JS)
        png = base64.b64decode(url.split(",", 1)[1])
    except Exception:
        png = video.screenshot()
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise RuntimeError("could not decode the video frame grab")
    return img


def green_pixels(img) -> int:
    """Pixels of the box colour the live path draws (BGR 0, 200, 0), as they survive VP8."""
    b, g, r = (img[..., i].astype(int) for i in range(3))
    return int(((g > 150) & (r < 100) & (b < 100)).sum())


def read_caption(page, pattern) -> tuple[int, ...] | None:
    """The numbers a caption matching `pattern` (a compiled regex with groups) shows now, if any."""
    locator = page.get_by_text(pattern)
    if locator.count() == 0:
        return None
    try:
        match = pattern.search(locator.first.inner_text(timeout=2000))
    except Exception:  # re-rendered between count() and inner_text()
        return None
    return tuple(int(g) for g in match.groups()) if match else None


def wait_for(what: str, check, timeout: float, page, interval_ms: int = 500):
    """The first truthy value of `check()`, polled every `interval_ms` until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        page.wait_for_timeout(interval_ms)
    raise AssertionError(f"{what} not seen within {timeout:.0f} s")
