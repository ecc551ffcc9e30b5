"""atheris target: parse_sdp (sdp.py) and the npt ranges it carries.

Run: .venv/bin/python fuzz/fuzz_sdp.py -max_total_time=3600 fuzz/corpus/sdp
"""

from _main import run

if __name__ == "__main__":
    run("sdp")
