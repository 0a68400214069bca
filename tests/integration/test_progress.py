"""Progress bars: drawn on a terminal, silent in a log or a pipe."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios

from facetracker.io.progress import progress_bar, shown
from tests.conftest import REPO


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_drawn_on_a_terminal_and_nothing_elsewhere():
    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        with progress_bar("every face", stream=stream) as progress:
            for done in range(1, 6):
                progress(done, 5)
    assert "every face" in terminal.getvalue() and "/5 " in terminal.getvalue()
    assert log.getvalue() == ""
    assert shown(terminal) and not shown(log) and not shown(object())


def test_a_second_pass_starts_the_bar_again_with_its_total():
    """Reading a dataset counts photos without a total; writing them out counts again, of the total."""
    with progress_bar("exporting", stream=Terminal()) as progress:
        for done in range(1, 8):
            progress(done, None)
        assert progress.bar.n == 7 and progress.bar.total is None
        progress(1, 7)
        progress(2, 7)
        assert progress.bar.n == 2 and progress.bar.total == 7


def test_the_export_command_draws_its_bar_on_a_terminal_and_not_in_a_pipe(webcam, tmp_path):
    """The same command, its stderr once a pseudo-terminal and once a pipe."""
    command = [sys.executable, "-m", "facetracker", "dataset", "export", str(webcam), "--format", "yolo"]
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new one is 0 columns wide
    with subprocess.Popen([*command, "--out", str(tmp_path / "a")], cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=follower) as process:
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closes with the process
                break
            if not chunk:
                break
            drawn += chunk
        assert process.wait(timeout=120) == 0
    os.close(leader)
    assert b"exporting to yolo" in drawn and b"/90 [" in drawn
    piped = subprocess.run([*command, "--out", str(tmp_path / "b")], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert piped.returncode == 0 and piped.stderr == "" and "90 photos" in piped.stdout
