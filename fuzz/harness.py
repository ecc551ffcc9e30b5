"""One checking function per parser: feed it bytes, it asserts the parser's contract.

The contract everywhere: the parser returns a value or raises its documented error type;
anything else (IndexError, struct.error, UnicodeDecodeError, a hang, unbounded buffering)
escapes as itself or as :class:`ContractError`. ``tests/test_fuzz.py`` (Hypothesis) and the
atheris targets ``fuzz/fuzz_*.py`` call the same functions, so a crash found by either is
reproduced by both.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence

from mjpeg_rtsp import rfc2435
from mjpeg_rtsp.client import (
    ClientError,
    ClientReply,
    RtspClient,
    parse_rtsp_url,
    textbook_target,
)
from mjpeg_rtsp.headers import (
    RangeError,
    parse_npt_range,
    parse_port_range,
    parse_session_header,
    parse_transport,
)
from mjpeg_rtsp.jpeg import JpegError, find_frame_end, scan_jpeg
from mjpeg_rtsp.media import MediaError, MjpegFile
from mjpeg_rtsp.rfc2435 import JpegDepacketizer, Rfc2435Error
from mjpeg_rtsp.rtcp import RtcpError, build_compound, parse_compound
from mjpeg_rtsp.rtp import RtpError, RtpPacket
from mjpeg_rtsp.rtsp import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    NEED_DATA,
    Request,
    Response,
    RtspError,
    RtspReader,
)
from mjpeg_rtsp.sdp import SdpError, parse_sdp

#: The largest ``$`` frame: 4 bytes of framing and a 16-bit length (RFC 2326 section 10.12).
MAX_INTERLEAVED = 4 + 0xFFFF


class ContractError(AssertionError):
    """A parser broke its contract without raising an unexpected exception itself."""


# --- RTSP (rtsp.py) --------------------------------------------------------------------------


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, clamped); empty chunks are dropped."""
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def _use_headers(message: Request | Response) -> None:
    """Run the header-value parsers on what a driver would hand them."""
    for value in message.headers.get_all("Transport"):
        for spec in parse_transport(value):
            _ = spec.lower_transport, spec.is_multicast
            for name in ("client_port", "server_port", "interleaved", "port"):
                text = spec.param(name)
                if text is not None:
                    try:
                        parse_port_range(text)
                    except ValueError:
                        pass
    for value in message.headers.get_all("Session"):
        parse_session_header(value)
    for value in message.headers.get_all("Range"):
        try:
            parse_npt_range(value)
        except RangeError:
            pass
    if (message.headers.get("Content-Type") or "").lower().startswith("application/sdp"):
        check_sdp(message.body)


