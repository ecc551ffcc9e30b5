#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it.
#   bash tools/test.sh [pytest arguments]
# Installs the test peers from Debian packages (ffmpeg, GStreamer, Xvfb) when they are
# missing, creates .venv with Pillow, pytest, hypothesis and ruff, lints, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  ffmpeg
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  python3-gi gir1.2-gst-rtsp-server-1.0
  xvfb xdotool x11-apps imagemagick
)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "== installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    echo "warning: no apt-get; interop tests that need ${missing[*]} will be skipped" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt

echo "== ruff check"
.venv/bin/ruff check .

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
