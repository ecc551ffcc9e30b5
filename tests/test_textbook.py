"""The course's textbook client, emulated exactly on the wire, against the real server.

The emulation follows the course's Client.py: requests joined with ``\\n`` and
no blank line, ``Transport: RTP/UDP; client_port= N``, replies read with
``recv(1024)`` and parsed by line index, RTP read with ``recv(20480)`` and
``RtpPacket.decode``, sequence number taken as the frame number.
"""

from __future__ import annotations

import io
import socket
import threading
import time

import pytest
from conftest import RtspTestClient, arrivals_after_drain, udp_pair
from make_sample import read_frame_number
from PIL import Image

from mjpeg_rtsp.rfc2435 import JpegDepacketizer
from mjpeg_rtsp.rtcp import Bye, RtcpError, parse_compound
from mjpeg_rtsp.rtp import RtpPacket as Packet
from RtpPacket import RtpPacket


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class TextbookClient:
    SETUP, PLAY, PAUSE, TEARDOWN = "SETUP", "PLAY", "PAUSE", "TEARDOWN"

    def __init__(self, port: int, file_name: str) -> None:
        self.rtsp = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file_name = file_name
        self.rtp_port = free_udp_port()
        self.rtsp_seq = 0
        self.session_id = 0
        self.rtp: socket.socket | None = None

    def send(self, code: str) -> int:
        """Send a request the course's way and return the reply's status code."""
        self.rtsp_seq += 1
        request = f"{code} {self.file_name} RTSP/1.0\nCSeq: {self.rtsp_seq}"
        if code == self.SETUP:
            request += f"\nTransport: RTP/UDP; client_port= {self.rtp_port}"
        else:
            request += f"\nSession: {self.session_id}"
        self.rtsp.send(request.encode())
        reply = self.rtsp.recv(1024).decode("utf-8")
        lines = reply.split("\n")
        seq_num = int(lines[1].split(" ")[1])
        assert seq_num == self.rtsp_seq
        session = int(lines[2].split(" ")[1])
        if self.session_id == 0:
            self.session_id = session
        status = int(lines[0].split(" ")[1])
        if status == 200 and code == self.SETUP:
            self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.rtp.settimeout(0.5)
            self.rtp.bind(("", self.rtp_port))
        return status

    def receive(self, count: int, timeout: float = 10) -> list[RtpPacket]:
        packets = []
        deadline = time.monotonic() + timeout
        while len(packets) < count and time.monotonic() < deadline:
            try:
                data = self.rtp.recv(20480)
            except TimeoutError:
                continue
            packet = RtpPacket()
            packet.decode(data)
            packets.append(packet)
        return packets

    def quiet(self, seconds: float) -> int:
        """Drain, then count packets arriving within ``seconds``."""
        count = arrivals_after_drain(self.rtp, seconds)
        self.rtp.settimeout(0.5)
        return count

    def close(self) -> None:
        self.rtsp.close()
        if self.rtp:
            self.rtp.close()


@pytest.fixture
def textbook(server):
    clients = []

    def make(name: str = "movie.Mjpeg") -> TextbookClient:
        client = TextbookClient(server.port, name)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def check_frames(packets: list[RtpPacket], first_seq: int) -> None:
    for i, packet in enumerate(packets):
        assert packet.version() == 2 and packet.payloadType() == 26
        assert packet.marker() == 1
        assert packet.seqNum() == first_seq + i  # 1, 2, 3, ... as frame numbers
        image = Image.open(io.BytesIO(packet.getPayload()))
        image.load()
        assert image.size == (384, 288)


def test_play_pause_resume_teardown(server, textbook):
    client = textbook()
    assert client.send(client.SETUP) == 200
    assert client.session_id != 0
    assert client.send(client.PLAY) == 200
    packets = client.receive(30)
    assert len(packets) == 30
    check_frames(packets, 1)
    # The payload is the whole JPEG of the frame whose number is the sequence number.
    first = Image.open(io.BytesIO(packets[0].getPayload()))
    assert read_frame_number(first) == 0

    assert client.send(client.PAUSE) == 200
    assert client.quiet(0.4) == 0
    assert client.send(client.PLAY) == 200
    resumed = client.receive(10)
    assert len(resumed) == 10
    last_before_pause = resumed[0].seqNum() - 1
    assert last_before_pause >= 30
    check_frames(resumed, last_before_pause + 1)  # the count continues across PAUSE/PLAY
    image = Image.open(io.BytesIO(resumed[0].getPayload()))
    assert read_frame_number(image) == resumed[0].seqNum() - 1

    assert client.send(client.TEARDOWN) == 200
    assert client.quiet(0.4) == 0
    assert len(server.registry) == 0


