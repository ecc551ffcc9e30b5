"""Real vectors for fuzzing: bytes that our own client, server and packetizer produce.

Everything here is made by the project's code from the sample ``movie.Mjpeg`` and the test
vector ``tests/vectors/gradient_16x16_q50_420.jpg``, so mutations start from what actually
travels on the wire: RTSP requests of both dialects (from :class:`RtspClient`), the server's
replies to them (from :class:`RtspService`, including its SDP), RTP packets and RTCP
compounds as the streamer builds them, RFC 2435 payloads from ``rfc2435.packetize`` and
Motion-JPEG files in both layouts. Shared by ``tests/test_fuzz.py`` and ``fuzz/make_corpus.py``.
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mjpeg_rtsp import rfc2435  # noqa: E402
from mjpeg_rtsp.client import RtspClient, parse_rtsp_url, textbook_target  # noqa: E402
from mjpeg_rtsp.jpeg import scan_jpeg  # noqa: E402
from mjpeg_rtsp.media import MediaLibrary, MjpegFile  # noqa: E402
from mjpeg_rtsp.rtcp import (  # noqa: E402
    Bye,
    ReceiverReport,
    ReportBlock,
    build_compound,
)
from mjpeg_rtsp.rtp import PT_JPEG, RtpPacket, pack_header  # noqa: E402
from mjpeg_rtsp.rtsp import (  # noqa: E402
    NEED_DATA,
    Dialect,
    Headers,
    Response,
    RtspReader,
    format_interleaved,
    format_response,
)
from mjpeg_rtsp.service import Connection, RtspService, ServerConfig, StartStreaming  # noqa: E402
from mjpeg_rtsp.session import SessionRegistry  # noqa: E402
from mjpeg_rtsp.streaming import rtcp_bye, rtcp_sender_report  # noqa: E402

SAMPLE = ROOT / "movie.Mjpeg"
GRADIENT = ROOT / "tests" / "vectors" / "gradient_16x16_q50_420.jpg"
TARGETS = ("rtsp", "sdp", "rtp_rtcp", "rfc2435", "jpeg", "mjpeg_file", "client")


@functools.cache
def sample_frames(count: int = 2) -> tuple[bytes, ...]:
    """The first ``count`` JPEGs of the sample, as stored."""
    media = MjpegFile(str(SAMPLE))
    try:
        return tuple(media.frame(i) for i in range(count))
    finally:
        media.close()


def gradient_jpeg() -> bytes:
    return GRADIENT.read_bytes()


def _read_all(data: bytes) -> list:
    reader = RtspReader()
    reader.receive_data(data)
    events = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    if reader.pending_textbook_message():
        events.append(reader.flush_textbook_message())
    return events


@functools.cache
def conversation() -> tuple[tuple[bytes, bytes, Dialect], ...]:
    """(request bytes, reply bytes, dialect) of a full session of each dialect with our server.

    The requests come from :class:`RtspClient`; the server side is the real
    :class:`RtspService` over the repo root (which holds ``movie.Mjpeg``); the replies are
    ``format_response`` of its answers, exactly what ``ServerWorker`` writes.
    """
    service = _service()
    conn = Connection(1, "127.0.0.1")
    out = []
    standard = RtspClient(parse_rtsp_url("rtsp://user:pw@127.0.0.1:8554/movie.Mjpeg"))
    textbook = RtspClient(textbook_target("127.0.0.1", 8554, 25000, "movie.Mjpeg"))
    for client, steps in (
        (standard, ("options", "describe", "setup", "play", "pause", "keepalive", "teardown")),
        (textbook, ("setup", "play", "pause", "teardown")),
    ):
        for step in steps:
            if step == "setup":
                wire = client.setup("udp", 25000)
            elif step == "play":
                wire = client.play(1.5) if client is standard else client.play()
            else:
                wire = getattr(client, step)()
            [request] = _read_all(wire)
            reply = service.handle(request, conn)
            _normalise(reply.response)
            data = format_response(reply.response, reply.dialect, reply.session_id)
            [response] = _read_all(data)
            client.receive(response)
            out.append((wire, data, reply.dialect))
    return tuple(out)


def _service() -> RtspService:
    """Our server's logic over the repo root, with predictable session ids."""
    ids = (f"{10**19 + n}" for n in itertools.count(1))
    return RtspService(
        MediaLibrary(str(ROOT)), SessionRegistry(8, lambda: next(ids)), ServerConfig(),
        lambda: 1000.0,
    )


# Values the server draws from ``secrets`` or ``hash()``, pinned so the seeds are reproducible.
_RANDOM_FIELDS = (
    (re.compile(r"ssrc=[0-9A-F]{8}"), "ssrc=1234ABCD"),
    (re.compile(r"seq=\d+"), "seq=1000"),
    (re.compile(r"rtptime=\d+"), "rtptime=90000"),
    (re.compile(r"o=- \d+ "), "o=- 1234567890 "),
)


def _normalise(response: Response) -> None:
    items = []
    for name, value in response.headers:
        for pattern, fixed in _RANDOM_FIELDS:
            value = pattern.sub(fixed, value)
        items.append((name, value))
    response.headers = Headers(items)
    text = response.body.decode()
    for pattern, fixed in _RANDOM_FIELDS:
        text = pattern.sub(fixed, text)
    response.body = text.encode()


