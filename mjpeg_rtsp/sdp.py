"""Session descriptions (RFC 4566) for Motion-JPEG over RTP (RFC 2435).

Theory of operation: the server describes one file as one video medium with
static payload type 26 (``JPEG/90000``). RFC 2435 headers carry the frame size
in 8-pixel units up to 2040 pixels; larger frames are announced with
``a=x-dimensions`` (the attribute GStreamer and live555 use). The parser is
deliberately small: what a player needs to set up JPEG streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_RFC2435_DIMENSION = 2040


@dataclass(frozen=True)
class VideoDescription:
    """What the server knows about one MJPEG file."""

    name: str
    width: int
    height: int
    fps: float | None
    duration: float | None  # None: a live stream
    control: str = "stream=0"


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
        "a=range:npt=now-" if media.duration is None else f"a=range:npt=0-{media.duration:.3f}",
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
