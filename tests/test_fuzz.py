"""Fuzzing every parser: random bytes and mutations of real vectors get only documented errors.

The checks themselves live in ``fuzz/harness.py`` (shared with the atheris targets in
``fuzz/``); the vectors in ``fuzz/seeds.py`` are what our own client, server and packetizer
put on the wire. Here Hypothesis drives them with random bytes and with mutations of those
vectors (bit flips, truncation, splicing, duplicated, deleted and inserted regions, protocol
tokens), derandomized so CI is reproducible. Crash inputs found by fuzzing are kept in
``tests/vectors/regressions/<target>-<name>.bin`` and replayed by
:func:`test_regression_vectors`. The atheris targets get a short smoke run when atheris is
installed (``-k atheris``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import harness, seeds
from mjpeg_rtsp.client import MediaInfo, RtspClient, parse_rtsp_url
from mjpeg_rtsp.rfc2435 import JpegDepacketizer, Rfc2435Error, parse_header
from mjpeg_rtsp.rtsp import (
    NEED_DATA,
    Headers,
    RemoteProtocolError,
    Request,
    Response,
    RtspReader,
)

ROOT = Path(__file__).resolve().parent.parent
REGRESSIONS = ROOT / "tests" / "vectors" / "regressions"

_BASE = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(examples: int) -> settings:
    """Reproducible settings (derandomized, no example database, no deadline)."""
    return settings(_BASE, max_examples=examples)


def _vectors(target: str) -> list[bytes]:
    return [data for _, data in seeds.vectors(target)]


# Byte strings that steer mutations towards the interesting parts of each format.
RTSP_TOKENS = [
    b"\r\n", b"\n", b"\r\n\r\n", b"\n\n", b"\r", b"$", b"$\x00\x00\x04", b"$\x01\xff\xff",
    b"Content-Length: ", b"Content-Length: 99999999999", b"Content-Length: \xc2\xb2",
    b"CSeq: 1", b"Session: ", b";timeout=", b"Transport: RTP/AVP/TCP;interleaved=",
    b"client_port=", b"-", b"Range: npt=", b"RTSP/1.0 ", b" RTSP/2.0", b"rtsp://h/",
    b"movie.Mjpeg", b"\xff", b"\xc3(", b" ", b"\t", b":", b"9" * 12, b"x-dimensions:",
]
SDP_TOKENS = [
    b"\r\n", b"\n", b"m=video ", b"a=rtpmap:", b"a=x-dimensions:", b"a=range:npt=", b"/", b":",
    b" ", b"=", b"9" * 12, b"a=framerate:", b"a=control:", b"\xff",
]
BINARY_TOKENS = [
    b"\x00", b"\xff", b"\x80", b"\x7f", b"\xff\xff", b"\x00\x00", b"\xff\xd8", b"\xff\xd9",
    b"\xff\xda", b"\xff\xdb", b"\xff\xc0", b"\xff\xc4", b"\xff\xdd", b"\xff\xd0", b"\xff\x00",
    b"\x80\xc8", b"\x81\xca", b"\xa0", b"\xbf", b"\x00\x00\x00\x00", b"00000", b"99999",
]


@st.composite
def mutated(draw, vectors: list[bytes], tokens: list[bytes], max_ops: int = 4) -> bytes:
    """A real vector after a few structural mutations."""
    data = bytearray(draw(st.sampled_from(vectors)))
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(
            ["flip", "byte", "truncate", "splice", "duplicate", "delete", "insert", "token"]
        ))
        n = len(data)
        pos = draw(st.integers(0, n))
        if op == "flip" and n:
            data[min(pos, n - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and n:
            data[min(pos, n - 1)] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "splice":
            other = draw(st.sampled_from(vectors))
            data[pos:] = other[draw(st.integers(0, len(other))):]
        elif op == "duplicate":
            end = draw(st.integers(pos, n))
            data[end:end] = data[pos:end]
        elif op == "delete":
            del data[pos : draw(st.integers(pos, n))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(tokens))
    return bytes(data)


cuts = st.lists(st.integers(0, 2000), max_size=6)
# The defaults, and small limits so that random input reaches them.
reader_limits = st.sampled_from([
    {},
    {"max_header_bytes": 64, "max_headers": 4, "max_body_bytes": 32},
    {"max_header_bytes": 16, "max_headers": 1, "max_body_bytes": 0},
])


# --- RTSP ------------------------------------------------------------------------------------


@fuzz(400)
@given(st.binary(max_size=400), cuts, st.booleans(), reader_limits)
def test_rtsp_reader_random_bytes(data, cut_points, eof, limits):
    harness.check_rtsp(data, cut_points, eof=eof, **limits)


@fuzz(800)
@given(mutated(_vectors("rtsp"), RTSP_TOKENS), cuts, st.booleans(), reader_limits)
def test_rtsp_reader_mutated_messages(data, cut_points, eof, limits):
    harness.check_rtsp(data, cut_points, eof=eof, **limits)


@fuzz(100)
@given(mutated(_vectors("rtsp"), RTSP_TOKENS), st.booleans())
def test_rtsp_reader_byte_by_byte(data, eof):
    harness.check_rtsp(data, range(len(data)), eof=eof)


@fuzz(300)
@given(st.text(max_size=200), st.sampled_from(["Transport", "Session", "Range"]))
def test_header_value_parsers_random_text(value, name):
    harness._use_headers(Response(200, Headers([(name, value)])))


# --- SDP -------------------------------------------------------------------------------------


@fuzz(300)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_sdp_random(data):
    harness.check_sdp(data)


@fuzz(400)
@given(mutated(_vectors("sdp"), SDP_TOKENS))
def test_sdp_mutated(data):
    harness.check_sdp(data)


# --- RTP / RTCP ------------------------------------------------------------------------------


@fuzz(500)
@given(st.binary(max_size=120))
def test_rtp_rtcp_random_bytes(data):
    harness.check_rtp_rtcp(data)


@fuzz(800)
@given(mutated(_vectors("rtp_rtcp"), BINARY_TOKENS))
def test_rtp_rtcp_mutated_packets(data):
    harness.check_rtp_rtcp(data)


# --- RFC 2435 --------------------------------------------------------------------------------


@fuzz(400)
@given(st.binary(max_size=200))
def test_rfc2435_header_random_bytes(data):
    try:
        parse_header(data)
    except Rfc2435Error:
        pass


dimensions = st.one_of(
    st.none(), st.integers(0, 2**24), st.sampled_from([2040, 2041, 65535, 65536])
)


@fuzz(300)
@given(
    st.lists(
        st.tuples(
            mutated(_vectors("rfc2435"), BINARY_TOKENS, max_ops=2),
            st.integers(0, 3),
            st.booleans(),
        ),
        max_size=8,
    ),
    dimensions,
    dimensions,
)
def test_rfc2435_depacketizer_mutated_payloads(packets, width, height):
    harness.check_depacketizer(packets, width, height)


@fuzz(100)
@given(st.data(), dimensions, dimensions)
def test_rfc2435_depacketizer_real_frame_with_damage(data, width, height):
    """The real frame's fragments in order, one of them damaged, with any configured size."""
    packets = [(p, 7, False) for p in seeds.rfc2435_payloads()]
    index = data.draw(st.integers(0, len(packets) - 1))
    damaged = data.draw(mutated([packets[index][0]], BINARY_TOKENS, max_ops=2))
    packets[index] = (damaged, 7, False)
    packets[-1] = (packets[-1][0], 7, True)
    harness.check_depacketizer(packets, width, height)


