"""RTSP 1.0 messages (RFC 2326): parsing, framing and formatting, without sockets.

Theory of operation: an :class:`RtspReader` is fed whatever bytes arrive on a
connection (``receive_data``) and hands out complete events (``next_event``):
a :class:`Request`, a :class:`Response`, an :class:`InterleavedFrame` (``$``
framing, RFC 2326 section 10.12) or :data:`NEED_DATA`. Any split of the byte
stream gives the same events.

Two dialects share the wire. Standard clients end every message with a blank
line. The networking course's textbook client writes bare ``\\n`` line ends,
names a bare file instead of a URL and sends *no* terminating blank line, so
its request can never be recognised by its end. The reader therefore reports
``pending_textbook_message()`` when the buffer holds such a request (or such a
server's reply) with its required headers, and the driver, after a short quiet
period on the socket, calls ``flush_textbook_message()``. A request that carries a ``\\r`` or an
absolute URL is standard and is only ever completed by its blank line.

Lines end with CRLF, a bare LF or a bare CR (RFC 2326 section 4: receivers may take CR or LF
alone as a line end), so a CR inside a header value can never smuggle a second header past
the parser. A blank line made of a CR that is the last byte received completes the message at
once (a CR-only client sends nothing after it); should an LF follow, it is skipped as the
stray line end between messages that RFC 2326 allows. Control characters are refused in the
header block, and :func:`format_response` and :func:`format_request` replace any that reach a
header value, so nothing a peer sent can break a reply's framing.

Replies are formatted by :func:`format_response`; in the textbook dialect the
layout is fixed (status line, ``CSeq``, ``Session``) because that client reads
them by line index. :func:`format_request` writes a request in its own
``dialect``: the textbook one is exactly what the course's client sends.

This module frames messages and keeps header values as strings; what one
value means (Transport, Session, Range, CSeq) is :mod:`mjpeg_rtsp.headers`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .headers import header_value

MAX_HEADER_BYTES = 8192
MAX_HEADERS = 64
MAX_BODY_BYTES = 65536
RTSP_VERSION = "RTSP/1.0"


class RtspStatus(enum.IntEnum):
    """RTSP status codes (RFC 2326 section 7.1.1) with their reason phrases."""

    def __new__(cls, value: int, phrase: str) -> RtspStatus:
        member = int.__new__(cls, value)
        member._value_ = value
        member.phrase = phrase
        return member

    phrase: str

    OK = 200, "OK"
    BAD_REQUEST = 400, "Bad Request"
    UNAUTHORIZED = 401, "Unauthorized"
    FORBIDDEN = 403, "Forbidden"
    NOT_FOUND = 404, "Not Found"
    METHOD_NOT_ALLOWED = 405, "Method Not Allowed"
    REQUEST_ENTITY_TOO_LARGE = 413, "Request Entity Too Large"
    REQUEST_URI_TOO_LARGE = 414, "Request-URI Too Large"
    UNSUPPORTED_MEDIA_TYPE = 415, "Unsupported Media Type"
    NOT_ENOUGH_BANDWIDTH = 453, "Not Enough Bandwidth"
    SESSION_NOT_FOUND = 454, "Session Not Found"
    METHOD_NOT_VALID_IN_THIS_STATE = 455, "Method Not Valid in This State"
    HEADER_FIELD_NOT_VALID = 456, "Header Field Not Valid for Resource"
    INVALID_RANGE = 457, "Invalid Range"
    UNSUPPORTED_TRANSPORT = 461, "Unsupported Transport"
    INTERNAL_SERVER_ERROR = 500, "Internal Server Error"
    NOT_IMPLEMENTED = 501, "Not Implemented"
    SERVICE_UNAVAILABLE = 503, "Service Unavailable"
    RTSP_VERSION_NOT_SUPPORTED = 505, "RTSP Version Not Supported"
    OPTION_NOT_SUPPORTED = 551, "Option not supported"


class Dialect(enum.Enum):
    STANDARD = "standard"
    TEXTBOOK = "textbook"


class RtspError(Exception):
    """A request that must be answered with an error status.

    ``fatal`` means the byte stream can no longer be framed, so the
    connection is closed after the reply.
    """

    status: RtspStatus = RtspStatus.BAD_REQUEST

    def __init__(
        self,
        message: str,
        *,
        status: RtspStatus | None = None,
        fatal: bool = False,
        cseq: str | None = None,
        dialect: Dialect = Dialect.STANDARD,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.fatal = fatal
        self.cseq = cseq
        self.dialect = dialect


class RemoteProtocolError(RtspError):
    """The peer sent bytes that are not a valid RTSP message."""


class Headers:
    """Ordered, case-insensitive multi-map of header fields."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(k, v) for k, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for key, value in self._items:
            if key.lower() == lname:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self._items if k.lower() == lname]

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass
class Request:
    method: str
    target: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = RTSP_VERSION
    dialect: Dialect = Dialect.STANDARD

    @property
    def cseq(self) -> str | None:
        return self.headers.get("CSeq")