def test_error_replies_keep_the_layout(server, textbook):
    client = textbook("missing.Mjpeg")
    assert client.send(client.SETUP) == 404
    client.file_name = "movie.Mjpeg"
    assert client.send(client.PLAY) == 455  # no session yet, and the connection is still usable
    assert client.send(client.SETUP) == 200


def test_whole_movie_reaches_the_end(server_factory, media_root):
    server = server_factory(fps=100)
    client = TextbookClient(server.port, "short.Mjpeg")
    try:
        assert client.send(client.SETUP) == 200
        assert client.send(client.PLAY) == 200
        packets = client.receive(40)
        assert [p.seqNum() for p in packets] == list(range(1, 41))
        assert client.quiet(0.3) == 0
        # PLAY after the end starts over, continuing the sequence numbers.
        assert client.send(client.PLAY) == 200
        again = client.receive(5)
        assert [p.seqNum() for p in again] == [41, 42, 43, 44, 45]
        assert read_frame_number(Image.open(io.BytesIO(again[0].getPayload()))) == 0
    finally:
        client.close()


def collect_frame(depacketizer: JpegDepacketizer, datagram: bytes, frames: list) -> None:
    packet = Packet.parse(datagram)
    frame = depacketizer.push(packet.payload, packet.timestamp, packet.marker)
    if frame:
        frames.append(frame)


def receive_standard_udp(server, name: str, results: dict, key: str) -> None:
    """A standard client over UDP: DESCRIBE, SETUP, PLAY, then depacketize until RTCP BYE."""
    client = RtspTestClient(server.port)
    rtp, rtcp = udp_pair()
    try:
        port = rtp.getsockname()[1]
        assert client.request("DESCRIBE", name).status == 200
        reply = client.request(
            "SETUP", f"{name}/stream=0", Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}"
        )
        session = reply.headers.get("Session").split(";")[0]
        assert client.request("PLAY", name, Session=session).status == 200
        depacketizer = JpegDepacketizer()
        frames = []
        rtp.settimeout(0.2)
        rtcp.setblocking(False)
        deadline = time.monotonic() + 15
        ended = False
        while time.monotonic() < deadline and not ended:
            try:
                collect_frame(depacketizer, rtp.recv(65536), frames)
            except TimeoutError:
                pass
            try:
                while True:
                    for item in parse_compound(rtcp.recv(65536)):
                        ended = ended or isinstance(item, Bye)
            except (BlockingIOError, RtcpError):
                pass
        try:  # packets that arrived before the BYE was read
            rtp.settimeout(0.05)
            while True:
                collect_frame(depacketizer, rtp.recv(65536), frames)
        except TimeoutError:
            pass
        results[key] = frames
    finally:
        client.close()
        rtp.close()
        rtcp.close()


def receive_textbook(server, name: str, results: dict, key: str) -> None:
    client = TextbookClient(server.port, name)
    try:
        client.send(client.SETUP)
        client.send(client.PLAY)
        results[key] = [p.getPayload() for p in client.receive(40)]
    finally:
        client.close()


def receive_interleaved(server, name: str, results: dict, key: str) -> None:
    client = RtspTestClient(server.port)
    try:
        reply = client.request("SETUP", f"{name}/stream=0",
                               Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        session = reply.headers.get("Session").split(";")[0]
        client.request("PLAY", name, Session=session)
        depacketizer = JpegDepacketizer()
        frames = []
        seen = 0
        deadline = time.monotonic() + 15
        while len(frames) < 40 and time.monotonic() < deadline:
            for item in client.interleaved(seen + 1)[seen:]:
                seen += 1
                if item.channel == 0:
                    packet = Packet.parse(item.data)
                    frame = depacketizer.push(packet.payload, packet.timestamp, packet.marker)
                    if frame:
                        frames.append(frame)
        results[key] = frames
    finally:
        client.close()


def test_textbook_and_standard_clients_together(server_factory):
    """Several clients of both dialects and all transports at once all get every frame."""
    server = server_factory(fps=40)
    results: dict = {}
    jobs = [
        (receive_textbook, "short.Mjpeg", "textbook-1"),
        (receive_textbook, "short.mjpeg", "textbook-2"),
        (receive_standard_udp, "short.Mjpeg", "udp-1"),
        (receive_standard_udp, "short.mjpeg", "udp-2"),
        (receive_interleaved, "short.Mjpeg", "tcp-1"),
    ]
    threads = [threading.Thread(target=f, args=(server, n, results, k)) for f, n, k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == sorted(k for _, _, k in jobs)
    for key, frames in results.items():
        numbers = [read_frame_number(Image.open(io.BytesIO(f))) for f in frames]
        assert numbers == list(range(40)), key