def test_rfc2435_decode_packets_reads_what_encode_wrote():
    packets = [(p, 90000 * (i % 8), i == 2) for i, p in enumerate(seeds.rfc2435_payloads()[:3])]
    assert harness.decode_packets(harness.encode_packets(packets, 4096, 7)) == (packets, 4096, 7)


# --- JPEG ------------------------------------------------------------------------------------


@fuzz(300)
@given(st.binary(max_size=300), st.integers(0, 8))
def test_jpeg_random_bytes(data, start):
    harness.check_jpeg(b"\xff\xd8" + data, start)


@fuzz(400)
@given(mutated(_vectors("jpeg"), BINARY_TOKENS), st.sampled_from([0, 0, 0, 1, 5]))
def test_jpeg_mutated_frames(data, start):
    harness.check_jpeg(data, start)


# --- Motion-JPEG files -----------------------------------------------------------------------


@fuzz(150)
@given(mutated(_vectors("mjpeg_file"), BINARY_TOKENS))
def test_mjpeg_file_mutated(data):
    harness.check_mjpeg_file(data)


@fuzz(50)
@given(st.binary(max_size=64))
def test_mjpeg_file_random_bytes(data):
    harness.check_mjpeg_file(data)
    harness.check_mjpeg_file(b"00010" + data)


# --- The player's RTSP client ----------------------------------------------------------------


@fuzz(300)
@given(mutated(_vectors("client"), RTSP_TOKENS + SDP_TOKENS))
def test_client_mutated_replies(data):
    harness.check_client(data)


header_names = st.sampled_from([
    "CSeq", "Session", "Transport", "Range", "RTP-Info", "Public", "Content-Type",
    "Content-Base", "WWW-Authenticate", "X-Other",
])


@fuzz(300)
@given(
    st.integers(-1, 1000) | st.sampled_from([200, 401]),
    st.lists(st.tuples(header_names, st.text(max_size=40)), max_size=6),
    st.sampled_from(["1", "2", "3", "4", "5", "6", "7"]),
    st.binary(max_size=200) | mutated([seeds.sdp_text().encode()], SDP_TOKENS),
)
def test_client_arbitrary_response_objects(status, fields, cseq, body):
    headers = Headers([("CSeq", cseq), ("Content-Type", "application/sdp"), *fields])
    harness.check_client_response(Response(status, headers, body))


# --- Regression vectors and atheris ----------------------------------------------------------


