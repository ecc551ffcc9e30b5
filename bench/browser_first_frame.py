"""Time for a browser to show the bundled movie: opening /watch/movie.Mjpeg to the first frame.

    .venv/bin/python bench/browser_first_frame.py [--runs 5] [--rtsp-viewers 2]

Theory of operation: ``Server.py --http 0`` serves the checkout's movie.Mjpeg, with
``--rtsp-viewers`` ffmpeg processes playing it over RTSP at the same time (the issue's target
is with RTSP viewers running). Debian's chromium, headless, through Selenium and Debian's
chromedriver, opens the watch page ``--runs`` times (a fresh page each time); a run's figure
is from ``driver.get`` being called to the page's ``<img>`` having a decoded frame
(``complete && naturalWidth``, polled every 10 ms in the page). Prints the runs and median.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parent.parent
WAIT_SCRIPT = """
const done = arguments[arguments.length - 1];
const started = performance.now();
(function poll() {
  const v = document.getElementById('view');
  if (v && v.complete && v.naturalWidth) { done(performance.now() - started); return; }
  if (performance.now() - started > 10000) { done(null); return; }
  setTimeout(poll, 10);
})();
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rtsp-viewers", type=int, default=2)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1", "--http", "0",
         "--root", str(ROOT)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    viewers: list[subprocess.Popen] = []
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = None
    try:
        rtsp_port = http_port = None
        while rtsp_port is None or http_port is None:
            line = server.stdout.readline()
            if not line:
                raise SystemExit("the server exited")
            if line.startswith("RTSP server listening on port "):
                rtsp_port = int(line.split("port ")[1].split(",")[0])
            found = re.search(r"browsers: http://[^:]+:(\d+)/", line)
            if found:
                http_port = int(found.group(1))
        for _ in range(args.rtsp_viewers):
            viewers.append(subprocess.Popen(
                ["ffmpeg", "-loglevel", "error", "-stream_loop", "-1", "-rtsp_transport", "tcp",
                 "-i", f"rtsp://127.0.0.1:{rtsp_port}/movie.Mjpeg", "-f", "null", "-"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        url = f"http://127.0.0.1:{http_port}/watch/movie.Mjpeg"
        runs = []
        for _ in range(args.runs):
            driver.get("about:blank")
            started = time.perf_counter()
            driver.get(url)  # returns once the page has loaded; the stream's part comes later
            in_page = driver.execute_async_script(WAIT_SCRIPT)
            if in_page is None:
                raise SystemExit("no frame within 10 s")
            runs.append((time.perf_counter() - started) * 1000)
        print(f"opening /watch/movie.Mjpeg to its first frame shown, {args.rtsp_viewers} RTSP "
              f"viewers at once: median {statistics.median(runs):.0f} ms, runs "
              + ", ".join(f"{r:.0f}" for r in runs))
    finally:
        if driver is not None:
            driver.quit()
        for viewer in viewers:
            viewer.terminate()
            viewer.wait(10)
        server.terminate()
        server.wait(10)
        server.stdout.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
