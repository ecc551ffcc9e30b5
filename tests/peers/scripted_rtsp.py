"""A small scripted RTSP server for player tests: it answers OPTIONS, DESCRIBE, SETUP, PLAY,
GET_PARAMETER and TEARDOWN with a configurable SDP and Content-Base (standing in for servers
that describe their control URLs differently from ours), records every request line it
receives, and once PLAY is answered sends RTP/JPEG over UDP made by our own payloader.

It serves any URL; what the player asked for is in :attr:`ScriptedRtspServer.requests`.
``answer_play=False`` makes a server that never answers PLAY.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from mjpeg_rtsp.jpeg import scan_jpeg
from mjpeg_rtsp.rfc2435 import packetize
from mjpeg_rtsp.rtp import pack_header
from mjpeg_rtsp.rtsp import NEED_DATA, Headers, Request, Response, RtspReader, format_response

SSRC = 0x5C7195ED


@dataclass
class Script:
    """How the server describes itself. ``{url}`` in a value is the DESCRIBEd URL."""

    content_base: str | None = None  # None: no Content-Base header
    session_control: str | None = None  # None: no session-level a=control
    media_control: str | None = "track1"
    answer_play: bool = True
    fps: float = 25.0


@dataclass
class ScriptedRtspServer:
    script: Script
    frames: list[bytes]
    requests: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedRtspServer:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv
                except OSError:
                    pass  # already closed by its peer
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def methods(self) -> list[str]:
        with self._lock:
            return [method for method, _ in self.requests]

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.05)  # to notice _stop
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._sockets.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        reader = RtspReader()
        streaming: threading.Event | None = None
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except OSError:
                break
            if not data:
                break
            reader.receive_data(data)
            while (event := reader.next_event()) is not NEED_DATA:
                if not isinstance(event, Request):
                    continue
                with self._lock:
                    self.requests.append((event.method, event.target))
                reply, start = self._answer(event)
                if reply is not None:
                    conn.sendall(format_response(reply))
                if start is not None:
                    streaming = threading.Event()
                    self._spawn(self._stream, start, streaming)
                if event.method == "TEARDOWN" and streaming is not None:
                    streaming.set()
        if streaming is not None:
            streaming.set()
        conn.close()

    def _answer(self, request: Request) -> tuple[Response | None, tuple[int, ...] | None]:
        headers = Headers([("CSeq", request.headers.get("CSeq") or "0")])
        script, start = self.script, None
        if request.method == "OPTIONS":
            headers.add("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif request.method == "DESCRIBE":
            if script.content_base is not None:
                headers.add("Content-Base", script.content_base.format(url=request.target))
            headers.add("Content-Type", "application/sdp")
            return Response(200, headers, self._sdp(request.target).encode()), None
        elif request.method == "SETUP":
            transport = request.headers.get("Transport") or ""
            ports = transport.partition("client_port=")[2].split(";")[0]
            self._client_port = int(ports.split("-")[0])
            headers.add("Session", "5C7195ED;timeout=60")
            headers.add("Transport", f"RTP/AVP;unicast;client_port={ports};ssrc={SSRC:08X}")
        elif request.method == "PLAY":
            if not script.answer_play:
                return None, None
            headers.add("Session", "5C7195ED")
            start = (self._client_port,)
        elif request.method in ("TEARDOWN", "GET_PARAMETER"):
            headers.add("Session", "5C7195ED")
        else:
            return Response(501, headers), None
        return Response(200, headers), start

    def _sdp(self, url: str) -> str:
        lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=scripted", "t=0 0"]
        if self.script.session_control is not None:
            lines.append(f"a=control:{self.script.session_control.format(url=url)}")
        lines += ["m=video 0 RTP/AVP 26", "a=rtpmap:26 JPEG/90000"]
        if self.script.media_control is not None:
            lines.append(f"a=control:{self.script.media_control.format(url=url)}")
        return "\r\n".join(lines) + "\r\n"

    def _stream(self, start: tuple[int, ...], done: threading.Event) -> None:
        """Every frame in turn, paced at the script's rate, until TEARDOWN or close."""
        (port,) = start
        if not self.frames:
            return  # a server that answers PLAY and sends nothing
        payloads = [packetize(frame, scan_jpeg(frame)) for frame in self.frames]
        interval = 1 / self.script.fps
        seq, begin = 1000, time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for index in range(10 ** 6):
                if done.wait(max(0.0, begin + index * interval - time.monotonic())):
                    return
                if self._stop.is_set():
                    return
                parts = payloads[index % len(payloads)]
                timestamp = (index * 90000 // int(self.script.fps)) & 0xFFFFFFFF
                for k, payload in enumerate(parts):
                    header = pack_header(26, seq, timestamp, SSRC, k == len(parts) - 1)
                    sock.sendto(header + payload, ("127.0.0.1", port))
                    seq = (seq + 1) & 0xFFFF
