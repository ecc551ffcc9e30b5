"""atheris target: RtpPacket.parse (rtp.py) and parse_compound (rtcp.py), with round trips.

Run: .venv/bin/python fuzz/fuzz_rtp_rtcp.py -max_total_time=3600 fuzz/corpus/rtp_rtcp
"""

from _main import run

if __name__ == "__main__":
    run("rtp_rtcp")
