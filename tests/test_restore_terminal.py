"""The restore CLI's output stays readable: log lines never share a line with a progress bar.

On a terminal (a pseudo-terminal here, as under tmux) tqdm draws bars and ``logging_redirect_tqdm`` clears the bar
before each log line; piped, there are no bars at all. The terminal's screen is rebuilt from the bytes (carriage
returns overwrite, escape sequences dropped) and every log line must start its own screen line.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def screen_lines(raw: str) -> list[str]:
    """What a terminal shows for ``raw``: each line after its carriage returns overwrote it."""
    shown = []
    for line in ESCAPE.sub("", raw).replace("\r\n", "\n").split("\n"):
        cells: list[str] = []
        pos = 0
        for ch in line:
            if ch == "\r":
                pos = 0
                continue
            if pos < len(cells):
                cells[pos] = ch
            else:
                cells.append(ch)
            pos += 1
        shown.append("".join(cells).rstrip())
    return shown


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        img = cv2.GaussianBlur(rng.integers(0, 256, (96, 600, 3), dtype=np.uint8), (0, 0), 3)  # 2 tiles of 512
        cv2.imwrite(str(folder / f"img{i}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 20])
    (folder / "broken.jpg").write_text("not an image")
    return folder


def command(inputs, tmp_path) -> list[str]:
    return [sys.executable, str(ROOT / "main_restore_fbcnn.py"), str(inputs), "-o", str(tmp_path / "out"), "--gray"]


def check_log_lines(lines: list[str]) -> None:
    logs = [line for line in lines if re.search(r"(INFO|ERROR|WARNING) ", line)]
    assert len([line for line in logs if " -> " in line]) == 3 and any("broken.jpg" in line for line in logs)
    for line in logs:
        assert re.match(r"(INFO|ERROR|WARNING) ", line), f"a log line shares the screen line with a bar: {line!r}"


def test_under_a_terminal_bars_and_logs_do_not_interleave(inputs, tmp_path) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # 30 x 120, as tmux would
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    proc = subprocess.Popen(command(inputs, tmp_path), stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            proc.kill()
            raise AssertionError("the CLI wrote nothing for 120 s")
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(leader)
    raw = b"".join(chunks).decode("utf-8", "replace")
    assert "restoring" in raw and "\r" in raw  # the bar was drawn
    check_log_lines(screen_lines(raw))


def test_piped_output_is_lines_without_bars(inputs, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command(inputs, tmp_path), capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1  # broken.jpg
    assert "\r" not in result.stderr and "restoring" not in result.stderr
    check_log_lines(result.stderr.splitlines())