@dataclass
class Response:
    status: int
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    reason: str | None = None
    version: str = RTSP_VERSION

    @property
    def cseq(self) -> str | None:
        return self.headers.get("CSeq")


@dataclass(frozen=True)
class InterleavedFrame:
    """An RTP or RTCP packet carried on the RTSP connection (RFC 2326 section 10.12)."""

    channel: int
    data: bytes


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()

Event = Request | Response | InterleavedFrame

# A line end is CRLF, LF or CR; CR then LF is always one line end, never two.
_LINE_END = rb"(?:\r\n|\r(?!\n)|\n)"
_END_OF_HEADERS = re.compile(_LINE_END + _LINE_END)
_LINE_SPLIT = re.compile(r"\r\n|\r|\n")
# Control characters other than HTAB (RFC 2326 section 15: CTL); never valid in a header block.
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_UNSAFE_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")
_REQUEST_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*) +(\S+) +(\S+)")
_STATUS_LINE = re.compile(r"(RTSP/\d+\.\d+) +(\d{3})(?: +(.*))?")
_VERSION = re.compile(r"RTSP/(\d+)\.(\d+)")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What the textbook client's requests must carry before a quiet socket completes them.
_TEXTBOOK_REQUIRED = {
    "SETUP": ("CSeq", "Transport"),
    "PLAY": ("CSeq", "Session"),
    "PAUSE": ("CSeq", "Session"),
    "TEARDOWN": ("CSeq", "Session"),
}


def is_textbook_target(target: str) -> bool:
    """The textbook client names a bare file (``movie.Mjpeg``), never a URL or ``*``."""
    return target != "*" and "://" not in target


