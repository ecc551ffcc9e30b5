"""The server's figures, computed in one place: who watches what, what was sent and dropped.

Theory of operation: :func:`collect` turns the sessions there are now, the totals of those
that have ended (:class:`SessionTotals`, added to by ``Streamer.end``), the streams on offer
and a few server counters into one plain dict. ``/status.json`` is that dict as JSON, and
``/metrics`` is :func:`render_prometheus` of it (the Prometheus text exposition format
0.0.4), so the two can never disagree. Nothing here does I/O; the lock of the totals comes
from their creator.

Session kinds: ``textbook`` (the course's client, raw JPEGs over UDP), ``udp`` and ``tcp``
(standard players, RTP over UDP or interleaved in RTSP), ``http`` (browsers, multipart
JPEGs) and ``publish`` (publishers sending a live stream in).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from .media import MediaError
from .session import LowerTransport, PayloadFormat, Session

KINDS = ("textbook", "udp", "tcp", "http", "publish")
# Per session, accumulated per kind (ended sessions included in the totals).
COUNTERS = ("frames_sent", "frames_dropped", "packets_sent", "packets_dropped", "bytes_sent")


def session_kind(session: Session) -> str:
    """One of :data:`KINDS`."""
    if session.record:
        return "publish"
    if session.payload_format is PayloadFormat.RAW_JPEG:
        return "textbook"
    lower = session.transport.lower
    if lower is LowerTransport.HTTP:
        return "http"
    return "tcp" if lower is LowerTransport.INTERLEAVED else "udp"


def session_counters(session: Session) -> dict[str, int]:
    """A session's figures (read inside its guard by the caller for a consistent set).
    ``frames_sent`` counts frames at least part of which went, ``frames_dropped`` those none
    of which did; ``bytes_sent`` is payload bytes (RTP payloads, or the JPEGs over HTTP)."""
    return {
        "frames_sent": session.frames_sent - session.frames_dropped,
        "frames_dropped": session.frames_dropped,
        "packets_sent": session.packets_sent,
        "packets_dropped": session.packets_dropped,
        "bytes_sent": session.octets_sent,
    }


def _zero() -> dict[str, int]:
    return {"sessions": 0, **dict.fromkeys(COUNTERS, 0)}


class SessionTotals:
    """The counters of ended sessions, by kind (so totals survive the sessions)."""

    def __init__(self, lock: AbstractContextManager | None = None) -> None:
        self._lock = lock if lock is not None else nullcontext()
        self._totals = {kind: _zero() for kind in KINDS}

    def add(self, session: Session) -> None:
        counters = session_counters(session)
        with self._lock:
            totals = self._totals[session_kind(session)]
            totals["sessions"] += 1
            for name, value in counters.items():
                totals[name] += value

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {kind: dict(values) for kind, values in self._totals.items()}


def describe_media(media: object, fps: float) -> dict[str, object]:
    """What a page and the status say of one stream: a file (``fps`` is the server's rate)
    or a live channel (its own rate; None before two frames)."""
    if getattr(media, "live", False):
        rate = media.fps  # type: ignore[attr-defined]
        return {
            "name": media.name, "kind": "live",  # type: ignore[attr-defined]
            "width": media.width, "height": media.height,  # type: ignore[attr-defined]
            "fps": round(rate, 2) if rate else None,
            "on_air": bool(media.on_air), "status": media.status,  # type: ignore[attr-defined]
            "frames": media.frames_in,  # type: ignore[attr-defined]
        }
    return {
        "name": media.name, "kind": "file",  # type: ignore[attr-defined]
        "width": media.width, "height": media.height,  # type: ignore[attr-defined]
        "fps": fps, "on_air": True, "status": "file",
        "frames": media.frame_count,  # type: ignore[attr-defined]
    }


def collect(
    sessions: list[tuple[Session, dict[str, int]]],
    ended: dict[str, dict[str, int]],
    streams: list[dict[str, object]],
    counters: dict[str, object],
) -> dict[str, object]:
    """The figures: ``sessions`` (each with its :func:`session_counters`) are the ones now,
    ``ended`` the :meth:`SessionTotals.snapshot`, ``streams`` the :func:`describe_media` of
    what is offered, ``counters`` server-wide figures passed through (late frames,
    connections refused, authentication failures, uptime...)."""
    now = dict.fromkeys(KINDS, 0)
    totals = {kind: dict(ended.get(kind) or _zero()) for kind in KINDS}
    by_name = {str(s["name"]): {**s, "viewers": dict.fromkeys(KINDS, 0)} for s in streams}
    for session, values in sessions:
        kind = session_kind(session)
        now[kind] += 1
        totals[kind]["sessions"] += 1
        for name, value in values.items():
            totals[kind][name] += value
        name = str(getattr(session.media, "name", "?"))
        entry = by_name.get(name)
        if entry is None:  # e.g. a file in a sub-folder, not on the index
            entry = by_name[name] = {**describe_media(session.media, session.fps),
                                     "viewers": dict.fromkeys(KINDS, 0)}
        entry["viewers"][kind] += 1  # type: ignore[index]
    return {
        "sessions": now,
        "totals": totals,
        "streams": sorted(by_name.values(), key=lambda s: str(s["name"])),
        **counters,
    }


def server_figures(server: object, now: float) -> dict[str, object]:
    """:func:`collect` for a running ``Server.StreamingServer`` (its registry, streamer,
    library, live paths, service and HTTP side), at monotonic time ``now``."""
    sessions = []
    for session in server.registry.all():  # type: ignore[attr-defined]
        with session.guard:
            sessions.append((session, session_counters(session)))
    fps = server.config.fps  # type: ignore[attr-defined]
    streams = []
    for name in server.library.list_media():  # type: ignore[attr-defined]
        try:
            streams.append(describe_media(server.library.open(name), fps))  # type: ignore[attr-defined]
        except MediaError:  # a file that cannot be served is left out
            continue
    streams += [describe_media(c, fps) for c in server.live_paths.channels()]  # type: ignore[attr-defined]
    streamer = server.streamer  # type: ignore[attr-defined]
    web = server.http  # type: ignore[attr-defined]
    counters = {
        "late_frames": streamer.scheduler.late_frames,
        "skipped_frames": streamer.scheduler.skipped_frames + streamer.fanout.skipped_frames,
        "refused_connections": {
            "rtsp": server.refused_connections,  # type: ignore[attr-defined]
            "http": web.refused_connections + web.refused_viewers if web else 0,
        },
        "auth_failures": {
            "rtsp": server.service.auth_failures,  # type: ignore[attr-defined]
            "http": web.auth_failures if web else 0,
        },
        "uptime_seconds": round(now - server.started_at, 3),  # type: ignore[attr-defined]
    }
    return collect(sessions, streamer.totals.snapshot(), streams, counters)


# --- the Prometheus text format -------------------------------------------------------------

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "mjpeg_"
_TOTAL_HELP = {
    "sessions": ("sessions_started_total", "Sessions started, by kind (ended ones included)"),
    "frames_sent": ("frames_sent_total", "Frames sent, at least in part, by session kind"),
    "frames_dropped": ("frames_dropped_total",
                       "Frames dropped whole (full send buffer or viewer queue), by kind"),
    "packets_sent": ("packets_sent_total", "RTP packets sent (HTTP: JPEGs), by session kind"),
    "packets_dropped": ("packets_dropped_total", "RTP packets (HTTP: JPEGs) dropped, by kind"),
    "bytes_sent": ("payload_bytes_sent_total", "Payload bytes of the frames sent, by kind"),
}
# Server counters: key in the figures -> (metric, help, label name or None).
_SERVER_COUNTERS = {
    "late_frames": ("late_frames_total", "File frames sent more than a frame interval late",
                    None),
    "skipped_frames": ("skipped_frames_total",
                       "Frames a session could not receive in its format", None),
    "refused_connections": ("connections_refused_total",
                            "Connections or viewers refused because the server was full",
                            "protocol"),
    "auth_failures": ("auth_failures_total", "Requests with wrong credentials", "protocol"),
}


def _label(value: object) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_prometheus(figures: dict[str, object]) -> str:
    """``figures`` (from :func:`collect`) in the text exposition format 0.0.4."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, object], object]]) -> None:
        lines.append(f"# HELP {_PREFIX}{name} {help_text}")
        lines.append(f"# TYPE {_PREFIX}{name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{_PREFIX}{name}{{{text}}} {value}" if text
                         else f"{_PREFIX}{name} {value}")

    sessions = figures["sessions"]
    family("sessions", "gauge", "Sessions now, by kind",
           [({"kind": k}, v) for k, v in sessions.items()])  # type: ignore[union-attr]
    totals = figures["totals"]
    for key, (name, help_text) in _TOTAL_HELP.items():
        family(name, "counter", help_text,
               [({"kind": k}, v[key]) for k, v in totals.items()])  # type: ignore[union-attr]
    streams = figures["streams"]
    family("stream_viewers", "gauge", "Viewers of each stream now, by session kind",
           [({"stream": s["name"], "kind": k}, n)  # type: ignore[index]
            for s in streams for k, n in s["viewers"].items()  # type: ignore[union-attr,index]
            if k != "publish"])
    family("stream_on_air", "gauge", "Whether a stream can be watched now (files: always)",
           [({"stream": s["name"]}, int(bool(s["on_air"]))) for s in streams])  # type: ignore[index,union-attr]
    for key, (name, help_text, label) in _SERVER_COUNTERS.items():
        value = figures.get(key, 0)
        if label is None:
            samples = [({}, value)]
        else:
            samples = [({label: k}, v) for k, v in value.items()]  # type: ignore[union-attr]
        family(name, "counter", help_text, samples)
    if "uptime_seconds" in figures:
        family("uptime_seconds", "gauge", "Seconds since the server started",
               [({}, figures["uptime_seconds"])])
    return "\n".join(lines) + "\n"
