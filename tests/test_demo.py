"""The web demo (main_demo_fbcnn.py): its helpers, and the page itself in a real headless Chromium.

The browser test needs Gradio and Selenium (requirements-demo.txt) and the Debian packages chromium and
chromium-driver; without them it skips and says which is missing, except in CI (``CI`` set), where it fails:
``.ci/run`` installs them.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import pytest
from PIL import Image

import main_demo_fbcnn as demo
from main_restore_fbcnn import LoadedImage
from models import ZOO_MODELS
from tests.conftest import ROOT
from utils.utils_image import imread_uint


# --------------------------------------------------------------------------------------
# Helpers, without a browser
# --------------------------------------------------------------------------------------
def test_binds_localhost_unless_asked() -> None:
    args = demo.build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.share is False
    args = demo.build_parser().parse_args(["--host", "0.0.0.0", "--share"])
    assert args.host == "0.0.0.0" and args.share is True


def test_a_bad_checkpoint_is_refused_at_start_naming_the_file(tmp_path, caplog) -> None:
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    assert demo.main(["--model", str(bad), "--port", "0"]) == 2  # before any server starts
    assert "failed to load" in caplog.text and str(bad) in caplog.text


def test_each_checkpoint_is_listed_once(tmp_path) -> None:
    own = tmp_path / "mine.pth"
    own.write_bytes(b"")
    gray = ZOO_MODELS[1]
    relative = gray.relative_to(ROOT) if gray.is_relative_to(ROOT) else gray
    choices = demo.model_choices([own, gray, own, ROOT / relative])
    assert list(choices.values()).count(gray) == 1 and list(choices.values()).count(own) == 1
    assert list(choices)[:2] == ["mine.pth (--model)", f"{gray.name} (--model)"]  # --model order, bundled after
    assert set(choices.values()) == {own, gray, ZOO_MODELS[3]}


def test_unreadable_and_oversized_uploads_are_messages(tmp_path) -> None:
    bad = tmp_path / "holiday.jpg"
    bad.write_text("not an image")
    with pytest.raises(demo.DemoError, match="holiday.jpg is not a readable image"):
        demo.load_upload(bad)
    truncated = tmp_path / "cut.jpg"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(demo.DemoError, match="cut.jpg"):
        demo.load_upload(truncated)
    big = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(big)  # 6 MP, refused from its header before decoding
    with pytest.raises(demo.DemoError, match="over the limit of 5.0 MP"):
        demo.load_upload(big, max_pixels=5_000_000)
    assert demo.load_upload(big, max_pixels=6_000_000).pixels.shape == (2000, 3000, 1)


def test_comparison_zooms_the_same_crop() -> None:
    before = np.arange(64 * 80, dtype=np.uint32).reshape(64, 80, 1).astype(np.uint8)
    after = 255 - before
    b, a = demo.comparison(before, after, zoom=8, cx=0.5, cy=0.5)
    assert b.shape == a.shape == (512, 512, 3)  # a 64 x 64 crop, magnified 8x, as RGB
    assert np.array_equal(b[::8, ::8, 0], before[:, 8:72, 0]) and np.array_equal(a, 255 - b)


def test_examples_show_what_they_claim() -> None:
    double = demo.analyse(LoadedImage(demo.example_image("coffee, double JPEG QF 10 then 40 (FBCNN-D)")))
    assert double.dominant.qf is not None and abs(double.dominant.qf - 10) <= 5
    cropped = demo.analyse(LoadedImage(demo.example_image("chelsea, JPEG QF 30 cropped by (3, 5) (grid phase)")))
    assert cropped.grid.phase == (5, 3)  # 3 rows / 5 columns cropped: the grid starts 5 rows / 3 columns in


# --------------------------------------------------------------------------------------
# The page in a real browser
# --------------------------------------------------------------------------------------
def _browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; skips (fails in CI) naming what is missing."""
    missing = []
    for module in ("gradio", "selenium"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the Python package {module} (pip install -r requirements-demo.txt)")
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not chromium:
        missing.append("a Chromium browser (apt-get install chromium)")
    if not driver:
        missing.append("chromedriver (apt-get install chromium-driver)")
    if missing:
        reason = "browser test needs " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run it: .ci/run installs them)")
        pytest.skip(reason)
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch_image(src: str) -> np.ndarray:
    with urllib.request.urlopen(src, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB")).astype(int)


@pytest.fixture
def server(tmp_path):
    """The demo on a free port with the bundled GRAY model first (its QF control is live), as a real process."""
    port = _free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (closed below)
    cmd = [sys.executable, str(ROOT / "main_demo_fbcnn.py"), "--port", str(port), "--model", str(ZOO_MODELS[1])]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "demo server did not start:\n" + (tmp_path / "server.log").read_text()
                    ) from None
                time.sleep(0.5)
        yield url, tmp_path / "server.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_demo_in_a_real_browser(server, tmp_path, datasets) -> None:
    chromium, chromedriver = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, server_log = server
    photo = imread_uint(datasets / "trainsets" / "Kodak5" / "kodim07.png", 3)[100:356, 200:456]
    upload = tmp_path / "upload.jpg"
    assert cv2.imwrite(str(upload), photo[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 10])  # a real QF 10 JPEG file
    jpeg_pixels = np.asarray(Image.open(upload)).astype(int)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(upload.read_bytes()[:300])

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1500",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    wait = WebDriverWait(browser, 120)

    def output_src(other_than: str | None = None) -> str:
        def ready(b):
            imgs = b.find_elements(By.CSS_SELECTOR, "#output img")
            src = imgs[0].get_attribute("src") if imgs else None
            return src if src and src != other_than else False

        return wait.until(ready)

    def info() -> str:
        return browser.find_element(By.ID, "info").text

    try:
        browser.get(url)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(upload))
        blind_src = output_src()
        wait.until(lambda b: "blind" in info())
        blind = _fetch_image(blind_src)
        assert blind.shape == (256, 256, 3)
        assert "FBCNN-D dominant QF" in info() and "JPEG grid phase: (0, 0)" in info()
        slider = browser.find_element(By.CSS_SELECTOR, "#qf-slider input[type=range]")
        wait.until(lambda b: int(slider.get_attribute("value")) < 30)  # set to the predicted QF (about 10)

        # drag the slider's thumb to the high end (QF ~ 90: much weaker smoothing) and let go
        ActionChains(browser).click_and_hold(slider).move_by_offset(slider.size["width"] * 0.4, 0).release().perform()
        set_src = output_src(other_than=blind_src)
        wait.until(lambda b: "set with the slider" in info())
        qf_set = int(slider.get_attribute("value"))
        assert qf_set >= 80
        assert f"QF used: {qf_set:.1f}" in info()
        at_qf = _fetch_image(set_src)
        change = np.abs(at_qf - blind).mean()
        assert change > 0.5, f"moving the slider to QF {qf_set} changed the output by only {change:.3f} levels"
        assert np.abs(at_qf - jpeg_pixels).mean() < np.abs(blind - jpeg_pixels).mean()  # QF 90: closer to the JPEG
        assert browser.find_elements(By.CSS_SELECTOR, "#compare img")  # the before/after comparison is there
        browser.save_screenshot(str(tmp_path / "demo_screenshot.png"))

        browser.find_element(By.CSS_SELECTOR, "#blind button, button#blind").click()  # back to blind
        wait.until(lambda b: "blind" in info())
        assert np.array_equal(_fetch_image(output_src(other_than=set_src)), blind)

        browser.get(url)  # a fresh page: an unreadable upload is a message, not a traceback
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(broken))
        wait.until(lambda b: "Could not use this file" in info())
        assert "broken.jpg" in info()
        browser.save_screenshot(str(tmp_path / "demo_unreadable.png"))
    finally:
        browser.quit()
    assert "Traceback" not in server_log.read_text()
    print(f"screenshots: {tmp_path / 'demo_screenshot.png'}, {tmp_path / 'demo_unreadable.png'}")
