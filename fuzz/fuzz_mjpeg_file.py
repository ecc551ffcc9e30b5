"""atheris target: MjpegFile / build_index (media.py): the input is written to a file and opened.

Run: .venv/bin/python fuzz/fuzz_mjpeg_file.py -max_total_time=3600 fuzz/corpus/mjpeg_file
"""

from _main import run

if __name__ == "__main__":
    run("mjpeg_file")
