#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it.
#   bash tools/test.sh [pytest arguments]
# Installs what is missing from Debian packages in one apt step (python3 with venv and Tk, the
# test peers: ffmpeg, GStreamer, VLC, rtsp-server-perl, Xvfb, ...), creates or repairs .venv with
# Pillow, pytest, hypothesis and ruff, lints, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# The test peers (interop and window tests skip without them; CI=true makes a missing one an
# error).
DEBIAN_PACKAGES=(
  ffmpeg
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  python3-gi gir1.2-gst-rtsp-server-1.0
  vlc-bin vlc-plugin-base rtsp-server-perl
  gstreamer1.0-rtsp
  xvfb xdotool x11-apps imagemagick
  chromium chromium-driver
)
# Also python3, its venv module and Tk (the window tests run under Xvfb), all in one apt step.
source tools/setup-env.sh
setup_env requirements-test.txt yes "${DEBIAN_PACKAGES[@]}"

echo "== ruff check"
.venv/bin/python -m ruff check .

echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit $status