def _regressions() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.bin")) if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("path", _regressions(), ids=lambda p: p.name)
def test_regression_vectors(path):
    """``<target>-<name>.bin``: an input that once broke ``<target>``'s contract."""
    target = path.name.split("-", 1)[0]
    harness.CHECKS[target](path.read_bytes())


def _read(path_name: str, **limits: int):
    reader = RtspReader(**limits)
    reader.receive_data((REGRESSIONS / path_name).read_bytes())
    return reader


@pytest.mark.parametrize(
    ("name", "status"),
    [("rtsp-content-length-superscript.bin", 400), ("rtsp-content-length-5000-digits.bin", 413)],
)
def test_regression_content_length_gives_a_protocol_error(name, status):
    """Found by fuzzing: "²" passed str.isdigit() and 5000 digits hit int()'s limit: ValueError."""
    reader = _read(name)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()
    assert info.value.fatal and info.value.status == status and info.value.cseq == "1"
    assert reader.buffered == 0


def test_regression_header_limit_is_the_same_for_every_split():
    """Found by fuzzing: a header ending within 4 bytes past the limit was accepted whole but
    refused when its terminator came in a later read."""
    data = (REGRESSIONS / "rtsp-header-limit-split.bin").read_bytes()
    for cut in (len(data) - 3, len(data) - 1, len(data)):
        reader = RtspReader()
        reader.receive_data(data[:cut])
        events = [reader.next_event()]
        reader.receive_data(data[cut:])
        events.append(reader.next_event())
        assert [type(e) for e in events if e is not NEED_DATA] == [Request]


def test_regression_failed_reader_buffers_nothing_more():
    """Found by fuzzing: after a fatal error the reader kept every byte it was given."""
    reader = RtspReader(max_header_bytes=16)
    reader.receive_data(b"OPTIONS * RTSP/1.0\r\nCSeq: 1")
    with pytest.raises(RemoteProtocolError):
        reader.next_event()
    reader.receive_data(b"x" * 100_000)
    assert reader.buffered == 0
    with pytest.raises(RemoteProtocolError, match="already failed"):
        reader.next_event()


def _client_after(name: str, *steps: str) -> RtspClient:
    client = RtspClient(parse_rtsp_url("rtsp://127.0.0.1/movie.Mjpeg"))
    for step in steps:
        getattr(client, step)()
    for event in harness.reader_outcomes([(REGRESSIONS / name).read_bytes()]):
        client.receive(event)
    return client


def test_regression_client_ignores_a_5000_digit_session_timeout():
    client = RtspClient(parse_rtsp_url("rtsp://127.0.0.1/movie.Mjpeg"))
    client.media = MediaInfo("rtsp://127.0.0.1/movie.Mjpeg/stream=0", "rtsp://127.0.0.1/")
    client.options(), client.describe(), client.setup("udp", 25000)
    [response] = harness.reader_outcomes(
        [(REGRESSIONS / "client-session-timeout-5000-digits.bin").read_bytes()]
    )
    assert client.receive(response).ok
    assert client.session_id == "1" and client.session_timeout == 60.0


def test_regression_client_ignores_a_5000_digit_x_dimension():
    client = _client_after("client-x-dimensions-5000-digits.bin", "options", "describe")
    assert client.media is not None and client.media.width is None


def test_regression_x_dimensions_beyond_16_bits_are_a_payload_error():
    """Found by fuzzing: a=x-dimensions:70000 reached build_jpeg_header -> ValueError."""
    client = _client_after("client-x-dimensions-70000.bin", "options", "describe")
    assert (client.media.width, client.media.height) == (70000, 70000)
    depacketizer = JpegDepacketizer(client.media.width, client.media.height)
    payload = seeds.rfc2435_payloads()[0]
    with pytest.raises(Rfc2435Error, match="exceeds 65535"):
        depacketizer.push(payload[:6] + b"\x00\x00" + payload[8:], 0, True)


def test_every_target_has_seeds():
    for target in seeds.TARGETS:
        assert seeds.vectors(target), target
    assert set(harness.CHECKS) == set(seeds.TARGETS)


ATHERIS_TARGETS = sorted(p.stem for p in (ROOT / "fuzz").glob("fuzz_*.py"))
try:
    import atheris  # noqa: F401

    HAVE_ATHERIS = True
except ImportError:
    HAVE_ATHERIS = False


@pytest.mark.skipif(not HAVE_ATHERIS, reason="atheris is not installed")
@pytest.mark.parametrize("name", ATHERIS_TARGETS)
def test_atheris_target_smoke(name, tmp_path):
    """Each coverage-guided target runs a short bounded session from its seeds, clean."""
    corpus = tmp_path / "corpus"
    subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "make_corpus.py"), "--out", str(corpus),
         name.removeprefix("fuzz_")],
        check=True, capture_output=True, timeout=60,
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / f"{name}.py"), "-runs=1500",
         "-max_total_time=4", "-timeout=5", "-rss_limit_mb=1024",
         str(corpus / name.removeprefix("fuzz_"))],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
