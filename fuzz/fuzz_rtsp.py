"""atheris target: RtspReader (rtsp.py): both dialects, $ frames, fed whole and split.

Run: .venv/bin/python fuzz/fuzz_rtsp.py -max_total_time=3600 fuzz/corpus/rtsp
"""

from _main import run

if __name__ == "__main__":
    run("rtsp")
