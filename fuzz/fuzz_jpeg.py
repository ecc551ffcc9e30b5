"""atheris target: scan_jpeg/find_frame_end (jpeg.py); accepted frames round-trip RFC 2435.

Run: .venv/bin/python fuzz/fuzz_jpeg.py -max_total_time=3600 fuzz/corpus/jpeg
"""

from _main import run

if __name__ == "__main__":
    run("jpeg")