class RtspReader:
    """Sans-I/O framing of an RTSP byte stream (both directions, both dialects)."""

    def __init__(
        self,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_headers: int = MAX_HEADERS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._buffer = bytearray()
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_body_bytes = max_body_bytes
        self._eof = False
        self._broken = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Append bytes from the peer; ``b""`` signals end of stream. Dropped once failed."""
        if self._broken:
            return
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> Event | _NeedData:
        """Return the next complete event or ``NEED_DATA``; raise RtspError on bad input."""
        if self._broken:
            raise RemoteProtocolError("connection already failed to parse", fatal=True)
        self._skip_blank_lines()
        buf = self._buffer
        if not buf:
            return NEED_DATA
        if buf[0] == 0x24:  # '$'
            return self._interleaved()
        end = _END_OF_HEADERS.search(buf, 0, self._max_header_bytes + 4)
        if end is None:
            # Fail only once the whole search window is in: a terminator may still complete a
            # header of up to max + 4 bytes, and any split of the stream must give one outcome.
            if len(buf) >= self._max_header_bytes + 4:
                raise self._fatal(
                    f"message header exceeds {self._max_header_bytes} bytes",
                    cseq=_sniff_cseq(buf),
                )
            if self._eof and self.pending_textbook_message():
                return self.flush_textbook_message() or NEED_DATA
            return NEED_DATA
        head = bytes(buf[: end.start()])
        return self._complete(head, end.end())

    def pending_textbook_message(self) -> bool:
        """True when the buffer holds an unterminated textbook message with its required headers.

        Requests name a bare file; replies (from the course's server) have a status line and
        the CSeq and Session lines that the course's client reads by index.
        """
        buf = self._buffer
        if not buf or b"\r" in buf or buf[0] == 0x24 or len(buf) > self._max_header_bytes:
            return False
        if _END_OF_HEADERS.search(buf):
            return False
        try:
            lines = bytes(buf).decode("utf-8").split("\n")
        except UnicodeDecodeError:
            return False
        names = {line.split(":", 1)[0].strip().lower() for line in lines[1:] if ":" in line}
        if _STATUS_LINE.fullmatch(lines[0].strip()):
            required: tuple[str, ...] = ("CSeq", "Session")
        else:
            match = _REQUEST_LINE.fullmatch(lines[0].strip())
            if match is None or not is_textbook_target(match.group(2)):
                return False
            required = _TEXTBOOK_REQUIRED.get(match.group(1).upper(), ("CSeq",))
        return all(name.lower() in names for name in required)

    def flush_textbook_message(self) -> Request | Response | None:
        """Complete a pending textbook message once the socket has gone quiet."""
        if not self.pending_textbook_message():
            return None
        head = bytes(self._buffer).rstrip(b"\n")
        event = self._complete(head, len(self._buffer))
        return event if isinstance(event, (Request, Response)) else None

    def _fatal(self, message: str, **kwargs) -> RemoteProtocolError:
        """Fail for good: the stream can no longer be framed, so nothing more is buffered."""
        self._broken = True
        self._buffer.clear()
        return RemoteProtocolError(message, fatal=True, **kwargs)

    def _skip_blank_lines(self) -> None:
        # RFC 2326 allows stray CRLFs between messages (some clients send them as keep-alives).
        strip = 0
        buf = self._buffer
        while strip < len(buf) and buf[strip] in (0x0D, 0x0A):
            strip += 1
        if strip:
            del buf[:strip]

    def _interleaved(self) -> InterleavedFrame | _NeedData:
        buf = self._buffer
        if len(buf) < 4:
            return NEED_DATA
        length = int.from_bytes(buf[2:4], "big")
        if len(buf) < 4 + length:
            return NEED_DATA
        frame = InterleavedFrame(buf[1], bytes(buf[4 : 4 + length]))
        del buf[: 4 + length]
        return frame

    def _complete(self, head: bytes, consumed: int) -> Event | _NeedData:
        """Parse one header block ending at ``consumed``; read its body if it has one."""
        cseq = _sniff_cseq(head)
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            del self._buffer[:consumed]
            raise RemoteProtocolError("message header is not valid UTF-8", cseq=cseq) from None
        # Until the request line is parsed, guess the dialect from the line ends.
        dialect = Dialect.STANDARD if b"\r" in self._buffer[:consumed] else Dialect.TEXTBOOK
        lines = _LINE_SPLIT.split(text)
        try:
            bad = next((line for line in lines if _CTL.search(line)), None)
            if bad is not None:
                raise RemoteProtocolError(f"control character in header block: {bad[:80]!r}")
            headers = _parse_headers(lines[1:], self._max_headers)
        except RemoteProtocolError as exc:
            del self._buffer[:consumed]
            exc.cseq, exc.dialect = cseq, dialect
            raise
        length_text = headers.get("Content-Length")
        length = 0
        if len(set(headers.get_all("Content-Length"))) > 1:
            raise self._fatal("conflicting Content-Length headers", cseq=cseq)
        if length_text is not None:
            # ASCII digits only: str.isdigit() also accepts "²", which int() rejects.
            digits = length_text.strip()
            if not (digits.isascii() and digits.isdigit()):
                raise self._fatal(f"invalid Content-Length {length_text[:40]!r}", cseq=cseq)
            digits = digits.lstrip("0") or "0"
            # Compare lengths before int(): int() refuses strings of more than 4300 digits.
            if len(digits) > len(str(self._max_body_bytes)) or int(digits) > self._max_body_bytes:
                raise self._fatal(
                    f"body of {digits[:20]}{'...' if len(digits) > 20 else ''} bytes "
                    f"exceeds {self._max_body_bytes}",
                    status=RtspStatus.REQUEST_ENTITY_TOO_LARGE,
                    cseq=cseq,
                )
            length = int(digits)
        if len(self._buffer) < consumed + length:
            if self._eof:
                raise self._fatal("connection closed inside a message body")
            return NEED_DATA
        body = bytes(self._buffer[consumed : consumed + length])
        del self._buffer[: consumed + length]
        return _start_line(lines[0].strip(), headers, body, dialect, cseq)


# Any line end before it; digits that the value does not go on after (so nothing is cut short).
_SNIFF_CSEQ = re.compile(rb"(?i)(?:^|[\r\n])cseq[ \t]*:[ \t]*(\d{1,10})(?![^\r\n \t])")


def _sniff_cseq(head: bytes | bytearray) -> str | None:
    """Best-effort CSeq of a message that failed to parse, so the error reply can carry it."""
    match = _SNIFF_CSEQ.search(bytes(head[:MAX_HEADER_BYTES]))
    return match.group(1).decode() if match else None


def _header_lines(headers: Iterable[tuple[str, str]]) -> list[str]:
    lines = []
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"bad header name {name!r}")
        lines.append(f"{name}: {header_value(value)}")
    return lines


def _parse_headers(lines: list[str], max_headers: int) -> Headers:
    headers = Headers()
    for line in lines:
        if not line.strip():
            continue
        if line[0] in " \t" and len(headers):
            # Obsolete line folding (RFC 2326 section 4.2 via RFC 2616): join to the previous field.
            name, value = headers._items[-1]
            headers._items[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _TOKEN.fullmatch(name):
            raise RemoteProtocolError(f"malformed header line {line[:80]!r}")
        if len(headers) >= max_headers:
            raise RemoteProtocolError(f"more than {max_headers} header fields")
        headers.add(name, value.strip())
    return headers


def _start_line(
    line: str, headers: Headers, body: bytes, dialect: Dialect, cseq: str | None
) -> Request | Response:
    status = _STATUS_LINE.fullmatch(line)
    if status is not None:
        return Response(int(status.group(2)), headers, body, status.group(3), status.group(1))
    request = _REQUEST_LINE.fullmatch(line)
    if request is None:
        raise RemoteProtocolError(
            f"malformed request line {line[:80]!r}", cseq=cseq, dialect=dialect
        )
    method, target, version = request.groups()
    # The target decides: course clients name a bare file, whatever their line ends.
    dialect = Dialect.TEXTBOOK if is_textbook_target(target) else Dialect.STANDARD
    version_match = _VERSION.fullmatch(version)
    if version_match is None:
        raise RemoteProtocolError(
            f"not an RTSP request (protocol {version[:20]!r})", cseq=cseq, dialect=dialect
        )
    if version != RTSP_VERSION:
        raise RemoteProtocolError(
            f"{version} is not supported",
            status=RtspStatus.RTSP_VERSION_NOT_SUPPORTED,
            cseq=cseq,
            dialect=dialect,
        )
    return Request(method.upper(), target, headers, body, version, dialect)


def format_response(
    response: Response, dialect: Dialect = Dialect.STANDARD, session_id: str | None = None
) -> bytes:
    """Serialise a reply.

    Textbook dialect: ``\\n`` line ends, ``CSeq`` first and ``Session`` second
    (``0`` when there is none, since that client reads line 2 of every reply),
    no blank line unless a body follows.
    """
    reason = header_value(response.reason or _phrase(response.status))
    status_line = f"{response.version} {response.status} {reason}"
    headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
    if response.body:
        headers.append(("Content-Length", str(len(response.body))))
    if dialect is Dialect.TEXTBOOK:
        cseq = response.headers.get("CSeq") or "0"
        others = [(k, v) for k, v in headers if k.lower() not in ("cseq", "session")]
        lines = [status_line] + _header_lines(
            [("CSeq", cseq), ("Session", session_id or "0"), *others]
        )
        text = "\n".join(lines)
        if response.body:
            return text.encode() + b"\n\n" + response.body
        return text.encode()
    lines = [status_line] + _header_lines(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + response.body


def format_request(request: Request) -> bytes:
    """Serialise a request in its ``dialect``.

    Standard: CRLF line ends and a blank line. Textbook: the bytes the course's
    client sends, ``\\n`` line ends and no blank line (so the receiver completes it
    when the socket goes quiet), the headers in the order given; a body, should
    one be given, follows its Content-Length and a blank line.
    """
    headers = [(k, v) for k, v in request.headers if k.lower() != "content-length"]
    if request.body:
        headers.append(("Content-Length", str(len(request.body))))
    # A URL taken from a peer (Content-Base, a=control) cannot split the request line.
    target = _UNSAFE_IN_TARGET.sub(lambda m: f"%{ord(m.group()):02X}", request.target)
    lines = [f"{request.method} {target} {request.version}"]
    lines += _header_lines(headers)
    if request.dialect is Dialect.TEXTBOOK:
        text = "\n".join(lines).encode()
        return text + b"\n\n" + request.body if request.body else text
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + request.body


def format_interleaved(channel: int, data: bytes | memoryview) -> bytes:
    """``$`` framing of RFC 2326 section 10.12."""
    if not 0 <= channel <= 255 or len(data) > 0xFFFF:
        raise ValueError("interleaved channel must fit 8 bits and data 16 bits of length")
    return b"$" + bytes((channel,)) + len(data).to_bytes(2, "big") + bytes(data)


def _phrase(status: int) -> str:
    try:
        return RtspStatus(status).phrase
    except ValueError:
        return "Unknown"
