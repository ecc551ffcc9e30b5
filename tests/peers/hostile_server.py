"""A scripted RTSP server that says what a test tells it to, for the player's hostile-input tests.

One connection at a time on 127.0.0.1 (port 0). Both dialects: standard requests end with a
blank line; the course's textbook client's requests do not, so a request is taken once the
socket has been quiet for a moment (as our own server does). Replies are well-formed unless a
test overrides a header (``headers={"PLAY": {"Range": "npt=0-1e308"}}``), replaces the SDP, or
appends raw bytes after a reply (``raw={"PLAY": b"..."}``). After PLAY, ``datagrams`` (whole
RTP packets, built with :func:`rtp_packets` or by hand) are sent to the client's RTP port,
``pace`` seconds apart. Every request's method is recorded in :attr:`methods`.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time

from mjpeg_rtsp.jpeg import scan_jpeg
from mjpeg_rtsp.rfc2435 import packetize
from mjpeg_rtsp.rtp import RtpPacket
from mjpeg_rtsp.rtsp import NEED_DATA, Request, RtspReader

SSRC = 0x1234ABCD
PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER"


def default_sdp(extra: str = "") -> str:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=hostile\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
            "a=control:*\r\na=range:npt=0-10\r\nm=video 0 RTP/AVP 26\r\n"
            f"a=rtpmap:26 JPEG/90000\r\na=control:track1\r\n{extra}")


def rtp_packets(jpegs: list[bytes], *, first_seq: int = 0, first_frame: int = 0,
                step: int = 3600, size: tuple[int, int] | None = None) -> list[bytes]:
    """RFC 2435 packets for each JPEG (one frame per 1/25 s, numbered from ``first_frame``);
    ``size`` forces the header's width and height fields (in pixels / 8, 0 meaning "see
    a=x-dimensions")."""
    packets, seq = [], first_seq
    for index, jpeg in enumerate(jpegs):
        payloads = packetize(jpeg, scan_jpeg(jpeg))
        if size is not None:
            payloads = [p[:6] + bytes(size) + p[8:] for p in payloads]
        for i, payload in enumerate(payloads):
            packets.append(bytes(RtpPacket(26, seq & 0xFFFF, (first_frame + index) * step,
                                           SSRC, payload,
                                           marker=i == len(payloads) - 1)))
            seq += 1
    return packets


def textbook_packets(payloads: list[bytes]) -> list[bytes]:
    """The course's datagrams: one RTP packet per payload, consecutive sequence numbers."""
    return [bytes(RtpPacket(26, i & 0xFFFF, i, SSRC, p)) for i, p in enumerate(payloads)]


class HostileServer:
    def __init__(self, *, sdp: str | None = None, headers: dict | None = None,
                 raw: dict | None = None, datagrams: list[bytes] = (),
                 pace: float = 0.005) -> None:
        self.sdp = sdp if sdp is not None else default_sdp()
        self.headers = headers or {}
        self.raw = raw or {}
        self.datagrams = list(datagrams)
        self.pace = pace
        self.methods: list[str] = []
        self._rtp_port: int | None = None
        self.sent = threading.Event()  # every datagram is out
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # accept() wakes up to see close()
        self.port = self._listener.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}/clip"
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    # --- the connection -------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
                break
            except TimeoutError:
                if self._stop.is_set():
                    return
            except OSError:
                return
        conn.settimeout(None)
        with conn:
            reader = RtspReader()
            while not self._stop.is_set():
                readable, _, _ = select.select([conn], [], [], 0.05)
                if readable:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    reader.receive_data(data)
                elif reader.pending_textbook_message():
                    request = reader.flush_textbook_message()
                    if isinstance(request, Request):
                        self._answer(conn, request)
                    continue
                while (event := reader.next_event()) is not NEED_DATA:
                    if isinstance(event, Request):
                        self._answer(conn, event)

    def _answer(self, conn: socket.socket, request: Request) -> None:
        method = request.method
        self.methods.append(method)
        textbook = "://" not in request.target
        fields = {"CSeq": request.headers.get("CSeq") or "0"}
        body = b""
        if method == "OPTIONS":
            fields["Public"] = PUBLIC
        elif method == "DESCRIBE":
            fields["Content-Base"] = self.url + "/"
            fields["Content-Type"] = "application/sdp"
            body = self.sdp.encode()
        elif method == "SETUP":
            fields["Session"] = "4242;timeout=60"
            transport = request.headers.get("Transport") or ""
            port = re.search(r"client_port=\s*(\d+)", transport)
            self._rtp_port = int(port.group(1)) if port else None
            fields["Transport"] = (f"{transport.strip()};server_port=50000-50001;"
                                   f"ssrc={SSRC:08X}")
        elif method == "PLAY":
            fields["Session"] = "4242"
            fields["Range"] = "npt=0.000-"
            fields["RTP-Info"] = f"url={self.url}/track1;seq=0;rtptime=0"
        else:
            fields["Session"] = "4242"
        fields.update(self.headers.get(method, {}))
        if body:
            fields["Content-Length"] = str(len(body))
        end = "\n" if textbook else "\r\n"
        head = end.join(["RTSP/1.0 200 OK"] + [f"{k}: {v}" for k, v in fields.items()])
        blank = end + end if (body or not textbook) else ""
        conn.sendall(head.encode() + blank.encode() + body + self.raw.get(method, b""))
        if method == "PLAY" and self._rtp_port:
            thread = threading.Thread(target=self._send, args=(self._rtp_port,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _send(self, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in self.datagrams:
                if self._stop.is_set():
                    return
                sock.sendto(datagram, ("127.0.0.1", port))
                time.sleep(self.pace)
        self.sent.set()