def reader_outcomes(
    chunks: Sequence[bytes],
    *,
    eof: bool = True,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_headers: int = MAX_HEADERS,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> list:
    """Feed ``chunks`` to a reader and return its events and errors, checking its contract.

    ``next_event`` is looped until NEED_DATA or a fatal error, at most len(data) + 10 times in
    all plus one NEED_DATA per chunk (every event or non-fatal error consumes at least one
    byte); after NEED_DATA or any
    error the buffer is bounded by the configured limits; a reader that raised a fatal error
    keeps raising, never yields another message, and does not buffer what arrives after it.
    """
    reader = RtspReader(max_header_bytes, max_headers, max_body_bytes)
    bound = max(max_header_bytes + 4 + max_body_bytes, MAX_INTERLEAVED)
    budget = sum(len(c) for c in chunks) + len(chunks) + 10
    outcomes: list = []
    failed = False

    def record_error(exc: RtspError) -> None:
        nonlocal failed
        outcomes.append(("error", type(exc).__name__, int(exc.status), exc.fatal, str(exc)))
        failed = exc.fatal
        if reader.buffered > bound:
            raise ContractError(f"{reader.buffered} bytes buffered after {exc!r} (bound {bound})")

    def drain() -> None:
        nonlocal budget
        while not failed:
            budget -= 1
            if budget < 0:
                raise ContractError("next_event keeps returning events without consuming input")
            try:
                event = reader.next_event()
            except RtspError as exc:
                record_error(exc)
                continue
            if event is NEED_DATA:
                if reader.buffered > bound:
                    raise ContractError(f"NEED_DATA with {reader.buffered} bytes buffered")
                return
            outcomes.append(event)
            if isinstance(event, (Request, Response)):
                _use_headers(event)

    for chunk in chunks:
        reader.receive_data(chunk)
        drain()
    if eof:
        reader.receive_data(b"")
        drain()
    if not failed:
        pending = reader.pending_textbook_message()
        try:
            event = reader.flush_textbook_message()
        except RtspError as exc:
            record_error(exc)
        else:
            if event is not None:
                if not pending:
                    raise ContractError("flush_textbook_message completed a message not pending")
                outcomes.append(event)
                _use_headers(event)
    if failed:
        _check_stays_failed(reader, bound)
    return outcomes


def _check_stays_failed(reader: RtspReader, bound: int) -> None:
    more = (b"OPTIONS * RTSP/1.0\r\nCSeq: 9\r\n\r\n", b"$\x00\x00\x00", b"x" * (bound + 1))
    for data in more:
        reader.receive_data(data)
        try:
            event = reader.next_event()
        except RtspError as exc:
            if not exc.fatal:
                raise ContractError(f"failed reader raised a non-fatal {exc!r}") from None
        else:
            raise ContractError(f"reader recovered after a fatal error and returned {event!r}")
        try:
            event = reader.flush_textbook_message()
        except RtspError:
            event = None
        if event is not None:
            raise ContractError(f"failed reader flushed {event!r}")
        if reader.buffered > bound:
            raise ContractError(f"failed reader keeps buffering: {reader.buffered} bytes")


def check_rtsp(
    data: bytes, cuts: Sequence[int] = (), *, eof: bool = True, **limits: int
) -> list:
    """The reader's contract on ``data`` fed whole and cut at ``cuts``: same results both ways."""
    whole = reader_outcomes([data], eof=eof, **limits)
    if cuts:
        pieces = reader_outcomes(split_at(data, cuts), eof=eof, **limits)
        if pieces != whole:
            raise ContractError(
                f"split {list(cuts)} changed the events:\n{pieces}\nvs whole:\n{whole}"
            )
    return whole


# --- SDP (sdp.py) ----------------------------------------------------------------------------


def check_sdp(data: bytes) -> None:
    try:
        sdp = parse_sdp(data.decode("utf-8", "replace"))
    except SdpError:
        return
    for media in sdp.media:
        media.rtpmap()
        media.attribute("control")
    for value in (sdp.attribute("range"), *(m.attribute("range") for m in sdp.media)):
        if value:
            try:
                parse_npt_range(value)
            except RangeError:
                pass


# --- RTP and RTCP (rtp.py, rtcp.py) ----------------------------------------------------------


def check_rtp(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    again = RtpPacket.parse(bytes(packet))
    if again != packet:
        raise ContractError(f"RTP round trip changed the packet: {packet!r} -> {again!r}")


def check_rtcp(data: bytes) -> None:
    for strict in (False, True):
        try:
            packets = parse_compound(data, strict=strict)
        except RtcpError:
            continue
        for packet in packets:
            if hasattr(packet, "cnames"):
                packet.cnames()
        again = parse_compound(build_compound(*packets), strict=strict)
        if again != packets:
            raise ContractError(f"RTCP round trip changed the packets: {packets!r} -> {again!r}")


def check_rtp_rtcp(data: bytes) -> None:
    check_rtp(data)
    check_rtcp(data)


# --- RFC 2435 (rfc2435.py) -------------------------------------------------------------------

Packet = tuple[bytes, int, bool]  # payload, RTP timestamp, marker


def encode_packets(
    packets: Sequence[Packet], width: int | None = None, height: int | None = None
) -> bytes:
    """The byte form :func:`decode_packets` reads (for atheris seeds); timestamps are
    multiples of 90000 (frame k of a 1 fps stream), k < 8."""
    out = bytearray()
    if width is None and height is None:
        out.append(0)
    else:
        out.append(1)
        out += (width or 0).to_bytes(3, "big") + (height or 0).to_bytes(3, "big")
    for payload, timestamp, marker in packets:
        index = (timestamp // 90000) & 7
        out += len(payload).to_bytes(2, "big") + bytes((index << 1 | marker,))
        out += payload
    return bytes(out)


def decode_packets(data: bytes) -> tuple[list[Packet], int | None, int | None]:
    """Byte 0 bit 0: 6 bytes of configured width/height follow; then records of a 16-bit
    length, a flags byte (bit 0 marker, bits 1-3 timestamp) and the payload (truncated last)."""
    if not data:
        return [], None, None
    width = height = None
    pos = 1
    if data[0] & 1:
        width = int.from_bytes(data[1:4], "big")
        height = int.from_bytes(data[4:7], "big")
        pos = 7
    packets = []
    while pos + 3 <= len(data):
        length = int.from_bytes(data[pos : pos + 2], "big")
        flags = data[pos + 2]
        payload = data[pos + 3 : pos + 3 + length]
        packets.append((payload, 90000 * ((flags >> 1) & 7), bool(flags & 1)))
        pos += 3 + length
    return packets, width, height


def check_depacketizer(
    packets: Sequence[Packet], width: int | None = None, height: int | None = None
) -> list[bytes]:
    """Push ``packets``; only Rfc2435Error may escape, and every frame is a whole JPEG."""
    depacketizer = JpegDepacketizer(width, height)
    frames = []
    for payload, timestamp, marker in packets:
        try:
            rfc2435.parse_header(payload)
        except Rfc2435Error:
            pass
        try:
            frame = depacketizer.push(payload, timestamp, marker)
        except Rfc2435Error:
            continue
        if frame is not None:
            if not (frame.startswith(b"\xff\xd8") and frame.endswith(b"\xff\xd9")):
                raise ContractError("depacketizer emitted a frame without SOI..EOI")
            frames.append(frame)
    return frames


def check_rfc2435(data: bytes) -> None:
    packets, width, height = decode_packets(data)
    check_depacketizer(packets, width, height)


# --- JPEG (jpeg.py) --------------------------------------------------------------------------


def check_jpeg(data: bytes, start: int = 0) -> None:
    try:
        end = find_frame_end(data, start)
    except JpegError:
        end = None
    try:
        info = scan_jpeg(data, start)
    except JpegError:
        return
    if end != info.end:
        raise ContractError(f"find_frame_end gave {end}, scan_jpeg ended at {info.end}")
    if not start + 2 <= info.scan_start <= info.scan_end < info.end <= len(data):
        raise ContractError(f"inconsistent offsets {info!r}")
    if info.rfc2435_type is None:
        return
    # A frame the scanner accepts for RFC 2435 must survive packetize -> depacketize.
    payloads = rfc2435.packetize(data, info, 600)
    frame = None
    depacketizer = JpegDepacketizer(info.width, info.height)
    for i, payload in enumerate(payloads):
        frame = depacketizer.push(payload, 0, i == len(payloads) - 1)
    if frame is None:
        raise ContractError("a compatible frame did not survive packetize/depacketize")
    rebuilt = scan_jpeg(frame)
    original_scan = bytes(data[info.scan_start : info.scan_end])
    if frame[rebuilt.scan_start : rebuilt.scan_end] != original_scan:
        raise ContractError("depacketized scan data differs from the original")


# --- Motion-JPEG files (media.py) ------------------------------------------------------------

MAX_FRAMES_CHECKED = 8


def check_mjpeg_file(data: bytes, directory: str | None = None) -> None:
    """Write ``data`` to a file and open it as our server does."""
    with tempfile.TemporaryDirectory(dir=directory) as folder:
        path = os.path.join(folder, "clip.Mjpeg")
        with open(path, "wb") as out:
            out.write(data)
        try:
            media = MjpegFile(path)
        except MediaError:
            return
        try:
            if media.frame_count < 1:
                raise ContractError("an indexed file with no frames")
            for number in range(min(media.frame_count, MAX_FRAMES_CHECKED)):
                jpeg = media.frame(number)
                info = scan_jpeg(jpeg)  # the index vouched for it: must not raise
                if info.end != len(jpeg):
                    raise ContractError(
                        f"frame {number}: index length {len(jpeg)}, JPEG ends at {info.end}"
                    )
                if info.rfc2435_type is not None:
                    media.rtp_payloads(number, 1400)
        finally:
            media.close()


# --- The player's RTSP client (client.py) ----------------------------------------------------


def _clients() -> list[tuple[RtspClient, Callable[[RtspClient], None]]]:
    """Clients with requests pending, as the player has them, and a follow-up step for each."""
    from fuzz import seeds  # the standard client needs a real DESCRIBE reply first

    fresh = RtspClient(parse_rtsp_url("rtsp://user:pw@127.0.0.1:8554/movie.Mjpeg"))
    fresh.options()
    fresh.describe()

    described = RtspClient(parse_rtsp_url("rtsp://user:pw@127.0.0.1:8554/movie.Mjpeg"))
    described.options()
    described.describe()
    for _, reply, _ in seeds.conversation()[:2]:  # the server's OPTIONS and DESCRIBE replies
        [response] = reader_outcomes([reply])
        described.receive(response)
    described.setup("udp", 25000)
    described.play(0.0)
    described.pause()
    described.keepalive()
    described.teardown()

    textbook = RtspClient(textbook_target("127.0.0.1", 8554, 25000, "movie.Mjpeg"))
    textbook.setup("udp")
    textbook.play()
    textbook.pause()
    textbook.teardown()

    def follow_up(client: RtspClient) -> None:
        client.setup("tcp")
        client.play(1.0)
        client.keepalive()
        client.teardown()

    return [(fresh, follow_up), (described, follow_up), (textbook, follow_up)]


_PAYLOADS_NO_SIZE: list[bytes] = []


def _big_frame_payloads() -> list[bytes]:
    """Real payloads with the size fields 0, as sent for frames above 2040 pixels."""
    if not _PAYLOADS_NO_SIZE:
        from fuzz import seeds

        for payload in seeds.rfc2435_payloads():
            _PAYLOADS_NO_SIZE.append(payload[:6] + b"\x00\x00" + payload[8:])
    return _PAYLOADS_NO_SIZE


def check_client_response(response: Response) -> None:
    """Every client state takes the reply as a reply, None or ClientError; nothing else."""
    for client, follow_up in _clients():
        try:
            reply = client.receive(response)
        except ClientError:
            continue
        if reply is not None and not isinstance(reply, ClientReply):
            raise ContractError(f"receive returned {reply!r}")
        if reply is not None and reply.retry is not None:
            events = reader_outcomes([reply.retry])
            if len(events) != 1 or not isinstance(events[0], Request):
                raise ContractError(f"the client's own retry does not parse: {events!r}")
        try:
            follow_up(client)
        except ClientError:
            pass
        media = client.media
        if media is not None and (media.width or media.height):
            payloads = _big_frame_payloads()
            packets = [(p, 0, i == len(payloads) - 1) for i, p in enumerate(payloads)]
            check_depacketizer(packets, media.width, media.height)


def check_client(data: bytes) -> None:
    """Replies as read off the wire by our reader, given to the player's client."""
    for event in reader_outcomes([data]):
        if isinstance(event, Response):
            check_client_response(event)


CHECKS: dict[str, Callable[[bytes], object]] = {
    # Cuts in the middle and just before the end, where a late terminator arrives.
    "rtsp": lambda data: check_rtsp(data, (len(data) // 3, len(data) - 3, len(data) - 1)),
    "sdp": check_sdp,
    "rtp_rtcp": check_rtp_rtcp,
    "rfc2435": check_rfc2435,
    "jpeg": check_jpeg,
    "mjpeg_file": check_mjpeg_file,
    "client": check_client,
}
