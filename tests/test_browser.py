"""A real browser watches: Debian's chromium, headless, driven by Selenium through Debian's
chromedriver (no browser downloads). The index lists the streams, the watch page shows frames
that change (the sample's frame counter advances), its script runs under the page's
Content-Security-Policy and fills in the live figures, the snapshot decodes, and an RTSP
viewer (ffmpeg) plays the same file at the same time."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import PEER_TIMEOUT, need_tool, wait_for
from make_sample import BASE_SIZE, read_frame_number
from PIL import Image, ImageChops
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _need(path: str) -> None:
    need_tool(os.path.basename(path))
    if not os.access(path, os.X_OK):
        need_tool(path)  # skips, or fails under CI


@pytest.fixture(scope="module")
def browser() -> Iterator:
    _need(CHROMIUM)
    _need(CHROMEDRIVER)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=900,800",
                     "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def web(server_factory):
    return server_factory(http_port=0)


def base(server) -> str:
    return f"http://127.0.0.1:{server.http.port}"


def shown_frame(browser) -> tuple[Image.Image, int]:
    """The ``<img>`` as the browser draws it, and the frame number it shows."""
    element = browser.find_element("id", "view")
    picture = Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")
    return picture, read_frame_number(picture.resize(BASE_SIZE))


def test_index_lists_the_streams(browser, web):
    browser.get(base(web) + "/")
    names = [e.text for e in browser.find_elements("css selector", "li.stream b")]
    assert {"movie.Mjpeg", "short.Mjpeg", "hd.mjpeg"} <= set(names)
    links = [e.get_attribute("href") for e in browser.find_elements("link text", "watch")]
    assert base(web) + "/watch/movie.Mjpeg" in links


def test_watch_page_shows_changing_frames_with_an_rtsp_viewer_at_once(browser, web):
    ffmpeg = need_tool("ffmpeg")
    opened = time.monotonic()
    browser.get(base(web) + "/watch/movie.Mjpeg")
    shows = wait_for(lambda: browser.execute_script(
        "const v = document.getElementById('view'); return v.complete && v.naturalWidth;"), 5)
    first_seen = time.monotonic() - opened
    assert shows == 384
    assert first_seen < 3.0, first_seen  # target 1 s; slack for a loaded machine
    # An RTSP viewer of the same file while the browser watches.
    rtsp = subprocess.Popen(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-rtsp_transport", "tcp",
         "-i", f"rtsp://127.0.0.1:{web.port}/movie.Mjpeg", "-frames:v", "30", "-f", "null", "-"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        def both_watching() -> bool:
            with urllib.request.urlopen(base(web) + "/status.json", timeout=5) as reply:
                sessions = json.load(reply)["sessions"]
            return sessions["http"] == 1 and sessions["tcp"] == 1

        assert wait_for(both_watching, 10)
        picture, number = shown_frame(browser)
        later = wait_for(lambda: (lambda p, n: (p, n) if n > number else None)(
            *shown_frame(browser)), 5)
        assert later, f"the frame counter stays at {number}"
        assert ImageChops.difference(picture, later[0]).getbbox() is not None
        _, stderr = rtsp.communicate(timeout=PEER_TIMEOUT)
        assert rtsp.returncode == 0, stderr.decode(errors="replace")
    finally:
        if rtsp.poll() is None:
            rtsp.kill()
            rtsp.communicate()
    # The page's script runs (its hash in the CSP is right) and fills in the figures.
    assert wait_for(lambda: browser.find_element("id", "viewers").text == "1", 10)
    assert browser.find_element("id", "size").text == "384\u00d7288"
    assert browser.find_element("id", "rate").text == "20 fps"


def test_snapshot_decodes(browser, web):
    browser.get(base(web) + "/snapshot/movie.Mjpeg.jpg")
    width = wait_for(lambda: browser.execute_script(
        "const i = document.images[0]; return i && i.complete && i.naturalWidth;"), 5)
    assert width == 384
    with urllib.request.urlopen(base(web) + "/snapshot/movie.Mjpeg.jpg", timeout=5) as reply:
        image = Image.open(io.BytesIO(reply.read()))
        image.load()
    assert image.size == (384, 288) and read_frame_number(image) == 0


def test_leaving_the_page_ends_the_session(browser, web):
    browser.get(base(web) + "/watch/short.Mjpeg")
    assert wait_for(lambda: len(web.registry) == 1, 5)
    browser.get("about:blank")
    assert wait_for(lambda: len(web.registry) == 0, 10)
