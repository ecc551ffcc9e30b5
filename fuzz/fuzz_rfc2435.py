"""atheris target: parse_header, JpegDepacketizer.push (rfc2435.py); see decode_packets.

Run: .venv/bin/python fuzz/fuzz_rfc2435.py -max_total_time=3600 fuzz/corpus/rfc2435
"""

from _main import run

if __name__ == "__main__":
    run("rfc2435")
