"""RTSP header values (RFC 2326): parsing and validating one field's value, without sockets.

Theory of operation: :mod:`mjpeg_rtsp.rtsp` frames messages and hands out
:class:`~mjpeg_rtsp.rtsp.Headers` whose values are plain strings; this module
gives those strings their meaning, one header at a time, as h11 keeps its
``_headers.py`` apart from its ``_readers.py``. Every function takes a string
and returns a value or raises :class:`ValueError` (:class:`RangeError` for a
Range), so the caller chooses the status (400, 457, 461) and no peer's value
can raise anything else.

- ``Transport`` (section 12.39): :func:`parse_transport` splits the
  alternatives into :class:`TransportSpec`; :func:`parse_port_range` reads
  ``client_port``, ``server_port`` and ``interleaved`` (ASCII digits, 0..65535).
- ``Session`` (section 12.37): :func:`parse_session_header` drops
  ``;timeout=``, :func:`parse_session_timeout` reads it (the player's
  keep-alive period); :func:`valid_session_id` checks the id (section 3.4).
- ``Range`` (section 12.29) in normal play time (section 3.6):
  :func:`parse_npt_range`.
- ``CSeq`` (section 12.17): :func:`valid_cseq` says whether a value is fit to
  echo in a reply.
- Serialisation: :func:`header_value` makes any string fit for a header line
  (control characters become a space), so a value taken from a peer cannot
  break the framing of what we send; the formatters in :mod:`mjpeg_rtsp.rtsp`
  apply it to every value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CSEQ = re.compile(r"[0-9]{1,10}")
_SESSION_ID = re.compile(r"[A-Za-z0-9$\-_.+]{1,128}")
_CTL_RUN = re.compile(r"[\x00-\x1f\x7f]+")


def valid_cseq(value: str | None) -> str | None:
    """``value`` when it is a CSeq fit to echo (1 to 10 ASCII digits), else None."""
    if value is None:
        return None
    value = value.strip()
    return value if _CSEQ.fullmatch(value) else None


def valid_session_id(value: str) -> bool:
    """RFC 2326 section 3.4: ``1*( ALPHA | DIGIT | safe )``; at most 128 characters here."""
    return _SESSION_ID.fullmatch(value) is not None


def header_value(value: str) -> str:
    """``value`` fit for a header line: every run of control characters becomes one space."""
    return _CTL_RUN.sub(" ", value).strip() if _CTL_RUN.search(value) else value



@dataclass(frozen=True)
class TransportSpec:
    """One alternative of a Transport header (RFC 2326 section 12.39)."""

    protocol: str  # "RTP/AVP", "RTP/AVP/UDP", "RTP/AVP/TCP", "RTP/UDP" (textbook), ...
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name.lower():
                return value if value is not None else ""
        return None

    @property
    def lower_transport(self) -> str:
        parts = self.protocol.upper().split("/")
        if parts[:2] == ["RTP", "AVP"]:
            return parts[2] if len(parts) > 2 else "UDP"
        if parts == ["RTP", "UDP"]:
            return "UDP"
        return "?"

    @property
    def is_multicast(self) -> bool:
        return self.param("multicast") is not None


def parse_transport(value: str) -> list[TransportSpec]:
    """Split a Transport header into its comma-separated alternatives."""
    specs = []
    for alternative in value.split(","):
        parts = [p.strip() for p in alternative.split(";")]
        if not parts[0]:
            continue
        params = []
        for part in parts[1:]:
            if not part:
                continue
            key, sep, val = part.partition("=")
            params.append((key.strip().lower(), val.strip() if sep else None))
        specs.append(TransportSpec(parts[0], tuple(params)))
    return specs


_PORT_RANGE = re.compile(r"\s*([0-9]{1,5})\s*(?:-\s*([0-9]{1,5})\s*)?")


def parse_port_range(value: str) -> tuple[int, int | None]:
    """``25000`` or ``5000-5001`` (client_port, server_port, interleaved): ASCII digits only
    (int() would also take ``1_000`` and other scripts' digits), each 0..65535."""
    match = _PORT_RANGE.fullmatch(value)
    if match is None:
        raise ValueError(f"bad port range {value[:40]!r}")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) is not None else None
    if low > 65535 or (high is not None and high > 65535):
        raise ValueError(f"port out of range in {value[:40]!r}")
    return low, high


def parse_session_header(value: str) -> str:
    """The session id of a Session header, without ``;timeout=``."""
    return value.split(";", 1)[0].strip()


def parse_session_timeout(value: str) -> float | None:
    """The ``;timeout=`` of a Session header in seconds (RFC 2326 12.37), None when absent or
    not a positive number of seconds (``0``, ``-5``, ``1e308``, thousands of digits)."""
    match = re.search(r";\s*timeout\s*=\s*([^;\s]*)", value)
    if match is None or not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{0,6})?", match.group(1)):
        return None
    seconds = float(match.group(1))
    # Keep-alives go at half the timeout: under a second, one second (not a flood).
    return max(seconds, 1.0) if seconds > 0 else None


class RangeError(ValueError):
    """A Range value that cannot be played (the server answers 457 Invalid Range)."""


def parse_npt_range(value: str) -> tuple[float | None, float | None]:
    """Parse ``npt=START-[END]`` (RFC 2326 section 3.6); ``now`` and a missing start give None."""
    unit, sep, spec = value.strip().partition("=")
    if not sep or unit.strip().lower() != "npt":
        raise RangeError(f"only npt ranges are supported, got {value[:60]!r}")
    start_text, dash, end_text = spec.partition("-")
    if not dash:
        raise RangeError(f"range {value[:60]!r} has no '-'")
    return _npt_time(start_text), _npt_time(end_text)


# RFC 2326 section 3.6: npt-sec = 1*DIGIT [ "." *DIGIT ]; npt-hhmmss = npt-hh ":" npt-mm ":"
# npt-ss [ "." *DIGIT ] with minutes and seconds 0..59. No exponents, signs, inf or nan.
_NPT_SEC = re.compile(r"([0-9]+)(?:\.([0-9]*))?")
_NPT_HHMMSS = re.compile(r"([0-9]+):([0-9]{1,2}):([0-9]{1,2})(?:\.([0-9]*))?")
MAX_NPT_CHARS = 32


def _npt_time(text: str) -> float | None:
    text = text.strip()
    if text in ("", "now"):
        return None
    if len(text) > MAX_NPT_CHARS:
        raise RangeError(f"npt time of {len(text)} characters (at most {MAX_NPT_CHARS})")
    sec = _NPT_SEC.fullmatch(text)
    if sec is not None:
        return float(text)
    hms = _NPT_HHMMSS.fullmatch(text)
    if hms is None or int(hms.group(2)) > 59 or int(hms.group(3)) > 59:
        raise RangeError(f"bad npt time {text!r}")
    fraction = float("0." + hms.group(4)) if hms.group(4) else 0.0
    return int(hms.group(1)) * 3600 + int(hms.group(2)) * 60 + int(hms.group(3)) + fraction
