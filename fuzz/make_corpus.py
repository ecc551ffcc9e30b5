"""Write the atheris seed corpus: ``fuzz/corpus/<target>/<name>`` from real vectors.

Usage: ``.venv/bin/python fuzz/make_corpus.py [--out DIR] [TARGET ...]`` (all targets by
default). The seeds come from ``fuzz/seeds.py`` (our client's requests, our server's replies
and SDP, RTP/RTCP as the streamer sends them, RFC 2435 payloads of the sample's first frame,
small Motion-JPEG files) and total well under 200 KB; long fuzzing runs add their own finds
to the same folders, which ``fuzz/.gitignore`` keeps out of the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fuzz import harness, seeds  # noqa: E402


def target_seeds(target: str) -> list[tuple[str, bytes]]:
    if target != "rfc2435":
        return seeds.vectors(target)
    # The rfc2435 target reads a framed sequence of payloads (harness.decode_packets).
    frame = [(p, 0, i == len(seeds.rfc2435_payloads()) - 1)
             for i, p in enumerate(seeds.rfc2435_payloads())]
    out = [
        ("frame0_all", harness.encode_packets(frame)),
        ("frame0_all_x_dimensions", harness.encode_packets(frame, 384, 288)),
        ("frame0_two_frames", harness.encode_packets(frame[:2] + [(frame[0][0], 90000, True)])),
    ]
    out += [(f"single_{name}", harness.encode_packets([(payload, 0, True)]))
            for name, payload in seeds.rfc2435_vectors()]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "fuzz" / "corpus")
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(seeds.TARGETS))
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(seeds.TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(seeds.TARGETS)}")
    total = 0
    for target in args.targets or seeds.TARGETS:
        folder = args.out / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in target_seeds(target):
            (folder / name).write_bytes(data)
            total += len(data)
    print(f"wrote {total} bytes of seeds under {args.out}")


if __name__ == "__main__":
    main()