def rtsp_vectors() -> list[tuple[str, bytes]]:
    """RTSP streams: requests, replies, a 401 challenge and interleaved ``$`` frames."""
    vectors = []
    for i, (request, reply, dialect) in enumerate(conversation()):
        vectors.append((f"{dialect.value}_request_{i}", request))
        vectors.append((f"{dialect.value}_reply_{i}", reply))
    challenge = Response(401, reason="Unauthorized")
    challenge.headers.add("CSeq", "3")
    challenge.headers.add("WWW-Authenticate", 'Digest realm="mjpeg", nonce="abc123", qop="auth"')
    challenge.headers.add("WWW-Authenticate", 'Basic realm="mjpeg"')
    vectors.append(("standard_reply_401", format_response(challenge)))
    rtp = rtp_vectors()[0][1]
    rtcp = rtcp_vectors()[0][1]
    vectors.append(("interleaved", format_interleaved(0, rtp) + format_interleaved(1, rtcp)))
    standard_pipeline = b"".join(r for r, _, d in conversation() if d is Dialect.STANDARD)
    vectors.append(("standard_pipelined", standard_pipeline + vectors[-1][1]))
    return vectors


@functools.cache
def sdp_text() -> str:
    """The SDP our server answers DESCRIBE with."""
    for _, reply, _ in conversation():
        [response] = _read_all(reply)
        if response.headers.get("Content-Type") == "application/sdp":
            return response.body.decode()
    raise AssertionError("the server sent no SDP")


def sdp_vectors() -> list[tuple[str, bytes]]:
    big = sdp_text().replace("a=framerate", "a=x-dimensions:4096,2160\r\na=framerate")
    return [("server", sdp_text().encode()), ("x_dimensions", big.encode())]


@functools.cache
def rfc2435_payloads(max_payload: int = 1400) -> tuple[bytes, ...]:
    """The payloads of the sample's first frame, as the server fragments it."""
    frame = sample_frames(1)[0]
    return tuple(rfc2435.packetize(frame, scan_jpeg(frame), max_payload))


def rfc2435_vectors() -> list[tuple[str, bytes]]:
    payloads = rfc2435_payloads()
    vectors = [(f"frame0_{i}", p) for i, p in enumerate(payloads[:3])]
    vectors.append(("frame0_last", payloads[-1]))
    gradient = gradient_jpeg()
    small = rfc2435.packetize(gradient, scan_jpeg(gradient), 200)
    vectors += [(f"gradient_{i}", p) for i, p in enumerate(small)]
    return vectors


def rtp_vectors() -> list[tuple[str, bytes]]:
    """RTP packets as the streamer sends them, plus one with every optional field."""
    payloads = rfc2435_payloads()
    last = len(payloads) - 1
    vectors = [
        (f"jpeg_{i}", pack_header(PT_JPEG, 1000 + i, 90000, 0x1234ABCD, i == last) + p[:160])
        for i, p in enumerate(payloads[:2])
    ]
    full = RtpPacket(PT_JPEG, 65535, 0xFFFFFFFF, 7, b"payload", True, (1, 2), 0xBEDE,
                     b"\x10\x20\x30\x40", 4)
    vectors.append(("csrc_ext_padding", bytes(full)))
    return vectors


@functools.cache
def _server_session():
    """The session our server created for the standard client (for its RTCP packets)."""
    service = _service()
    conn = Connection(1, "127.0.0.1")
    client = RtspClient(parse_rtsp_url("rtsp://127.0.0.1:8554/movie.Mjpeg"))
    for step in (client.describe, lambda: client.setup("udp", 25000), client.play):
        [request] = _read_all(step())
        reply = service.handle(request, conn)
        [response] = _read_all(format_response(reply.response, reply.dialect, reply.session_id))
        client.receive(response)
        for action in reply.actions:
            if isinstance(action, StartStreaming):
                return action.session
    raise AssertionError("PLAY started no stream")


def rtcp_vectors() -> list[tuple[str, bytes]]:
    session = _server_session()
    session.ssrc = 0x1234ABCD  # drawn from secrets; pinned for reproducible seeds
    block = ReportBlock(session.ssrc, 12, -3, 0x10005, 77, 0x12345678, 65536)
    return [
        ("sr_sdes", rtcp_sender_report(session, 1.7e9, 123456)),
        ("sr_sdes_bye", rtcp_bye(session, 1.7e9, 123456, "end of stream")),
        ("rr", build_compound(ReceiverReport(0xCAFE, (block,)), Bye((0xCAFE,)))),
    ]


def textbook_file(frames: tuple[bytes, ...]) -> bytes:
    return b"".join(b"%05d" % len(f) + f for f in frames)


def mjpeg_file_vectors() -> list[tuple[str, bytes]]:
    gradient = gradient_jpeg()
    frames = sample_frames(2)
    return [
        ("textbook_gradient", textbook_file((gradient, gradient))),
        ("raw_gradient", gradient + b"\x00\r\n" + gradient),
        ("textbook_sample", textbook_file(frames[:1])),
        ("raw_sample", frames[0]),
    ]


def jpeg_vectors() -> list[tuple[str, bytes]]:
    return [("gradient", gradient_jpeg()), ("sample0", sample_frames(1)[0])]


def client_vectors() -> list[tuple[str, bytes]]:
    """Server replies (as bytes on the wire) for the client harness."""
    return [(n, v) for n, v in rtsp_vectors() if "reply" in n]


def vectors(target: str) -> list[tuple[str, bytes]]:
    """(name, bytes) seeds of one fuzz target."""
    if target == "rtp_rtcp":
        return rtp_vectors() + rtcp_vectors()
    return globals()[f"{target}_vectors"]()

