#!/usr/bin/env bash
# The main job on a fresh machine: the server on the bundled movie.Mjpeg and the player window.
#   bash tools/demo.sh [textbook|standard]
# "textbook" (default) plays it as the course's client does (HOST PORT RTP_PORT FILE);
# "standard" plays rtsp://127.0.0.1:PORT/movie.Mjpeg. Without a display it plays headless
# and prints the statistics. Closing the window (or Ctrl+C) stops the server too. Browsers
# watch at http://127.0.0.1:HTTP_PORT/ (default 8080) meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-textbook}
# Installs what is missing (python3, its venv module, Tk when a window will open) and builds .venv.
source tools/setup-env.sh
want_tk=no
[ -n "${DISPLAY:-}" ] && want_tk=yes
setup_env requirements.txt "$want_tk"

port=${PORT:-8554}
http_port=${HTTP_PORT:-8080}
.venv/bin/python Server.py "$port" --host 127.0.0.1 --http "$http_port" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in {1..50}; do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 $server 2>/dev/null || exit 1
  sleep 0.1
done

echo "== in a browser: http://127.0.0.1:$http_port/ (this movie: http://127.0.0.1:$http_port/watch/movie.Mjpeg)"
if [ "$mode" = standard ]; then
  source_args=("rtsp://127.0.0.1:$port/movie.Mjpeg")
else
  source_args=(127.0.0.1 "$port" 25000 movie.Mjpeg)
fi
if [ -n "${DISPLAY:-}" ]; then
  .venv/bin/python ClientLauncher.py "${source_args[@]}"
else
  echo "== no DISPLAY: playing headless for 5 s"
  .venv/bin/python ClientLauncher.py "${source_args[@]}" --headless --duration 5
fi
