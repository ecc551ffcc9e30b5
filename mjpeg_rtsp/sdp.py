"""Session descriptions (RFC 4566) for Motion-JPEG over RTP (RFC 2435).

Theory of operation: the server describes one file as one video medium with
static payload type 26 (``JPEG/90000``). RFC 2435 headers carry the frame size
in 8-pixel units up to 2040 pixels; larger frames are announced with
``a=x-dimensions`` (the attribute GStreamer and live555 use). The parser is
deliberately small: what a player needs to set up JPEG streams, and what the
server needs to take a publisher's stream in (:func:`parse_announce`: one JPEG video
stream or a readable refusal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .limits import MAX_FRAME_PIXELS
from .rtsp import MAX_BODY_BYTES

MAX_RFC2435_DIMENSION = 2040


@dataclass(frozen=True)
class VideoDescription:
    """What the server knows about one MJPEG file."""

    name: str
    width: int
    height: int
    fps: float | None
    duration: float | None  # None: not known (a live stream, a file still being indexed)
    control: str = "stream=0"
    live: bool = False


def build_sdp(
    media: VideoDescription, server_address: str, session_id: int, session_version: int = 1
) -> str:
    """An SDP for one JPEG video stream (RFC 4566 s. 5, RFC 2435 s. 5.1, RFC 2326 C.1.5)."""
    family = "IP6" if ":" in server_address else "IP4"
    any_address = "::" if family == "IP6" else "0.0.0.0"
    lines = [
        "v=0",
        f"o=- {session_id} {session_version} IN {family} {server_address}",
        f"s={media.name}",
        f"c=IN {family} {any_address}",
        "t=0 0",
        "a=tool:mjpeg-rtsp",
        "a=type:broadcast",
        "a=control:*",
        "a=range:npt=now-" if media.live else
        f"a=range:npt=0-{'' if media.duration is None else f'{media.duration:.3f}'}",
        "m=video 0 RTP/AVP 26",
        "a=rtpmap:26 JPEG/90000",
        f"a=control:{media.control}",
    ]
    if media.fps:
        lines.append(f"a=framerate:{_format_rate(media.fps)}")
    if media.width > MAX_RFC2435_DIMENSION or media.height > MAX_RFC2435_DIMENSION:
        lines.append(f"a=x-dimensions:{media.width},{media.height}")
    return "\r\n".join(lines) + "\r\n"


def _format_rate(fps: float) -> str:
    return str(int(fps)) if float(fps).is_integer() else f"{fps:.3f}".rstrip("0")


@dataclass
class MediaSection:
    kind: str
    port: int
    protocol: str
    formats: list[str]
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None

    def rtpmap(self) -> dict[int, tuple[str, int]]:
        """Payload type -> (encoding name, clock rate)."""
        result = {}
        for key, value in self.attributes:
            if key != "rtpmap" or not value:
                continue
            pt_text, _, encoding = value.partition(" ")
            name, _, rate = encoding.strip().partition("/")
            try:
                result[int(pt_text)] = (name.upper(), int(rate.split("/")[0]) if rate else 0)
            except ValueError:
                continue
        return result


@dataclass
class SessionDescription:
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaSection] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None


class SdpError(ValueError):
    pass


def parse_sdp(text: str) -> SessionDescription:
    """Parse the lines of an SDP; unknown lines are ignored, malformed ones raise SdpError."""
    sdp = SessionDescription()
    current: MediaSection | None = None
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {number}: expected '<type>=<value>', got {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"line {number}: m= needs media, port, protocol and formats")
            try:
                port = int(parts[1].split("/")[0])
            except ValueError:
                raise SdpError(f"line {number}: bad port {parts[1]!r}") from None
            current = MediaSection(parts[0], port, parts[2], parts[3:])
            sdp.media.append(current)
        elif kind == "a":
            name, sep, attr_value = value.partition(":")
            entry = (name, attr_value if sep else None)
            (current.attributes if current else sdp.attributes).append(entry)
        elif current is None:
            sdp.fields.setdefault(kind, value)
    return sdp


# ---------------------------------------------------------------------------------------------
# A publisher's SDP (RFC 2326 10.3 ANNOUNCE): what the server can take in.

#: The frame rate range a=framerate may give (RFC 4566 s. 6); outside it the value is ignored.
MAX_FRAMERATE = 1000.0
#: Announced video protocols: plain RTP (ffmpeg, GStreamer); the AVPF feedback profile is the
#: same packets. Secure profiles (SAVP) carry encrypted payloads we could not depacketize.
_RTP_PROFILES = ("RTP/AVP", "RTP/AVPF")
_DYNAMIC_PT = range(96, 128)


@dataclass(frozen=True)
class AnnouncedVideo:
    """The one JPEG video stream of a publisher's SDP (see :func:`parse_announce`).

    ``control`` is the media-level ``a=control`` as written (relative such as ``streamid=0``
    or ``stream=0``, absolute, or ``*``), None when there is none; the service resolves it
    against the ANNOUNCE URL (RFC 2326 C.1.1) to match the SETUP. ``width``/``height`` come
    from ``a=x-dimensions`` (sent for frames over 2040 pixels), ``fps`` from ``a=framerate``;
    each is None when not given.
    """

    control: str | None
    payload_type: int
    clock_rate: int
    width: int | None = None
    height: int | None = None
    fps: float | None = None


def jpeg_format(media: MediaSection) -> tuple[int, int] | None:
    """``(payload type, clock rate)`` of the first JPEG format of a media section, else None.

    Static type 26 is JPEG/90000 unless an rtpmap says otherwise (RFC 3551 s. 6); a dynamic
    type is JPEG when its rtpmap names JPEG. A clock rate left out of the rtpmap is 90000.
    """
    rtpmap = media.rtpmap()
    for fmt in media.formats:
        if not fmt.isascii() or not fmt.isdigit() or len(fmt) > 3:
            continue
        pt = int(fmt)
        name, rate = rtpmap.get(pt, ("JPEG", 90000) if pt == 26 else ("", 0))
        if name == "JPEG":
            return pt, rate or 90000
    return None


def parse_framerate(value: str | None) -> float | None:
    """An SDP ``a=framerate`` (RFC 4566 s. 6): a rate above 0 and up to 1000, else None."""
    if not value or not re.fullmatch(r"\s*[0-9]{1,4}(\.[0-9]{0,6})?\s*", value):
        return None
    rate = float(value)
    return rate if 0 < rate <= MAX_FRAMERATE else None


def parse_x_dimensions(value: str | None) -> tuple[int, int] | None:
    """``a=x-dimensions:W,H`` (GStreamer, live555) as two ints, None unless it is that shape.

    Ranges are the caller's to check: the player leaves them to the depacketizer, which
    counts the frames it refuses; :func:`parse_announce` refuses them up front.
    """
    if not value or not re.fullmatch(r"\s*[0-9]{1,9}\s*,\s*[0-9]{1,9}\s*", value):
        return None
    width, height = (int(v) for v in value.split(","))
    return width, height


def parse_announce(text: str) -> AnnouncedVideo:
    """The video stream a publisher announces, if it is one we can take; else SdpError.

    Accepted: an SDP (``v=0``) of at most :data:`~mjpeg_rtsp.rtsp.MAX_BODY_BYTES` (the RTSP
    body limit, which an ANNOUNCE's body already passed) with exactly one media section,
    ``m=video`` over RTP/AVP (or AVPF) whose only format is JPEG: static type 26, or a dynamic
    type with ``a=rtpmap:<pt> JPEG/90000``. Refused with a reason the publisher's user can act
    on: no video, video that is not JPEG, several video streams, several formats in one, a
    clock other than 90 kHz, a malformed or oversized ``a=x-dimensions``, and any audio or
    other section. Audio is refused rather than ignored: the server relays one JPEG stream,
    and refusing at ANNOUNCE tells the user to drop it (``ffmpeg -an``) instead of failing at
    the audio stream's SETUP. An unusable ``a=framerate`` is only informative and is ignored.
    """
    if len(text) > MAX_BODY_BYTES:
        raise SdpError(f"SDP of {len(text)} characters exceeds {MAX_BODY_BYTES}")
    sdp = parse_sdp(text)
    if sdp.fields.get("v", "").strip() != "0":
        raise SdpError("not an SDP: no 'v=0' line")
    videos = [m for m in sdp.media if m.kind == "video"]
    others = [m for m in sdp.media if m.kind != "video"]
    if not videos:
        raise SdpError("the SDP has no video stream; publish one Motion-JPEG video stream")
    if len(videos) > 1:
        raise SdpError(f"the SDP has {len(videos)} video streams; publish exactly one")
    if others:
        kinds = ", ".join(sorted({m.kind for m in others}))
        raise SdpError(
            f"the SDP has {kinds} besides the video; this server takes one Motion-JPEG video "
            "stream: publish video only (ffmpeg -an)"
        )
    video = videos[0]
    if video.protocol.upper() not in _RTP_PROFILES:
        raise SdpError(f"video over {video.protocol[:40]!r}; expected RTP/AVP")
    found = jpeg_format(video)
    if found is None:
        names = _format_names(video)
        raise SdpError(
            f"the video is {names}, not Motion-JPEG (RTP/JPEG, RFC 2435): publish with "
            "-c:v mjpeg (ffmpeg) or jpegenc (GStreamer)"
        )
    if len(video.formats) > 1:
        raise SdpError(
            f"the video offers formats {' '.join(video.formats[:8])[:60]}; publish JPEG only"
        )
    pt, rate = found
    if pt != 26 and pt not in _DYNAMIC_PT:
        raise SdpError(f"payload type {pt} is neither JPEG's static 26 nor dynamic (96-127)")
    if rate != 90000:
        raise SdpError(f"JPEG at a {rate} Hz clock; RFC 2435 uses 90000 Hz")
    width = height = None
    dims = video.attribute("x-dimensions")
    if dims is not None:
        size = parse_x_dimensions(dims)
        if size is None:
            raise SdpError(f"a=x-dimensions:{dims[:40]!r} is not WIDTH,HEIGHT")
        width, height = size
        if not (1 <= width <= 0xFFFF and 1 <= height <= 0xFFFF):
            raise SdpError(f"a=x-dimensions {width}x{height}: a JPEG holds 1..65535 a side")
        if width * height > MAX_FRAME_PIXELS:
            raise SdpError(
                f"a=x-dimensions {width}x{height} exceeds the limit of {MAX_FRAME_PIXELS} pixels"
            )
    control = video.attribute("control")
    return AnnouncedVideo(
        control=control.strip() if control is not None else None,
        payload_type=pt,
        clock_rate=rate,
        width=width,
        height=height,
        fps=parse_framerate(video.attribute("framerate") or sdp.attribute("framerate")),
    )


def _format_names(media: MediaSection) -> str:
    """The encodings a media section offers, for an error message (``H264/90000``, ``96``)."""
    rtpmap = media.rtpmap()
    names = []
    for fmt in media.formats[:4]:
        entry = rtpmap.get(int(fmt)) if fmt.isascii() and fmt.isdigit() and len(fmt) <= 3 else None
        names.append(f"{entry[0]}/{entry[1]}" if entry else f"payload type {fmt[:8]}")
    return ", ".join(names)
